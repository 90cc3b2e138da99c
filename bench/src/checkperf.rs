//! `etcdctl check perf --load=L` against a server, and parsing of its verdict lines.
//!
//! etcdctl prints a progress bar (carriage returns) and then lines such as
//! `PASS: Throughput is 151 writes/s`, `FAIL: Throughput too low: 90 writes/s`,
//! `PASS: Slowest request took 0.027376s`, `Slowest request took too long: 0.8s`,
//! `PASS: Stddev is 0.000766s`, `Stddev too high: 0.2s`, `FAIL: ERROR(...) -> 3`, and a final
//! `PASS` or `FAIL` (exit status 1 on FAIL).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Each load runs for 60 s; allow generous time for connection set-up and cleanup.
const TIMEOUT: Duration = Duration::from_secs(240);

/// The parsed outcome of one `check perf` run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CheckPerf {
    pub load: String,
    /// The final PASS/FAIL verdict.
    pub passed: bool,
    /// Write throughput as printed (etcdctl rounds up: `int(rps) + 1`).
    pub writes_per_sec: Option<f64>,
    pub slowest_ms: Option<f64>,
    pub stddev_ms: Option<f64>,
    /// The verdict lines as printed, for the raw section of the report.
    pub lines: Vec<String>,
}

/// Runs `etcdctl --endpoints=ENDPOINT check perf --load=LOAD` and parses its output.
pub async fn run(etcdctl: &Path, endpoint: &str, load: &str) -> Result<CheckPerf> {
    let mut cmd = tokio::process::Command::new(etcdctl);
    cmd.arg(format!("--endpoints={endpoint}"))
        .args(["check", "perf"])
        .arg(format!("--load={load}"))
        .env("ETCDCTL_API", "3")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("etcdctl check perf --load={load} did not finish within {TIMEOUT:?}"))?
        .with_context(|| format!("running {}", etcdctl.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    match parse(load, &stdout) {
        Some(result) => Ok(result),
        None => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stderr_tail: Vec<&str> = stderr
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!(
                "etcdctl check perf --load={load} gave no verdict ({}); stderr: {}",
                out.status,
                stderr_tail.join(" | ").trim()
            )
        }
    }
}

/// A number followed by `suffix` at the end of `line`, e.g. `0.027376s` or `151 writes/s`.
fn trailing_number(line: &str, suffix: &str) -> Option<f64> {
    let rest = line.strip_suffix(suffix)?.trim_end();
    let start = rest
        .rfind(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or(0, |i| i + 1);
    rest[start..].parse().ok()
}

/// Parses etcdctl's output; `None` if it contains no final verdict.
pub fn parse(load: &str, stdout: &str) -> Option<CheckPerf> {
    let mut result = CheckPerf {
        load: load.to_string(),
        ..CheckPerf::default()
    };
    let mut verdict = None;
    // The progress bar redraws with '\r'; the verdict lines are the '\n'-terminated ones after it.
    for line in stdout.split(['\r', '\n']).map(str::trim) {
        // The first verdict line is glued to the last frame of the progress bar.
        let Some(start) = ["PASS", "FAIL", "Slowest", "Stddev"]
            .iter()
            .filter_map(|w| line.find(w))
            .min()
        else {
            continue;
        };
        let line = &line[start..];
        match line {
            "PASS" => verdict = Some(true),
            "FAIL" => verdict = Some(false),
            _ if line.contains("Throughput") => result.writes_per_sec = trailing_number(line, "writes/s"),
            _ if line.contains("Slowest request") => result.slowest_ms = trailing_number(line, "s").map(|s| s * 1e3),
            _ if line.contains("Stddev") => result.stddev_ms = trailing_number(line, "s").map(|s| s * 1e3),
            _ => {}
        }
        result.lines.push(line.to_string());
    }
    result.passed = verdict?;
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pass() {
        let out = "\r 0 / 60    0.00%\r 59 / 60   98.33%PASS: Throughput is 151 writes/s\n\
                   PASS: Slowest request took 0.027376s\nPASS: Stddev is 0.000766s\nPASS\n";
        let r = parse("s", out).expect("verdict");
        assert!(r.passed);
        assert_eq!(r.writes_per_sec, Some(151.0));
        assert!((r.slowest_ms.expect("slowest") - 27.376).abs() < 1e-9);
        assert!((r.stddev_ms.expect("stddev") - 0.766).abs() < 1e-9);
        assert_eq!(r.lines.len(), 4);
        assert_eq!(r.lines[0], "PASS: Throughput is 151 writes/s");
    }

    #[test]
    fn parses_fail() {
        let out = "FAIL: too many errors\nFAIL: ERROR(context deadline exceeded) -> 12\n\
                   FAIL: Throughput too low: 6012 writes/s\nSlowest request took too long: 1.204000s\n\
                   Stddev too high: 0.150000s\nFAIL\n";
        let r = parse("l", out).expect("verdict");
        assert!(!r.passed);
        assert_eq!(r.writes_per_sec, Some(6012.0));
        assert!((r.slowest_ms.expect("slowest") - 1204.0).abs() < 1e-9);
        assert!((r.stddev_ms.expect("stddev") - 150.0).abs() < 1e-9);
        assert_eq!(r.lines.len(), 6);
    }

    #[test]
    fn no_verdict_is_none() {
        assert_eq!(parse("s", "\r 1 / 60 1.67%"), None);
        assert_eq!(parse("s", ""), None);
    }
}
