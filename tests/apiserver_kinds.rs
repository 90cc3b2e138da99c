//! The built-in kinds beyond pods and workloads (CronJob, RBAC, quota, PDB, storage, endpoints, limit ranges,
//! controller revisions) driven by the real kubectl (the bundled 1.32 binary): the typed `kubectl create`
//! subcommands, which send protobuf bodies, `apply -f` of manifests, Table columns, `get all`,
//! `api-resources` and the upstream 422s for missing required fields.
//!
//! Run: `cargo test --release --test apiserver_kinds`. Knob: `RUDDER_KUBECTL` (kubectl binary).

mod common;
use common::free_port;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KUBECTL_DEFAULT: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

fn kubectl_bin() -> String {
    std::env::var("RUDDER_KUBECTL").unwrap_or_else(|_| KUBECTL_DEFAULT.into())
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

impl Server {
    fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_rudder"))
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--secure-port", &port.to_string(), "--bind-address", "127.0.0.1"])
            .args(["--store-client-url", &format!("http://127.0.0.1:{}", free_port())])
            .args(["--store-peer-url", &format!("http://127.0.0.1:{}", free_port())])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        let kubeconfig = dir.path().join("data/kubeconfig.yaml");
        let mut s = Server { child, dir, kubeconfig };
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
        let mut c = Command::new(kubectl_bin());
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

    /// Runs kubectl with `stdin` and asserts failure; returns stderr.
    fn fails_in(&self, args: &[&str], stdin: &str) -> String {
        let o = self.kubectl_in(args, stdin);
        assert!(!o.ok, "kubectl {args:?} unexpectedly succeeded: {}", o.stdout);
        o.stderr
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl -o json")
    }
}

/// The header line of `kubectl get`, columns split on runs of spaces.
fn header(out: &str) -> Vec<String> {
    out.lines()
        .next()
        .unwrap_or_default()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_string)
        .collect()
}

fn assert_header(s: &Server, args: &[&str], want: &[&str]) -> String {
    let out = s.ok(args);
    assert_eq!(header(&out), want, "kubectl {args:?}:\n{out}");
    out
}

const MANIFESTS: &str = r#"
apiVersion: v1
kind: PersistentVolume
metadata: {name: pv1}
spec:
  capacity: {storage: 1Gi}
  accessModes: [ReadWriteOnce]
  hostPath: {path: /tmp/pv1}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: claim1}
spec:
  accessModes: [ReadWriteOnce]
  resources: {requests: {storage: 1Gi}}
