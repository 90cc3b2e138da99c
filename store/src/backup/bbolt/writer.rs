//! Writes a complete bbolt file in one pass from buckets of sorted keys.
//!
//! Pages are appended as they fill: leaves first, then the branch levels above them, bucket by bucket,
//! and finally the root bucket's page(s). Pages 0 and 1 are reserved up front and the two meta pages are
//! written last, so a half-written file never validates. Memory stays at one leaf page plus the first
//! key of every page of the bucket being written.
//!
//! The file looks like one written by `tx.WriteTo` (what etcd streams as a snapshot): no freelist page
//! (freelist pgid `0xFFFF_FFFF_FFFF_FFFF`, as etcd's `NoFreelistSync` backend leaves it), every page
//! below the high-water mark reachable, meta 1 one txid behind meta 0. Small buckets without nested
//! buckets are stored inline, as bbolt itself would store them (at most a quarter page).

use std::io::{Seek, SeekFrom, Write};

use super::page::{
    branch_node_size, encode_branch, encode_leaf, leaf_node_size, BranchItem, LeafItem, Meta, PageHeader,
    BUCKET_HEADER_SIZE, FLAG_BRANCH, FLAG_LEAF, FLAG_META, LEAF_BUCKET, MAX_KEY_SIZE, MAX_VALUE_SIZE, NO_FREELIST,
    PAGE_HEADER_SIZE,
};
use super::{BoltError, PAGE_SIZE};

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSummary {
    /// Pages in the file (the meta high-water mark).
    pub pages: u64,
    /// File size in bytes: `pages * PAGE_SIZE`.
    pub size: u64,
    /// Key/value pairs written across all buckets.
    pub entries: u64,
}

/// Appends pages to the output and hands out their ids.
struct PageSink<W> {
    out: W,
    next: u64,
}

impl<W: Write> PageSink<W> {
    fn pages_for(len: usize) -> usize {
        len.div_ceil(PAGE_SIZE).max(1)
    }

    fn header(&self, flags: u16, count: usize, pages: usize) -> Result<PageHeader, BoltError> {
        // bbolt stores the element count in 16 bits and reserves 0xFFFF (freelist escape).
        let count = u16::try_from(count)
            .ok()
            .filter(|c| *c < 0xFFFF)
            .ok_or_else(|| BoltError::input("too many elements in one page"))?;
        let overflow = u32::try_from(pages - 1).map_err(|_| BoltError::input("node spans too many pages"))?;
        Ok(PageHeader {
            id: self.next,
            flags,
            count,
            overflow,
        })
    }

    fn write_leaf(&mut self, items: &[LeafItem]) -> Result<u64, BoltError> {
        let pages = Self::pages_for(leaf_node_size(items));
        let header = self.header(FLAG_LEAF, items.len(), pages)?;
        self.emit(&encode_leaf(header, pages * PAGE_SIZE, items), pages)
    }

    fn write_branch(&mut self, items: &[BranchItem]) -> Result<u64, BoltError> {
        let pages = Self::pages_for(branch_node_size(items));
        let header = self.header(FLAG_BRANCH, items.len(), pages)?;
        self.emit(&encode_branch(header, pages * PAGE_SIZE, items), pages)
    }

    fn emit(&mut self, buf: &[u8], pages: usize) -> Result<u64, BoltError> {
        let id = self.next;
        self.out.write_all(buf)?;
        self.next += pages as u64;
        Ok(id)
    }
}

/// Where a finished bucket lives.
enum TreeRoot {
    Page(u64),
    /// An inline leaf page (no page id), stored right after the bucket header in the parent.
    Inline(Vec<u8>),
}

/// Builds one B+tree bottom-up from sorted items.
#[derive(Default)]
struct TreeBuilder {
    leaf: Vec<LeafItem>,
    leaf_size: usize,
    /// First key and page of every leaf written so far.
    children: Vec<BranchItem>,
    last_key: Option<Vec<u8>>,
    entries: u64,
}

