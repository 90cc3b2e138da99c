"""Drives `rudder server` with the official Python `kubernetes` client (its generated models decode every
answer, so a field the server gets wrong fails here). Usage: python3 python_client.py KUBECONFIG"""

import sys
import threading

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def expect_status(code, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        assert e.status == code, f"{fn.__name__}: wanted {code}, got {e.status}: {e.body}"
        return e
    raise AssertionError(f"{fn.__name__}: wanted HTTP {code}, the call succeeded")


def main(kubeconfig):
    config.load_kube_config(config_file=kubeconfig)
    core = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = "py"

    names = [n.metadata.name for n in core.list_namespace().items]
    assert "default" in names and "kube-system" in names, names
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))

    # A watch from the resourceVersion of an (empty) list sees every later write, in order, however late
    # its request reaches the server; without one it would start "now" and could miss the early writes.
    seen = []
    list_rv = core.list_namespaced_config_map(ns).metadata.resource_version

    def watcher():
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, ns, resource_version=list_rv, timeout_seconds=10):
            seen.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=watcher)
    t.start()

    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="cfg", labels={"app": "py"}), data={"a": "1"})
    created = core.create_namespaced_config_map(ns, cm)
    assert created.metadata.uid and created.metadata.resource_version, created.metadata
    # No fieldManager given: the manager is the User-Agent's prefix, as upstream records it.
    ua = core.api_client.user_agent.split("/")[0]
    managers = [(f.manager, f.operation) for f in created.metadata.managed_fields]
    assert managers == [(ua, "Update")], (ua, managers)
    expect_status(409, core.create_namespaced_config_map, ns, cm)

    core.patch_namespaced_config_map("cfg", ns, {"data": {"b": "2"}})
    got = core.read_namespaced_config_map("cfg", ns)
    assert got.data == {"a": "1", "b": "2"}, got.data

    stale = created
    stale.data = {"c": "3"}
    expect_status(409, core.replace_namespaced_config_map, "cfg", ns, stale)

    listed = core.list_namespaced_config_map(ns, label_selector="app=py")
    assert [c.metadata.name for c in listed.items] == ["cfg"], listed.items
    assert listed.metadata.resource_version

    page = core.list_namespaced_config_map(ns, limit=1)
    assert len(page.items) == 1

    expect_status(404, core.read_namespaced_config_map, "missing", ns)
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Not_Valid"))
    e = expect_status(422, core.create_namespaced_config_map, ns, bad)
    assert "Invalid" in e.body, e.body

    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1DeploymentSpec(
            replicas=1,
            selector=client.V1LabelSelector(match_labels={"app": "web"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "web"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox:1")]),
            ),
        ),
    )
    apps.create_namespaced_deployment(ns, dep)
    apps.patch_namespaced_deployment_scale("web", ns, {"spec": {"replicas": 3}})
    scale = apps.read_namespaced_deployment_scale("web", ns)
    assert scale.spec.replicas == 3, scale
    d = apps.read_namespaced_deployment("web", ns)
    assert d.spec.template.spec.restart_policy == "Always", d.spec.template.spec
    assert d.metadata.generation == 2, d.metadata.generation

    core.delete_namespaced_config_map("cfg", ns)
    t.join(timeout=15)
    assert seen[0] == ("ADDED", "cfg"), seen
    assert ("MODIFIED", "cfg") in seen and seen[-1] == ("DELETED", "cfg"), seen

    core.delete_namespace(ns)
    print("python client: ok")


if __name__ == "__main__":
    main(sys.argv[1])
