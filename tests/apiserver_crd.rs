//! CustomResourceDefinitions and custom resources on `rudder server`, driven by the real kubectl (the
//! bundled 1.32 binary, called directly), with a fresh data dir, kubeconfig and discovery cache per server.
//!
//! Run: `CARGO_TARGET_DIR=/var/tmp/rudder-target cargo test --release --test apiserver_crd`.
//! Knob: `RUDDER_KUBECTL` (kubectl binary).

mod common;
use common::free_port;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

const KUBECTL_DEFAULT: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.32";

fn kubectl_bin() -> String {
    std::env::var("RUDDER_KUBECTL").unwrap_or_else(|_| KUBECTL_DEFAULT.into())
}

struct Server {
    child: Child,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    /// The etcd v3 endpoint the server uses (its embedded store's, unless given one).
    store_url: String,
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
        Self::start_on(None)
    }

    /// With `etcd`: an API server on that store instead of its own embedded one.
    fn start_on(etcd: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_rudder"));
        cmd.arg("server").arg("--data-dir").arg(dir.path().join("data")).args([
            "--secure-port",
            &free_port().to_string(),
            "--bind-address",
            "127.0.0.1",
        ]);
        let store_url = format!("http://127.0.0.1:{}", free_port());
        match etcd {
            Some(url) => {
                cmd.args(["--etcd-servers", url]);
            }
            None => {
                cmd.args(["--store-client-url", &store_url]);
                cmd.args(["--store-peer-url", &format!("http://127.0.0.1:{}", free_port())]);
            }
        }
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = cmd
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        let kubeconfig = dir.path().join("data/kubeconfig.yaml");
        let store_url = etcd.map_or(store_url, str::to_string);
        let mut s = Server {
            child,
            dir,
            kubeconfig,
            store_url,
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

    /// kubectl with this server's kubeconfig and a discovery cache in `cache`.
    fn command_cached(&self, cache: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(kubectl_bin());
        c.env("HOME", self.dir.path())
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .args(["--request-timeout", "20s"])
            .args(args);
        c
    }

    fn command(&self, args: &[&str]) -> Command {
        self.command_cached(&self.dir.path().join("cache"), args)
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
        let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
        child.wait_with_output().unwrap().into()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(o.ok, "kubectl {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn ok_in(&self, args: &[&str], stdin: &str) -> String {
        let o = self.kubectl_in(args, stdin);
        assert!(o.ok, "kubectl {args:?} failed: {}{}", o.stdout, o.stderr);
        o.stdout
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.kubectl(args);
        assert!(!o.ok, "kubectl {args:?} unexpectedly succeeded: {}", o.stdout);
        o.stderr
    }

    fn fails_in(&self, args: &[&str], stdin: &str) -> String {
        let o = self.kubectl_in(args, stdin);
        assert!(!o.ok, "kubectl {args:?} unexpectedly succeeded: {}", o.stdout);
        o.stderr
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("kubectl printed JSON")
    }

    /// Polls `args` until stdout satisfies `pred` (for work the server does in the background).
    fn eventually(&self, args: &[&str], pred: impl Fn(&Out) -> bool) -> Out {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let o = self.kubectl(args);
            if pred(&o) {
                return o;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl {args:?} never got there: {}{}",
                o.stdout,
                o.stderr
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

const WIDGETS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
    categories: [all]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.selector
    additionalPrinterColumns:
    - name: Size
      type: string
      jsonPath: .spec.size
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size:
                type: string
                enum: [small, large]
              replicas:
                type: integer
                minimum: 0
                default: 1
              config:
                type: object
                x-kubernetes-preserve-unknown-fields: true
          status:
            type: object
            properties:
              replicas:
                type: integer
              selector:
                type: string
"#;

const W1: &str = r#"
apiVersion: example.com/v1
kind: Widget
metadata:
  name: w1
  labels: {app: demo}
spec:
  size: small
  replicas: 2
  bogus: dropped
  config: {anything: [1, {deep: true}]}
"#;

/// `kubectl patch KIND NAME --type merge -p PATCH`.
fn merge_patch<'a>(kind: &'a str, name: &'a str, patch: &'a str) -> [&'a str; 7] {
    ["patch", kind, name, "--type", "merge", "-p", patch]
}

fn header(table: &str) -> Vec<&str> {
    table.lines().next().unwrap_or_default().split_whitespace().collect()
}

fn row<'a>(table: &'a str, name: &str) -> Vec<&'a str> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default()
}

#[test]
fn custom_resources_with_kubectl() {
    crd_suite(&Server::start());
}

/// The same suite with the API server on Debian's etcd 3.4.23 instead of its embedded store.
#[test]
fn custom_resources_on_debian_etcd() {
    let etcd = Etcd::start();
    crd_suite(&Server::start_on(Some(&etcd.url)));
}

/// Debian's etcd on private ports and a temporary data dir; killed on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let bin = std::env::var("RUDDER_E2E_ETCD").unwrap_or_else(|_| "/usr/bin/etcd".into());
        let dir = tempfile::tempdir().unwrap();
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let log = std::fs::File::create(dir.path().join("etcd.log")).unwrap();
        let child = Command::new(bin)
            .args(["--name", "crd", "--data-dir"])
            .arg(dir.path().join("etcd"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("crd={peer}")])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        Etcd { child, url, _dir: dir }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn crd_suite(s: &Server) {
    // The CRD: created, established by the server, and in discovery.
    let out = s.ok_in(&["apply", "-f", "-"], WIDGETS);
    assert!(
        out.contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"),
        "{out}"
    );
    let out = s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout",
        "20s",
    ]);
    assert!(out.contains("condition met"), "{out}");
    let crd = s.json(&["get", "crd", "widgets.example.com"]);
    assert_eq!(crd["status"]["acceptedNames"]["kind"], "Widget", "{crd}");
    assert_eq!(crd["status"]["acceptedNames"]["listKind"], "WidgetList");
    assert_eq!(crd["status"]["storedVersions"], serde_json::json!(["v1"]));
    let conds = crd["status"]["conditions"].as_array().expect("conditions");
    for ty in ["NamesAccepted", "Established"] {
        assert!(
            conds.iter().any(|c| c["type"] == ty && c["status"] == "True"),
            "{ty}: {crd}"
        );
    }
    let apis = s.ok(&["api-resources"]);
    let line = apis
        .lines()
        .find(|l| l.starts_with("widgets "))
        .unwrap_or_else(|| panic!("widgets not in api-resources: {apis}"));
    assert!(
        line.split_whitespace()
            .eq(["widgets", "wd", "example.com/v1", "true", "Widget"]),
        "{line}"
    );
    let crds = s.ok(&["api-resources", "--api-group", "apiextensions.k8s.io"]);
    assert!(
        crds.contains("customresourcedefinitions") && crds.contains("crd,crds"),
        "{crds}"
    );
    let scale = s.ok(&["get", "--raw", "/apis/example.com/v1"]);
    assert!(
        scale.contains("\"widgets/scale\"") && scale.contains("\"widgets/status\""),
        "{scale}"
    );

    // kubectl validates strictly by default: the server reports the unknown field.
    let e = s.fails_in(&["apply", "-f", "-"], W1);
    assert!(e.contains("strict decoding error: unknown field \"spec.bogus\""), "{e}");
    // Duplicate fields, which only a raw body can carry, as well.
    let dup = s.dir.path().join("dup.json");
    std::fs::write(
        &dup,
        r#"{"apiVersion":"example.com/v1","kind":"Widget","metadata":{"name":"dup"},"spec":{"size":"small","size":"large","nope":1}}"#,
    )
    .unwrap();
    let e = s.fails(&[
        "create",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets?fieldValidation=Strict",
        "-f",
        dup.to_str().unwrap(),
    ]);
    assert!(
        e.contains(r#"strict decoding error: duplicate field "spec.size", unknown field "spec.nope""#),
        "{e}"
    );
    // Without it the field is pruned, preserved-unknown fields stay, defaults apply.
    let out = s.ok_in(&["apply", "--validate=false", "-f", "-"], W1);
    assert!(out.contains("widget.example.com/w1 created"), "{out}");
    let w1 = s.json(&["get", "widget", "w1"]);
    assert_eq!(w1["spec"]["size"], "small", "{w1}");
    assert!(w1["spec"].get("bogus").is_none(), "not pruned: {w1}");
    assert_eq!(w1["spec"]["config"]["anything"][1]["deep"], true, "{w1}");
    assert_eq!(w1["metadata"]["generation"], 1);
    assert!(!w1["metadata"]["uid"].as_str().unwrap_or_default().is_empty());
    let yaml = s.ok(&["get", "wd", "w1", "-o", "yaml"]);
    assert!(
        !yaml.contains("bogus: dropped") && yaml.contains("kind: Widget"),
        "{yaml}"
    );
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w2}\nspec: {size: large}\n",
    );
    assert_eq!(s.ok(&["get", "wd", "w2", "-o", "jsonpath={.spec.replicas}"]), "1");

    // Table output with the printer columns, by plural, singular, short name and category.
    let t = s.ok(&["get", "widgets"]);
    assert_eq!(header(&t), ["NAME", "SIZE", "REPLICAS", "AGE"], "{t}");
    assert_eq!(row(&t, "w1")[..3], ["w1", "small", "2"], "{t}");
    assert_eq!(row(&t, "w2")[..3], ["w2", "large", "1"], "{t}");
    assert_eq!(
        s.ok(&["get", "wd", "-o", "name"]),
        "widget.example.com/w1\nwidget.example.com/w2\n"
    );
    let all = s.ok(&["get", "all"]);
    assert!(all.contains("widget.example.com/w1"), "{all}");

    // Schema violations: 422 with upstream's causes.
    let bad =
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {size: medium, replicas: \"three\"}\n";
    let e = s.fails_in(&["apply", "-f", "-"], bad);
    assert!(e.contains("The Widget \"bad\" is invalid"), "{e}");
    assert!(
        e.contains(
            "spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""
        ),
        "{e}"
    );
    assert!(
        e.contains("spec.size: Unsupported value: \"medium\": supported values: \"small\", \"large\""),
        "{e}"
    );
    let e = s.fails_in(
        &["create", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: bad}\nspec: {replicas: -1}\n",
    );
    assert!(e.contains("spec.size: Required value"), "{e}");
    assert!(
        e.contains("spec.replicas in body should be greater than or equal to 0"),
        "{e}"
    );
    assert!(s.fails(&["get", "wd", "bad"]).contains("NotFound"));

    // Updates: apply (a merge patch, as kubectl does for kinds without Go types), patch, label.
    let out = s.ok_in(
        &["apply", "--validate=false", "-f", "-"],
        &W1.replace("size: small", "size: large"),
    );
    assert!(out.contains("widget.example.com/w1 configured"), "{out}");
    let out = s.ok(&merge_patch("widget", "w1", r#"{"spec":{"replicas":3}}"#));
    assert!(out.contains("patched"), "{out}");
    assert_eq!(
        s.ok(&[
            "get",
            "wd",
            "w1",
            "-o",
            "jsonpath={.spec.size} {.spec.replicas} {.metadata.generation}"
        ]),
        "large 3 3"
    );
    let e = s.fails(&["patch", "widget", "w1", "-p", r#"{"spec":{"replicas":4}}"#]);
    assert!(
        e.contains("application/strategic-merge-patch+json is not supported"),
        "{e}"
    );
    s.ok(&["label", "widget", "w1", "tier=gold"]);
    // A label is metadata: no new generation.
    assert_eq!(s.ok(&["get", "wd", "w1", "-o", "jsonpath={.metadata.generation}"]), "3");
    assert_eq!(
        s.ok(&["get", "wd", "-l", "tier=gold", "-o", "name"]),
        "widget.example.com/w1\n"
    );
    assert_eq!(
        s.ok(&["get", "wd", "--field-selector", "metadata.name=w2", "-o", "name"]),
        "widget.example.com/w2\n"
    );

    // The scale subresource.
    let out = s.ok(&["scale", "widget", "w1", "--replicas", "5"]);
    assert!(out.contains("widget.example.com/w1 scaled"), "{out}");
    assert_eq!(s.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.replicas}"]), "5");

    // The status subresource: /status writes take only status, main writes keep the stored status.
    let out = s.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"replicas":5,"selector":"app=demo"},"spec":{"size":"small"}}"#,
    ]);
    assert!(out.contains("patched"), "{out}");
    s.ok(&merge_patch("widget", "w1", r#"{"status":{"replicas":9}}"#));
    let w1 = s.json(&["get", "wd", "w1"]);
    assert_eq!(
        w1["status"],
        serde_json::json!({"replicas": 5, "selector": "app=demo"}),
        "{w1}"
    );
    assert_eq!(w1["spec"]["size"], "large", "{w1}");
    let gen = w1["metadata"]["generation"].as_i64().unwrap_or_default();
    let sc: Value = serde_json::from_str(&s.ok(&[
        "get",
        "--raw",
        "/apis/example.com/v1/namespaces/default/widgets/w1/scale",
    ]))
    .unwrap();
    assert_eq!(sc["kind"], "Scale");
    assert_eq!(sc["spec"]["replicas"], 5);
    assert_eq!(sc["status"], serde_json::json!({"replicas": 5, "selector": "app=demo"}));
    s.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource",
        "status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"replicas":4}}"#,
    ]);
    assert_eq!(
        s.ok(&["get", "wd", "w1", "-o", "jsonpath={.metadata.generation}"]),
        gen.to_string(),
        "a status write bumped the generation"
    );

    // OpenAPI from the schema: kubectl explain.
    let ex = s.ok(&["explain", "widget.spec"]);
    assert!(
        ex.contains("KIND:       Widget") && ex.contains("replicas\t<integer>"),
        "{ex}"
    );
    assert!(ex.contains("size\t<string> -required-"), "{ex}");

    // Watch through the dynamic watch cache.
    let mut child = s
        .command(&["get", "widgets", "-w", "--output-watch-events"])
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
    assert!(next(" w2 ").starts_with("ADDED"));
    s.ok(&["annotate", "widget", "w2", "note=x"]);
    assert!(next(" w2 ").starts_with("MODIFIED"));

    // Finalizers hold a deletion until they are removed.
    s.ok(&merge_patch(
        "widget",
        "w2",
        r#"{"metadata":{"finalizers":["example.com/hold"]}}"#,
    ));
    s.ok(&["delete", "widget", "w2", "--wait=false"]);
    let w2 = s.json(&["get", "wd", "w2"]);
    assert!(w2["metadata"]["deletionTimestamp"].is_string(), "{w2}");
    s.ok(&merge_patch("widget", "w2", r#"{"metadata":{"finalizers":null}}"#));
    assert!(next("DELETED").contains(" w2 "));
    let _ = child.kill();
    let _ = child.wait();
    assert!(s.fails(&["get", "wd", "w2"]).contains("NotFound"));

    // Custom resources in another namespace; deleting the CRD deletes them all and the routes go.
    s.ok(&["create", "namespace", "team"]);
    s.ok_in(
        &["create", "-n", "team", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w3}\nspec: {size: small}\n",
    );
    let t = s.ok(&["get", "wd", "-A"]);
    assert!(
        row(&t, "default").contains(&"w1") && row(&t, "team").contains(&"w3"),
        "{t}"
    );
    let out = s.ok(&["delete", "crd", "widgets.example.com"]);
    assert!(out.contains("deleted"), "{out}");
    s.eventually(&["get", "--raw", "/apis/example.com/v1"], |o| {
        !o.ok && o.stderr.contains("NotFound")
    });
    let e = s.fails(&["get", "widgets"]);
    assert!(e.contains("the server could not find the requested resource"), "{e}");
    let fresh = s.dir.path().join("fresh-cache");
    let o: Out = s.command_cached(&fresh, &["get", "widgets"]).output().unwrap().into();
    assert!(
        !o.ok && o.stderr.contains("the server doesn't have a resource type \"widgets\""),
        "{}",
        o.stderr
    );
    let apis = s.ok(&["get", "--raw", "/apis"]);
    assert!(!apis.contains("example.com"), "{apis}");

    // Defined again, it starts empty.
    s.ok_in(&["apply", "-f", "-"], WIDGETS);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout",
        "20s",
    ]);
    let o = s.kubectl(&["get", "wd", "-A"]);
    assert!(
        o.ok && o.stdout.is_empty() && o.stderr.contains("No resources found"),
        "{}{}",
        o.stdout,
        o.stderr
    );
}

