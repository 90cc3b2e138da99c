//! The OpenAPI v3 documents of `rudder server` as the real kubectl uses them: `kubectl explain` (1.32, and
//! the bundled 1.31 and 1.33 when present) prints upstream's descriptions, and `--validate=strict` is
//! delegated to the server (`fieldValidation=Strict` on the request) instead of failing in kubectl.
//!
//! Run: `cargo test --release --test apiserver_openapi`. Knob: `RUDDER_KUBECTL` (the kubectl 1.32 binary).

mod common;
use common::free_port;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const KUBECTL_DIR: &str = "/usr/lib/google-cloud-sdk/bin";

fn kubectl_bin() -> String {
    std::env::var("RUDDER_KUBECTL").unwrap_or_else(|_| format!("{KUBECTL_DIR}/kubectl.1.32"))
}

/// Whitespace collapsed: kubectl wraps descriptions at 80 columns.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
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
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_rudder"))
            .arg("server")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--secure-port", &port.to_string(), "--bind-address", "127.0.0.1"])
            .args(["--store-client-url", &format!("http://127.0.0.1:{}", free_port())])
            .args(["--store-peer-url", &format!("http://127.0.0.1:{}", free_port())])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        let kubeconfig = dir.path().join("data/kubeconfig.yaml");
        let mut s = Server { child, dir, kubeconfig };
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if s.kubeconfig.exists() {
                let o = s.run(&kubectl_bin(), &["get", "--raw", "/readyz"], None);
                if o.ok && o.stdout.trim() == "ok" {
                    return s;
                }
            }
            common::assert_running(&mut s.child, &s.dir.path().join("server.log"));
            assert!(Instant::now() < deadline, "server not ready in time");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `bin` with a fresh discovery/OpenAPI cache per binary, so each version fetches the documents.
    fn run(&self, bin: &str, args: &[&str], stdin: Option<&str>) -> Out {
        let cache = Path::new(bin)
            .file_name()
            .map_or_else(|| "cache".into(), |n| n.to_owned());
        let mut child = Command::new(bin)
            .env("HOME", self.dir.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("cache").join(cache))
            .args(["--request-timeout", "20s"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        let mut input = child.stdin.take().expect("stdin");
        // kubectl may exit before reading everything; its output tells why.
        let _ = input.write_all(stdin.unwrap_or_default().as_bytes());
        drop(input);
        child.wait_with_output().expect("kubectl output").into()
    }

    fn ok_with(&self, bin: &str, args: &[&str]) -> String {
        let o = self.run(bin, args, None);
        assert!(o.ok, "{bin} {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }
}

fn explain_suite(s: &Server, bin: &str) {
    let pods = flat(&s.ok_with(bin, &["explain", "pods"]));
    assert!(pods.contains("KIND: Pod") && pods.contains("VERSION: v1"), "{pods}");
    assert!(
        pods.contains("Pod is a collection of containers that can run on a host."),
        "{pods}"
    );
    assert!(
        pods.contains("spec <PodSpec>") && pods.contains("Specification of the desired behavior of the pod."),
        "{pods}"
    );
    assert!(pods.contains("metadata <ObjectMeta>"), "{pods}");

    let containers = flat(&s.ok_with(bin, &["explain", "pods.spec.containers"]));
    assert!(containers.contains("FIELD: containers <[]Container>"), "{containers}");
    assert!(
        containers.contains("List of containers belonging to the pod."),
        "{containers}"
    );
    assert!(
        containers.contains("image <string>") && containers.contains("Container image name."),
        "{containers}"
    );
    assert!(containers.contains("name <string> -required-"), "{containers}");

    let strategy = flat(&s.ok_with(bin, &["explain", "deployments.spec.strategy", "--recursive"]));
    assert!(
        strategy.contains("GROUP: apps") && strategy.contains("KIND: Deployment"),
        "{strategy}"
    );
    assert!(strategy.contains("FIELD: strategy <DeploymentStrategy>"), "{strategy}");
    assert!(
        strategy.contains("The deployment strategy to use to replace existing pods with new ones."),
        "{strategy}"
    );
    for f in [
        "rollingUpdate <RollingUpdateDeployment>",
        "maxSurge <IntOrString>",
        "maxUnavailable <IntOrString>",
        "type <string>",
    ] {
        assert!(strategy.contains(f), "{f} missing: {strategy}");
    }

    // A namespaced kind of a non-core group.
    let lease = flat(&s.ok_with(bin, &["explain", "leases.spec"]));
    assert!(
        lease.contains("GROUP: coordination.k8s.io") && lease.contains("KIND: Lease"),
        "{lease}"
    );
    assert!(lease.contains("holderIdentity <string>"), "{lease}");
    assert!(
        lease.contains("holderIdentity contains the identity of the holder of a current lease."),
        "{lease}"
    );
    let job = flat(&s.ok_with(bin, &["explain", "jobs.spec.backoffLimit"]));
    assert!(
        job.contains("Specifies the number of retries before marking this job failed."),
        "{job}"
    );

    // Cluster-scoped kinds: the core ones, and every one of another group the server serves.
    let ns = flat(&s.ok_with(bin, &["explain", "namespaces"]));
    assert!(ns.contains("Namespace provides a scope for Names."), "{ns}");
    let node = flat(&s.ok_with(bin, &["explain", "nodes.spec.taints"]));
    assert!(node.contains("If specified, the node's taints."), "{node}");
    let cluster = s.ok_with(bin, &["api-resources", "--namespaced=false", "-o", "name"]);
    for r in cluster.lines().filter(|r| r.contains('.')) {
        let out = flat(&s.ok_with(bin, &["explain", r]));
        assert!(out.contains("DESCRIPTION:") && out.contains("FIELDS:"), "{r}: {out}");
    }
}

#[test]
fn kubectl_explain_and_strict_validation() {
    let s = Server::start();
    let kubectl = kubectl_bin();

    // The index and one document, as served.
    let root: serde_json::Value =
        serde_json::from_str(&s.ok_with(&kubectl, &["get", "--raw", "/openapi/v3"])).expect("root json");
    let url = root["paths"]["api/v1"]["serverRelativeURL"].as_str().expect("url");
    assert!(url.starts_with("/openapi/v3/api/v1?hash="), "{url}");
    let doc: serde_json::Value = serde_json::from_str(&s.ok_with(&kubectl, &["get", "--raw", url])).expect("doc json");
    let pod = &doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"];
    assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod", "{pod}");
    let containers = &doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");

    explain_suite(&s, &kubectl);
    for other in ["kubectl.1.31", "kubectl.1.33"] {
        let bin = format!("{KUBECTL_DIR}/{other}");
        if Path::new(&bin).exists() {
            explain_suite(&s, &bin);
        }
    }

    // An unknown field: kubectl does not reject it itself but sends the object with fieldValidation=Strict,
    // so the server decides (it rejects it with a strict decoding error, or accepts it).
    let manifest = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: NAME\nspec:\n  containers:\n  - name: c\n    image: nginx\n    imagee: typo\n";
    for (verb, name) in [("apply", "strict-apply"), ("create", "strict-create")] {
        let o = s.run(
            &kubectl,
            &[verb, "--validate=strict", "-v=6", "-f", "-"],
            Some(&manifest.replace("NAME", name)),
        );
        let all = format!("{}{}", o.stdout, o.stderr);
        assert!(
            !all.contains("error validating data"),
            "{verb}: client-side validation: {all}"
        );
        assert!(
            all.lines()
                .any(|l| l.contains("POST https://") && l.contains("fieldValidation=Strict")),
            "{verb}: no strict POST: {all}"
        );
        assert!(!o.ok, "{verb}: an unknown field passed Strict validation: {all}");
        assert!(
            all.contains("strict decoding error: unknown field \\\"spec.containers[0].imagee\\\"")
                || all.contains("strict decoding error: unknown field \"spec.containers[0].imagee\""),
            "{verb}: {all}"
        );
        let gone = s.run(&kubectl, &["get", "pod", name], None);
        assert!(!gone.ok, "{verb}: a rejected object was stored");
    }
    // Warn (kubectl --validate=warn): stored, with the warning printed; Ignore: stored silently.
    let o = s.run(
        &kubectl,
        &["create", "--validate=warn", "-f", "-"],
        Some(&manifest.replace("NAME", "warned")),
    );
    assert!(o.ok, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("Warning: unknown field \"spec.containers[0].imagee\""),
        "{}",
        o.stderr
    );
    let o = s.run(
        &kubectl,
        &["create", "--validate=false", "-f", "-"],
        Some(&manifest.replace("NAME", "ignored")),
    );
    assert!(o.ok && !o.stderr.contains("Warning"), "{}", o.stderr);
    // A patch that adds an unknown field is refused under Strict too.
    let o = s.run(
        &kubectl,
        &[
            "patch",
            "pod",
            "warned",
            "--type=merge",
            "-p",
            r#"{"spec":{"bogus":1}}"#,
        ],
        None,
    );
    assert!(!o.ok || o.stderr.contains("Warning"), "{}{}", o.stdout, o.stderr);
}
