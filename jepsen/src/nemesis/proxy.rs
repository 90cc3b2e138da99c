//! The peer proxy: a userspace TCP forwarder in front of each node's peer port, because the kernel here
//! has no tc netem. Peers dial the node's advertised peer URL (IP:2380), which is this proxy; it forwards
//! to the node's real peer listener (IP:2381) and can delay chunks (latency, with jitter, order kept) or
//! drop connections with a probability. What to do is read from a small JSON control file, polled every
//! 100 ms, so the harness steers it by rewriting the file ([`write_control`]).
//!
//! It runs inside the node's namespace as `rudder-jepsen proxy --listen A --upstream B --control F`
//! (or, from a test binary, with the `RUDDER_JEPSEN_PROXY_*` variables: [`proxy_args_from_env`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Environment variables a test binary reads to act as the proxy.
pub const ENV_LISTEN: &str = "RUDDER_JEPSEN_PROXY_LISTEN";
pub const ENV_UPSTREAM: &str = "RUDDER_JEPSEN_PROXY_UPSTREAM";
pub const ENV_CONTROL: &str = "RUDDER_JEPSEN_PROXY_CONTROL";

const POLL: Duration = Duration::from_millis(100);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const CHUNK: usize = 64 * 1024;

/// What the proxy does to traffic; the default forwards untouched.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ProxyControl {
    /// Added to every chunk's delivery time, each direction.
    pub delay_ms: u64,
    /// Uniform jitter of +-`jitter_ms` around `delay_ms` (delivery order is kept).
    pub jitter_ms: u64,
    /// Per chunk and per new connection: with this probability the connection is reset, losing what is
    /// in flight (a byte stream cannot lose a chunk and stay valid).
    pub drop_probability: f64,
}

impl ProxyControl {
    pub fn is_clear(&self) -> bool {
        self == &ProxyControl::default()
    }

    fn chunk_delay(&self, rng: &mut impl Rng) -> Duration {
        let base = self.delay_ms as i64;
        let j = self.jitter_ms as i64;
        let ms = if j > 0 { base + rng.random_range(-j..=j) } else { base };
        Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0))
    }

    fn drops(&self, rng: &mut impl Rng) -> bool {
        self.drop_probability > 0.0 && rng.random::<f64>() < self.drop_probability
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("proxy: cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy control file {path}: {source}")]
    Control {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("proxy: {0}")]
    Args(String),
}

/// Writes a control file atomically (temporary file + rename), so the proxy never reads half of one.
pub fn write_control(path: &Path, control: &ProxyControl) -> Result<(), ProxyError> {
    let err = |source| ProxyError::Control {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_json::to_vec(control).map_err(|e| err(std::io::Error::other(e)))?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// A missing file means "no faults"; an unreadable one keeps the previous setting.
fn read_control(path: &Path) -> Option<ProxyControl> {
    match std::fs::read(path) {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring malformed proxy control file");
                None
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Some(ProxyControl::default()),
        Err(_) => None,
    }
}

/// `(listen, upstream, control)` from the `RUDDER_JEPSEN_PROXY_*` variables, when all are set.
pub fn proxy_args_from_env() -> Option<Result<(SocketAddr, SocketAddr, PathBuf), ProxyError>> {
    let listen = std::env::var(ENV_LISTEN).ok()?;
    let upstream = std::env::var(ENV_UPSTREAM).ok()?;
    let control = std::env::var(ENV_CONTROL).ok()?;
    let parse = |name: &str, v: &str| {
        v.parse::<SocketAddr>()
            .map_err(|e| ProxyError::Args(format!("{name}={v:?}: {e}")))
    };
    Some((|| {
        Ok((
            parse(ENV_LISTEN, &listen)?,
            parse(ENV_UPSTREAM, &upstream)?,
            PathBuf::from(control),
        ))
    })())
}

/// Forwards every connection accepted on `listen` to `upstream` until the process that started the
/// proxy exits (then it returns `Ok`, so a proxy never outlives its harness) or the listener fails.
pub async fn run_proxy(listen: SocketAddr, upstream: SocketAddr, control: PathBuf) -> Result<(), ProxyError> {
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ProxyError::Listen { addr: listen, source })?;
    let (tx, rx) = watch::channel(read_control(&control).unwrap_or_default());
    let parent = std::os::unix::process::parent_id();
    let mut poll = tokio::time::interval(POLL);
    tracing::info!(%listen, %upstream, control = %control.display(), "proxy started");
    loop {
        tokio::select! {
            _ = poll.tick() => {
                // Orphaned (the harness died without killing us): re-parented to init or a subreaper.
                if std::os::unix::process::parent_id() != parent {
                    tracing::info!("proxy: parent gone, exiting");
                    return Ok(());
                }
                if let Some(c) = read_control(&control) {
                    tx.send_if_modified(|cur| if *cur != c { *cur = c; true } else { false });
                }
            }
            accepted = listener.accept() => {
                let (client, _) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "proxy accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                if rx.borrow().drops(&mut rand::rng()) {
                    continue; // dropping the stream closes it
                }
                tokio::spawn(connection(client, upstream, rx.clone()));
            }
        }
    }
}

