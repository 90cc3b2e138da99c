//! Checkers: each judges a history (and watch records) and returns a [`CheckResult`]. A checker that runs
//! out of time answers `Unknown`, never `Valid`.

use serde::{Deserialize, Serialize};

/// A checker's verdict. Ordered so that the worst of several verdicts is their maximum.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Validity {
    Valid,
    Unknown,
    Invalid,
}

/// One anomaly: what kind, a human explanation, and the minimal part of the history that shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Anomaly {
    /// Short name, e.g. `stale-read`, `lost`, `G1c`, `gap`.
    pub kind: String,
    pub explanation: String,
    /// Indexes (into `history.jsonl`) of the events involved.
    #[serde(default)]
    pub events: Vec<usize>,
}

/// What one checker found.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// The checker's name, e.g. `linearizable`, `set`, `watch`.
    pub checker: String,
    pub valid: Validity,
    /// One line for the summary table.
    pub summary: String,
    /// Checker-specific figures (counts, percentiles...).
    #[serde(default)]
    pub figures: serde_json::Value,
    #[serde(default)]
    pub anomalies: Vec<Anomaly>,
}

pub mod append;
pub mod availability;
pub mod lease;
pub mod linearizable;
pub mod models;
pub mod search;
pub mod set;
pub mod watch;

#[cfg(test)]
pub(crate) mod testkit;

/// The worst of several verdicts (`Unknown` when there are none: nothing checked is no pass).
pub fn worst(results: &[CheckResult]) -> Validity {
    results.iter().map(|r| r.valid).max().unwrap_or(Validity::Unknown)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(valid: Validity) -> CheckResult {
        CheckResult {
            checker: "t".into(),
            valid,
            summary: String::new(),
            figures: serde_json::Value::Null,
            anomalies: Vec::new(),
        }
    }

    #[test]
    fn worst_is_the_maximum() {
        assert_eq!(worst(&[]), Validity::Unknown);
        assert_eq!(worst(&[result(Validity::Valid)]), Validity::Valid);
        assert_eq!(
            worst(&[result(Validity::Valid), result(Validity::Unknown)]),
            Validity::Unknown
        );
        let all = [
            result(Validity::Invalid),
            result(Validity::Valid),
            result(Validity::Unknown),
        ];
        assert_eq!(worst(&all), Validity::Invalid);
    }
}
