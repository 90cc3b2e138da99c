//! etcd's revision: a main revision per write transaction and a sub revision per change inside it.
//! Encoded as etcd does in its `key` bucket so the history sorts by revision and maps 1:1 to bbolt.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision {
    pub main: i64,
    pub sub: i64,
}

/// 8 bytes main, '_', 8 bytes sub.
pub const REV_BYTES: usize = 17;
const TOMBSTONE_MARK: u8 = b't';

impl Revision {
    pub const fn new(main: i64, sub: i64) -> Self {
        Self { main, sub }
    }

    pub fn to_key(self, tombstone: bool) -> Vec<u8> {
        let mut out = Vec::with_capacity(REV_BYTES + 1);
        out.extend_from_slice(&self.main.to_be_bytes());
        out.push(b'_');
        out.extend_from_slice(&self.sub.to_be_bytes());
        if tombstone {
            out.push(TOMBSTONE_MARK);
        }
        out
    }

    /// Decodes a stored key; `None` for anything that is not a revision key.
    pub fn from_key(key: &[u8]) -> Option<(Revision, bool)> {
        if key.len() != REV_BYTES && key.len() != REV_BYTES + 1 {
            return None;
        }
        let main = i64::from_be_bytes(key[0..8].try_into().ok()?);
        let sub = i64::from_be_bytes(key[9..17].try_into().ok()?);
        let tombstone = key.len() == REV_BYTES + 1;
        if key[8] != b'_' || (tombstone && key[17] != TOMBSTONE_MARK) {
            return None;
        }
        Some((Revision { main, sub }, tombstone))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_order() {
        let a = Revision::new(2, 0);
        let b = Revision::new(2, 1);
        let c = Revision::new(300, 0);
        assert!(a.to_key(false) < b.to_key(false));
        assert!(b.to_key(true) < c.to_key(false));
        assert_eq!(Revision::from_key(&b.to_key(true)), Some((b, true)));
        assert_eq!(Revision::from_key(&c.to_key(false)), Some((c, false)));
        assert_eq!(Revision::from_key(b"short"), None);
    }
}
