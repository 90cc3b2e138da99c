//! rudder-jepsen: a Jepsen-style fault-injection suite for Rudder or any etcd v3 cluster.
//!
//! It owns the whole loop: nodes as real processes in network namespaces (`net`, `db`), faults
//! (`nemesis`), client workloads that record a history (`workload`, `history`), checkers that judge it
//! (`checker`), and the HTML report (`report`). `runner` ties one test together; `matrix` runs many.

mod backup_scenario;
pub mod checker;
pub mod db;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod report;
pub mod runner;
pub mod workload;
