//! A reader and writer for bbolt (go.etcd.io/bbolt) database files, the format of etcd's backend and of
//! its snapshots. Only what backups need: the writer builds a whole file from sorted buckets in one pass;
//! the reader walks buckets and checks a file's structure as `tx.Check()` does, on untrusted input.

pub mod page;
pub mod reader;
pub mod writer;

pub use page::Meta;
pub use reader::{BoltReader, BucketRef, Entry, FileSource, ReadAt};
pub use writer::{BoltWriter, BucketWriter, FileSummary};

/// The page size of files we write: etcd's on amd64 (the OS page size).
pub const PAGE_SIZE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BoltError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a valid bbolt database (or not one we can read).
    #[error("invalid bbolt database: {0}")]
    Corrupt(String),
    /// The writer was given something bbolt cannot hold (unsorted or empty keys, oversized entries).
    #[error("bbolt writer: {0}")]
    Input(String),
}

impl BoltError {
    pub fn corrupt(msg: impl Into<String>) -> Self {
        BoltError::Corrupt(msg.into())
    }

    pub fn input(msg: impl Into<String>) -> Self {
        BoltError::Input(msg.into())
    }
}
