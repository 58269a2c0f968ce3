//! A snapshot's key count, metadata and block list from the end of the file alone: for readers
//! of object storage, two range reads (the footer, then a section or all of them) instead of
//! the whole file.

use crate::error::{Error, Result, Section};
use crate::layout::{self, BlockEntry, Codec, Footer, BLOCK_ENTRY_LEN, HEADER_LEN, MAX_FOOTER_LEN};
use crate::Metadata;
use std::ops::Range;
use xxhash_rust::xxh3::xxh3_64;

/// First bytes of a block list ([`Tail::block_list`]), before compression.
const BLOCK_LIST_MAGIC: &[u8; 8] = b"SKVBLKS1";
/// Bytes of a block list's magic and block count.
const BLOCK_LIST_HEAD: usize = 16;
/// Bytes a block takes in a block list, before compression.
const BLOCK_LIST_ENTRY: usize = 21;

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

    /// A block list: the block table (the bytes at [`Tail::block_table_range`], checked as
    /// [`Tail::blocks`] checks them) without what follows from the layout (each block's
    /// offset, the reserved bytes), its fields in columns, compressed: about 13 bytes a block
    /// against the table's 32. [`Tail::table_from_block_list`] gives the table back. Its
    /// layout (`spec/STORE.md`, "Block lists"): one zstd frame of `SKVBLKS1`, the block count
    /// (`u64`), then for every block its stored length (`u32`), then every raw length
    /// (`u32`), every entry count (`u32`), every codec (`u8`) and every XXH3-64 (`u64`), all
    /// little-endian.
    pub fn block_list(&self, table: &[u8]) -> Result<Vec<u8>> {
        let r = self.checked(Section::BlockTable, table)?;
        self.blocks(table)?;
        let data_end = self.sections_range().start;
        let n = table.len() / BLOCK_ENTRY_LEN;
        let entries: Vec<BlockEntry> = (0..n)
            .map(|i| BlockEntry::decode(table, r.offset, i as u32, data_end))
            .collect::<Result<_>>()?;
        let mut raw = Vec::with_capacity(BLOCK_LIST_HEAD + n * BLOCK_LIST_ENTRY);
        raw.extend_from_slice(BLOCK_LIST_MAGIC);
        raw.extend_from_slice(&(n as u64).to_le_bytes());
        entries
            .iter()
            .for_each(|e| raw.extend_from_slice(&e.stored_len.to_le_bytes()));
        entries
            .iter()
            .for_each(|e| raw.extend_from_slice(&e.raw_len.to_le_bytes()));
        entries
            .iter()
            .for_each(|e| raw.extend_from_slice(&e.entries.to_le_bytes()));
        entries.iter().for_each(|e| raw.push(e.codec as u8));
        entries
            .iter()
            .for_each(|e| raw.extend_from_slice(&e.checksum.to_le_bytes()));
        zstd::bulk::compress(&raw, 3).map_err(|_| Error::Compression("block list"))
    }

    /// The block table a block list ([`Tail::block_list`]) describes: checked against the
    /// footer's length and checksum of the table, so the bytes are those at
    /// [`Tail::block_table_range`] or an error. The list is untrusted: its decompressed size
    /// is bounded by the footer's block count.
    pub fn table_from_block_list(&self, list: &[u8]) -> Result<Vec<u8>> {
        let r = self.section(Section::BlockTable);
        let bad = |detail| Error::Corrupt {
            section: Section::BlockTable,
            offset: r.offset,
            detail,
        };
        let n = usize::try_from(self.footer.block_count)
            .map_err(|_| bad("block list of more blocks than memory holds"))?;
        let expected = n
            .checked_mul(BLOCK_LIST_ENTRY)
            .and_then(|b| b.checked_add(BLOCK_LIST_HEAD))
            .ok_or_else(|| bad("block list of more blocks than memory holds"))?;
        if (r.len as usize) != n * BLOCK_ENTRY_LEN {
            return Err(bad("block table length differs from the block count"));
        }
        let raw = zstd::bulk::decompress(list, expected)
            .map_err(|_| bad("block list is not a zstd frame of the expected size"))?;
        if raw.len() != expected
            || &raw[..8] != BLOCK_LIST_MAGIC
            || raw[8..16] != (n as u64).to_le_bytes()
        {
            return Err(bad("block list does not describe this file's blocks"));
        }
        let column = |at: usize, width: usize, i: usize| {
            let start = at + i * width;
            &raw[start..start + width]
        };
        let (lens, raws, counts) = (
            BLOCK_LIST_HEAD,
            BLOCK_LIST_HEAD + 4 * n,
            BLOCK_LIST_HEAD + 8 * n,
        );
        let (codecs, sums) = (BLOCK_LIST_HEAD + 12 * n, BLOCK_LIST_HEAD + 13 * n);
        let mut table = Vec::with_capacity(n * BLOCK_ENTRY_LEN);
        let mut offset = HEADER_LEN as u64;
        for i in 0..n {
            let u32_at = |at| u32::from_le_bytes(column(at, 4, i).try_into().expect("4 bytes"));
            let e = BlockEntry {
                offset,
                stored_len: u32_at(lens),
                raw_len: u32_at(raws),
                checksum: u64::from_le_bytes(column(sums, 8, i).try_into().expect("8 bytes")),
                entries: u32_at(counts),
                codec: Codec::from_u8(column(codecs, 1, i)[0])
                    .ok_or_else(|| bad("block list names an unknown codec"))?,
            };
            offset += u64::from(e.stored_len);
            table.extend_from_slice(&e.encode());
        }
        self.blocks(&table)?;
        Ok(table)
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

    /// A file of `n` keys, and its tail and block table.
    fn with_table(n: u32, seed: u32) -> (Vec<u8>, Tail, Vec<u8>) {
        let o = WriterOptions {
            block_size: 512,
            ..WriterOptions::default()
        };
        let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
        for i in 0..n {
            let v = format!(
                "{{\"i\":{i},\"s\":{}}}",
                i.wrapping_mul(2_654_435_761) ^ seed
            );
            w.insert(format!("k{i:08}").as_bytes(), v.as_bytes())
                .unwrap();
        }
        let file = w.finish().unwrap().0;
        let len = file.len() as u64;
        let tail = Tail::parse(&file[(len - TAIL_LEN) as usize..], len).unwrap();
        let r = tail.block_table_range();
        let table = file[r.start as usize..r.end as usize].to_vec();
        (file, tail, table)
    }

    #[test]
    fn a_block_list_gives_the_table_back() {
        let (_, tail, table) = with_table(20_000, 0);
        let list = tail.block_list(&table).unwrap();
        assert_eq!(tail.table_from_block_list(&list).unwrap(), table);
        assert!(
            list.len() * 2 < table.len(),
            "{} bytes of list for {} of table",
            list.len(),
            table.len()
        );
        // Another file's list, a damaged one, a cut one, garbage: errors, never panics.
        let (_, other_tail, other_table) = with_table(20_000, 1);
        let other = other_tail.block_list(&other_table).unwrap();
        assert!(tail.table_from_block_list(&other).is_err());
        let raw = zstd::bulk::decompress(&list, 1 << 24).unwrap();
        for at in [0, 9, 16, raw.len() / 2, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[at] ^= 1;
            let bad = zstd::bulk::compress(&bad, 3).unwrap();
            assert!(tail.table_from_block_list(&bad).is_err(), "byte {at}");
        }
        for cut in [0, 1, list.len() / 2, list.len() - 1] {
            assert!(tail.table_from_block_list(&list[..cut]).is_err());
        }
        let longer = zstd::bulk::compress(&[raw.clone(), vec![0; 21]].concat(), 3).unwrap();
        assert!(tail.table_from_block_list(&longer).is_err());
        assert!(tail.table_from_block_list(b"not a list").is_err());
        // A damaged table has no list.
        let mut bad = table.clone();
        bad[40] ^= 1;
        assert!(tail.block_list(&bad).is_err());
    }
}
