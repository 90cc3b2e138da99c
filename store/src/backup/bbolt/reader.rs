//! Reads bbolt files defensively: every offset, length and page id taken from the file is checked
//! before use, trees are walked with a depth limit and each page at most once per walk, so a corrupt
//! or hostile file yields an error, never a panic or an endless loop.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;

use super::page::{
    u32_at, u64_at, Meta, PageHeader, BUCKET_HEADER_SIZE, ELEMENT_SIZE, FLAG_BRANCH, FLAG_FREELIST, FLAG_LEAF,
    LEAF_BUCKET, NO_FREELIST, PAGE_HEADER_SIZE,
};
use super::BoltError;

/// bbolt trees are a handful of levels deep; anything deeper is a loop or garbage.
const MAX_DEPTH: usize = 64;

/// Random access to the bytes of a database.
pub trait ReadAt {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()>;
    fn len(&self) -> u64;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReadAt for &[u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        buf.copy_from_slice(self.get(start..end).ok_or_else(eof)?);
        Ok(())
    }

    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }
}

fn eof() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::UnexpectedEof)
}

/// A file, or its first `len` bytes (a snapshot without its SHA-256 trailer).
pub struct FileSource {
    file: File,
    len: u64,
}

impl FileSource {
    pub fn new(file: File, len: u64) -> Self {
        FileSource { file, len }
    }
}

impl ReadAt for FileSource {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        FileExt::read_exact_at(&self.file, buf, offset)
    }

    fn len(&self) -> u64 {
        self.len
    }
}

/// A top-level bucket: its name and where its tree is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketRef {
    pub name: Vec<u8>,
    root: Root,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Root {
    Page(u64),
    /// The inline page bytes (after the bucket header).
    Inline(Vec<u8>),
}

/// One key of a bucket. For a nested bucket, `value` is its raw bucket header (bbolt's `ForEach` hands
/// out nil there).
pub struct Entry<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub is_bucket: bool,
}

/// A decoded node: the bytes of a page (all its overflow pages) or of an inline page.
struct Node {
    id: u64,
    header: PageHeader,
    buf: Vec<u8>,
}

impl Node {
    fn parse(id: u64, buf: Vec<u8>) -> Result<Node, BoltError> {
        let header = PageHeader::decode(&buf).ok_or_else(|| BoltError::corrupt(format!("page {id}: truncated")))?;
        let elements = PAGE_HEADER_SIZE + ELEMENT_SIZE * usize::from(header.count);
        if elements > buf.len() {
            return Err(BoltError::corrupt(format!(
                "page {id}: {} elements overrun the page",
                header.count
            )));
        }
        Ok(Node { id, header, buf })
    }

    fn is_leaf(&self) -> bool {
        self.header.flags & FLAG_LEAF != 0
    }

    fn is_branch(&self) -> bool {
        self.header.flags & FLAG_BRANCH != 0
    }

    fn count(&self) -> usize {
        usize::from(self.header.count)
    }

    fn slice(&self, elem: usize, pos: u32, len: u64) -> Result<std::ops::Range<usize>, BoltError> {
        let start = (elem as u64).checked_add(u64::from(pos));
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.buf.len() as u64 => Ok(s as usize..e as usize),
            _ => Err(BoltError::corrupt(format!(
                "page {}: element data out of bounds",
                self.id
            ))),
        }
    }

    /// (flags, key, value) of leaf element `i`.
    fn leaf(&self, i: usize) -> Result<(u32, &[u8], &[u8]), BoltError> {
        let e = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
        let field = |off| u32_at(&self.buf, e + off).ok_or_else(|| BoltError::corrupt("leaf element truncated"));
        let (flags, pos, ksize, vsize) = (field(0)?, field(4)?, field(8)?, field(12)?);
        let all = self.slice(e, pos, u64::from(ksize) + u64::from(vsize))?;
        let (key, value) = self.buf[all].split_at(ksize as usize);
        Ok((flags, key, value))
    }

    /// (key, child pgid) of branch element `i`.
    fn branch(&self, i: usize) -> Result<(&[u8], u64), BoltError> {
        let e = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
        let trunc = || BoltError::corrupt("branch element truncated");
        let pos = u32_at(&self.buf, e).ok_or_else(trunc)?;
        let ksize = u32_at(&self.buf, e + 4).ok_or_else(trunc)?;
        let pgid = u64_at(&self.buf, e + 8).ok_or_else(trunc)?;
        let range = self.slice(e, pos, u64::from(ksize))?;
        Ok((&self.buf[range], pgid))
    }
}

/// Per-walk state: pages already seen and the key order so far.
struct Walk {
    seen: HashSet<u64>,
    last_key: Option<Vec<u8>>,
}

pub struct BoltReader<R: ReadAt> {
    src: R,
    page_size: u64,
    meta: Meta,
}

