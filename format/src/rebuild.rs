//! The index, filter and lookup sections of a version 2 file, rebuilt from its data blocks as
//! its writer built them. A reader that assembled a new version's blocks from the ones it has
//! (a delta fetch) rebuilds these sections and keeps each one whose checksum matches the
//! footer's, instead of reading them from storage: they are rewritten by every version, and
//! with small values they are a large share of the file.

use crate::block::{Cursor, Keys};
use crate::error::{Error, Result, Section};
use crate::layout::{BlockEntry, Codec};
use crate::records::Records;
use crate::tail::Tail;
use crate::writer::separator;
use crate::{filter, lookup, Metadata, Spill};
use std::ops::Range;
use xxhash_rust::xxh3::xxh3_64;
use zstd::zstd_safe::DDict;

/// A block's keys, decoded: its first and last keys and each key's hash and location.
struct Decoded {
    block: u32,
    first: Vec<u8>,
    last: Vec<u8>,
    records: Vec<([u64; 2], u64)>,
}

/// Rebuilds the index, filter and lookup sections of a version 2 file from its data blocks,
/// given to [`Rebuild::block`] or [`Rebuild::blocks`] in file order.
pub struct Rebuild {
    tail: Tail,
    table: Vec<u8>,
    dictionary: Option<DDict<'static>>,
    direct: bool,
    filter_bits: u32,
    threads: usize,
    index: fst::MapBuilder<Vec<u8>>,
    records: Records,
    /// The next block's number, and the last key of the block before it.
    next: u32,
    last_key: Vec<u8>,
}

impl Rebuild {
    /// Where the sections a rebuild makes lie in the file `tail` describes: the index, the
    /// filter and the lookup.
    pub fn ranges(tail: &Tail) -> [Range<u64>; 3] {
        [Section::Index, Section::Filter, Section::Lookup].map(|s| {
            let r = tail.section(s);
            r.offset..r.offset + r.len
        })
    }

    /// A rebuild of the file `tail` describes, from its block table, dictionary and metadata
    /// sections (checked against their checksums here), on up to `threads` threads (0: one
    /// per core; the output does not depend on it), keeping key records within `spill`'s
    /// budget when given (24 bytes per key otherwise). Version 1 files, whose sections are
    /// not rebuilt, are an error.
    pub fn new(
        tail: &Tail,
        table: &[u8],
        dictionary: &[u8],
        metadata: &[u8],
        threads: usize,
        spill: Option<&Spill>,
    ) -> Result<Rebuild> {
        if tail.format_version() != 2 {
            return Err(Error::UnsupportedVersion {
                supported: 2,
                got: tail.format_version(),
            });
        }
        tail.blocks(table)?;
        let dictionary = tail.dictionary(dictionary)?;
        let metadata: Metadata = tail.metadata(metadata)?;
        let dictionary = match dictionary.is_empty() {
            true => None,
            false => Some(DDict::try_create(dictionary).ok_or(Error::Corrupt {
                section: Section::Dictionary,
                offset: tail.dictionary_range().start,
                detail: "zstd rejected the dictionary",
            })?),
        };
        Ok(Rebuild {
            tail: tail.clone(),
            table: table.to_vec(),
            dictionary,
            direct: metadata.format.compression == "none",
            filter_bits: metadata.format.filter_bits_per_key,
            threads: crate::pool::threads(threads),
            index: fst::MapBuilder::memory(),
            records: Records::new(spill.map(|s| (s.dir.clone(), s.memory))),
            next: 0,
            last_key: Vec::new(),
        })
    }

    /// Adds the next block's stored bytes (checked against the block table).
    pub fn block(&mut self, stored: &[u8]) -> Result<()> {
        let decoded = self.decode(self.next, stored)?;
        self.add(decoded)
    }

