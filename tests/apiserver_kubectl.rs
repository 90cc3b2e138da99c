//! `rudder server` driven by the real kubectl (the bundled 1.32 binary, called directly so the dispatcher's
//! version probe plays no part), with a fresh data dir, kubeconfig and discovery cache per server.
//! One test runs the API server on Debian's etcd 3.4.23 (`--etcd-servers`).
//!
//! Run: `CARGO_TARGET_DIR=/var/tmp/rudder-target cargo test --release --test apiserver_kubectl`.
//! Knobs: `RUDDER_KUBECTL` (kubectl binary), `RUDDER_E2E_ETCD` (etcd binary).

mod common;
use common::free_port;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const KUBECTL_DEFAULT: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

fn kubectl_bin() -> String {
    std::env::var("RUDDER_KUBECTL").unwrap_or_else(|_| KUBECTL_DEFAULT.into())
}

struct Server {
    child: Child,
    etcd: Option<Child>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(e) = self.etcd.as_mut() {
            let _ = e.kill();
            let _ = e.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- server.log (last lines) ---");
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl From<Output> for Out {
    fn from(o: Output) -> Self {
        Out {
            ok: o.status.success(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

fn start_etcd(dir: &Path) -> (Child, String) {
    let bin = std::env::var("RUDDER_E2E_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
    let (c, p) = (free_port(), free_port());
    let client = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(bin)
        .args(["--name", "e2e", "--data-dir"])
        .arg(dir.join("etcd"))
        .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("e2e={peer}")])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start etcd");
    (child, client)
}

impl Server {
    fn start(external_etcd: bool) -> Server {
        Self::start_with(external_etcd, &[])
    }

    fn start_with(external_etcd: bool, extra: &[&str]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rudder"));
        cmd.arg("server").arg("--data-dir").arg(dir.path().join("data")).args([
            "--secure-port",
            &port.to_string(),
            "--bind-address",
            "127.0.0.1",
        ]);
        let etcd = if external_etcd {
            let (child, url) = start_etcd(dir.path());
            cmd.args(["--etcd-servers", &url]);
            Some(child)
        } else {
            cmd.args(["--store-client-url", &format!("http://127.0.0.1:{}", free_port())]);
            cmd.args(["--store-peer-url", &format!("http://127.0.0.1:{}", free_port())]);
            None
        };
        cmd.args(extra);
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        let kubeconfig = dir.path().join("data/kubeconfig.yaml");
        let mut s = Server {
            child,
            etcd,
            dir,
            kubeconfig,
        };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if s.kubeconfig.exists() {
                let o = s.kubectl(&["get", "--raw", "/readyz"]);
                if o.ok && o.stdout.trim() == "ok" {
                    return s;
                }
            }
            common::assert_running(&mut s.child, &s.dir.path().join("server.log"));
            assert!(Instant::now() < deadline, "server not ready in time");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_with(&kubectl_bin(), args)
    }

    fn command_with(&self, bin: &str, args: &[&str]) -> Command {
        let mut c = Command::new(bin);
        c.env("HOME", self.dir.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache"))
            .args(["--request-timeout", "20s"])
            .args(args);
        c
    }

    fn kubectl(&self, args: &[&str]) -> Out {
        self.command(args).output().expect("run kubectl").into()
    }

    fn kubectl_in(&self, args: &[&str], stdin: &str) -> Out {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        // kubectl may exit before reading everything (e.g. on a rejected body); its output tells why.
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap().into()
    }

    /// Runs kubectl and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(o.ok, "kubectl {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    /// Runs kubectl and asserts failure; returns stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(!o.ok, "kubectl {args:?} unexpectedly succeeded: {}", o.stdout);
        o.stderr
    }
}

fn basic_suite(s: &Server) {
    // Discovery, version and the bootstrap namespaces.
    let v = s.ok(&["version", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&v).unwrap();
    assert_eq!(v["serverVersion"]["minor"], "32", "{v}");
    let ns = s.ok(&["get", "namespaces"]);
    for n in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.lines().any(|l| l.starts_with(n) && l.contains("Active")), "{ns}");
    }
    assert!(ns.starts_with("NAME"), "{ns}");

    // Protobuf bodies from typed clients: namespace, configmap, deployment.
    assert!(s
        .ok(&["create", "namespace", "team"])
        .contains("namespace/team created"));
    s.ok(&[
        "create",
        "configmap",
        "cm1",
        "-n",
        "team",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    assert_eq!(
        s.ok(&["get", "cm", "cm1", "-n", "team", "-o", "jsonpath={.data.a}"]),
        "1"
    );
    let cms = s.ok(&["get", "configmaps", "-n", "team"]);
    assert!(
        cms.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "DATA", "AGE"]),
        "{cms}"
    );
    assert!(
        cms.lines()
            .any(|l| l.starts_with("cm1") && l.split_whitespace().nth(1) == Some("2")),
        "{cms}"
    );
    s.ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        "team",
        "--image=nginx:1.27",
        "--port=80",
    ]);
    let d = s.ok(&["get", "deploy", "web", "-n", "team", "-o", "wide"]);
    assert!(
        d.contains("UP-TO-DATE") && d.contains("nginx:1.27") && d.contains("app=web"),
        "{d}"
    );
    assert!(
        d.lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("web") && l.contains("0/1")),
        "{d}"
    );
    let gen = s.ok(&[
        "get",
        "deploy",
        "web",
        "-n",
        "team",
        "-o",
        "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(gen, "1 IfNotPresent");

    // Errors: the upstream reasons.
    // `create <kind>` wraps the server's message in its own words; `create -f` prints the reason.
    let e = s.fails(&["create", "configmap", "cm1", "-n", "team"]);
    assert!(e.contains("configmaps \"cm1\" already exists"), "{e}");
    let dup = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm1\n  namespace: team\n";
    let o = s.kubectl_in(&["create", "-f", "-"], dup);
    assert!(o.stderr.contains("Error from server (AlreadyExists)"), "{}", o.stderr);
    let e = s.fails(&["get", "cm", "nope", "-n", "team"]);
    assert!(
        e.contains("Error from server (NotFound): configmaps \"nope\" not found"),
        "{e}"
    );
    let e = s.fails(&["create", "configmap", "Bad_Name", "-n", "team"]);
    assert!(
        e.contains("ConfigMap \"Bad_Name\" is invalid") && e.contains("RFC 1123"),
        "{e}"
    );
    let bad = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n";
    let o = s.kubectl_in(&["apply", "-f", "-"], bad);
    // kubectl's wording for a 422 Invalid Status with field causes.
    assert!(
        o.stderr
            .contains("The ConfigMap \"Bad_Name\" is invalid: metadata.name: Invalid value"),
        "{}",
        o.stderr
    );
    let e = s.fails(&["create", "configmap", "x", "-n", "missing-ns"]);
    assert!(e.contains("namespaces \"missing-ns\" not found"), "{e}");

    // Pods with defaults and the pod table; selectors; pagination.
    for (name, app) in [("p1", "a"), ("p2", "b"), ("p3", "a")] {
        s.ok(&[
            "run",
            name,
            "-n",
            "team",
            "--image=busybox",
            &format!("--labels=app={app}"),
        ]);
    }
    let pods = s.ok(&["get", "pods", "-n", "team"]);
    assert!(
        pods.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .eq(["NAME", "READY", "STATUS", "RESTARTS", "AGE"]),
        "{pods}"
    );
    assert!(
        pods.lines()
            .any(|l| l.starts_with("p1") && l.contains("0/1") && l.contains("Pending")),
        "{pods}"
    );
    let sel = s.ok(&["get", "pods", "-n", "team", "-l", "app=a", "-o", "name"]);
    assert_eq!(sel.lines().collect::<Vec<_>>(), ["pod/p1", "pod/p3"]);
    let sel = s.ok(&[
        "get",
        "pods",
        "-A",
        "--field-selector",
        "metadata.name=p2",
        "-o",
        "name",
    ]);
    assert_eq!(sel.trim(), "pod/p2");
    let paged = s.ok(&["get", "pods", "-n", "team", "--chunk-size=1", "-o", "name"]);
    assert_eq!(paged.lines().count(), 3, "{paged}");
    let policy = s.ok(&[
        "get",
        "pod",
        "p1",
        "-n",
        "team",
        "-o",
        "jsonpath={.spec.restartPolicy}/{.spec.containers[0].imagePullPolicy}",
    ]);
    assert_eq!(policy, "Always/Always");
}

/// Kinds beyond the first ones: service accounts and secrets (protobuf), nodes and services (JSON, tables).
fn more_kinds(s: &Server) {
    s.ok(&["create", "serviceaccount", "robot"]);
    s.ok(&["create", "secret", "generic", "token", "--from-literal=k=v"]);
    let out = s.ok(&["get", "sa,secrets"]);
    assert!(out.lines().any(|l| l.starts_with("serviceaccount/robot")), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("secret/token") && l.contains("Opaque") && l.contains(" 1 ")),
        "{out}"
    );
    let node = r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"node-role.kubernetes.io/control-plane":""}},
        "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.32.0"},
        "addresses":[{"type":"InternalIP","address":"10.0.0.1"}]}}"#;
    let o = s.kubectl_in(&["create", "-f", "-"], node);
    assert!(o.ok, "{}", o.stderr);
    let nodes = s.ok(&["get", "nodes", "-o", "wide"]);
    let head: Vec<&str> = nodes.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(&head[..6], ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]);
    let row: Vec<&str> = nodes.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        (row[0], row[1], row[2], row[4], row[5]),
        ("n1", "Ready", "control-plane", "v1.32.0", "10.0.0.1")
    );
    s.ok(&["create", "deployment", "api", "--image=nginx:1.27"]);
    s.ok(&["expose", "deployment", "api", "--port=80", "--target-port=8080"]);
    let svc = s.ok(&["get", "svc", "api", "-o", "wide"]);
    assert!(
        svc.contains("ClusterIP") && svc.contains("80/TCP") && svc.contains("app=api"),
        "{svc}"
    );
    assert!(s
        .ok(&["get", "svc", "api", "-o", "jsonpath={.spec.clusterIP}"])
        .starts_with("10.96."));
    s.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let np = s.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    assert!(np.parse::<u16>().is_ok_and(|p| (30000..=32767).contains(&p)), "{np}");
    let k = s.ok(&[
        "get",
        "svc",
        "kubernetes",
        "-o",
        "jsonpath={.spec.clusterIP} {.spec.ports[0].port}",
    ]);
    assert_eq!(k, "10.96.0.1 443");
    s.ok(&["delete", "svc", "np"]);
    // scale: the autoscaling/v1 Scale subresource.
    assert!(s.ok(&["scale", "deployment", "api", "--replicas=3"]).contains("scaled"));
    let got = s.ok(&[
        "get",
        "deploy",
        "api",
        "-o",
        "jsonpath={.spec.replicas} {.metadata.generation}",
    ]);
    assert_eq!(got, "3 2");
    let raw = s.ok(&["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/api/scale"]);
    assert!(
        raw.contains(r#""kind":"Scale""#) && raw.contains(r#""selector":"app=api""#),
        "{raw}"
    );
    s.ok(&["delete", "deploy", "api"]);
    s.ok(&["delete", "svc", "api"]);
    s.ok(&["delete", "node", "n1"]);
}

