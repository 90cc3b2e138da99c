//! The etcd client side of a process: connecting to one node, timing out requests, and deciding whether a
//! failed request definitely did not happen (`fail`) or might have (`info`).

use std::future::Future;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};

use crate::history::{EventType, Op};

use super::Ctx;

/// How a request ended.
pub enum Outcome<T> {
    Ok(T),
    /// Definitely did not take effect.
    Fail(String),
    /// May or may not have taken effect.
    Info(String),
}

/// A client for one node only (no balancing: the process stays on its node).
pub async fn connect(endpoint: &str, timeout: Duration) -> Result<Client, etcd_client::Error> {
    let options = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(2), timeout);
    Client::connect([endpoint], Some(options)).await
}

/// Whether an error proves the request was not applied. Reads have no effect, so any error is a `fail`;
/// for writes only errors the server returns before proposing (or a refused connection) are.
pub fn classify(err: &etcd_client::Error, is_read: bool) -> (EventType, String) {
    let text = err.to_string();
    if is_read {
        return (EventType::Fail, text);
    }
    let definite = match err {
        etcd_client::Error::GRpcStatus(status) => {
            use tonic::Code;
            let msg = status.message();
            matches!(
                status.code(),
                Code::InvalidArgument
                    | Code::FailedPrecondition
                    | Code::PermissionDenied
                    | Code::Unauthenticated
                    | Code::OutOfRange
                    | Code::NotFound
            ) || msg.contains("database space exceeded")
                || msg.contains("connection refused")
                || msg.contains("tcp connect error")
        }
        etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_) => true,
        _ => text.contains("connection refused"),
    };
    (if definite { EventType::Fail } else { EventType::Info }, text)
}

/// Runs one request with the context's timeout and records its invocation and completion. `f` returns
/// the completed op (results filled in) and the header revision, or an error; `is_read` says whether a
/// failure can be `fail` outright. Returns the outcome so generators can follow up.
pub async fn record<F, Fut>(ctx: &Ctx, process: u64, op: Op, is_read: bool, f: F) -> Outcome<(Op, i64)>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<Result<(Op, i64), String>, etcd_client::Error>>,
{
    let node = Some(ctx.node_of(process));
    ctx.recorder.invoke(process, op.clone(), node);
    let outcome = match tokio::time::timeout(ctx.timeout, f()).await {
        Err(_) => {
            let kind = if is_read { EventType::Fail } else { EventType::Info };
            (kind, op.clone(), None, Some("timeout".to_string()))
        }
        Ok(Err(e)) => {
            let (kind, text) = classify(&e, is_read);
            (kind, op.clone(), None, Some(text))
        }
        // A request the server answered with a definite "no" (e.g. a false compare).
        Ok(Ok(Err(reason))) => (EventType::Fail, op.clone(), None, Some(reason)),
        Ok(Ok(Ok((done, revision)))) => (EventType::Ok, done, Some(revision), None),
    };
    let (kind, done, revision, error) = outcome;
    ctx.recorder
        .complete(process, kind, done.clone(), node, revision, error.clone());
    match kind {
        EventType::Ok => Outcome::Ok((done, revision.unwrap_or(0))),
        EventType::Fail => Outcome::Fail(error.unwrap_or_default()),
        _ => Outcome::Info(error.unwrap_or_default()),
    }
}

/// A logical process: its id (renumbered after an `info`, as Jepsen does) and a client to its node.
pub struct Process {
    pub id: u64,
    pub client: Option<Client>,
    stride: u64,
}

impl Process {
    pub fn new(id: u64, stride: usize) -> Self {
        Process {
            id,
            client: None,
            stride: stride as u64,
        }
    }

    /// The client, connecting when needed; `None` if the node cannot be reached (the caller records a
    /// failed operation or just waits).
    pub async fn client(&mut self, ctx: &Ctx) -> Option<Client> {
        if self.client.is_none() {
            let endpoint = ctx.endpoints.get(ctx.node_of(self.id))?;
            self.client = connect(endpoint, ctx.timeout).await.ok();
        }
        self.client.clone()
    }

    /// After an unknown outcome the process may still have a request in flight: continue as a new one
    /// on the same node, with a fresh connection.
    pub fn after<T>(&mut self, outcome: &Outcome<T>) {
        if let Outcome::Info(_) = outcome {
            self.id += self.stride;
            self.client = None;
        }
    }
}

/// Parses a decimal value written by the suite.
pub fn parse_u64(bytes: &[u8]) -> Result<u64, String> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("unexpected value {:?}", String::from_utf8_lossy(bytes)))
}

/// The header revision of a response, 0 if absent.
pub fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
}

/// Sleeps the process's pace with up to 50 % jitter; returns false once the deadline has passed.
pub async fn pace(ctx: &Ctx, rng: &mut impl rand::Rng) -> bool {
    let base = ctx.pace();
    let jitter = base.mul_f64(rng.random_range(0.5..1.5));
    let wake = tokio::time::Instant::now() + jitter;
    if wake >= ctx.deadline {
        tokio::time::sleep_until(ctx.deadline).await;
        return false;
    }
    tokio::time::sleep_until(wake).await;
    true
}