const GIZMOS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.tools.example.org
spec:
  group: tools.example.org
  scope: Cluster
  names:
    plural: gizmos
    kind: Gizmo
  versions:
  - name: v1beta1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              color: {type: string, pattern: "^[a-z]+$"}
              port: {x-kubernetes-int-or-string: true}
              tags: {type: array, x-kubernetes-list-type: set, items: {type: string}}
              when:
                type: string
                format: date-time
                x-kubernetes-validations:
                - {rule: "self == oldSelf", message: when is immutable}
              parts:
                type: array
                x-kubernetes-list-type: map
                x-kubernetes-list-map-keys: [name]
                items:
                  type: object
                  required: [name]
                  properties:
                    name: {type: string}
                    size: {type: integer}
                  x-kubernetes-validations:
                  - {rule: "self.size == oldSelf.size", message: size is immutable}
            anyOf:
            - required: [color]
            - required: [port]
            x-kubernetes-validations:
            - rule: "!has(self.tags) || self.tags.size() <= 2"
              message: at most two tags
            - rule: "!has(self.color) || self.color != 'black'"
              message: no black
              messageExpression: "'color ' + self.color + ' is not allowed'"
"#;

#[test]
fn crd_validation_cluster_scope_and_versions() {
    let s = Server::start();

    // Invalid definitions: 422 with field causes.
    let bad = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: things.example
spec:
  group: example
  scope: Everywhere
  names:
    plural: gadgets
  versions:
  - name: v1
    served: true
    storage: false
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            properties:
              a: {type: string}
  - name: v2
    served: true
    storage: false
"#;
    let e = s.fails_in(&["apply", "-f", "-"], bad);
    for want in [
        "The CustomResourceDefinition \"things.example\" is invalid",
        "metadata.name: Invalid value: \"things.example\": must be spec.names.plural+\".\"+spec.group",
        "spec.group: Invalid value: \"example\": should be a domain with at least one dot",
        "spec.scope: Unsupported value: \"Everywhere\"",
        "spec.names.kind: Required value",
        "must have exactly one version marked as storage version",
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value",
        "spec.versions[1].schema.openAPIV3Schema: Required value: schemas are required",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    assert!(s.fails(&["get", "crd", "things.example"]).contains("NotFound"));

    // A cluster-scoped CRD with two served versions and no printer columns.
    s.ok_in(&["apply", "-f", "-"], GIZMOS);
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/gizmos.tools.example.org",
        "--timeout",
        "20s",
    ]);
    // A second CRD of the group asking for the same kind: its names are not accepted, it is not served,
    // until the first one goes (checked at the end).
    let rival = GIZMOS
        .replace("gizmos.tools.example.org", "doodads.tools.example.org")
        .replace("plural: gizmos", "plural: doodads");
    s.ok_in(&["apply", "-f", "-"], &rival);
    let d = s.json(&["get", "crd", "doodads.tools.example.org"]);
    let cond = |d: &Value, ty: &str| -> Value {
        d["status"]["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == ty).cloned())
            .unwrap_or_default()
    };
    let names = cond(&d, "NamesAccepted");
    assert_eq!(names["status"], "False", "{d}");
    assert_eq!(names["reason"], "ListKindConflict", "{d}");
    assert_eq!(names["message"], "\"GizmoList\" is already in use", "{d}");
    assert_eq!(cond(&d, "Established")["reason"], "NotAccepted", "{d}");
    let e = s.fails(&["get", "doodads"]);
    assert!(e.contains("the server doesn't have a resource type \"doodads\""), "{e}");
    let group: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis/tools.example.org"])).unwrap();
    assert_eq!(group["preferredVersion"]["version"], "v1", "{group}");
    assert_eq!(group["versions"].as_array().map(Vec::len), Some(2), "{group}");
    let apis = s.ok(&["api-resources", "--api-group", "tools.example.org"]);
    let line = apis.lines().find(|l| l.starts_with("gizmos")).unwrap_or_default();
    assert!(
        line.split_whitespace()
            .eq(["gizmos", "tools.example.org/v1", "false", "Gizmo"]),
        "{apis}"
    );

    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g1}\nspec: {color: red, port: http}\n",
    );
    let t = s.ok(&["get", "gizmos"]);
    assert_eq!(header(&t), ["NAME", "AGE"], "{t}");
    assert_eq!(row(&t, "g1").first(), Some(&"g1"), "{t}");
    // The same object through the other served version (conversion strategy None: only apiVersion).
    let g: Value = serde_json::from_str(&s.ok(&["get", "--raw", "/apis/tools.example.org/v1beta1/gizmos/g1"])).unwrap();
    assert_eq!(g["apiVersion"], "tools.example.org/v1beta1", "{g}");
    assert_eq!(g["spec"]["color"], "red");
    let e = s.fails_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g2}\nspec: {color: Red1, port: 1.5}\n",
    );
    assert!(e.contains("spec.color in body should match '^[a-z]+$'"), "{e}");
    assert!(e.contains("spec.port in body must be of type integer or string"), "{e}");
    // Junctors, list types and formats, in upstream's words.
    let e = s.fails_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g2}\nspec: {tags: [a, b, a], when: soon}\n",
    );
    for want in [
        "The Gizmo \"g2\" is invalid",
        "<nil>: Invalid value: \"\": \"spec\" must validate at least one schema (anyOf)",
        "spec.color: Required value",
        "spec.tags[2]: Duplicate value: \"a\"",
        "spec.when: Invalid value: \"soon\": spec.when in body must be of type date-time: \"soon\"",
        "spec: Invalid value: \"object\": at most two tags",
    ] {
        assert!(e.contains(want), "{want:?} not in {e}");
    }
    // A transition rule: `when` may be set on create, not changed by an update.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g5}\nspec: {color: red, when: \"2024-01-01T00:00:00Z\"}\n",
    );
    let e = s.fails(&merge_patch(
        "gizmo",
        "g5",
        r#"{"spec":{"when":"2025-01-01T00:00:00Z"}}"#,
    ));
    assert!(
        e.contains("spec.when: Invalid value: \"string\": when is immutable"),
        "{e}"
    );
    s.ok(&merge_patch("gizmo", "g5", r#"{"spec":{"color":"green"}}"#));
    // A messageExpression's string is the message.
    let e = s.fails_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g6}\nspec: {color: black}\n",
    );
    assert!(
        e.contains("spec: Invalid value: \"object\": color black is not allowed"),
        "{e}"
    );
    // Items of a map list correlate by key: a new item is free, a stored one keeps its size.
    s.ok(&merge_patch(
        "gizmo",
        "g5",
        r#"{"spec":{"parts":[{"name":"a","size":1}]}}"#,
    ));
    s.ok(&merge_patch(
        "gizmo",
        "g5",
        r#"{"spec":{"parts":[{"name":"b","size":2},{"name":"a","size":1}]}}"#,
    ));
    let e = s.fails(&merge_patch(
        "gizmo",
        "g5",
        r#"{"spec":{"parts":[{"name":"b","size":2},{"name":"a","size":3}]}}"#,
    ));
    assert!(
        e.contains("spec.parts[1]: Invalid value: \"object\": size is immutable"),
        "{e}"
    );
    // A CEL rule that does not compile is refused with the CRD.
    let e = s.fails_in(
        &["apply", "-f", "-"],
        &GIZMOS.replace("self.tags.size() <= 2", "self.tags.size() <="),
    );
    assert!(
        e.contains(
            "spec.versions[1].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value"
        ),
        "{e}"
    );
    assert!(e.contains("compilation failed"), "{e}");
    // A junctor that would declare a field of its own makes the schema non-structural.
    let e = s.fails_in(
        &["apply", "-f", "-"],
        &GIZMOS.replace("- required: [port]", "- required: [port]\n              type: object"),
    );
    assert!(
        e.contains("spec.versions[1].schema.openAPIV3Schema.properties[spec].anyOf[1].type: Forbidden: must be empty to be structural"),
        "{e}"
    );

    // JSON patch and deletecollection.
    s.ok(&[
        "patch",
        "gizmo",
        "g1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"blue"}]"#,
    ]);
    assert_eq!(
        s.ok(&[
            "get",
            "gizmo",
            "g1",
            "-o",
            "jsonpath={.spec.color} {.metadata.generation}"
        ]),
        "blue 2"
    );
    let out = s.ok(&["delete", "gizmos", "--all"]);
    assert!(out.contains("gizmo.tools.example.org \"g1\" deleted"), "{out}");
    let o = s.kubectl(&["get", "gizmos"]);
    assert!(o.ok && o.stderr.contains("No resources found"), "{}", o.stderr);

    // Scope is immutable.
    let e = s.fails_in(
        &["apply", "-f", "-"],
        &GIZMOS.replace("scope: Cluster", "scope: Namespaced"),
    );
    assert!(
        e.contains("spec.scope: Invalid value: \"Namespaced\": field is immutable"),
        "{e}"
    );

    // A custom resource with a finalizer holds its CRD in Terminating, which refuses new instances.
    s.ok_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g3, finalizers: [example.org/hold]}\n",
    );
    s.ok(&["delete", "crd", "gizmos.tools.example.org", "--wait=false"]);
    s.eventually(
        &["get", "gizmo", "g3", "-o", "jsonpath={.metadata.deletionTimestamp}"],
        |o| o.ok && !o.stdout.is_empty(),
    );
    let crd = s.json(&["get", "crd", "gizmos.tools.example.org"]);
    let conds = crd["status"]["conditions"].as_array().cloned().unwrap_or_default();
    assert!(
        conds
            .iter()
            .any(|c| c["type"] == "Terminating" && c["status"] == "True"),
        "{crd}"
    );
    assert!(crd["metadata"]["finalizers"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "customresourcecleanup.apiextensions.k8s.io")));
    let e = s.fails_in(
        &["create", "-f", "-"],
        "apiVersion: tools.example.org/v1\nkind: Gizmo\nmetadata: {name: g4}\n",
    );
    assert!(
        e.contains("create not allowed while custom resource definition is terminating"),
        "{e}"
    );
    s.ok(&merge_patch("gizmo", "g3", r#"{"metadata":{"finalizers":null}}"#));
    s.eventually(&["get", "crd", "gizmos.tools.example.org"], |o| {
        !o.ok && o.stderr.contains("NotFound")
    });
    // The rival gets its names once the holder is gone, and is served.
    s.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/doodads.tools.example.org",
        "--timeout",
        "20s",
    ]);
    s.eventually(&["get", "doodads"], |o| o.ok && o.stderr.contains("No resources found"));
}

