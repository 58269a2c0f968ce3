//! The snapkv snapshot file format: an immutable, sorted key-value file with a perfect-hash
//! index from each key to its entry, an FST over block boundaries for ordered scans, zstd value
//! blocks, a key filter and checksums. `spec/FORMAT.md` is the byte-level specification (format
//! version 2, written by default; version 1 files still read).
//!
//! - [`SnapshotWriter`] streams a snapshot to any [`std::io::Write`] from keys in increasing order.
//! - [`Snapshot`] reads one from [`bytes::Bytes`] (a `Vec<u8>`, or a memory mapping wrapped with
//!   `Bytes::from_owner`): point lookups, ordered range and prefix scans, metadata, verification.
//! - [`diff()`] compares two snapshots: keys added, removed and changed, schema changes.
//!
//! This crate does no file or network I/O of its own, but for the temporary file of key hashes
//! a writer given a [`Spill`] directory keeps, and contains no `unsafe` code; every failure on
//! untrusted bytes is a typed [`Error`].
//!
//! ```
//! use snapkv_format::{Metadata, Snapshot, SnapshotWriter, WriterOptions};
//!
//! let mut writer = SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default())?;
//! writer.insert(b"apple", b"{\"color\":\"red\"}")?;
//! writer.insert(b"banana", b"{\"color\":\"yellow\"}")?;
//! let (file, summary) = writer.finish()?;
//! assert_eq!(summary.key_count, 2);
//!
//! let snapshot = Snapshot::open(file)?;
//! snapshot.verify()?;
//! assert_eq!(snapshot.get(b"banana")?.as_deref(), Some(&b"{\"color\":\"yellow\"}"[..]));
//! assert_eq!(snapshot.get(b"cherry")?, None);
//! let keys: Vec<_> = snapshot.prefix(b"ap").map(|kv| kv.map(|(k, _)| k)).collect::<Result<_, _>>()?;
//! assert_eq!(keys, [&b"apple"[..]]);
//! # Ok::<(), snapkv_format::Error>(())
//! ```
#![forbid(unsafe_code)]

mod block;
mod cache;
mod codec;
pub mod diff;
mod error;
mod filter;
mod fst_check;
mod layout;
mod lookup;
mod metadata;
#[doc(hidden)]
pub mod mph;
pub mod names;
#[doc(hidden)]
pub mod pool;
mod rebuild;
mod records;
pub mod shards;
mod snapshot;
pub mod tail;
#[doc(hidden)]
pub mod varint;
mod writer;

pub use cache::CacheStats;
pub use diff::{diff, Diff, DiffOptions};
pub use error::{Error, Result, Section};
pub use metadata::{FormatInfo, Metadata, ValueEncoding};
pub use rebuild::Rebuild;
pub use shards::{Selection, ShardError, Shards, ShardsIter};
pub use snapshot::{prefix_successor, Fill, Iter, OpenOptions, Snapshot, Stats};
pub use tail::{StoredBlock, Tail, TAIL_LEN};
pub use writer::{Compression, Dictionary, SnapshotWriter, Spill, WriteSummary, WriterOptions};

/// Longest key, in bytes.
pub const MAX_KEY_LEN: usize = 4096;
/// Largest value, in bytes.
pub const MAX_VALUE_LEN: usize = 64 << 20;
/// Smallest target block size.
pub const MIN_BLOCK_SIZE: u32 = 64;
/// Largest target block size.
pub const MAX_BLOCK_SIZE: u32 = 4 << 20;
/// Largest uncompressed block: a block holds either entries up to twice the target block size,
/// or a single entry of the largest key and value with its three length varints.
pub(crate) const MAX_BLOCK_LEN: usize = MAX_VALUE_LEN + MAX_KEY_LEN + 15;

/// The format version this crate writes by default, the newest it reads. It reads every version
/// from [`MIN_FORMAT_VERSION`] on, and can write each of them
/// ([`WriterOptions::format_version`]).
pub const FORMAT_VERSION: u32 = layout::FORMAT_VERSION;
/// The oldest format version this crate reads and writes.
pub const MIN_FORMAT_VERSION: u32 = layout::MIN_FORMAT_VERSION;
