//! Errors of the writer (misuse, I/O) and of the reader (untrusted bytes).

use std::fmt;

/// A part of a snapshot file, named in corruption errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Section {
    /// The 16-byte header at offset 0.
    Header,
    /// The value blocks.
    Data,
    /// The zstd dictionary.
    Dictionary,
    /// The fixed-width block table.
    BlockTable,
    /// The FST over block separators.
    Index,
    /// The key filter (blocked Bloom filter).
    Filter,
    /// The hash index from each key to its entry (format version 2).
    Lookup,
    /// The JSON metadata.
    Metadata,
    /// The fixed-size footer at the end of the file.
    Footer,
    /// The whole file (the whole-file checksum).
    File,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::Header => "header",
            Section::Data => "data",
            Section::Dictionary => "dictionary",
            Section::BlockTable => "block table",
            Section::Index => "index",
            Section::Filter => "filter",
            Section::Lookup => "lookup",
            Section::Metadata => "metadata",
            Section::Footer => "footer",
            Section::File => "file",
        })
    }
}

/// Everything that can go wrong writing or reading a snapshot.
///
/// Writer misuse (`OutOfOrder`, `DuplicateKey`, `KeyTooLong`, ...) is detected before the writer
/// changes, so the entry is simply not added; after an I/O or compression error the output is
/// incomplete and must be discarded. Reader errors describe untrusted bytes; they never come
/// with a panic, and they name the section (and block) where the problem is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Keys must be inserted in strictly increasing bytewise order.
    #[error(
        "key {} was inserted after the larger key {}",
        Printable(got),
        Printable(previous)
    )]
    OutOfOrder {
        /// The key inserted before.
        previous: Vec<u8>,
        /// The key that broke the order.
        got: Vec<u8>,
    },
    /// The same key was inserted twice in a row.
    #[error("duplicate key {}", Printable(key))]
    DuplicateKey {
        /// The repeated key.
        key: Vec<u8>,
    },
    /// Keys must have at least one byte.
    #[error("empty key: keys must be at least one byte long")]
    EmptyKey,
    /// A key exceeds [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLong {
        /// The key's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value exceeds [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// The value's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The snapshot would need more blocks than the block table can address.
    #[error("too many blocks: the format addresses at most {max}")]
    TooManyBlocks {
        /// The limit.
        max: u64,
    },
    /// A version 2 file holds fewer than 2^32 keys (its perfect hash numbers them with `u32`);
    /// version 1 has no such limit.
    #[error("too many keys: format version 2 holds at most {max} (write version 1, or shard)")]
    TooManyKeys {
        /// The limit.
        max: u64,
    },
    /// A writer option is out of range.
    #[error("invalid writer option: {0}")]
    InvalidOption(String),
    /// No perfect hash over the keys could be built for the lookup section: two keys have
    /// equal 128-bit hashes (not expected to happen for any real key set). Writing format
    /// version 1 needs no such hash.
    #[error(
        "no perfect hash over the keys could be built (two keys with equal 128-bit hashes); \
         write format version 1 instead"
    )]
    NoPerfectHash,
    /// zstd failed while compressing or training a dictionary.
    #[error("zstd failed: {0}")]
    Compression(&'static str),
    /// The output could not be written.
    #[error("I/O error writing the snapshot")]
    Io(#[from] std::io::Error),
    /// The writer's temporary file of key hashes ([`crate::Spill`]) could not be created,
    /// written or read.
    #[error("I/O error on the snapshot writer's temporary file in {}", dir.display())]
    Spill {
        /// The directory of the temporary file.
        dir: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },

    /// The bytes are too short to hold a snapshot.
    #[error("{len} bytes is too short for a snapshot (at least {min} bytes)")]
    TooShort {
        /// The input length.
        len: u64,
        /// The smallest possible snapshot.
        min: u64,
    },
    /// The input does not start with the snapshot magic.
    #[error("not a snapshot: bad magic at offset 0")]
    BadMagic,
    /// The input does not end with the footer magic: truncated, or not a snapshot.
    #[error("no footer magic at the end of {len} bytes: the file is truncated or not a snapshot")]
    MissingFooter {
        /// The input length.
        len: u64,
    },
    /// The file was written in a format version this reader does not know.
    #[error("unsupported format version {got} (this reader supports {supported})")]
    UnsupportedVersion {
        /// The version this reader reads.
        supported: u32,
        /// The version in the file.
        got: u32,
    },
    /// A checksum does not match.
    #[error("{section} checksum mismatch: stored {expected:#018x}, computed {got:#018x}")]
    Checksum {
        /// The section whose checksum failed.
        section: Section,
        /// The checksum stored in the file.
        expected: u64,
        /// The checksum of the bytes.
        got: u64,
    },
    /// A data block's checksum does not match.
    #[error("block {block} checksum mismatch: stored {expected:#018x}, computed {got:#018x}")]
    BlockChecksum {
        /// The block number.
        block: u32,
        /// The checksum stored in the block table.
        expected: u64,
        /// The checksum of the block's bytes.
        got: u64,
    },
    /// A structure is inconsistent.
    #[error("corrupt {section} at offset {offset}: {detail}")]
    Corrupt {
        /// The section.
        section: Section,
        /// The file offset of the inconsistent field or structure.
        offset: u64,
        /// What is wrong.
        detail: &'static str,
    },
    /// A data block's content is inconsistent.
    #[error("corrupt block {block}: {detail}")]
    CorruptBlock {
        /// The block number.
        block: u32,
        /// What is wrong.
        detail: &'static str,
    },
    /// Bytes of a snapshot still being filled in ([`crate::Snapshot::open_filling`]) are not
    /// in place and could not be had in time: storage is slow or unreachable. Not a fault of
    /// the file; the same read may succeed later.
    #[error("bytes {start}..{end} of the snapshot are not local yet: {reason}")]
    Unavailable {
        /// First byte asked for.
        start: u64,
        /// End of the bytes asked for.
        end: u64,
        /// Why they could not be had.
        reason: String,
    },
}

/// Shows a key as text when it is printable ASCII, as hex otherwise.
struct Printable<'a>(&'a [u8]);

impl fmt::Display for Printable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const SHOWN: usize = 64;
        let shown = &self.0[..self.0.len().min(SHOWN)];
        let more = if self.0.len() > SHOWN { "…" } else { "" };
        if shown.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
            write!(f, "{:?}{more}", String::from_utf8_lossy(shown))
        } else {
            f.write_str("0x")?;
            for b in shown {
                write!(f, "{b:02x}")?;
            }
            f.write_str(more)
        }
    }
}

/// The result type of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
