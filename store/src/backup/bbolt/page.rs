//! bbolt's on-disk structures: the page header, the leaf and branch elements, the bucket header and the
//! meta page, encoded little-endian as bbolt writes them on every platform etcd ships for.
//!
//! Layout facts (go.etcd.io/bbolt, page.go / db.go / bucket.go):
//! * page header, 16 bytes: id u64, flags u16, count u16, overflow u32 (extra pages after this one);
//! * leaf element, 16 bytes: flags u32, pos u32, ksize u32, vsize u32; branch element, 16 bytes: pos u32,
//!   ksize u32, pgid u64. `pos` counts from the element itself to its key; a leaf value follows its key;
//! * bucket header, 16 bytes: root pgid u64 (0 = inline: a leaf page follows the header), sequence u64;
//! * meta, after the page header: magic, version, page size, flags (u32 each), root bucket header,
//!   freelist pgid, high-water pgid, txid (u64 each), then an FNV-64a checksum of the preceding 56 bytes.

use super::BoltError;

pub const PAGE_HEADER_SIZE: usize = 16;
/// Leaf and branch elements have the same size.
pub const ELEMENT_SIZE: usize = 16;
pub const BUCKET_HEADER_SIZE: usize = 16;

pub const FLAG_BRANCH: u16 = 0x01;
pub const FLAG_LEAF: u16 = 0x02;
pub const FLAG_META: u16 = 0x04;
pub const FLAG_FREELIST: u16 = 0x10;
/// Leaf element flag: the value is a nested bucket.
pub const LEAF_BUCKET: u32 = 0x01;

pub const MAGIC: u32 = 0xED0C_DAED;
pub const VERSION: u32 = 2;
/// The freelist pgid of a file that stores no freelist (etcd runs bbolt with `NoFreelistSync`); readers
/// rebuild it by treating every unreachable page as free.
pub const NO_FREELIST: u64 = u64::MAX;
/// bbolt's limits on keys and values.
pub const MAX_KEY_SIZE: usize = 32_768;
pub const MAX_VALUE_SIZE: usize = (1 << 31) - 2;

/// Bytes of the meta struct covered by the checksum.
const META_SUMMED: usize = 56;
pub const META_SIZE: usize = 64;

pub fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

pub fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

pub fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageHeader {
    pub id: u64,
    pub flags: u16,
    pub count: u16,
    pub overflow: u32,
}

impl PageHeader {
    pub fn encode(&self, out: &mut [u8; PAGE_HEADER_SIZE]) {
        out[0..8].copy_from_slice(&self.id.to_le_bytes());
        out[8..10].copy_from_slice(&self.flags.to_le_bytes());
        out[10..12].copy_from_slice(&self.count.to_le_bytes());
        out[12..16].copy_from_slice(&self.overflow.to_le_bytes());
    }

    pub fn decode(b: &[u8]) -> Option<PageHeader> {
        Some(PageHeader {
            id: u64_at(b, 0)?,
            flags: u16_at(b, 8)?,
            count: u16_at(b, 10)?,
            overflow: u32_at(b, 12)?,
        })
    }

    pub fn kind(&self) -> &'static str {
        if self.flags & FLAG_BRANCH != 0 {
            "branch"
        } else if self.flags & FLAG_LEAF != 0 {
            "leaf"
        } else if self.flags & FLAG_META != 0 {
            "meta"
        } else if self.flags & FLAG_FREELIST != 0 {
            "freelist"
        } else {
            "unknown"
        }
    }
}

/// FNV-1a, 64 bit: bbolt's meta checksum.
pub fn fnv64a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub page_size: u32,
    pub flags: u32,
    /// Root page of the root bucket (whose keys are the top-level bucket names).
    pub root: u64,
    pub sequence: u64,
    pub freelist: u64,
    /// High-water mark: the number of pages the database uses.
    pub pgid: u64,
    pub txid: u64,
}