impl TreeBuilder {
    fn push<W: Write>(&mut self, sink: &mut PageSink<W>, item: LeafItem) -> Result<(), BoltError> {
        if item.key.is_empty() {
            return Err(BoltError::input("empty key"));
        }
        if item.key.len() > MAX_KEY_SIZE {
            return Err(BoltError::input(format!(
                "key of {} bytes exceeds bbolt's limit",
                item.key.len()
            )));
        }
        if item.value.len() > MAX_VALUE_SIZE {
            return Err(BoltError::input(format!(
                "value of {} bytes exceeds bbolt's limit",
                item.value.len()
            )));
        }
        if self.last_key.as_ref().is_some_and(|last| item.key <= *last) {
            return Err(BoltError::input("keys must be strictly increasing"));
        }
        // Fill pages completely: any fill factor is valid, and full pages keep snapshots small.
        if !self.leaf.is_empty() && PAGE_HEADER_SIZE + self.leaf_size + item.size() > PAGE_SIZE {
            self.flush_leaf(sink)?;
        }
        self.last_key = Some(item.key.clone());
        self.leaf_size += item.size();
        self.leaf.push(item);
        self.entries += 1;
        Ok(())
    }

    fn flush_leaf<W: Write>(&mut self, sink: &mut PageSink<W>) -> Result<(), BoltError> {
        let pgid = sink.write_leaf(&self.leaf)?;
        let key = self.leaf.first().map(|i| i.key.clone()).unwrap_or_default();
        self.children.push(BranchItem { key, pgid });
        self.leaf.clear();
        self.leaf_size = 0;
        Ok(())
    }

    /// bbolt's `Bucket.inlineable`: one leaf, no nested buckets, at most a quarter page.
    fn inlineable(&self) -> bool {
        self.children.is_empty()
            && self.leaf.iter().all(|i| i.flags & LEAF_BUCKET == 0)
            && PAGE_HEADER_SIZE + self.leaf_size <= PAGE_SIZE / 4
    }

    fn finish<W: Write>(mut self, sink: &mut PageSink<W>, allow_inline: bool) -> Result<TreeRoot, BoltError> {
        if allow_inline && self.inlineable() {
            let len = leaf_node_size(&self.leaf);
            // An inline page keeps id 0 and is exactly as long as its content.
            let header = PageHeader {
                id: 0,
                flags: FLAG_LEAF,
                count: u16::try_from(self.leaf.len()).map_err(|_| BoltError::input("too many inline items"))?,
                overflow: 0,
            };
            return Ok(TreeRoot::Inline(encode_leaf(header, len, &self.leaf)));
        }
        // An empty non-inline tree still needs its (empty) root leaf.
        if !self.leaf.is_empty() || self.children.is_empty() {
            self.flush_leaf(sink)?;
        }
        let mut level = std::mem::take(&mut self.children);
        while level.len() > 1 {
            let mut next = Vec::new();
            let mut page: Vec<BranchItem> = Vec::new();
            let mut size = PAGE_HEADER_SIZE;
            for item in level {
                // At least two children per branch page (bbolt's minKeysPerPage), overflowing the page if
                // keys are huge, so every level is at most half as wide as the one below.
                if page.len() >= 2 && size + item.size() > PAGE_SIZE {
                    let pgid = sink.write_branch(&page)?;
                    next.push(BranchItem {
                        key: page[0].key.clone(),
                        pgid,
                    });
                    page.clear();
                    size = PAGE_HEADER_SIZE;
                }
                size += item.size();
                page.push(item);
            }
            let pgid = sink.write_branch(&page)?;
            next.push(BranchItem {
                key: std::mem::take(&mut page[0].key),
                pgid,
            });
            level = next;
        }
        let root = level
            .pop()
            .ok_or_else(|| BoltError::input("tree without a root page"))?;
        Ok(TreeRoot::Page(root.pgid))
    }
}

/// Writes a bbolt file with top-level buckets (no nested buckets: etcd uses none).
pub struct BoltWriter<W: Write + Seek> {
    sink: PageSink<W>,
    /// (bucket name, bucket value: header plus inline page if any).
    buckets: Vec<(Vec<u8>, Vec<u8>)>,
    open_bucket: bool,
    entries: u64,
}

impl<W: Write + Seek> BoltWriter<W> {
    /// Starts a file at the current start of `out`, reserving the two meta pages.
    pub fn new(mut out: W) -> Result<Self, BoltError> {
        out.seek(SeekFrom::Start(0))?;
        out.write_all(&[0u8; 2 * PAGE_SIZE])?;
        Ok(BoltWriter {
            sink: PageSink { out, next: 2 },
            buckets: Vec::new(),
            open_bucket: false,
            entries: 0,
        })
    }