fn write_suite(s: &Server) {
    let manifest = |v: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: app\n  namespace: default\nspec:\n  replicas: {v}\n  \
             selector:\n    matchLabels: {{app: app}}\n  template:\n    metadata:\n      labels: {{app: app}}\n    spec:\n      \
             containers:\n      - name: c\n        image: nginx:1.{v}\n        ports:\n        - containerPort: 80\n"
        )
    };
    let o = s.kubectl_in(&["apply", "-f", "-"], &manifest("2"));
    assert!(
        o.ok && o.stdout.contains("deployment.apps/app created"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = s.kubectl_in(&["apply", "-f", "-"], &manifest("3"));
    assert!(
        o.ok && o.stdout.contains("deployment.apps/app configured"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let got = s.ok(&["get", "deploy", "app", "-o", "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].ports[0].containerPort} {.metadata.generation}"]);
    assert_eq!(got, "3 nginx:1.3 80 2");
    let o = s.kubectl_in(&["apply", "-f", "-"], &manifest("3"));
    assert!(o.ok && o.stdout.contains("unchanged"), "{}{}", o.stdout, o.stderr);

    // Server-side apply: create, then update by the same manager.
    let o = s.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        &manifest("4").replace("name: app\n", "name: ssa\n"),
    );
    assert!(
        o.ok && o.stdout.contains("deployment.apps/ssa serverside-applied"),
        "{}{}",
        o.stdout,
        o.stderr
    );
    let o = s.kubectl_in(
        &["apply", "--server-side", "-f", "-"],
        &manifest("5").replace("name: app\n", "name: ssa\n"),
    );
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(s.ok(&["get", "deploy", "ssa", "-o", "jsonpath={.spec.replicas}"]), "5");
    s.ok(&["delete", "deploy", "ssa"]);

    // Field ownership: applying a value another manager set conflicts (409) until forced; fields the
    // applier stops applying go away; managedFields name the owners.
    s.ok(&["create", "configmap", "owned", "--from-literal=x=1"]);
    let cm = |data: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: owned\ndata:\n{data}");
    let o = s.kubectl_in(&["apply", "--server-side", "-f", "-"], &cm("  x: \"2\"\n"));
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr
            .contains("Apply failed with 1 conflict: conflict with \"kubectl-create\" using v1: .data.x"),
        "{}",
        o.stderr
    );
    assert_eq!(s.ok(&["get", "cm", "owned", "-o", "jsonpath={.data.x}"]), "1");
    let o = s.kubectl_in(
        &["apply", "--server-side", "--force-conflicts", "-f", "-"],
        &cm("  x: \"2\"\n  y: \"3\"\n"),
    );
    assert!(o.ok, "{}", o.stderr);
    let managers = s.ok(&[
        "get",
        "cm",
        "owned",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation} {end}",
    ]);
    assert_eq!(managers.trim(), "kubectl:Apply", "{managers}");
    let o = s.kubectl_in(&["apply", "--server-side", "-f", "-"], &cm("  x: \"2\"\n"));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(s.ok(&["get", "cm", "owned", "-o", "jsonpath={.data}"]), r#"{"x":"2"}"#);
    // A later edit by another manager takes the field over; the applier, left with nothing, drops out.
    s.ok(&["patch", "cm", "owned", "--type", "merge", "-p", r#"{"data":{"x":"9"}}"#]);
    let managers = s.ok(&[
        "get",
        "cm",
        "owned",
        "-o",
        "jsonpath={range .metadata.managedFields[*]}{.manager}:{.operation} {end}",
    ]);
    assert_eq!(managers.trim(), "kubectl-patch:Update", "{managers}");
    s.ok(&["delete", "cm", "owned"]);
    // Moving from client-side to server-side apply: kubectl hands the client-side applier's fields to
    // its server-side manager (a patch of managedFields) first, so the switch does not conflict.
    let o = s.kubectl_in(&["apply", "-f", "-"], &cm("  x: \"1\"\n"));
    assert!(o.ok, "{}", o.stderr);
    let o = s.kubectl_in(&["apply", "--server-side", "-f", "-"], &cm("  x: \"5\"\n"));
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(s.ok(&["get", "cm", "owned", "-o", "jsonpath={.data.x}"]), "5");
    s.ok(&["delete", "cm", "owned"]);

    custom_resource_apply(s);

    s.ok(&["label", "deploy", "app", "tier=web"]);
    s.ok(&["annotate", "deploy", "app", "note=hello"]);
    let got = s.ok(&[
        "get",
        "deploy",
        "app",
        "-o",
        "jsonpath={.metadata.labels.tier} {.metadata.annotations.note}",
    ]);
    assert_eq!(got, "web hello");
    s.ok(&["label", "deploy", "app", "tier-"]);
    assert_eq!(s.ok(&["get", "deploy", "app", "-o", "jsonpath={.metadata.labels}"]), "");

    s.ok(&["create", "configmap", "pc", "--from-literal=a=1"]);
    s.ok(&["patch", "cm", "pc", "--type=merge", "-p", r#"{"data":{"b":"2"}}"#]);
    s.ok(&[
        "patch",
        "cm",
        "pc",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/a"}]"#,
    ]);
    s.ok(&["patch", "cm", "pc", "-p", r#"{"data":{"c":"3"}}"#]);
    assert_eq!(
        s.ok(&["get", "cm", "pc", "-o", "jsonpath={.data}"]),
        r#"{"b":"2","c":"3"}"#
    );
    let e = s.fails(&[
        "patch",
        "cm",
        "pc",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/data/zzz"}]"#,
    ]);
    assert!(
        e.contains("The request is invalid: the server rejected our request"),
        "{e}"
    );

    // replace with a stale resourceVersion: 409 Conflict.
    let stale = s.ok(&["get", "cm", "pc", "-o", "json"]);
    s.ok(&["patch", "cm", "pc", "--type=merge", "-p", r#"{"data":{"d":"4"}}"#]);
    let o = s.kubectl_in(&["replace", "-f", "-"], &stale);
    assert!(
        !o.ok && o.stderr.contains("(Conflict)") && o.stderr.contains("the object has been modified"),
        "{}",
        o.stderr
    );
    let fresh = s.ok(&["get", "cm", "pc", "-o", "json"]);
    let o = s.kubectl_in(&["replace", "-f", "-"], &fresh);
    assert!(
        o.ok && o.stdout.contains("configmap/pc replaced"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // delete waits until the object is gone.
    assert!(s.ok(&["delete", "cm", "pc"]).contains("configmap \"pc\" deleted"));
    s.fails(&["get", "cm", "pc"]);
    assert!(s.ok(&["delete", "deploy", "app", "--wait=true"]).contains("deleted"));
    let e = s.fails(&["delete", "namespace", "default"]);
    assert!(e.contains("(Forbidden)"), "{e}");
}

/// Server-side apply of a custom resource whose CRD declares a `x-kubernetes-list-type: map` list keyed by
/// `name`: two managers each own their item (`k:{"name":...}`) without conflict; changing the other's item
/// is a 409; strategic merge patches are refused as upstream refuses them for custom resources.
fn custom_resource_apply(s: &Server) {
    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  \
        name: gates.example.com\nspec:\n  group: example.com\n  scope: Namespaced\n  names:\n    plural: gates\n    \
        singular: gate\n    kind: Gate\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    \
        schema:\n      openAPIV3Schema:\n        type: object\n        properties:\n          spec:\n            \
        type: object\n            properties:\n              routes:\n                type: array\n                \
        x-kubernetes-list-type: map\n                x-kubernetes-list-map-keys: [name]\n                items:\n                  \
        type: object\n                  required: [name]\n                  properties:\n                    \
        name: {type: string}\n                    port: {type: integer}\n";
    let o = s.kubectl_in(&["apply", "-f", "-"], CRD);
    assert!(o.ok, "{}{}", o.stdout, o.stderr);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/gates.example.com",
        "--timeout",
        "20s",
    ]);
    let gate = |route: &str, port: u16| {
        format!(
            "apiVersion: example.com/v1\nkind: Gate\nmetadata:\n  name: g\nspec:\n  routes:\n  - name: {route}\n    port: {port}\n"
        )
    };
    for (manager, route) in [("a", "web"), ("b", "api")] {
        let o = s.kubectl_in(
            &["apply", "--server-side", "--field-manager", manager, "-f", "-"],
            &gate(route, 80),
        );
        assert!(o.ok, "{manager}: {}{}", o.stdout, o.stderr);
    }
    assert_eq!(
        s.ok(&["get", "gate", "g", "-o", "jsonpath={.spec.routes[*].name}"]),
        "web api"
    );
    let obj: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "gate", "g", "-o", "json", "--show-managed-fields"])).unwrap();
    let routes_of = |manager: &str| {
        let entries = obj["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
        let e = entries.iter().find(|e| e["manager"] == manager).cloned();
        e.map(|e| e["fieldsV1"]["f:spec"]["f:routes"].clone())
    };
    let item = serde_json::json!({".": {}, "f:name": {}, "f:port": {}});
    assert_eq!(
        routes_of("a"),
        Some(serde_json::json!({"k:{\"name\":\"web\"}": item})),
        "{obj}"
    );
    assert_eq!(
        routes_of("b"),
        Some(serde_json::json!({"k:{\"name\":\"api\"}": item})),
        "{obj}"
    );
    // b changing a's item: a conflict on that item's field.
    let o = s.kubectl_in(
        &["apply", "--server-side", "--field-manager", "b", "-f", "-"],
        &format!("{}  - name: web\n    port: 8080\n", gate("api", 80)),
    );
    assert!(!o.ok, "{}", o.stdout);
    assert!(
        o.stderr.contains(
            r#"Apply failed with 1 conflict: conflict with "a" using example.com/v1: .spec.routes[name="web"].port"#
        ),
        "{}",
        o.stderr
    );
    let e = s.fails(&[
        "patch",
        "gate",
        "g",
        "--type",
        "strategic",
        "-p",
        r#"{"spec":{"routes":[]}}"#,
    ]);
    assert!(
        e.contains("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"),
        "{e}"
    );
    s.ok(&["delete", "gate", "g"]);
    s.ok(&["delete", "crd", "gates.example.com"]);
}

#[test]
fn kubectl_against_embedded_store() {
    let s = Server::start(false);
    basic_suite(&s);
    more_kinds(&s);
    write_suite(&s);
    let o = s.kubectl(&["get", "--raw", "/api"]);
    assert!(o.ok && o.stdout.contains("APIVersions"), "{}", o.stderr);
    assert_eq!(s.ok(&["auth", "can-i", "create", "deployments"]).trim(), "yes");
    // One minor either side of the server's 1.32, and the dispatcher (it picks a binary from /version).
    for bin in [
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.31",
        "/usr/lib/google-cloud-sdk/bin/kubectl.1.33",
        "kubectl",
    ] {
        let name = format!("skew-{}", bin.rsplit('.').next().unwrap_or("x"));
        let o: Out = s
            .command_with(bin, &["create", "configmap", &name, "--from-literal=a=1"])
            .output()
            .unwrap()
            .into();
        assert!(o.ok, "{bin}: {}", o.stderr);
        let o: Out = s
            .command_with(bin, &["get", "configmap", &name, "-o", "jsonpath={.data.a}"])
            .output()
            .unwrap()
            .into();
        assert_eq!(o.stdout, "1", "{bin}: {}", o.stderr);
    }
    bad_input(&s);
    let aggregated = s.ok(&["get", "--raw", "/apis/apps/v1"]);
    assert!(aggregated.contains("\"deployments\""), "{aggregated}");
}

/// Malformed and mismatched bodies get the upstream status; nothing is stored; the server stays up.
fn bad_input(s: &Server) {
    let raw = |path: &str, body: &str| s.kubectl_in(&["create", "--raw", path, "-f", "-"], body);
    let o = raw("/api/v1/namespaces/default/configmaps", "{not json");
    assert!(!o.ok && o.stderr.contains("(BadRequest)"), "{}", o.stderr);
    let o = raw(
        "/api/v1/namespaces/default/configmaps",
        r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}"#,
    );
    assert!(
        !o.ok && o.stderr.contains("(BadRequest)") && o.stderr.contains("kind"),
        "{}",
        o.stderr
    );
    let o = raw(
        "/api/v1/namespaces/other/configmaps",
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","namespace":"default"}}"#,
    );
    assert!(
        !o.ok && o.stderr.contains("does not match the namespace"),
        "{}",
        o.stderr
    );
    let big = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#,
        "x".repeat(4 << 20)
    );
    let o = raw("/api/v1/namespaces/default/configmaps", &big);
    assert!(!o.ok && o.stderr.contains("(RequestEntityTooLarge)"), "{}", o.stderr);
    assert!(s.fails(&["get", "cm", "x"]).contains("NotFound"));
    assert!(s.fails(&["get", "cm", "big"]).contains("NotFound"));
    // No client certificate (an unknown bearer token instead): 401.
    let server = s.ok(&[
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let o: Out = Command::new(kubectl_bin())
        .env("HOME", s.dir.path())
        .args([
            "--server",
            &server,
            "--insecure-skip-tls-verify",
            "--token",
            "bogus",
            "--cache-dir",
        ])
        .arg(s.dir.path().join("anon-cache"))
        .args(["get", "namespaces"])
        .output()
        .unwrap()
        .into();
    assert!(
        !o.ok && o.stderr.contains("You must be logged in to the server"),
        "{}",
        o.stderr
    );
    assert_eq!(s.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
}

#[test]
fn kubectl_watch_and_expired_resource_version() {
    let s = Server::start_with(false, &["--etcd-compaction-interval", "1s"]);
    let mut child = s
        .command(&["get", "configmaps", "-n", "default", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let next = |want: &str| -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no watch line containing {want:?}"));
            if line.contains(want) {
                return line;
            }
        }
    };
    // An empty list prints nothing: give kubectl time to list and open its watch.
    std::thread::sleep(Duration::from_millis(1500));
    s.ok(&["create", "configmap", "w1", "--from-literal=a=1"]);
    assert!(next("w1").starts_with("ADDED"));
    s.ok(&["label", "cm", "w1", "x=y"]);
    assert!(next("w1").starts_with("MODIFIED"));
    s.ok(&["delete", "cm", "w1"]);
    assert!(next("w1").starts_with("DELETED"));
    let _ = child.kill();
    let _ = child.wait();

    // Reflector-style watch from a resourceVersion older than the cache: one ERROR event with 410 Expired.
    let o = s.ok(&["get", "--raw", "/api/v1/configmaps?watch=true&resourceVersion=1"]);
    let ev: serde_json::Value = serde_json::from_str(o.lines().next().unwrap()).unwrap();
    assert_eq!(ev["type"], "ERROR", "{o}");
    assert_eq!(ev["object"]["code"], 410);
    assert_eq!(ev["object"]["reason"], "Expired");

    // Watch from a recent list revision replays what came after it.
    let list = s.ok(&[
        "get",
        "--raw",
        "/api/v1/namespaces/default/configmaps?resourceVersion=0",
    ]);
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    s.ok(&["create", "configmap", "w2"]);
    let path = format!("/api/v1/namespaces/default/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=1&allowWatchBookmarks=true");
    let o = s.ok(&["get", "--raw", &path]);
    let first: serde_json::Value = serde_json::from_str(o.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "ADDED", "{o}");
    assert_eq!(first["object"]["metadata"]["name"], "w2");

    // WatchList: initial ADDED events, then a bookmark annotated as their end.
    let path = "/api/v1/namespaces/default/configmaps?watch=true&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan&timeoutSeconds=1";
    let o = s.ok(&["get", "--raw", path]);
    let evs: Vec<serde_json::Value> = o.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(
        evs.iter()
            .any(|e| e["type"] == "ADDED" && e["object"]["metadata"]["name"] == "w2"),
        "{o}"
    );
    let end = evs
        .iter()
        .position(|e| e["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true");
    assert_eq!(end, Some(evs.len() - 1), "{o}");

    // Compaction (every second here, compact_rev_key protocol): an exact read at an old revision is 410.
    std::thread::sleep(Duration::from_millis(2500));
    let e = s.fails(&[
        "get",
        "--raw",
        "/api/v1/configmaps?resourceVersion=2&resourceVersionMatch=Exact",
    ]);
    assert!(e.contains("Error from server (Expired)"), "{e}");
    assert!(s.ok(&["get", "--raw", "/api/v1/configmaps"]).contains("w2"));
}

#[test]
fn kubectl_against_debian_etcd() {
    if !Path::new(&std::env::var("RUDDER_E2E_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into())).exists() {
        eprintln!("skipping: no etcd binary");
        return;
    }
    let s = Server::start(true);
    basic_suite(&s);
    more_kinds(&s);
    write_suite(&s);
    lifecycle_suite(&s);
    pod_subresources_suite(&s);
}

/// Waits up to 20 s for `check` to hold.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletion as upstream does it: finalizers, graceful pod deletion, propagation finalizers, dry run,
/// deletecollection, the status subresource, and a namespace's lifecycle.
fn lifecycle_suite(s: &Server) {
    // A finalizer holds the object: delete only marks it; no new finalizers while it is going; removing
    // the last one deletes it.
    let held = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#;
    let o = s.kubectl_in(&["create", "-f", "-"], held);
    assert!(o.ok, "{}", o.stderr);
    assert!(s
        .ok(&["delete", "cm", "held", "--wait=false"])
        .contains("configmap \"held\" deleted"));
    assert!(!s
        .ok(&["get", "cm", "held", "-o", "jsonpath={.metadata.deletionTimestamp}"])
        .is_empty());
    let e = s.fails(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"add","path":"/metadata/finalizers/-","value":"example.com/more"}]"#,
    ]);
    assert!(
        e.contains("is invalid") && e.contains("no new finalizers can be added if the object is being deleted"),
        "{e}"
    );
    s.ok(&[
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    assert!(s.fails(&["get", "cm", "held"]).contains("(NotFound)"));

    // Server-side dry run deletes nothing.
    s.ok(&["create", "configmap", "dry", "--from-literal=a=1"]);
    s.ok(&["delete", "cm", "dry", "--dry-run=server"]);
    s.ok(&["get", "cm", "dry"]);

    // deletecollection with a label selector.
    for (name, batch) in [("b1", "one"), ("b2", "one"), ("b3", "two")] {
        s.ok(&["create", "configmap", name]);
        s.ok(&["label", "cm", name, &format!("batch={batch}")]);
    }
    s.ok(&[
        "delete",
        "--raw",
        "/api/v1/namespaces/default/configmaps?labelSelector=batch%3Done",
    ]);
    let left = s.ok(&["get", "cm", "-l", "batch", "-o", "name"]);
    assert_eq!(left.trim(), "configmap/b3", "{left}");

    // Pods: a scheduled pod waits out its grace period (no kubelet here to confirm), an unscheduled one
    // goes at once, and --force --grace-period=0 removes the waiting one.
    let pod = |name: &str, node: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}"}},"spec":{{{node}"containers":[{{"name":"c","image":"busybox:1"}}]}}}}"#
        )
    };
    assert!(
        s.kubectl_in(&["create", "-f", "-"], &pod("ran", r#""nodeName":"n1","#))
            .ok
    );
    assert!(s.kubectl_in(&["create", "-f", "-"], &pod("never", "")).ok);
    s.ok(&["delete", "pod", "never", "--wait=false"]);
    assert!(s.fails(&["get", "pod", "never"]).contains("(NotFound)"));
    s.ok(&["delete", "pod", "ran", "--wait=false"]);
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "ran",
            "-o",
            "jsonpath={.metadata.deletionGracePeriodSeconds}"
        ]),
        "30"
    );
    assert!(s.ok(&["get", "pod", "ran"]).contains("Terminating"));
    s.ok(&["delete", "pod", "ran", "--grace-period=0", "--force"]);
    assert!(s.fails(&["get", "pod", "ran"]).contains("(NotFound)"));

    // Foreground propagation leaves the owner marked with foregroundDeletion until its dependents are
    // gone (the garbage collector's job); here we take the finalizer off by hand.
    s.ok(&["create", "deployment", "fg", "--image=busybox:1"]);
    s.ok(&["delete", "deploy", "fg", "--cascade=foreground", "--wait=false"]);
    assert_eq!(
        s.ok(&["get", "deploy", "fg", "-o", "jsonpath={.metadata.finalizers}"]),
        r#"["foregroundDeletion"]"#
    );
    s.ok(&[
        "patch",
        "deploy",
        "fg",
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert!(s.fails(&["get", "deploy", "fg"]).contains("(NotFound)"));

    // The status subresource: status changes only through /status.
    s.ok(&["create", "deployment", "st", "--image=busybox:1"]);
    s.ok(&[
        "patch",
        "deploy",
        "st",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":3},"spec":{"replicas":7}}"#,
    ]);
    s.ok(&[
        "patch",
        "deploy",
        "st",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":9}}"#,
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "deploy",
            "st",
            "-o",
            "jsonpath={.status.replicas} {.spec.replicas}"
        ]),
        "3 1"
    );
    s.ok(&["delete", "deploy", "st"]);

    // A namespace: Terminating while content with a finalizer remains, no new content, then gone.
    s.ok(&["create", "namespace", "doomed"]);
    s.ok(&["-n", "doomed", "create", "configmap", "plain"]);
    assert!(
        s.kubectl_in(&["-n", "doomed", "create", "-f", "-"], &pod("idle", ""))
            .ok
    );
    assert!(s.kubectl_in(&["-n", "doomed", "create", "-f", "-"], held).ok);
    assert!(s
        .ok(&["delete", "namespace", "doomed", "--wait=false"])
        .contains("namespace \"doomed\" deleted"));
    assert!(s.ok(&["get", "ns", "doomed"]).contains("Terminating"));
    let e = s.fails(&["-n", "doomed", "create", "configmap", "late"]);
    assert!(
        e.contains("is forbidden") && e.contains("because it is being terminated"),
        "{e}"
    );
    eventually("the namespace's plain content to go", || {
        s.ok(&["-n", "doomed", "get", "cm,pods", "-o", "name"]).trim() == "configmap/held"
    });
    eventually("the namespace to report what remains", || {
        s.ok(&["get", "ns", "doomed", "-o", "json"]).contains(
            "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances",
        )
    });
    s.ok(&[
        "-n",
        "doomed",
        "patch",
        "cm",
        "held",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    s.ok(&["wait", "--for=delete", "namespace/doomed", "--timeout=30s"]);
    assert!(s.fails(&["get", "ns", "doomed"]).contains("(NotFound)"));
}

#[test]
fn kubectl_deletion_and_namespace_lifecycle() {
    let s = Server::start(false);
    lifecycle_suite(&s);
}

/// Pod subresources: binding, eviction against a PodDisruptionBudget, and the node-proxied ones (logs,
/// exec) answering as upstream does while no node agent serves them.
fn pod_subresources_suite(s: &Server) {
    let pod = |name: &str, labels: &str| {
        format!(
            r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{{labels}}}}},"spec":{{"containers":[{{"name":"c","image":"busybox:1"}}]}}}}"#
        )
    };
    let raw_post = |path: &str, body: &str| s.kubectl_in(&["create", "--raw", path, "-f", "-"], body);

    // binding: once.
    assert!(s.kubectl_in(&["create", "-f", "-"], &pod("bindme", "")).ok);
    assert_eq!(s.ok(&["logs", "bindme"]), "", "an unscheduled pod has no logs yet");
    let e = s.fails(&["exec", "bindme", "--", "true"]);
    assert!(e.contains("pod bindme does not have a host assigned"), "{e}");
    let binding =
        r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"bindme"},"target":{"kind":"Node","name":"n9"}}"#;
    let o = raw_post("/api/v1/namespaces/default/pods/bindme/binding", binding);
    assert!(o.ok, "{}", o.stderr);
    assert_eq!(s.ok(&["get", "pod", "bindme", "-o", "jsonpath={.spec.nodeName}"]), "n9");
    assert_eq!(
        s.ok(&[
            "get",
            "pod",
            "bindme",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].status}"
        ]),
        "True"
    );
    let o = raw_post("/api/v1/namespaces/default/pods/bindme/binding", binding);
    assert!(
        !o.ok && o.stderr.contains("is already assigned to node"),
        "{}",
        o.stderr
    );

    // logs go through the node: unknown node, then a node whose kubelet port is closed.
    let e = s.fails(&["logs", "bindme"]);
    assert!(e.contains("nodes \"n9\" not found"), "{e}");
    let port = free_port();
    let node = format!(
        r#"{{"apiVersion":"v1","kind":"Node","metadata":{{"name":"n9"}},"status":{{"addresses":[{{"type":"InternalIP","address":"127.0.0.1"}}],"daemonEndpoints":{{"kubeletEndpoint":{{"Port":{port}}}}}}}}}"#
    );
    assert!(s.kubectl_in(&["create", "-f", "-"], &node).ok);
    let e = s.fails(&["logs", "bindme"]);
    assert!(
        e.contains(&format!("127.0.0.1:{port}")) && e.contains("connection refused"),
        "{e}"
    );
    s.ok(&["delete", "node", "n9"]);

    // eviction: refused while the budget allows no disruption, then allowed once and recorded.
    let pdb = r#"{"apiVersion":"policy/v1","kind":"PodDisruptionBudget","metadata":{"name":"web"},"spec":{"minAvailable":1,"selector":{"matchLabels":{"app":"web"}}}}"#;
    assert!(s.kubectl_in(&["create", "-f", "-"], pdb).ok);
    assert!(
        s.kubectl_in(&["create", "-f", "-"], &pod("evictme", r#""app":"web""#))
            .ok
    );
    s.ok(&[
        "patch",
        "pod",
        "evictme",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"phase":"Running"}}"#,
    ]);
    let eviction = r#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"evictme"}}"#;
    let o = raw_post("/api/v1/namespaces/default/pods/evictme/eviction", eviction);
    assert!(
        !o.ok
            && o.stderr
                .contains("Cannot evict pod as it would violate the pod's disruption budget"),
        "{}",
        o.stderr
    );
    s.ok(&["get", "pod", "evictme"]);
    s.ok(&[
        "patch",
        "pdb",
        "web",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"observedGeneration":1,"disruptionsAllowed":1,"currentHealthy":1,"desiredHealthy":1,"expectedPods":1}}"#,
    ]);
    let o = raw_post("/api/v1/namespaces/default/pods/evictme/eviction", eviction);
    assert!(o.ok, "{}", o.stderr);
    assert!(s.fails(&["get", "pod", "evictme"]).contains("(NotFound)"));
    assert_eq!(
        s.ok(&["get", "pdb", "web", "-o", "jsonpath={.status.disruptionsAllowed}"]),
        "0"
    );
    assert!(s
        .ok(&["get", "pdb", "web", "-o", "jsonpath={.status.disruptedPods}"])
        .contains("evictme"));
}

