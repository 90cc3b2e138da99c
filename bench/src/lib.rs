//! Shared pieces of the benchmark harnesses behind `make bench`: `rudder-bench` (the store against
//! etcd) and `rudder-bench-apiserver` (the API server on either store), which write one report file.

pub mod sections;