---
apiVersion: v1
kind: Endpoints
metadata: {name: ep1}
subsets:
- addresses: [{ip: 10.0.0.1}, {ip: 10.0.0.2}]
  ports: [{port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: es1}
addressType: IPv4
ports: [{port: 80}]
endpoints:
- addresses: [10.0.0.1]
---
apiVersion: v1
kind: LimitRange
metadata: {name: lr1}
spec:
  limits:
  - type: Container
    max: {cpu: "1"}
---
apiVersion: apps/v1
kind: ControllerRevision
metadata:
  name: cr1
  ownerReferences:
  - {apiVersion: apps/v1, kind: DaemonSet, name: ds, uid: 0b0e2c4e-1111-4b5a-9c1e-000000000001, controller: true}
data: {spec: {}}
revision: 1
"#;

#[test]
fn kubectl_builtin_kinds() {
    let s = Server::start();

    // Typed `create` subcommands: every one of these sends a protobuf body.
    let creates: &[(&[&str], &str)] = &[
        (
            &["create", "cronjob", "cj", "--image=busybox", "--schedule=*/1 * * * *"],
            "cronjob.batch/cj created",
        ),
        (&["create", "job", "j", "--image=busybox"], "job.batch/j created"),
        (
            &["create", "role", "r", "--verb=get", "--resource=pods"],
            "role.rbac.authorization.k8s.io/r created",
        ),
        (
            &[
                "create",
                "clusterrole",
                "cr",
                "--verb=get,list",
                "--resource=pods,deployments.apps",
            ],
            "clusterrole.rbac.authorization.k8s.io/cr created",
        ),
        (
            &[
                "create",
                "rolebinding",
                "rb",
                "--role=r",
                "--user=alice",
                "--group=devs",
                "--serviceaccount=default:sa",
            ],
            "rolebinding.rbac.authorization.k8s.io/rb created",
        ),
        (
            &[
                "create",
                "clusterrolebinding",
                "crb",
                "--clusterrole=cr",
                "--user=alice",
            ],
            "clusterrolebinding.rbac.authorization.k8s.io/crb created",
        ),
        (
            &["create", "quota", "q", "--hard=pods=2,limits.cpu=1"],
            "resourcequota/q created",
        ),
        (
            &["create", "pdb", "p", "--selector=app=x", "--min-available=1"],
            "poddisruptionbudget.policy/p created",
        ),
    ];
    for (args, want) in creates {
        let out = s.ok(args);
        assert!(out.contains(want), "kubectl {args:?}: {out}");
    }

    // What the protobuf bodies carried, with upstream's defaults.
    let cj = s.json(&["get", "cronjob", "cj"]);
    assert_eq!(cj["spec"]["schedule"], "*/1 * * * *");
    assert_eq!(cj["spec"]["concurrencyPolicy"], "Allow");
    assert_eq!(cj["spec"]["suspend"], false);
    assert_eq!(cj["spec"]["successfulJobsHistoryLimit"], 3);
    assert_eq!(cj["spec"]["failedJobsHistoryLimit"], 1);
    let pod = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "OnFailure");
    assert_eq!(pod["containers"][0]["image"], "busybox");
    assert_eq!(pod["dnsPolicy"], "ClusterFirst");
    let role = s.json(&["get", "role", "r"]);
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get"]));
    assert_eq!(role["rules"][0]["resources"], serde_json::json!(["pods"]));
    assert_eq!(role["rules"][0]["apiGroups"], serde_json::json!([""]));
    let rb = s.json(&["get", "rolebinding", "rb"]);
    assert_eq!(rb["roleRef"]["kind"], "Role");
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    // roleRef is immutable.
    let o = s.kubectl(&[
        "patch",
        "rolebinding",
        "rb",
        "--type=merge",
        "-p",
        r#"{"roleRef":{"name":"other"}}"#,
    ]);
    assert!(!o.ok && o.stderr.contains("cannot change roleRef"), "{}", o.stderr);
    assert_eq!(s.json(&["get", "rolebinding", "rb"])["roleRef"]["name"], "r");
    let q = s.json(&["get", "quota", "q"]);
    assert_eq!(q["spec"]["hard"]["pods"], "2");
    let pdb = s.json(&["get", "pdb", "p"]);
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(pdb["spec"]["selector"]["matchLabels"]["app"], "x");
    assert_eq!(pdb["status"]["expectedPods"], 0);

    // Manifests of the kinds kubectl has no `create` subcommand for.
    let o = s.kubectl_in(&["apply", "-f", "-"], MANIFESTS);
    assert!(o.ok, "apply: {}{}", o.stdout, o.stderr);
    for want in [
        "persistentvolume/pv1 created",
        "persistentvolumeclaim/claim1 created",
        "endpoints/ep1 created",
        "endpointslice.discovery.k8s.io/es1 created",
        "limitrange/lr1 created",
        "controllerrevision.apps/cr1 created",
    ] {
        assert!(o.stdout.contains(want), "{}", o.stdout);
    }
    let pv = s.json(&["get", "pv", "pv1"]);
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");
    assert_eq!(pv["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pv["status"]["phase"], "Pending");
    let pvc = s.json(&["get", "pvc", "claim1"]);
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");
    let lr = s.json(&["get", "limits", "lr1"]);
    assert_eq!(lr["spec"]["limits"][0]["default"]["cpu"], "1");
    assert_eq!(lr["spec"]["limits"][0]["defaultRequest"]["cpu"], "1");
    let ep = s.json(&["get", "ep", "ep1"]);
    assert_eq!(ep["subsets"][0]["ports"][0]["protocol"], "TCP");

    // Table columns as upstream prints them.
    let out = assert_header(
        &s,
        &["get", "cronjobs", "-o", "wide"],
        &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "SUSPEND",
            "ACTIVE",
            "LAST SCHEDULE",
            "AGE",
            "CONTAINERS",
            "IMAGES",
            "SELECTOR",
        ],
    );
    assert!(out.contains("*/1 * * * *") && out.contains("False"), "{out}");
    assert_header(
        &s,
        &["get", "jobs"],
        &["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"],
    );
    let out = assert_header(&s, &["get", "roles"], &["NAME", "CREATED AT"]);
    assert!(out.lines().any(|l| l.starts_with("r ")), "{out}");
    assert_header(&s, &["get", "clusterroles"], &["NAME", "CREATED AT"]);
    let out = assert_header(
        &s,
        &["get", "rolebindings", "-o", "wide"],
        &["NAME", "ROLE", "AGE", "USERS", "GROUPS", "SERVICEACCOUNTS"],
    );
    assert!(
        out.contains("Role/r") && out.contains("alice") && out.contains("default/sa"),
        "{out}"
    );
    let out = assert_header(&s, &["get", "clusterrolebindings"], &["NAME", "ROLE", "AGE"]);
    assert!(out.contains("ClusterRole/cr"), "{out}");
    let out = assert_header(&s, &["get", "quota"], &["NAME", "AGE", "REQUEST", "LIMIT"]);
    assert!(out.contains("pods: ") && out.contains("limits.cpu: "), "{out}");
    let out = assert_header(
        &s,
        &["get", "pdb"],
        &["NAME", "MIN AVAILABLE", "MAX UNAVAILABLE", "ALLOWED DISRUPTIONS", "AGE"],
    );
    assert!(out.contains("N/A"), "{out}");
    let out = assert_header(
        &s,
        &["get", "pv", "-o", "wide"],
        &[
            "NAME",
            "CAPACITY",
            "ACCESS MODES",
            "RECLAIM POLICY",
            "STATUS",
            "CLAIM",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "REASON",
            "AGE",
            "VOLUMEMODE",
        ],
    );
    assert!(
        out.contains("1Gi") && out.contains("RWO") && out.contains("Retain"),
        "{out}"
    );
    assert_header(
        &s,
        &["get", "pvc"],
        &[
            "NAME",
            "STATUS",
            "VOLUME",
            "CAPACITY",
            "ACCESS MODES",
            "STORAGECLASS",
            "VOLUMEATTRIBUTESCLASS",
            "AGE",
        ],
    );
    let out = assert_header(&s, &["get", "endpoints", "ep1"], &["NAME", "ENDPOINTS", "AGE"]);
    assert!(out.contains("10.0.0.1:80,10.0.0.2:80"), "{out}");
    let out = assert_header(
        &s,
        &["get", "endpointslices"],
        &["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"],
    );
    assert!(out.contains("IPv4") && out.contains("10.0.0.1"), "{out}");
    assert_header(&s, &["get", "limitranges"], &["NAME", "CREATED AT"]);
    let out = assert_header(
        &s,
        &["get", "controllerrevisions"],
        &["NAME", "CONTROLLER", "REVISION", "AGE"],
    );
    assert!(out.contains("daemonset.apps/ds"), "{out}");

    // `get all` takes cronjobs from the "all" category, in upstream's order.
    let all = s.ok(&["get", "all"]);
    let cron = all.find("cronjob.batch/cj").expect("cronjob in get all");
    let job = all.find("job.batch/j").expect("job in get all");
    assert!(cron < job, "{all}");

    // Discovery: kinds, short names and scope.
    let ar = s.ok(&["api-resources"]);
    for (name, short, gv, namespaced, kind) in [
        ("endpoints", "ep", "v1", "true", "Endpoints"),
        ("limitranges", "limits", "v1", "true", "LimitRange"),
        ("resourcequotas", "quota", "v1", "true", "ResourceQuota"),
        ("persistentvolumes", "pv", "v1", "false", "PersistentVolume"),
        ("persistentvolumeclaims", "pvc", "v1", "true", "PersistentVolumeClaim"),
        ("controllerrevisions", "", "apps/v1", "true", "ControllerRevision"),
        ("cronjobs", "cj", "batch/v1", "true", "CronJob"),
        ("endpointslices", "", "discovery.k8s.io/v1", "true", "EndpointSlice"),
        (
            "poddisruptionbudgets",
            "pdb",
            "policy/v1",
            "true",
            "PodDisruptionBudget",
        ),
        ("roles", "", "rbac.authorization.k8s.io/v1", "true", "Role"),
        (
            "rolebindings",
            "",
            "rbac.authorization.k8s.io/v1",
            "true",
            "RoleBinding",
        ),
        (
            "clusterroles",
            "",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRole",
        ),
        (
            "clusterrolebindings",
            "",
            "rbac.authorization.k8s.io/v1",
            "false",
            "ClusterRoleBinding",
        ),
    ] {
        let line = ar
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("{name} missing from api-resources:\n{ar}"));
        let want: Vec<&str> = [name, short, gv, namespaced, kind]
            .into_iter()
            .filter(|f| !f.is_empty())
            .collect();
        assert_eq!(line.split_whitespace().collect::<Vec<_>>(), want, "{line}");
    }
    let cats = s.ok(&["api-resources", "--categories=all", "-o", "name"]);
    assert!(cats.lines().any(|l| l == "cronjobs.batch"), "{cats}");
    // The legacy discovery documents list them too (kubectl auth can-i and drain read these).
    let rbac = s.ok(&["get", "--raw", "/apis/rbac.authorization.k8s.io/v1"]);
    assert!(rbac.contains("\"clusterrolebindings\""), "{rbac}");
    let policy = s.ok(&["get", "--raw", "/apis/policy/v1"]);
    assert!(policy.contains("\"poddisruptionbudgets/status\""), "{policy}");
    let groups = s.ok(&["get", "--raw", "/apis"]);
    assert!(groups.contains("\"discovery.k8s.io\""), "{groups}");

    // Missing required fields: upstream's 422 with field causes, and nothing stored.
    let no_schedule = r#"
apiVersion: batch/v1
kind: CronJob
metadata: {name: nosched}
spec:
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: OnFailure
          containers: [{name: c, image: busybox}]
"#;
    let e = s.fails_in(&["apply", "-f", "-"], no_schedule);
    assert!(
        e.contains("The CronJob \"nosched\" is invalid: spec.schedule: Required value"),
        "{e}"
    );
    let no_role_ref = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: norole}