impl Meta {
    /// The meta struct with its checksum, to be placed right after a meta page's header.
    pub fn encode(&self) -> [u8; META_SIZE] {
        let mut out = [0u8; META_SIZE];
        out[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        out[4..8].copy_from_slice(&VERSION.to_le_bytes());
        out[8..12].copy_from_slice(&self.page_size.to_le_bytes());
        out[12..16].copy_from_slice(&self.flags.to_le_bytes());
        out[16..24].copy_from_slice(&self.root.to_le_bytes());
        out[24..32].copy_from_slice(&self.sequence.to_le_bytes());
        out[32..40].copy_from_slice(&self.freelist.to_le_bytes());
        out[40..48].copy_from_slice(&self.pgid.to_le_bytes());
        out[48..56].copy_from_slice(&self.txid.to_le_bytes());
        let sum = fnv64a(&out[..META_SUMMED]);
        out[56..64].copy_from_slice(&sum.to_le_bytes());
        out
    }

    /// Decodes and validates the meta struct (magic, version, checksum) as bbolt's `meta.validate`.
    pub fn decode(b: &[u8]) -> Result<Meta, BoltError> {
        let field = |off| u32_at(b, off).ok_or_else(|| BoltError::corrupt("meta page is truncated"));
        let field64 = |off| u64_at(b, off).ok_or_else(|| BoltError::corrupt("meta page is truncated"));
        if field(0)? != MAGIC {
            return Err(BoltError::corrupt("invalid magic number: not a bbolt database"));
        }
        if field(4)? != VERSION {
            return Err(BoltError::corrupt(format!("unsupported bbolt version {}", field(4)?)));
        }
        let checksum = field64(56)?;
        // bbolt 1.3 accepts a zero checksum (files from before checksums existed).
        if checksum != 0 && checksum != fnv64a(&b[..META_SUMMED]) {
            return Err(BoltError::corrupt("meta page checksum mismatch"));
        }
        Ok(Meta {
            page_size: field(8)?,
            flags: field(12)?,
            root: field64(16)?,
            sequence: field64(24)?,
            freelist: field64(32)?,
            pgid: field64(40)?,
            txid: field64(48)?,
        })
    }
}

/// One key/value of a leaf page; `flags` is [`LEAF_BUCKET`] for a nested bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeafItem {
    pub flags: u32,
    pub key: Vec<u8>,
    pub value: Vec<u8>,
}

impl LeafItem {
    /// Bytes this item takes in a page: its element and its data.
    pub fn size(&self) -> usize {
        ELEMENT_SIZE + self.key.len() + self.value.len()
    }
}

/// One child of a branch page: the first key of the child and its page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BranchItem {
    pub key: Vec<u8>,
    pub pgid: u64,
}

impl BranchItem {
    pub fn size(&self) -> usize {
        ELEMENT_SIZE + self.key.len()
    }
}

/// Exact size of a node (header, elements, data), before rounding up to whole pages.
pub fn leaf_node_size(items: &[LeafItem]) -> usize {
    PAGE_HEADER_SIZE + items.iter().map(LeafItem::size).sum::<usize>()
}

pub fn branch_node_size(items: &[BranchItem]) -> usize {
    PAGE_HEADER_SIZE + items.iter().map(BranchItem::size).sum::<usize>()
}

/// Lays out a node as bbolt's `node.write` does: header, all elements, then keys (and values) in order.
/// `len` is the buffer size (the exact node size for an inline bucket, whole pages otherwise).
fn encode_node<'a>(
    header: PageHeader,
    len: usize,
    items: impl ExactSizeIterator<Item = (u32, &'a [u8], &'a [u8], u64)>,
    leaf: bool,
) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    let mut h = [0u8; PAGE_HEADER_SIZE];
    header.encode(&mut h);
    buf[..PAGE_HEADER_SIZE].copy_from_slice(&h);
    let mut data = PAGE_HEADER_SIZE + ELEMENT_SIZE * items.len();
    for (i, (flags, key, value, pgid)) in items.enumerate() {
        let elem = PAGE_HEADER_SIZE + ELEMENT_SIZE * i;
        // Offsets fit in u32: the caller limits nodes to bbolt's key/value limits.
        let pos = (data - elem) as u32;
        let e = &mut buf[elem..elem + ELEMENT_SIZE];
        if leaf {
            e[0..4].copy_from_slice(&flags.to_le_bytes());
            e[4..8].copy_from_slice(&pos.to_le_bytes());
            e[8..12].copy_from_slice(&(key.len() as u32).to_le_bytes());
            e[12..16].copy_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            e[0..4].copy_from_slice(&pos.to_le_bytes());
            e[4..8].copy_from_slice(&(key.len() as u32).to_le_bytes());
            e[8..16].copy_from_slice(&pgid.to_le_bytes());
        }
        buf[data..data + key.len()].copy_from_slice(key);
        data += key.len();
        buf[data..data + value.len()].copy_from_slice(value);
        data += value.len();
    }
    buf
}

pub fn encode_leaf(header: PageHeader, len: usize, items: &[LeafItem]) -> Vec<u8> {
    let it = items.iter().map(|i| (i.flags, i.key.as_slice(), i.value.as_slice(), 0));
    encode_node(header, len, it, true)
}

pub fn encode_branch(header: PageHeader, len: usize, items: &[BranchItem]) -> Vec<u8> {
    let it = items.iter().map(|i| (0, i.key.as_slice(), &[][..], i.pgid));
    encode_node(header, len, it, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_known_values() {
        assert_eq!(fnv64a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv64a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn meta_round_trip_and_checksum() {
        let m = Meta {
            page_size: 4096,
            flags: 0,
            root: 3,
            sequence: 0,
            freelist: NO_FREELIST,
            pgid: 4,
            txid: 9,
        };
        let mut raw = m.encode();
        assert_eq!(Meta::decode(&raw).ok(), Some(m));
        raw[20] ^= 1;
        assert!(Meta::decode(&raw).is_err());
    }
}
