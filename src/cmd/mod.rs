pub mod snapshot;
pub mod store;