/// Runs [`run_proxy`] on a fresh current-thread runtime (for a `main` that has none).
pub fn run_proxy_blocking(listen: SocketAddr, upstream: SocketAddr, control: PathBuf) -> Result<(), ProxyError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ProxyError::Args(format!("tokio runtime: {e}")))?;
    rt.block_on(run_proxy(listen, upstream, control))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PipeEnd {
    /// EOF or an I/O error: the other direction may go on (TCP half-close).
    Closed,
    /// The drop fault fired: reset the whole connection.
    Dropped,
}

async fn connection(client: TcpStream, upstream: SocketAddr, ctl: watch::Receiver<ProxyControl>) {
    let server = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(upstream)).await {
        Ok(Ok(s)) => s,
        // The node is down or stopped: the peer sees the connection close, as with a dead process.
        _ => return,
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pipe(cr, sw, ctl.clone());
    let down = pipe(sr, cw, ctl);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        let end = tokio::select! {
            e = &mut up, if !up_done => { up_done = true; e }
            e = &mut down, if !down_done => { down_done = true; e }
        };
        if end == PipeEnd::Dropped {
            return; // both sockets drop here
        }
    }
}

/// One direction: a reader stamps each chunk with its delivery time, a writer delivers it then. Delay
/// is latency, not a throughput cap, and delivery times never go backwards so the stream stays in order.
async fn pipe(mut rd: OwnedReadHalf, mut wr: OwnedWriteHalf, ctl: watch::Receiver<ProxyControl>) -> PipeEnd {
    let (tx, mut rx) = mpsc::channel::<(Instant, Option<Vec<u8>>)>(256);
    let reader = async move {
        let mut buf = vec![0u8; CHUNK];
        let mut last = Instant::now();
        loop {
            let n = match rd.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send((last, None)).await;
                    return PipeEnd::Closed;
                }
                Ok(n) => n,
            };
            let c = ctl.borrow().clone();
            let (drop, delay) = {
                let mut rng = rand::rng();
                (c.drops(&mut rng), c.chunk_delay(&mut rng))
            };
            if drop {
                return PipeEnd::Dropped;
            }
            last = last.max(Instant::now() + delay);
            if tx.send((last, Some(buf[..n].to_vec()))).await.is_err() {
                return PipeEnd::Closed;
            }
        }
    };
    let writer = async move {
        while let Some((at, chunk)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            match chunk {
                Some(bytes) => {
                    if wr.write_all(&bytes).await.is_err() {
                        return PipeEnd::Closed;
                    }
                }
                None => {
                    let _ = wr.shutdown().await;
                    return PipeEnd::Closed;
                }
            }
        }
        PipeEnd::Closed
    };
    tokio::pin!(reader, writer);
    let mut reader_done = false;
    loop {
        tokio::select! {
            r = &mut reader, if !reader_done => {
                if r == PipeEnd::Dropped {
                    return PipeEnd::Dropped;
                }
                reader_done = true;
            }
            w = &mut writer => return w,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(addr: SocketAddr) -> std::io::Result<Duration> {
        let mut s = TcpStream::connect(addr).await?;
        let t = Instant::now();
        s.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        s.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(t.elapsed())
    }

    #[tokio::test]
    async fn forwards_delays_and_drops() {
        let dir = tempfile::tempdir().unwrap();
        let control = dir.path().join("ctl.json");
        let upstream = echo_server().await;
        // Find a free port for the proxy.
        let listen = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        tokio::spawn(run_proxy(listen, upstream, control.clone()));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let fast = round_trip(listen).await.unwrap();
        assert!(fast < Duration::from_millis(100), "{fast:?}");

        write_control(
            &control,
            &ProxyControl {
                delay_ms: 150,
                ..Default::default()
            },
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        let slow = round_trip(listen).await.unwrap();
        // Both directions are delayed.
        assert!(slow >= Duration::from_millis(290), "{slow:?}");

        write_control(
            &control,
            &ProxyControl {
                drop_probability: 1.0,
                ..Default::default()
            },
        )
        .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(round_trip(listen).await.is_err());

        write_control(&control, &ProxyControl::default()).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        round_trip(listen).await.unwrap();
    }
}
