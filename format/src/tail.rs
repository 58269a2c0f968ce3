//! A snapshot's key count and metadata from the end of the file alone: for readers of object
//! storage, two range reads (the footer, then the metadata section) instead of the whole file.

use crate::error::{Error, Result, Section};
use crate::layout::{Footer, MAX_FOOTER_LEN};
use crate::Metadata;
use std::ops::Range;
use xxhash_rust::xxh3::xxh3_64;

/// Bytes at the end of a snapshot file that [`Tail::parse`] needs (the longest footer of any
/// version; fewer for a shorter file, whose whole bytes then do).
pub const TAIL_LEN: u64 = MAX_FOOTER_LEN as u64;

/// The checked footer of a snapshot file, read from its last [`TAIL_LEN`] bytes.
#[derive(Debug, Clone)]
pub struct Tail {
    footer: Footer,
}

impl Tail {
    /// Parses and checks the footer: `end` holds the last bytes of a file of `file_len` bytes
    /// (at least `min(TAIL_LEN, file_len)` of them; only the footer's are used).
    pub fn parse(end: &[u8], file_len: u64) -> Result<Tail> {
        let footer = Footer::decode_end(end, file_len)?;
        Ok(Tail { footer })
    }

    /// The file's format version.
    pub fn format_version(&self) -> u32 {
        self.footer.version
    }

    /// Number of keys in the file.
    pub fn key_count(&self) -> u64 {
        self.footer.key_count
    }

    /// Where the metadata section lives in the file.
    pub fn metadata_range(&self) -> Range<u64> {
        let r = self.footer.section(Section::Metadata);
        r.offset..r.offset + r.len
    }

    /// Checks and parses the metadata section, the bytes at [`Tail::metadata_range`].
    pub fn metadata(&self, bytes: &[u8]) -> Result<Metadata> {
        let r = self.footer.section(Section::Metadata);
        let got = xxh3_64(bytes);
        if bytes.len() as u64 != r.len || got != r.checksum {
            return Err(Error::Checksum {
                section: Section::Metadata,
                expected: r.checksum,
                got,
            });
        }
        serde_json::from_slice(bytes).map_err(|_| Error::Corrupt {
            section: Section::Metadata,
            offset: r.offset,
            detail: "metadata is not the expected JSON object",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SnapshotWriter, WriterOptions};

    #[test]
    fn metadata_from_the_end_of_the_file() {
        let meta = Metadata {
            dataset: Some("scores".into()),
            ..Metadata::default()
        };
        let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
        w.insert(b"a", b"1").unwrap();
        w.insert(b"b", b"2").unwrap();
        let file = w.finish().unwrap().0;
        let len = file.len() as u64;
        let tail = Tail::parse(&file[file.len() - 200..], len).unwrap();
        assert_eq!(tail.key_count(), 2);
        let r = tail.metadata_range();
        let m = tail
            .metadata(&file[r.start as usize..r.end as usize])
            .unwrap();
        assert_eq!(m.dataset.as_deref(), Some("scores"));
        // A wrong section, a damaged footer, a short end: errors, never panics.
        assert!(tail.metadata(b"{}").is_err());
        let mut bad = file.clone();
        let n = bad.len();
        bad[n - 30] ^= 1;
        assert!(Tail::parse(&bad[n - 200..], len).is_err());
        assert!(Tail::parse(&file[..10], len).is_err());
        assert!(Tail::parse(&file[n - 200..], 20).is_err());
        for cut in 0..file.len() {
            let _ = Tail::parse(&file[cut..], len);
            let _ = Tail::parse(&file[cut..], (file.len() - cut) as u64);
        }
    }
}
