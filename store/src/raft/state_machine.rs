//! openraft's state machine over the MVCC store: applies committed entries through the [`Applier`],
//! keeps the applied log id and membership in the same batch as the data, and builds / installs
//! snapshots (a dump of the state column families, kept in a file).

use std::io::{self, Cursor, Write};
use std::path::PathBuf;
use std::sync::Arc;

use futures::{Stream, TryStreamExt};
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, OptionalSend, RaftSnapshotBuilder};
use rocksdb::{IteratorMode, WriteBatch};

use super::{decode, encode, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::apply::Applier;
use crate::backend;
use crate::command::ApplyResult;
use crate::schema::{CF_KV, CF_LEASE, CF_META, META_APPLIED, META_MEMBERSHIP};

#[derive(Clone)]
pub struct StateMachine {
    applier: Arc<Applier>,
    /// The latest snapshot, on disk as etcd keeps its own (`<data-dir>/member/snap/`): held in memory it
    /// cost as much RSS as the state, for a file read only when a member needs a snapshot.
    snapshot_path: Arc<PathBuf>,
    /// One writer of the snapshot file at a time: a build and an install may overlap, and both write
    /// the same `.part` file before renaming it into place.
    writing: Arc<parking_lot::Mutex<()>>,
}

/// Column families that make up the state machine (and therefore a snapshot).
const STATE_CFS: &[&str] = &[CF_KV, CF_LEASE, CF_META];

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    /// `snapshot_path`: the file this member keeps its latest snapshot in.
    pub fn new(applier: Arc<Applier>, snapshot_path: PathBuf) -> Self {
        StateMachine {
            applier,
            snapshot_path: Arc::new(snapshot_path),
            writing: Arc::default(),
        }
    }

    fn read_applied(&self) -> io::Result<(Option<LogId>, StoredMembership)> {
        let db = self.applier.mvcc.db();
        let meta = backend::cf(db, CF_META)?;
        let applied = match db.get_cf(meta, META_APPLIED).map_err(io_err)? {
            Some(raw) => Some(decode::<LogId>(&raw)?),
            None => None,
        };
        let membership = match db.get_cf(meta, META_MEMBERSHIP).map_err(io_err)? {
            Some(raw) => decode::<StoredMembership>(&raw)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn reload_lessor(&self) -> io::Result<()> {
        let attachments = self.applier.mvcc.reload().map_err(io_err)?;
        self.applier.restore_leases(attachments).map_err(io_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> io::Result<Snapshot> {
        let db = self.applier.mvcc.db().clone();
        let path = self.snapshot_path.clone();
        let writing = self.writing.clone();
        // openraft builds snapshots while entries keep being applied: the position and membership must
        // come from the same RocksDB snapshot as the rows, or a follower installing it would apply the
        // entries after the recorded position a second time. The dump runs on a blocking thread (on an
        // async worker it stalled every request that worker carried: a 1.3 s tail under load) and goes
        // row by row to the file, so the state is never held in memory.
        let meta = tokio::task::spawn_blocking(move || -> io::Result<SnapshotMeta> {
            let snap = db.snapshot();
            let meta_cf = backend::cf(&db, CF_META)?;
            let last_log_id = match snap.get_cf(meta_cf, META_APPLIED).map_err(io_err)? {
                Some(raw) => Some(decode::<LogId>(&raw)?),
                None => None,
            };
            let last_membership = match snap.get_cf(meta_cf, META_MEMBERSHIP).map_err(io_err)? {
                Some(raw) => decode::<StoredMembership>(&raw)?,
                None => StoredMembership::default(),
            };
            let meta = SnapshotMeta {
                last_log_id,
                last_membership,
            };
            let _only_writer = writing.lock();
            snapshot_file::write(&path, |w| {
                snapshot_file::write_header(w, &meta)?;
                for (i, name) in STATE_CFS.iter().enumerate() {
                    for item in snap.iterator_cf(backend::cf(&db, name)?, IteratorMode::Start) {
                        let (k, v) = item.map_err(io_err)?;
                        snapshot_file::write_row(w, i as u8, &k, &v)?;
                    }
                }
                Ok(())
            })?;
            // openraft purges the log up to the snapshot once this returns, and the state is written
            // without the WAL: it must be on disk first (it is at least as new as the snapshot).
            backend::persist_state(&db)?;
            Ok(meta)
        })
        .await
        .map_err(io_err)??;
        // openraft keeps only the meta of a built snapshot and asks `get_current_snapshot` for the data
        // when a follower needs it.
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(Vec::new()),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> io::Result<(Option<LogId>, StoredMembership)> {
        self.read_applied()
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> io::Result<()>
    where
        Strm: Stream<Item = io::Result<EntryResponder<TypeConfig>>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let meta = backend::cf(self.applier.mvcc.db(), CF_META)?;
            let applied = encode(&entry.log_id)?;
            let record = |b: &mut WriteBatch| b.put_cf(meta, META_APPLIED, &applied);
            let result = match &entry.payload {
                EntryPayload::Normal(cmd) => self.applier.apply(&cmd.0, record).map_err(io_err)?,
                EntryPayload::Blank => {
                    self.applier.apply_empty(record).map_err(io_err)?;
                    ApplyResult::None
                }
                EntryPayload::Membership(m) => {
                    let stored = encode(&StoredMembership::new(Some(entry.log_id), m.clone()))?;
                    self.applier
                        .apply_empty(|b| {
                            record(b);
                            b.put_cf(meta, META_MEMBERSHIP, &stored);
                        })
                        .map_err(io_err)?;
                    ApplyResult::None
                }
            };
            if let Some(responder) = responder {
                responder.send(result);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(&mut self, meta: &SnapshotMeta, snapshot: Self::SnapshotData) -> io::Result<()> {
        let bytes = snapshot.into_inner();
        let db = self.applier.mvcc.db().clone();
        // The deletes below cover the keys visible now. Flush first: a key deleted only in a memtable
        // (written without the WAL) would otherwise come back from disk after a crash, past the batch.
        backend::persist_state(&db)?;
        let applied = encode(&meta.last_log_id)?;
        let membership = encode(&meta.last_membership)?;
        let mut batch = WriteBatch::default();
        for name in STATE_CFS {
            let cf = backend::cf(&db, name)?;
            for item in db.iterator_cf(cf, IteratorMode::Start) {
                let (k, _) = item.map_err(io_err)?;
                batch.delete_cf(cf, k);
            }
        }
        snapshot_file::read(&bytes, |i, k, v| {
            let name = STATE_CFS
                .get(i as usize)
                .ok_or_else(|| io_err("snapshot names an unknown column family"))?;
            batch.put_cf(backend::cf(&db, name)?, k, v);
            Ok(())
        })?;
        let meta_cf = backend::cf(&db, CF_META)?;
        if meta.last_log_id.is_some() {
            batch.put_cf(meta_cf, META_APPLIED, applied);
        }
        batch.put_cf(meta_cf, META_MEMBERSHIP, membership);
        let mut opts = rocksdb::WriteOptions::default();
        opts.set_sync(true);
        db.write_opt(batch, &opts).map_err(io_err)?;
        self.reload_lessor()?;
        // Kept as this member's snapshot, for members that later need one from it.
        let _only_writer = self.writing.lock();
        snapshot_file::write(&self.snapshot_path, |w| w.write_all(&bytes))
    }

    async fn get_current_snapshot(&mut self) -> io::Result<Option<Snapshot>> {
        let (applied, _) = self.read_applied()?;
        let path = self.snapshot_path.clone();
        tokio::task::spawn_blocking(move || {
            let bytes = match std::fs::read(&*path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let meta = match snapshot_file::read_header(&bytes) {
                Ok(m) => m,
                Err(e) => {
                    // Written by rename, so only damage makes it unreadable: openraft then builds a
                    // new one when it needs one.
                    tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable raft snapshot");
                    return Ok(None);
                }
            };
            // After a power loss the state may be behind a snapshot taken from it before the crash (the
            // state is not synced on its own); such a snapshot is not this member's state.
            if meta.last_log_id > applied {
                return Ok(None);
            }
            Ok(Some(Snapshot {
                meta,
                snapshot: Cursor::new(bytes),
            }))
        })
        .await
        .map_err(io_err)?
    }
}

/// The snapshot file, which is also what members send each other: a length-prefixed postcard
/// `SnapshotMeta`, then rows `[column family index: u8][key length: u32 LE][key][value length: u32 LE]
/// [value]` to the end. Rows are written one at a time, so building never holds the whole state.
mod snapshot_file {
    use std::fs::File;
    use std::io::{self, BufWriter, Write};
    use std::path::Path;

    use super::{decode, encode, io_err, SnapshotMeta};

    /// Writes the file through `body` into a `.part` file, syncs it and renames it into place.
    pub fn write(path: &Path, body: impl FnOnce(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
        let part = path.with_extension("part");
        let mut w = BufWriter::with_capacity(1 << 20, File::create(&part)?);
        body(&mut w)?;
        let file = w.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&part, path)?;
        if let Some(dir) = path.parent() {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    pub fn write_header(w: &mut impl Write, meta: &SnapshotMeta) -> io::Result<()> {
        let raw = encode(meta)?;
        w.write_all(&len32(raw.len())?)?;
        w.write_all(&raw)
    }

    pub fn write_row(w: &mut impl Write, cf: u8, key: &[u8], value: &[u8]) -> io::Result<()> {
        w.write_all(&[cf])?;
        w.write_all(&len32(key.len())?)?;
        w.write_all(key)?;
        w.write_all(&len32(value.len())?)?;
        w.write_all(value)
    }

    fn len32(n: usize) -> io::Result<[u8; 4]> {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(|_| io_err("snapshot row larger than 4 GiB"))
    }

    /// Splits `n` bytes off the front of `data`.
    fn take<'a>(data: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
        if data.len() < n {
            return Err(io_err("snapshot is truncated"));
        }
        let (head, rest) = data.split_at(n);
        *data = rest;
        Ok(head)
    }

    fn take_len(data: &mut &[u8]) -> io::Result<usize> {
        let raw = take(data, 4)?;
        let n = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]);
        usize::try_from(n).map_err(io_err)
    }

    /// The header, and the rest of the data after it.
    fn split_header(mut data: &[u8]) -> io::Result<(SnapshotMeta, &[u8])> {
        let n = take_len(&mut data)?;
        let meta = decode(take(&mut data, n)?)?;
        Ok((meta, data))
    }

    pub fn read_header(data: &[u8]) -> io::Result<SnapshotMeta> {
        split_header(data).map(|(meta, _)| meta)
    }

    /// Calls `row` for every row; a truncated file is an error.
    pub fn read(data: &[u8], mut row: impl FnMut(u8, &[u8], &[u8]) -> io::Result<()>) -> io::Result<()> {
        let (_, mut rest) = split_header(data)?;
        while let Some((&cf, after)) = rest.split_first() {
            rest = after;
            let klen = take_len(&mut rest)?;
            let key = take(&mut rest, klen)?;
            let vlen = take_len(&mut rest)?;
            let value = take(&mut rest, vlen)?;
            row(cf, key, value)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_file;
    use super::SnapshotMeta;

    #[test]
    fn snapshot_file_round_trips_and_refuses_truncation() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft.snapshot");
        let rows: Vec<(u8, Vec<u8>, Vec<u8>)> = vec![(0, b"a".to_vec(), vec![]), (2, vec![], b"value".repeat(1000))];
        snapshot_file::write(&path, |w| {
            snapshot_file::write_header(w, &SnapshotMeta::default())?;
            rows.iter()
                .try_for_each(|(cf, k, v)| snapshot_file::write_row(w, *cf, k, v))
        })
        .expect("write");
        assert!(!path.with_extension("part").exists());
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(
            snapshot_file::read_header(&bytes).expect("header"),
            SnapshotMeta::default()
        );
        let mut back = Vec::new();
        snapshot_file::read(&bytes, |cf, k, v| {
            back.push((cf, k.to_vec(), v.to_vec()));
            Ok(())
        })
        .expect("rows");
        assert_eq!(back, rows);
        let cut = &bytes[..bytes.len() - 1];
        assert!(snapshot_file::read(cut, |_, _, _| Ok(())).is_err());
    }
}