    /// Opens a top-level bucket; buckets may come in any order, their keys must be sorted.
    pub fn bucket(&mut self, name: &[u8]) -> Result<BucketWriter<'_, W>, BoltError> {
        if name.is_empty() {
            return Err(BoltError::input("empty bucket name"));
        }
        if self.open_bucket {
            return Err(BoltError::input("another bucket is still being written"));
        }
        if self.buckets.iter().any(|(n, _)| n == name) {
            return Err(BoltError::input(format!(
                "bucket {:?} written twice",
                String::from_utf8_lossy(name)
            )));
        }
        self.open_bucket = true;
        Ok(BucketWriter {
            writer: self,
            name: name.to_vec(),
            tree: TreeBuilder::default(),
        })
    }

    /// Writes a whole bucket from sorted pairs.
    pub fn put_bucket<K, V>(&mut self, name: &[u8], items: impl IntoIterator<Item = (K, V)>) -> Result<(), BoltError>
    where
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let mut b = self.bucket(name)?;
        for (k, v) in items {
            b.put(k.as_ref(), v.as_ref())?;
        }
        b.finish()
    }

    /// Writes the root bucket and the meta pages; returns the output, positioned at its end.
    pub fn finish(mut self, txid: u64) -> Result<(W, FileSummary), BoltError> {
        if self.open_bucket {
            return Err(BoltError::input("a bucket was opened but not finished"));
        }
        self.buckets.sort_by(|a, b| a.0.cmp(&b.0));
        let mut root = TreeBuilder::default();
        for (name, value) in std::mem::take(&mut self.buckets) {
            root.push(
                &mut self.sink,
                LeafItem {
                    flags: LEAF_BUCKET,
                    key: name,
                    value,
                },
            )?;
        }
        let TreeRoot::Page(root_pgid) = root.finish(&mut self.sink, false)? else {
            return Err(BoltError::input("the root bucket cannot be inline"));
        };
        let pages = self.sink.next;
        // Like `tx.WriteTo`: both metas describe the same tree, meta 1 one transaction older.
        let txid = txid.max(2);
        let mut out = self.sink.out;
        for (id, txid) in [(0u64, txid), (1, txid - 1)] {
            let meta = Meta {
                page_size: PAGE_SIZE as u32,
                flags: 0,
                root: root_pgid,
                sequence: 0,
                freelist: NO_FREELIST,
                pgid: pages,
                txid,
            };
            let mut page = [0u8; PAGE_SIZE];
            let mut h = [0u8; PAGE_HEADER_SIZE];
            PageHeader {
                id,
                flags: FLAG_META,
                count: 0,
                overflow: 0,
            }
            .encode(&mut h);
            page[..PAGE_HEADER_SIZE].copy_from_slice(&h);
            page[PAGE_HEADER_SIZE..PAGE_HEADER_SIZE + 64].copy_from_slice(&meta.encode());
            out.seek(SeekFrom::Start(id * PAGE_SIZE as u64))?;
            out.write_all(&page)?;
        }
        let size = pages * PAGE_SIZE as u64;
        out.seek(SeekFrom::Start(size))?;
        out.flush()?;
        Ok((
            out,
            FileSummary {
                pages,
                size,
                entries: self.entries,
            },
        ))
    }
}

/// Receives the sorted pairs of one bucket; [`BucketWriter::finish`] records it in the file.
pub struct BucketWriter<'a, W: Write + Seek> {
    writer: &'a mut BoltWriter<W>,
    name: Vec<u8>,
    tree: TreeBuilder,
}

impl<W: Write + Seek> BucketWriter<'_, W> {
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), BoltError> {
        self.tree.push(
            &mut self.writer.sink,
            LeafItem {
                flags: 0,
                key: key.to_vec(),
                value: value.to_vec(),
            },
        )
    }

    pub fn finish(self) -> Result<(), BoltError> {
        let entries = self.tree.entries;
        let root = self.tree.finish(&mut self.writer.sink, true)?;
        let mut value = vec![0u8; BUCKET_HEADER_SIZE];
        match root {
            TreeRoot::Page(pgid) => value[0..8].copy_from_slice(&pgid.to_le_bytes()),
            TreeRoot::Inline(page) => value.extend_from_slice(&page),
        }
        self.writer.entries += entries;
        self.writer.buckets.push((self.name, value));
        self.writer.open_bucket = false;
        Ok(())
    }
}
