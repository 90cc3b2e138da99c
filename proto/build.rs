//! Compiles etcd's v3 wire format (our own transcription under `proto/`) into Rust at build time.

use std::{env, io, path::PathBuf};

const PROTO_ROOT: &str = "proto";

const PROTOS: &[&str] = &[
    "proto/etcd/mvccpb/kv.proto",
    "proto/etcd/authpb/auth.proto",
    "proto/etcd/etcdserverpb/rpc.proto",
    "proto/etcd/leasepb/lease.proto",
    "proto/etcd/v3lockpb/v3lock.proto",
    "proto/etcd/v3electionpb/v3election.proto",
    "proto/rudder/raftpb.proto",
];

fn main() -> io::Result<()> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    println!("cargo:rerun-if-changed=build.rs");

    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| io::Error::other("OUT_DIR not set"))?);

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .file_descriptor_set_path(out_dir.join("etcd_descriptor.bin"))
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        .compile_protos(PROTOS, &[PROTO_ROOT])
}