impl<R: ReadAt> BoltReader<R> {
    /// Validates the meta pages (the newer valid one wins, as in bbolt) and the file's size.
    pub fn open(src: R) -> Result<Self, BoltError> {
        let mut first = [0u8; PAGE_HEADER_SIZE + 64];
        src.read_exact_at(&mut first, 0)
            .map_err(|_| BoltError::corrupt("file too small for a meta page"))?;
        let meta0 = Meta::decode(&first[PAGE_HEADER_SIZE..]);
        // bbolt takes the page size from meta 0, or assumes the OS page size if meta 0 is damaged.
        let page_size = match &meta0 {
            Ok(m) => u64::from(m.page_size),
            Err(_) => super::PAGE_SIZE as u64,
        };
        if !page_size.is_power_of_two() || !(512..=1 << 16).contains(&page_size) {
            return Err(BoltError::corrupt(format!("unsupported page size {page_size}")));
        }
        let mut second = [0u8; PAGE_HEADER_SIZE + 64];
        let meta1 = src
            .read_exact_at(&mut second, page_size)
            .map_err(|_| BoltError::corrupt("file too small for the second meta page"))
            .and_then(|_| Meta::decode(&second[PAGE_HEADER_SIZE..]));
        let meta = match (meta0, meta1) {
            (Ok(a), Ok(b)) => {
                if b.txid > a.txid {
                    b
                } else {
                    a
                }
            }
            (Ok(a), Err(_)) => a,
            (Err(_), Ok(b)) => b,
            (Err(e), Err(_)) => return Err(e),
        };
        if u64::from(meta.page_size) != page_size {
            return Err(BoltError::corrupt("meta pages disagree on the page size"));
        }
        if meta.pgid < 3 || meta.root < 2 || meta.root >= meta.pgid {
            return Err(BoltError::corrupt(format!(
                "root page {} outside the database ({} pages)",
                meta.root, meta.pgid
            )));
        }
        if meta.freelist != NO_FREELIST && (meta.freelist < 2 || meta.freelist >= meta.pgid) {
            return Err(BoltError::corrupt(format!(
                "freelist page {} outside the database",
                meta.freelist
            )));
        }
        let needed = meta.pgid.checked_mul(page_size);
        if needed.is_none_or(|n| n > src.len()) {
            return Err(BoltError::corrupt(format!(
                "file is truncated: {} pages of {page_size} bytes need more than its {} bytes",
                meta.pgid,
                src.len()
            )));
        }
        Ok(BoltReader { src, page_size, meta })
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    /// The database size bbolt reports (`tx.Size()`): pages up to the high-water mark.
    pub fn size(&self) -> u64 {
        self.meta.pgid * self.page_size
    }

    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// Reads page `id` with its overflow pages; returns the node and the number of pages it spans.
    fn page(&self, id: u64) -> Result<(Node, u64), BoltError> {
        if id < 2 || id >= self.meta.pgid {
            return Err(BoltError::corrupt(format!(
                "page {id}: out of bounds ({} pages)",
                self.meta.pgid
            )));
        }
        let mut head = [0u8; PAGE_HEADER_SIZE];
        self.src.read_exact_at(&mut head, id * self.page_size)?;
        let header = PageHeader::decode(&head).ok_or_else(|| BoltError::corrupt(format!("page {id}: truncated")))?;
        if header.id != id {
            return Err(BoltError::corrupt(format!(
                "page {id}: header names page {}",
                header.id
            )));
        }
        let span = u64::from(header.overflow) + 1;
        if id + span > self.meta.pgid {
            return Err(BoltError::corrupt(format!(
                "page {id}: overflow runs past the end of the database"
            )));
        }
        let len = usize::try_from(span * self.page_size).map_err(|_| BoltError::corrupt("page too large"))?;
        let mut buf = vec![0u8; len];
        self.src.read_exact_at(&mut buf, id * self.page_size)?;
        Ok((Node::parse(id, buf)?, span))
    }

    fn root_node(&self, root: &Root, walk: &mut Walk) -> Result<Node, BoltError> {
        match root {
            Root::Page(id) => self.tree_page(*id, walk),
            Root::Inline(bytes) => {
                let node = Node::parse(0, bytes.clone())?;
                if !node.is_leaf() {
                    return Err(BoltError::corrupt("inline bucket page is not a leaf"));
                }
                Ok(node)
            }
        }
    }

    fn tree_page(&self, id: u64, walk: &mut Walk) -> Result<Node, BoltError> {
        if !walk.seen.insert(id) {
            return Err(BoltError::corrupt(format!("page {id}: multiple references")));
        }
        let (node, _) = self.page(id)?;
        if !node.is_leaf() && !node.is_branch() {
            return Err(BoltError::corrupt(format!(
                "page {id}: invalid type: {}",
                node.header.kind()
            )));
        }
        Ok(node)
    }

    /// Visits the entries of a tree in key order. Keys must increase strictly and stay within the
    /// bounds the branch keys above them set (bbolt's cursor relies on both).
    fn walk_node<E: From<BoltError>>(
        &self,
        node: &Node,
        depth: usize,
        upper: Option<&[u8]>,
        walk: &mut Walk,
        visit: &mut dyn FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if depth > MAX_DEPTH {
            return Err(BoltError::corrupt("tree too deep").into());
        }
        if node.is_leaf() {
            for i in 0..node.count() {
                let (flags, key, value) = node.leaf(i)?;
                let ordered = walk.last_key.as_deref().is_none_or(|last| key > last);
                if !ordered || upper.is_some_and(|u| key >= u) {
                    return Err(BoltError::corrupt(format!("page {}: keys out of order", node.id)).into());
                }
                let last = walk.last_key.get_or_insert_with(Vec::new);
                last.clear();
                last.extend_from_slice(key);
                visit(Entry {
                    key,
                    value,
                    is_bucket: flags & LEAF_BUCKET != 0,
                })?;
            }
            return Ok(());
        }
        for i in 0..node.count() {
            let (key, child) = node.branch(i)?;
            // Every key below a branch element is >= its key and < the next element's key, and a branch
            // key is above everything in the subtrees before it.
            let after_previous = i == 0 || walk.last_key.as_deref().is_none_or(|last| key > last);
            if !after_previous || upper.is_some_and(|u| key >= u) {
                return Err(BoltError::corrupt(format!("page {}: branch keys out of order", node.id)).into());
            }
            let next = if i + 1 < node.count() {
                Some(node.branch(i + 1)?.0.to_vec())
            } else {
                None
            };
            let bound = match (next.as_deref(), upper) {
                (Some(n), _) => Some(n),
                (None, u) => u,
            };
            let child_node = self.tree_page(child, walk)?;
            let first_ok = first_key(&child_node)?.is_none_or(|k| k >= key);
            if !first_ok {
                return Err(BoltError::corrupt(format!("page {child}: first key is below its branch key")).into());
            }
            self.walk_node(&child_node, depth + 1, bound, walk, visit)?;
        }
        Ok(())
    }

    fn walk_tree<E: From<BoltError>>(
        &self,
        root: &Root,
        visit: &mut dyn FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut walk = Walk {
            seen: HashSet::new(),
            last_key: None,
        };
        let node = self.root_node(root, &mut walk)?;
        self.walk_node(&node, 0, None, &mut walk, visit)
    }

    /// The top-level buckets in name order. A plain key in the root bucket is an error (bbolt allows
    /// only buckets there).
    pub fn buckets(&self) -> Result<Vec<BucketRef>, BoltError> {
        let mut out = Vec::new();
        self.walk_tree(
            &Root::Page(self.meta.root),
            &mut |e: Entry<'_>| -> Result<(), BoltError> {
                if !e.is_bucket {
                    return Err(BoltError::corrupt(format!(
                        "root bucket holds a plain key {:?}",
                        String::from_utf8_lossy(e.key)
                    )));
                }
                out.push(BucketRef {
                    name: e.key.to_vec(),
                    root: parse_bucket(e.value)?,
                });
                Ok(())
            },
        )?;
        Ok(out)
    }