subjects: [{kind: User, name: bob}]
"#;
    let e = s.fails_in(&["create", "-f", "-"], no_role_ref);
    assert!(
        e.contains("The RoleBinding \"norole\" is invalid")
            && e.contains("roleRef.kind: Unsupported value: \"\": supported values: \"Role\", \"ClusterRole\"")
            && e.contains("roleRef.name: Required value"),
        "{e}"
    );
    let empty_pv = "apiVersion: v1\nkind: PersistentVolume\nmetadata: {name: pvbad}\nspec: {}\n";
    let e = s.fails_in(&["create", "-f", "-"], empty_pv);
    assert!(
        e.contains("spec: Required value: must specify a volume type")
            && e.contains("spec.accessModes: Required value")
            && e.contains("spec.capacity: Required value"),
        "{e}"
    );
    let no_verbs = "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {name: noverbs}\nrules: [{apiGroups: [\"\"], resources: [pods]}]\n";
    let e = s.fails_in(&["create", "-f", "-"], no_verbs);
    assert!(
        e.contains("rules[0].verbs: Required value: verbs must contain at least one value"),
        "{e}"
    );
    let o = s.kubectl(&["create", "cronjob", "badsched", "--image=busybox", "--schedule=bad"]);
    assert!(
        !o.ok && o.stderr.contains("expected exactly 5 fields, found 1: [bad]"),
        "{}",
        o.stderr
    );
    for (kind, name) in [
        ("cronjob", "nosched"),
        ("cronjob", "badsched"),
        ("rolebinding", "norole"),
        ("pv", "pvbad"),
        ("role", "noverbs"),
    ] {
        let o = s.kubectl(&["get", kind, name]);
        assert!(
            !o.ok && o.stderr.contains("NotFound"),
            "{kind}/{name} was stored: {}",
            o.stdout
        );
    }
}
