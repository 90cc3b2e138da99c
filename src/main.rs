//! `rudder`: one binary, one subcommand per component. Wiring only: flags in, components started.

mod cmd;

// glibc's malloc showed up as a tenth of the store's CPU under write load (many small, short-lived
// allocations across threads: requests, log entries, watch events); mimalloc handles that pattern better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "rudder",
    version,
    about = "A Kubernetes control plane with its own etcd-compatible, Raft-replicated store"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an etcd-compatible store member (takes etcd's flags).
    Store(Box<cmd::store::StoreArgs>),
    /// Run the Kubernetes API server (with an embedded store unless --etcd-servers is given).
    Server(Box<cmd::server::ServerArgs>),
    /// Save, inspect and restore etcd-format snapshots (takes etcdctl's / etcdutl's flags).
    Snapshot(cmd::snapshot::SnapshotArgs),
    /// Print version information.
    Version,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Store(args) => cmd::store::run(*args),
        Command::Server(args) => cmd::server::run(*args),
        Command::Snapshot(args) => cmd::snapshot::run(args),
        Command::Version => {
            println!("rudder Version: {}", env!("CARGO_PKG_VERSION"));
            println!("etcd API Version: {}", rudder_store::server::maintenance::ETCD_VERSION);
            Ok(())
        }
    }
}