    pub fn bucket(&self, name: &[u8]) -> Result<Option<BucketRef>, BoltError> {
        Ok(self.buckets()?.into_iter().find(|b| b.name == name))
    }

    /// Visits every entry of a bucket in key order.
    pub fn for_each<E: From<BoltError>>(
        &self,
        bucket: &BucketRef,
        mut visit: impl FnMut(Entry<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.walk_tree(&bucket.root, &mut visit)
    }

    /// Checks the whole file as bbolt's `tx.Check()` does: every page reachable from the root at most
    /// once, only branch and leaf pages in trees, keys in order, and every page below the high-water
    /// mark either reachable or free. Without a stored freelist, unreachable pages are free (bbolt
    /// rebuilds the freelist that way). Returns the problems found; empty means the file is sound.
    pub fn check(&self) -> Result<Vec<String>, BoltError> {
        let mut problems = Vec::new();
        let pages = usize::try_from(self.meta.pgid).map_err(|_| BoltError::corrupt("too many pages"))?;
        let mut reachable = vec![false; pages];
        reachable[0] = true;
        reachable[1] = true;
        let mut freed = vec![false; pages];
        if self.meta.freelist != NO_FREELIST {
            match self.freelist() {
                Ok((ids, span)) => {
                    for p in self.meta.freelist..self.meta.freelist + span {
                        reachable[p as usize] = true;
                    }
                    for id in ids {
                        match freed.get_mut(id as usize) {
                            Some(f) if *f => problems.push(format!("page {id}: already freed")),
                            Some(f) => *f = true,
                            None => problems.push(format!("page {id}: freed page out of bounds")),
                        }
                    }
                }
                Err(e) => problems.push(e.to_string()),
            }
        }
        self.check_tree(&Root::Page(self.meta.root), &mut reachable, &freed, &mut problems, 0);
        for (id, (r, f)) in reachable.iter().zip(freed.iter()).enumerate() {
            let stored_freelist = self.meta.freelist != NO_FREELIST;
            if *r && *f && id > 1 {
                problems.push(format!("page {id}: reachable freed"));
            } else if !*r && !*f && stored_freelist {
                problems.push(format!("page {id}: unreachable unfreed"));
            }
        }
        Ok(problems)
    }

    /// Marks the pages of one tree (and of the buckets nested in it) and checks its keys.
    fn check_tree(
        &self,
        root: &Root,
        reachable: &mut [bool],
        freed: &[bool],
        problems: &mut Vec<String>,
        depth: usize,
    ) {
        if depth > MAX_DEPTH {
            problems.push("buckets nested too deep".into());
            return;
        }
        let mut nested = Vec::new();
        let result = self.walk_tree(root, &mut |e: Entry<'_>| -> Result<(), BoltError> {
            if e.is_bucket {
                nested.push(parse_bucket(e.value)?);
            }
            Ok(())
        });
        if let Err(e) = result {
            problems.push(e.to_string());
            return;
        }
        if let Root::Page(id) = root {
            if let Err(e) = self.mark_pages(*id, reachable, freed, problems, 0) {
                problems.push(e.to_string());
            }
        }
        for child in nested {
            self.check_tree(&child, reachable, freed, problems, depth + 1);
        }
    }

