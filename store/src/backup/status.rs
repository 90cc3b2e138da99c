//! `snapshot status`: the figures `etcdctl snapshot status` (3.4) / `etcdutl snapshot status` print for
//! a snapshot file, computed the same way so the two agree on the same file:
//! * the file must pass the bbolt structure check (etcd runs `tx.Check()` first);
//! * hash: CRC-32C (Castagnoli) over, for each top-level bucket in order, its name and then every key and
//!   value in it (a nested bucket contributes its name and an empty value);
//! * revision: the main revision of the last key in bucket `key`;
//! * total keys: entries in all buckets; total size: the bbolt size (pages up to the high-water mark).

use std::fs::File;
use std::path::Path;

use serde::Serialize;

use super::bbolt::{BoltReader, FileSource};
use super::{buckets, file_err, BackupError};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SnapshotStatus {
    pub hash: u32,
    pub revision: i64,
    #[serde(rename = "totalKey")]
    pub total_key: u64,
    #[serde(rename = "totalSize")]
    pub total_size: u64,
}

/// CRC-32C as Go's `crc32.New(crc32.MakeTable(crc32.Castagnoli))`.
pub struct Crc32c {
    table: [u32; 256],
    crc: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        let mut table = [0u32; 256];
        for (i, slot) in table.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { (c >> 1) ^ 0x82F6_3B78 } else { c >> 1 };
            }
            *slot = c;
        }
        Crc32c { table, crc: !0 }
    }
}

impl Crc32c {
    pub fn update(&mut self, data: &[u8]) {
        let mut c = self.crc;
        for b in data {
            c = self.table[((c ^ u32::from(*b)) & 0xFF) as usize] ^ (c >> 8);
        }
        self.crc = c;
    }

    pub fn finish(&self) -> u32 {
        !self.crc
    }
}

/// Status of a bbolt file (a trailing SHA-256 is ignored, as bbolt ignores bytes past its pages).
pub fn status(path: &Path) -> Result<SnapshotStatus, BackupError> {
    let file = File::open(path).map_err(file_err(path))?;
    let len = file.metadata().map_err(file_err(path))?.len();
    status_of(&BoltReader::open(FileSource::new(file, len))?)
}

pub fn status_of<R: super::bbolt::ReadAt>(reader: &BoltReader<R>) -> Result<SnapshotStatus, BackupError> {
    let problems = reader.check()?;
    if !problems.is_empty() {
        return Err(BackupError::Integrity(problems));
    }
    let mut crc = Crc32c::default();
    let mut st = SnapshotStatus {
        hash: 0,
        revision: 0,
        total_key: 0,
        total_size: reader.size(),
    };
    for bucket in reader.buckets()? {
        crc.update(&bucket.name);
        let is_key = bucket.name == buckets::KEY;
        reader.for_each(&bucket, |e| -> Result<(), BackupError> {
            crc.update(e.key);
            if !e.is_bucket {
                crc.update(e.value);
            }
            if is_key {
                let main = e.key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok());
                st.revision = main
                    .map(i64::from_be_bytes)
                    .ok_or_else(|| BackupError::Content("bucket key holds a key shorter than a revision".into()))?;
            }
            st.total_key += 1;
            Ok(())
        })?;
    }
    st.hash = crc.finish();
    Ok(st)
}

/// go-humanize's `Bytes`: SI units, one decimal below 10.
pub fn humanize_bytes(n: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 10 {
        return format!("{n} B");
    }
    let e = ((n as f64).ln() / 1000f64.ln()).floor() as usize;
    let e = e.min(UNITS.len() - 1);
    let val = ((n as f64) / 1000f64.powi(e as i32) * 10.0 + 0.5).floor() / 10.0;
    if val < 10.0 {
        format!("{val:.1} {}", UNITS[e])
    } else {
        format!("{val:.0} {}", UNITS[e])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Simple,
    Table,
    Json,
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "simple" => Ok(OutputFormat::Simple),
            "table" => Ok(OutputFormat::Table),
            "json" => Ok(OutputFormat::Json),
            other => Err(format!("unsupported output format {other:?} (simple, table or json)")),
        }
    }
}

/// The text etcdctl prints for each output format.
pub fn render(st: &SnapshotStatus, format: OutputFormat) -> String {
    let cells = [
        format!("{:x}", st.hash),
        st.revision.to_string(),
        st.total_key.to_string(),
        humanize_bytes(st.total_size),
    ];
    match format {
        OutputFormat::Simple => format!("{}\n", cells.join(", ")),
        OutputFormat::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            st.hash, st.revision, st.total_key, st.total_size
        ),
        OutputFormat::Table => table(&["HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE"], &cells),
    }
}

/// A one-row table as etcdctl's tablewriter draws it: centred headers, right-aligned cells.
fn table(headers: &[&str], cells: &[String]) -> String {
    let widths: Vec<usize> = headers.iter().zip(cells).map(|(h, c)| h.len().max(c.len())).collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+\n";
    let mut out = rule.clone();
    for (h, w) in headers.iter().zip(&widths) {
        let pad = w + 2 - h.len();
        out += &format!("|{}{}{}", " ".repeat(pad / 2), h, " ".repeat(pad - pad / 2));
    }
    out += "|\n";
    out += &rule;
    for (c, w) in cells.iter().zip(&widths) {
        out += &format!("| {c:>w$} ");
    }
    out += "|\n";
    out += &rule;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        let mut c = Crc32c::default();
        c.update(b"1234");
        c.update(b"56789");
        assert_eq!(c.finish(), 0xE306_9283);
    }

    #[test]
    fn humanize_like_go() {
        assert_eq!(humanize_bytes(5), "5 B");
        assert_eq!(humanize_bytes(45_056), "45 kB");
        assert_eq!(humanize_bytes(2_101_248), "2.1 MB");
        assert_eq!(humanize_bytes(20_480), "20 kB");
    }

    #[test]
    fn table_like_etcdctl() {
        let st = SnapshotStatus {
            hash: 0x4f0b750,
            revision: 6,
            total_key: 10,
            total_size: 45_056,
        };
        let expected = "+---------+----------+------------+------------+\n\
                        |  HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
                        +---------+----------+------------+------------+\n\
                        | 4f0b750 |        6 |         10 |      45 kB |\n\
                        +---------+----------+------------+------------+\n";
        assert_eq!(render(&st, OutputFormat::Table), expected);
        assert_eq!(render(&st, OutputFormat::Simple), "4f0b750, 6, 10, 45 kB\n");
    }
}