#[test]
fn api_servers_on_one_store_agree_on_crds() {
    let a = Server::start();
    let b = Server::start_on(Some(&a.store_url));

    // Defined through one server, served by the other, which follows the CRD watch.
    a.ok_in(&["apply", "-f", "-"], WIDGETS);
    b.eventually(&["get", "--raw", "/apis/example.com/v1"], |o| o.ok);
    b.ok(&[
        "wait",
        "--for",
        "condition=established",
        "crd/widgets.example.com",
        "--timeout",
        "20s",
    ]);
    b.ok(&["create", "namespace", "scratch"]);
    b.ok_in(
        &["create", "-n", "scratch", "-f", "-"],
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: shared}\nspec: {size: small}\n",
    );
    let t = a.ok(&["get", "wd", "-n", "scratch"]);
    assert_eq!(row(&t, "shared")[..3], ["shared", "small", "1"], "{t}");

    // Namespace deletion removes custom resources too.
    a.ok(&["delete", "namespace", "scratch", "--timeout", "30s"]);
    let o = b.kubectl(&["get", "wd", "-A"]);
    assert!(
        o.ok && o.stderr.contains("No resources found"),
        "{}{}",
        o.stdout,
        o.stderr
    );

    // Deleted through the other server: both stop serving it.
    b.ok(&["delete", "crd", "widgets.example.com"]);
    for s in [&a, &b] {
        s.eventually(&["get", "--raw", "/apis/example.com/v1"], |o| {
            !o.ok && o.stderr.contains("NotFound")
        });
    }
}