    fn mark_pages(
        &self,
        id: u64,
        reachable: &mut [bool],
        freed: &[bool],
        problems: &mut Vec<String>,
        depth: usize,
    ) -> Result<(), BoltError> {
        if depth > MAX_DEPTH {
            return Err(BoltError::corrupt("tree too deep"));
        }
        let (node, span) = self.page(id)?;
        for p in id..id + span {
            let slot = &mut reachable[p as usize];
            if *slot {
                problems.push(format!("page {p}: multiple references"));
                return Ok(());
            }
            *slot = true;
        }
        if freed[id as usize] {
            problems.push(format!("page {id}: reachable freed"));
        }
        if node.is_branch() {
            for i in 0..node.count() {
                let (_, child) = node.branch(i)?;
                self.mark_pages(child, reachable, freed, problems, depth + 1)?;
            }
        }
        Ok(())
    }

    /// The stored freelist: free page ids and the pages the freelist itself spans.
    fn freelist(&self) -> Result<(Vec<u64>, u64), BoltError> {
        let (node, span) = self.page(self.meta.freelist)?;
        if node.header.flags & FLAG_FREELIST == 0 {
            return Err(BoltError::corrupt(format!(
                "page {}: invalid freelist page type {}",
                self.meta.freelist,
                node.header.kind()
            )));
        }
        // A count of 0xFFFF means the real count is the first u64 after the header.
        let (count, start) = if node.header.count == 0xFFFF {
            let n = u64_at(&node.buf, PAGE_HEADER_SIZE).ok_or_else(|| BoltError::corrupt("freelist truncated"))?;
            (n, PAGE_HEADER_SIZE + 8)
        } else {
            (u64::from(node.header.count), PAGE_HEADER_SIZE)
        };
        let room = (node.buf.len() - start) as u64 / 8;
        if count > room {
            return Err(BoltError::corrupt("freelist overruns its pages"));
        }
        let ids = (0..count as usize)
            .map(|i| u64_at(&node.buf, start + i * 8).unwrap_or(0))
            .collect();
        Ok((ids, span))
    }
}

fn first_key(node: &Node) -> Result<Option<&[u8]>, BoltError> {
    if node.count() == 0 {
        return Ok(None);
    }
    if node.is_leaf() {
        Ok(Some(node.leaf(0)?.1))
    } else {
        Ok(Some(node.branch(0)?.0))
    }
}

/// A bucket value: a 16-byte header (root pgid, sequence), then the inline page when root is 0.
fn parse_bucket(value: &[u8]) -> Result<Root, BoltError> {
    let root = u64_at(value, 0).ok_or_else(|| BoltError::corrupt("bucket header truncated"))?;
    if value.len() < BUCKET_HEADER_SIZE {
        return Err(BoltError::corrupt("bucket header truncated"));
    }
    if root == 0 {
        let page = &value[BUCKET_HEADER_SIZE..];
        if page.len() < PAGE_HEADER_SIZE {
            return Err(BoltError::corrupt("inline bucket page truncated"));
        }
        Ok(Root::Inline(page.to_vec()))
    } else {
        Ok(Root::Page(root))
    }
}