#[test]
fn kubectl_pod_subresources() {
    let s = Server::start(false);
    pod_subresources_suite(&s);
}

/// The official Python `kubernetes` client (its generated models decode every answer): CRUD, conflicts,
/// selectors, paging, errors, the scale subresource and a watch (tests/clients/python_client.py).
#[test]
fn python_kubernetes_client() {
    let s = Server::start(false);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_client.py");
    let o: Out = Command::new("python3")
        .arg(&script)
        .arg(&s.kubeconfig)
        .output()
        .expect("run python3")
        .into();
    assert!(
        o.ok && o.stdout.contains("python client: ok"),
        "{}{}",
        o.stdout,
        o.stderr
    );
}

/// A kube-rs client authenticated by the server's admin kubeconfig.
async fn kube_client(kubeconfig: &std::path::Path) -> kube::Client {
    let kubeconfig = kube::config::Kubeconfig::read_from(kubeconfig).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    kube::Client::try_from(config).expect("client")
}

/// kube-rs (typed Api, server-side apply, and a reflector over list+watch), as controllers will use it.
#[test]
fn kube_rs_client_and_reflector() {
    use futures::StreamExt;
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
    use kube::runtime::{reflector, watcher, WatchStreamExt};

    let s = Server::start(false);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = kube_client(&s.kubeconfig).await;
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");

        let (reader, writer) = reflector::store();
        let stream = reflector(
            writer,
            watcher(cms.clone(), watcher::Config::default().labels("by=kube-rs")),
        )
        .applied_objects()
        .boxed();
        let driver = tokio::spawn(stream.for_each(|_| async {}));

        for i in 0..3 {
            let cm: ConfigMap = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("kr{i}"), "labels": {"by": "kube-rs"}}, "data": {"i": i.to_string()}
            }))
            .expect("configmap");
            cms.create(&PostParams::default(), &cm).await.expect("create");
        }
        let applied = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "kr0", "labels": {"by": "kube-rs"}}, "data": {"i": "applied"}});
        // kr0's data.i belongs to the creator: applying another value conflicts until forced.
        let err = cms
            .patch("kr0", &PatchParams::apply("kube-rs-test"), &Patch::Apply(&applied))
            .await
            .expect_err("apply over another manager's field");
        match err {
            kube::Error::Api(s) => assert_eq!(s.code, 409, "{s:?}"),
            other => panic!("unexpected error {other:?}"),
        }
        cms.patch(
            "kr0",
            &PatchParams::apply("kube-rs-test").force(),
            &Patch::Apply(&applied),
        )
        .await
        .expect("server-side apply");
        let listed = cms
            .list(&ListParams::default().labels("by=kube-rs"))
            .await
            .expect("list");
        assert_eq!(listed.items.len(), 3);

        let wait = |want: usize, check: &'static str| {
            let reader = reader.clone();
            async move {
                for _ in 0..100 {
                    let state = reader.state();
                    let applied = state
                        .iter()
                        .any(|c| c.data.as_ref().and_then(|d| d.get("i")).map(String::as_str) == Some("applied"));
                    if state.len() == want && (check != "applied" || applied) {
                        return;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                panic!(
                    "reflector never reached {want} objects ({check}): {:?}",
                    reader.state().len()
                );
            }
        };
        wait(3, "applied").await;
        cms.delete("kr1", &DeleteParams::default()).await.expect("delete");
        wait(2, "deleted").await;

        // Typed decoding of a defaulted workload.
        let out = s.kubectl(&["create", "deployment", "krd", "--image=busybox:1"]);
        assert!(out.ok, "{}", out.stderr);
        let deps: Api<Deployment> = Api::namespaced(client, "default");
        let d = deps.get("krd").await.expect("typed get");
        let spec = d.spec.expect("spec");
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(
            spec.template.spec.and_then(|p| p.restart_policy).as_deref(),
            Some("Always")
        );
        driver.abort();
    });
}

