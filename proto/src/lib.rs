//! etcd v3 wire types for Rudder.
//!
//! This crate owns the protobuf/gRPC surface that Rudder shares with etcd v3.5: the `mvccpb`,
//! `authpb`, `leasepb`, `etcdserverpb`, `v3lockpb` and `v3electionpb` packages, with package, message,
//! field names and field numbers identical to etcd's so stock etcd clients interoperate. The `.proto`
//! sources live in `proto/` and are compiled at build time with tonic/prost (messages, gRPC servers and
//! clients, all messages/enums/oneofs also deriving serde), plus Rudder's own peer protocol (`raftpb`).
//! There is no logic here.

/// Key-value and watch-event types (`mvccpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// User, role and permission types (`authpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod authpb {
    tonic::include_proto!("authpb");
}

/// Server-internal lease records (`leasepb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod leasepb {
    tonic::include_proto!("leasepb");
}

/// The public etcd v3 gRPC API: KV, Watch, Lease, Cluster, Maintenance and Auth services (`etcdserverpb`).
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// etcd's lock service (`v3lockpb`): Lock and Unlock.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
}

/// etcd's election service (`v3electionpb`): Campaign, Proclaim, Leader, Observe and Resign.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
}

/// Rudder's member-to-member protocol (`rudder.raftpb`): frames for Raft messages, forwarded writes
/// and read indexes. Not part of etcd's API.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod raftpb {
    tonic::include_proto!("rudder.raftpb");
}

/// Encoded `google.protobuf.FileDescriptorSet` for every package above (e.g. for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("etcd_descriptor");

#[cfg(test)]
mod tests {
    use super::etcdserverpb::{PutRequest, RangeResponse, ResponseHeader};
    use super::mvccpb::KeyValue;
    use prost::Message;

    #[test]
    fn put_request_field_numbers() {
        let req = PutRequest {
            key: b"a".to_vec(),
            value: b"b".to_vec(),
            lease: 5,
            ..Default::default()
        };
        assert_eq!(req.encode_to_vec(), vec![0x0a, 1, b'a', 0x12, 1, b'b', 0x18, 5]);
    }

    #[test]
    fn range_response_field_numbers() {
        let resp = RangeResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..Default::default()
            }),
            kvs: vec![KeyValue {
                key: b"k".to_vec(),
                mod_revision: 3,
                value: b"v".to_vec(),
                lease: 2,
                ..Default::default()
            }],
            more: true,
            count: 1,
        };
        // KeyValue: key=1 (len), mod_revision=3 (varint), value=5 (len), lease=6 (varint).
        let kv = [0x0a, 1, b'k', 0x18, 3, 0x2a, 1, b'v', 0x30, 2];
        let mut expected = vec![0x0a, 2, 0x18, 7]; // header{revision=3}
        expected.extend_from_slice(&[0x12, kv.len() as u8]); // kvs=2
        expected.extend_from_slice(&kv);
        expected.extend_from_slice(&[0x18, 1, 0x20, 1]); // more=3, count=4
        assert_eq!(resp.encode_to_vec(), expected);
        assert_eq!(RangeResponse::decode(expected.as_slice()).ok(), Some(resp));
    }

    #[test]
    fn election_field_numbers() {
        let req = super::v3electionpb::ProclaimRequest {
            leader: Some(super::v3electionpb::LeaderKey {
                name: b"n".to_vec(),
                key: b"k".to_vec(),
                rev: 3,
                lease: 4,
            }),
            value: b"v".to_vec(),
        };
        // leader=1 {name=1, key=2, rev=3, lease=4}, value=2.
        let leader = [0x0a, 1, b'n', 0x12, 1, b'k', 0x18, 3, 0x20, 4];
        let mut expected = vec![0x0a, leader.len() as u8];
        expected.extend_from_slice(&leader);
        expected.extend_from_slice(&[0x12, 1, b'v']);
        assert_eq!(req.encode_to_vec(), expected);
        let lock = super::v3lockpb::LockRequest {
            name: b"n".to_vec(),
            lease: 5,
        };
        assert_eq!(lock.encode_to_vec(), vec![0x0a, 1, b'n', 0x10, 5]);
    }

    #[test]
    fn descriptor_set_is_embedded() {
        assert!(!super::FILE_DESCRIPTOR_SET.is_empty());
    }
}