    /// Adds the next blocks' stored bytes, in order, decoding them on the rebuild's threads
    /// (the result is the same as adding them one at a time).
    pub fn blocks(&mut self, stored: &[&[u8]]) -> Result<()> {
        let threads = self.threads.min(stored.len()).max(1);
        if threads == 1 {
            return stored.iter().try_for_each(|b| self.block(b));
        }
        let first = self.next;
        let share = stored.len().div_ceil(threads);
        let this = &*self;
        let decoded: Vec<Result<Vec<Decoded>>> = std::thread::scope(|scope| {
            let handles: Vec<_> = stored
                .chunks(share)
                .enumerate()
                .map(|(i, chunk)| {
                    scope.spawn(move || {
                        let at = first + (i * share) as u32;
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(j, b)| this.decode(at + j as u32, b))
                            .collect::<Result<Vec<_>>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        for part in decoded {
            for d in part? {
                self.add(d)?;
            }
        }
        Ok(())
    }

    /// Checks block `block`'s stored bytes against the table and decodes its keys' records.
    fn decode(&self, block: u32, stored: &[u8]) -> Result<Decoded> {
        let range = self.tail.block_table_range();
        let data_end = self.tail.sections_range().start;
        if u64::from(block) >= (range.end - range.start) / 32 {
            return Err(Error::Corrupt {
                section: Section::BlockTable,
                offset: range.end,
                detail: "more blocks than the block table lists",
            });
        }
        let e = BlockEntry::decode(&self.table, range.start, block, data_end)?;
        if stored.len() != e.stored_len as usize || xxh3_64(stored) != e.checksum {
            return Err(Error::CorruptBlock {
                block,
                detail: "stored bytes do not match the block table",
            });
        }
        let raw = match e.codec {
            Codec::Raw => std::borrow::Cow::Borrowed(stored),
            codec => std::borrow::Cow::Owned(crate::codec::decompress(
                codec,
                stored,
                e.raw_len as usize,
                self.dictionary.as_ref(),
                block,
            )?),
        };
        let mut cursor = Cursor::new(block, Keys::Whole);
        // The table's entry count is not trusted for memory: it is checked by verification.
        let mut records = Vec::with_capacity((e.entries as usize).min(4096));
        let mut first = None;
        while cursor.next(&raw)?.is_some() {
            let key = cursor.key();
            if first.is_none() {
                first = Some(key.to_vec());
            }
            let offset = cursor.entry_offset() as u64;
            let location = match self.direct {
                true => e.offset + offset,
                false => u64::from(block) << 32 | offset,
            };
            records.push((lookup::key_hash(key), location));
        }
        let Some(first) = first else {
            return Err(Error::CorruptBlock {
                block,
                detail: "a block without entries",
            });
        };
        Ok(Decoded {
            block,
            first,
            last: cursor.key().to_vec(),
            records,
        })
    }

    /// Adds a decoded block: its separator from the block before, its keys' records.
    fn add(&mut self, d: Decoded) -> Result<()> {
        debug_assert_eq!(d.block, self.next);
        if d.block > 0 {
            let sep = separator(&self.last_key, &d.first);
            self.insert_separator(&sep, d.block - 1)?;
        }
        for (hash, location) in d.records {
            self.records.push(hash, location)?;
        }
        self.last_key = d.last;
        self.next += 1;
        Ok(())
    }

    fn insert_separator(&mut self, separator: &[u8], block: u32) -> Result<()> {
        self.index
            .insert(separator, u64::from(block))
            .map_err(|_| Error::Corrupt {
                section: Section::Index,
                offset: 0,
                detail: "block separators out of order",
            })
    }

    /// The rebuilt sections whose bytes match the footer's checksums, with where they go in
    /// the file: the index, the filter and the lookup, each when it matches (a section that
    /// does not is left out, to be read from storage). Every block must have been added.
    pub fn finish(mut self) -> Result<Vec<(Range<u64>, Vec<u8>)>> {
        let range = self.tail.block_table_range();
        if u64::from(self.next) != (range.end - range.start) / 32 {
            return Err(Error::Corrupt {
                section: Section::BlockTable,
                offset: range.start,
                detail: "fewer blocks than the block table lists",
            });
        }
        if self.next > 0 {
            let last = std::mem::take(&mut self.last_key);
            self.insert_separator(&last, self.next - 1)?;
        }
        let index = self
            .index
            .into_inner()
            .map_err(|_| Error::InvalidOption("index could not be built".into()))?;
        let mut filter = filter::Builder::new(self.records.len(), self.filter_bits);
        let lookup = lookup::build(
            &mut self.records,
            self.direct,
            self.threads,
            filter.as_mut(),
        )?
        .ok_or(Error::NoPerfectHash)?;
        let filter = filter.map(filter::Builder::finish).unwrap_or_default();
        let mut out = Vec::new();
        for (section, bytes) in [
            (Section::Index, index),
            (Section::Filter, filter),
            (Section::Lookup, lookup),
        ] {
            let r = self.tail.section(section);
            if bytes.len() as u64 == r.len && xxh3_64(&bytes) == r.checksum {
                out.push((r.offset..r.offset + r.len, bytes));
            }
        }
        Ok(out)
    }
}