/// The `Content-Type` kubectl's `-v=8` log shows for the responses it read.
fn response_content_types(log: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_response = false;
    for l in log.lines() {
        if l.contains("Response Headers:") {
            in_response = true;
        } else if l.contains("Request Headers:") || l.contains("Response Body:") {
            in_response = false;
        } else if in_response {
            if let Some((_, v)) = l.split_once("Content-Type: ") {
                out.push(v.trim().to_string());
            }
        }
    }
    out
}

/// Typed clients (kubectl's `create <kind>`, `describe`, `auth can-i`) talk protobuf both ways; protobuf
/// lists, errors and watches straight from the server; malformed protobuf is a 400 and custom resources
/// refuse protobuf bodies with 415.
#[test]
fn kubectl_protobuf() {
    const PB: &str = "application/vnd.kubernetes.protobuf";
    let s = Server::start(false);
    let o = s.kubectl(&["create", "namespace", "pb", "-v=8"]);
    assert!(o.ok, "{}", o.stderr);
    let types = response_content_types(&o.stderr);
    assert!(
        types.iter().any(|t| t == PB),
        "no protobuf response: {types:?}\n{}",
        o.stderr
    );
    // Presence survives protobuf: replicas 0 stays 0 (not the default 1).
    let o = s.kubectl(&[
        "create",
        "deployment",
        "web",
        "-n",
        "pb",
        "--image=nginx:1.27",
        "--replicas=0",
        "--port=80",
        "-v=8",
    ]);
    assert!(o.ok, "{}", o.stderr);
    assert!(
        response_content_types(&o.stderr).iter().any(|t| t == PB),
        "{}",
        o.stderr
    );
    let got = s.ok(&[
        "get", "deploy", "web", "-n", "pb", "-o",
        "jsonpath={.spec.replicas} {.spec.strategy.type} {.spec.strategy.rollingUpdate.maxSurge} {.spec.template.spec.containers[0].ports[0].containerPort}",
    ]);
    assert_eq!(got, "0 RollingUpdate 25% 80");
    // What is stored is what upstream's Go round trip keeps: a zero in a non-pointer omitempty field is
    // gone (`paused: false`, `hostNetwork: false`), a pointer's zero stays (`replicas: 0`, a claim's
    // `storageClassName: ""`, which means "no class").
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: still, namespace: pb}\nspec:\n  \
        paused: false\n  replicas: 0\n  selector: {matchLabels: {app: still}}\n  template:\n    metadata: \
        {labels: {app: still}}\n    spec: {hostNetwork: false, containers: [{name: c, image: busybox}]}\n---\n\
        apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: claim, namespace: pb}\nspec:\n  \
        storageClassName: \"\"\n  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 1Gi}}\n";
    let o = s.kubectl_in(&["apply", "-f", "-"], manifest);
    assert!(o.ok, "{}", o.stderr);
    let d: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "deploy", "still", "-n", "pb", "-o", "json"])).expect("json");
    assert_eq!(d["spec"].get("paused"), None, "{d}");
    assert_eq!(d["spec"]["replicas"], 0, "{d}");
    assert_eq!(d["spec"]["template"]["spec"].get("hostNetwork"), None, "{d}");
    let c: serde_json::Value =
        serde_json::from_str(&s.ok(&["get", "pvc", "claim", "-n", "pb", "-o", "json"])).expect("json");
    assert_eq!(c["spec"]["storageClassName"], "", "{c}");
    s.ok(&[
        "create",
        "configmap",
        "cm",
        "-n",
        "pb",
        "--from-literal=a=1",
        "--from-literal=empty=",
    ]);
    assert_eq!(
        s.ok(&["get", "cm", "cm", "-n", "pb", "-o", "jsonpath={.data.a}/{.data.empty}/"]),
        "1//"
    );
    s.ok(&["create", "secret", "generic", "sec", "-n", "pb", "--from-literal=k=v"]);
    assert_eq!(
        s.ok(&["get", "secret", "sec", "-n", "pb", "-o", "jsonpath={.data.k}"]),
        "dg=="
    );
    // A Go client's zero targetPort is unset: it defaults to the port.
    s.ok(&[
        "create",
        "service",
        "clusterip",
        "svc",
        "-n",
        "pb",
        "--tcp=80",
        "--tcp=81:8081",
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "svc",
            "svc",
            "-n",
            "pb",
            "-o",
            "jsonpath={.spec.ports[*].targetPort}"
        ]),
        "80 8081"
    );
    for args in [
        &["create", "job", "j", "-n", "pb", "--image=busybox"][..],
        &[
            "create",
            "cronjob",
            "cj",
            "-n",
            "pb",
            "--image=busybox",
            "--schedule=*/5 * * * *",
        ],
        &["create", "role", "r", "-n", "pb", "--verb=get", "--resource=pods"],
        &[
            "create",
            "rolebinding",
            "rb",
            "-n",
            "pb",
            "--role=r",
            "--serviceaccount=pb:default",
        ],
        &["create", "quota", "q", "-n", "pb", "--hard=pods=2,requests.cpu=1"],
        &[
            "create",
            "pdb",
            "pdb",
            "-n",
            "pb",
            "--selector=app=web",
            "--min-available=0",
        ],
        &["create", "serviceaccount", "robot", "-n", "pb"],
    ] {
        s.ok(args);
    }
    assert_eq!(
        s.ok(&["get", "pdb", "pdb", "-n", "pb", "-o", "jsonpath={.spec.minAvailable}"]),
        "0"
    );
    assert_eq!(
        s.ok(&["get", "quota", "q", "-n", "pb", "-o", "jsonpath={.spec.hard.pods}"]),
        "2"
    );
    // describe reads with the typed clients: protobuf gets and lists (events too).
    let d = s.ok(&["describe", "deployment", "web", "-n", "pb"]);
    assert!(d.contains("Replicas:") && d.contains("nginx:1.27"), "{d}");
    let o = s.kubectl(&["auth", "can-i", "create", "deployments", "-v=8"]);
    assert!(o.ok && o.stdout.trim() == "yes", "{}{}", o.stdout, o.stderr);
    assert!(
        response_content_types(&o.stderr).iter().any(|t| t == PB),
        "{}",
        o.stderr
    );
    // Errors are protobuf Status objects, which kubectl prints as usual.
    let e = s.fails(&["create", "namespace", "pb"]);
    assert!(e.contains("namespaces \"pb\" already exists"), "{e}");

    // Straight to the server with Accept: protobuf.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let client = kube_client(&s.kubeconfig).await;
        let send = |method: &str, path: &str, content_type: Option<&str>, body: Vec<u8>| {
            let client = client.clone();
            let req = kube::core::Request::new(path.to_string());
            let mut req = match method {
                "POST" => req.create(&Default::default(), body).expect("request"),
                "WATCH" => req
                    .watch(&kube::api::WatchParams::default().timeout(1), "0")
                    .expect("request"),
                _ => req.list(&Default::default()).expect("request"),
            };
            if let Some(ct) = content_type {
                req.headers_mut().insert("content-type", ct.parse().expect("header"));
            }
            req.headers_mut()
                .insert("accept", format!("{PB}, application/json").parse().expect("header"));
            async move {
                let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
                let status = resp.status().as_u16();
                let ct = resp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let body = resp.into_body().collect_bytes().await.expect("body").to_vec();
                (status, ct, body)
            }
        };
        let decode = |body: &[u8]| -> serde_json::Value {
            let json = rudder_apiserver::protobuf::request_to_json(body, "Object").expect("protobuf body");
            serde_json::from_slice(&json).expect("json")
        };
        let (code, ct, body) = send("GET", "/api/v1/namespaces/pb/configmaps", None, vec![]).await;
        assert_eq!((code, ct.as_str()), (200, PB));
        assert!(body.starts_with(b"k8s\0"));
        let list = decode(&body);
        assert_eq!(list["kind"], "ConfigMapList", "{list}");
        assert!(list["metadata"]["resourceVersion"].as_str().is_some_and(|v| !v.is_empty()), "{list}");
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|i| i["metadata"]["name"].as_str())
            .collect();
        assert!(names.contains(&"cm"), "{list}");
        let (code, ct, body) = send("GET", "/api/v1/namespaces/pb/configmaps/nope", None, vec![]).await;
        assert_eq!((code, ct.as_str()), (404, PB));
        let status = decode(&body);
        assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("NotFound")));
        assert_eq!(status["message"], "configmaps \"nope\" not found");
        // Tables stay JSON.
        let table = kube::core::Request::new("/api/v1/namespaces/pb/configmaps".to_string());
        let mut req = table.list(&Default::default()).expect("request");
        req.headers_mut().insert(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json".parse().expect("header"),
        );
        let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
        assert_eq!(resp.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
        // Watch: length-prefixed WatchEvent frames.
        let (code, ct, body) = send("WATCH", "/api/v1/namespaces/pb/configmaps", None, vec![]).await;
        assert_eq!((code, ct.as_str()), (200, "application/vnd.kubernetes.protobuf;stream=watch"));
        let mut rest = &body[..];
        let mut added = Vec::new();
        while rest.len() >= 4 {
            let len = u32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let frame = &rest[4..4 + len];
            rest = &rest[4 + len..];
            // WatchEvent: type (1), object (2: RawExtension, its raw (1) the enveloped object).
            let (ty, object) = watch_event(frame);
            added.push((ty, decode(&object)["metadata"]["name"].as_str().unwrap_or_default().to_string()));
        }
        assert!(added.contains(&("ADDED".to_string(), "cm".to_string())), "{added:?}");
        // Malformed protobuf: upstream's 400; custom resources take no protobuf at all (415).
        let (code, _, body) = send("POST", "/api/v1/namespaces/pb/configmaps", Some(PB), b"garbage".to_vec()).await;
        assert_eq!(code, 400);
        let status = decode(&body);
        assert!(
            status["message"].as_str().is_some_and(|m| m.starts_with(
                "the object provided is unrecognized (must be of type ConfigMap): provided data does not appear to be a protobuf message"
            )),
            "{status}"
        );
        let mut truncated = b"k8s\0".to_vec();
        truncated.extend([0x0a, 0x0f, 0x0a, 0x02, b'v', b'1', 0x12, 0x09]);
        truncated.extend(b"ConfigMap");
        truncated.extend([0x12, 0x03, 0x0a, 0x09, 0x01]);
        let (code, _, body) = send("POST", "/api/v1/namespaces/pb/configmaps", Some(PB), truncated).await;
        assert_eq!(code, 400);
        let msg = decode(&body)["message"].as_str().unwrap_or_default().to_string();
        assert!(msg.starts_with("ConfigMap in version \"v1\" cannot be handled as a ConfigMap"), "{msg}");
    });
    let crd = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: pbs.example.com\n\
        spec:\n  group: example.com\n  scope: Namespaced\n  names: {plural: pbs, singular: pb, kind: Pb}\n  versions:\n  \
        - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema: {type: object, \
        x-kubernetes-preserve-unknown-fields: true}\n";
    let o = s.kubectl_in(&["apply", "-f", "-"], crd);
    assert!(o.ok, "{}", o.stderr);
    eventually("the CRD is served", || s.kubectl(&["get", "pbs", "-A"]).ok);
    rt.block_on(async {
        let client = kube_client(&s.kubeconfig).await;
        let mut req = kube::core::Request::new("/apis/example.com/v1/namespaces/pb/pbs".to_string())
            .create(&Default::default(), b"k8s\0".to_vec())
            .expect("request");
        req.headers_mut()
            .insert("content-type", PB.parse().expect("header"));
        let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
        assert_eq!(resp.status().as_u16(), 415);
        let body = resp.into_body().collect_bytes().await.expect("body");
        let status: serde_json::Value = serde_json::from_slice(&body).expect("JSON status");
        assert_eq!(
            status["message"],
            "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml"
        );
        // Custom resources have no protobuf form: protobuf alone is a 406, client-go's
        // `protobuf, json` is answered in JSON.
        for (accept, want) in [(PB.to_string(), 406), (format!("{PB}, application/json"), 200)] {
            let mut req = kube::core::Request::new("/apis/example.com/v1/namespaces/pb/pbs".to_string())
                .list(&Default::default())
                .expect("request");
            req.headers_mut().insert("accept", accept.parse().expect("header"));
            let resp = client.send(req.map(kube::client::Body::from)).await.expect("send");
            assert_eq!(resp.status().as_u16(), want, "{accept}");
            let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
            let body = resp.into_body().collect_bytes().await.expect("body").to_vec();
            if want == 200 {
                assert_eq!(ct.as_deref(), Some("application/json"));
                continue;
            }
            // The Status is negotiated without the endpoint's restriction, so it may be protobuf.
            let json = if ct.as_deref() == Some(PB) {
                rudder_apiserver::protobuf::request_to_json(&body, "Object").expect("protobuf status")
            } else {
                body
            };
            let status: serde_json::Value = serde_json::from_slice(&json).expect("json status");
            assert_eq!((status["code"].as_i64(), status["reason"].as_str()), (Some(406), Some("NotAcceptable")));
            assert_eq!(
                status["message"],
                "only the following media types are accepted: application/json, application/yaml, application/vnd.kubernetes.protobuf"
            );
        }
    });
    assert_eq!(s.ok(&["get", "--raw", "/readyz"]).trim(), "ok");
}

/// The type and the enveloped object of a protobuf WatchEvent.
fn watch_event(mut b: &[u8]) -> (String, Vec<u8>) {
    fn varint(b: &mut &[u8]) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = b[0];
            *b = &b[1..];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                break;
            }
        }
        v
    }
    fn field<'a>(b: &mut &'a [u8]) -> (u64, &'a [u8]) {
        let key = varint(b);
        let len = varint(b) as usize;
        let (v, rest) = b.split_at(len);
        *b = rest;
        (key >> 3, v)
    }
    let (mut ty, mut object) = (String::new(), Vec::new());
    while !b.is_empty() {
        match field(&mut b) {
            (1, v) => ty = String::from_utf8_lossy(v).into_owned(),
            (2, mut raw) => {
                while !raw.is_empty() {
                    if let (1, o) = field(&mut raw) {
                        object = o.to_vec();
                    }
                }
            }
            _ => {}
        }
    }
    (ty, object)
}
