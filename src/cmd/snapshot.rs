//! `rudder snapshot save|status|restore`: etcd-format backups, with etcdctl's (3.4) / etcdutl's (3.5)
//! flags and output, interchangeable with theirs in both directions.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use rudder_store::backup::restore::RestoreConfig;
use rudder_store::backup::status::OutputFormat;
use rudder_store::backup::{restore, snapshot, status};

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    #[command(subcommand)]
    command: SnapshotCommand,
}

#[derive(Subcommand, Debug)]
enum SnapshotCommand {
    /// Stores an etcd-format snapshot of a member's state to the given file.
    Save(SaveArgs),
    /// Gets the hash, revision, total keys and size of a snapshot file.
    Status(StatusArgs),
    /// Restores a snapshot (Rudder's or etcd's) into a new data directory.
    Restore(RestoreArgs),
}

#[derive(Args, Debug)]
struct SaveArgs {
    /// Where to write the snapshot.
    file: PathBuf,
    /// The one member to take the snapshot from (host:port or http://host:port).
    #[arg(long, env = "ETCDCTL_ENDPOINTS", default_value = "127.0.0.1:2379")]
    endpoints: String,
}

#[derive(Args, Debug)]
struct StatusArgs {
    file: PathBuf,
    /// Output format: simple, table or json.
    #[arg(short = 'w', long = "write-out", default_value = "simple")]
    write_out: OutputFormat,
}

#[derive(Args, Debug)]
struct RestoreArgs {
    file: PathBuf,
    /// Path to the data directory to create (default: "${name}.etcd").
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Human-readable name for this member.
    #[arg(long, default_value = "default")]
    name: String,
    /// Initial cluster configuration for restore bootstrap (name=peerURL,...; default: this member only).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Initial cluster token for the cluster during restore bootstrap.
    #[arg(long, default_value = "etcd-cluster")]
    initial_cluster_token: String,
    /// This member's peer URLs to advertise to the rest of the cluster.
    #[arg(long, default_value = "http://localhost:2380")]
    initial_advertise_peer_urls: String,
    /// Ignore snapshot integrity hash value (required if the file has no hash, e.g. copied from a data dir).
    #[arg(long)]
    skip_hash_check: bool,
    /// How much to increase the latest revision after restore.
    #[arg(long, default_value_t = 0)]
    bump_revision: u64,
    /// Mark the latest revision after restore as the point of scheduled compaction (required if
    /// --bump-revision > 0, disallowed otherwise).
    #[arg(long)]
    mark_compacted: bool,
}

fn split_urls(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn parse_initial_cluster(spec: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
    let mut members: Vec<(String, Vec<String>)> = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, u) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster: expected name=URL, got {part:?}"))?;
        url::Url::parse(u).with_context(|| format!("--initial-cluster: invalid URL {u:?}"))?;
        match members.iter_mut().find(|(n, _)| n == name) {
            Some((_, urls)) => urls.push(u.to_string()),
            None => members.push((name.to_string(), vec![u.to_string()])),
        }
    }
    Ok(members)
}

pub fn run(args: SnapshotArgs) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match args.command {
        SnapshotCommand::Save(a) => save(a),
        SnapshotCommand::Status(a) => {
            let st = status::status(&a.file)?;
            print!("{}", status::render(&st, a.write_out));
            Ok(())
        }
        SnapshotCommand::Restore(a) => restore_cmd(a),
    }
}

fn save(a: SaveArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    // Drawn on stderr, and only when it is a terminal (indicatif hides itself otherwise).
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = std::time::Instant::now();
    let fetched = rt.block_on(snapshot::fetch(&a.endpoints, &a.file, |received, total| {
        bar.set_length(total);
        bar.set_position(received);
    }));
    bar.finish_and_clear();
    let fetched = fetched?;
    tracing::info!(size = fetched.size, took = ?started.elapsed(), "fetched snapshot");
    println!("Snapshot saved at {}", a.file.display());
    Ok(())
}

fn restore_cmd(a: RestoreArgs) -> anyhow::Result<()> {
    let peer_urls = split_urls(&a.initial_advertise_peer_urls);
    if peer_urls.is_empty() {
        bail!("--initial-advertise-peer-urls is empty");
    }
    let initial_cluster = match &a.initial_cluster {
        Some(spec) => parse_initial_cluster(spec)?,
        None => vec![(a.name.clone(), peer_urls.clone())],
    };
    let data_dir = a
        .data_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.etcd", a.name)));
    let cfg = RestoreConfig {
        snapshot: a.file.clone(),
        data_dir: data_dir.clone(),
        name: a.name.clone(),
        initial_cluster,
        initial_cluster_token: a.initial_cluster_token.clone(),
        initial_advertise_peer_urls: peer_urls,
        skip_hash_check: a.skip_hash_check,
        bump_revision: a.bump_revision,
        mark_compacted: a.mark_compacted,
    };
    let s = restore::restore(&cfg)?;
    println!(
        "Restored {} into {}: revision {}{}, {} history records, {} leases. Start the member with --data-dir {} \
         --name {} --initial-cluster-token {} and the same --initial-cluster and --initial-advertise-peer-urls.",
        a.file.display(),
        data_dir.display(),
        s.revision,
        if s.compacted > 0 {
            format!(" (compacted at {})", s.compacted)
        } else {
            String::new()
        },
        s.history,
        s.leases,
        data_dir.display(),
        a.name,
        a.initial_cluster_token,
    );
    Ok(())
}
