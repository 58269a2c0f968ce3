//! A snapshot's key count, metadata and block list from the end of the file alone: for readers
//! of object storage, two range reads (the footer, then a section or all of them) instead of
//! the whole file.

use crate::error::{Error, Result, Section};
use crate::layout::{self, BlockEntry, Footer, BLOCK_ENTRY_LEN, HEADER_LEN, MAX_FOOTER_LEN};
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
    file_len: u64,
}

/// Where one data block's stored bytes lie in its file, and their XXH3-64: what a reader
/// holding another version compares to reuse the block it already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StoredBlock {
    /// File offset of the stored bytes.
    pub offset: u64,
    /// Length of the stored bytes.
    pub len: u32,
    /// XXH3-64 (seed 0) of the stored bytes.
    pub checksum: u64,
}

impl Tail {
    /// Parses and checks the footer: `end` holds the last bytes of a file of `file_len` bytes
    /// (at least `min(TAIL_LEN, file_len)` of them; only the footer's are used).
    pub fn parse(end: &[u8], file_len: u64) -> Result<Tail> {
        let footer = Footer::decode_end(end, file_len)?;
        Ok(Tail { footer, file_len })
    }

    /// Where section `s` lives and its checksum.
    pub(crate) fn section(&self, s: Section) -> layout::SectionRef {
        self.footer.section(s)
    }

    /// The file's first 16 bytes (the header), which depend on its format version alone.
    pub fn header(&self) -> [u8; HEADER_LEN] {
        layout::encode_header(self.footer.version)
    }

    /// Everything after the data region: the sections (the first starts where the data
    /// region and its padding end) and the footer, up to the end of the file.
    pub fn sections_range(&self) -> Range<u64> {
        self.footer.section(Section::Dictionary).offset..self.file_len
    }

    /// Where the dictionary section lives in the file (empty when the file has none).
    pub fn dictionary_range(&self) -> Range<u64> {
        let r = self.footer.section(Section::Dictionary);
        r.offset..r.offset + r.len
    }

    /// Checks the dictionary section, the bytes at [`Tail::dictionary_range`], against its
    /// checksum.
    pub fn dictionary<'a>(&self, bytes: &'a [u8]) -> Result<&'a [u8]> {
        self.checked(Section::Dictionary, bytes)?;
        Ok(bytes)
    }

    /// Checks `bytes` against section `s`'s length and checksum; returns its reference.
    fn checked(&self, s: Section, bytes: &[u8]) -> Result<layout::SectionRef> {
        let r = self.footer.section(s);
        let got = xxh3_64(bytes);
        if bytes.len() as u64 != r.len || got != r.checksum {
            return Err(Error::Checksum {
                section: s,
                expected: r.checksum,
                got,
            });
        }
        Ok(r)
    }

    /// Where the block table lives in the file (inside [`Tail::sections_range`]).
    pub fn block_table_range(&self) -> Range<u64> {
        let r = self.footer.section(Section::BlockTable);
        r.offset..r.offset + r.len
    }

    /// The data blocks in file order, from the bytes at [`Tail::block_table_range`]. The
    /// table is checked against its checksum, and the blocks must follow each other from the
    /// end of the header, the last one ending in the 0 to 7 bytes of padding before the
    /// sections: then the header, the blocks, the padding (zero bytes), the sections and the
    /// footer make up the whole file.
    pub fn blocks(&self, table: &[u8]) -> Result<Vec<StoredBlock>> {
        let r = self.checked(Section::BlockTable, table)?;
        let data_end = self.sections_range().start;
        let count = table.len() / BLOCK_ENTRY_LEN;
        let mut blocks = Vec::with_capacity(count);
        let mut next = HEADER_LEN as u64;
        for i in 0..count {
            let e = BlockEntry::decode(table, r.offset, i as u32, data_end)?;
            if e.offset != next {
                return Err(Error::Corrupt {
                    section: Section::BlockTable,
                    offset: r.offset + (i * BLOCK_ENTRY_LEN) as u64,
                    detail: "block does not start where the previous one ends",
                });
            }
            next = e.offset + u64::from(e.stored_len);
            blocks.push(StoredBlock {
                offset: e.offset,
                len: e.stored_len,
                checksum: e.checksum,
            });
        }
        if next + layout::padding(next) as u64 != data_end {
            return Err(Error::Corrupt {
                section: Section::BlockTable,
                offset: r.offset,
                detail: "blocks do not end where the sections start",
            });
        }
        Ok(blocks)
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
        let r = self.checked(Section::Metadata, bytes)?;
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
