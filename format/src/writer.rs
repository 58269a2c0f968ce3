//! The streaming writer.

use crate::block::{self, common_prefix, Keys};
use crate::codec::{CompressionSpec, Compressor};
use crate::error::{Error, Result};
use crate::layout::{self, BlockEntry, Codec, Footer, SectionRef};
use crate::lookup;
use crate::metadata::{FormatInfo, Metadata};
use crate::pool::{self, Pool, Submitter};
use crate::records::Records;
use crate::{filter, Section, MAX_BLOCK_SIZE, MAX_KEY_LEN, MAX_VALUE_LEN, MIN_BLOCK_SIZE};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use xxhash_rust::xxh3::{xxh3_64, xxh3_64_with_seed, Xxh3};

/// How value blocks are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Compression {
    /// Every block stored raw: values are served straight from the file.
    None,
    /// zstd at the given level (1 to 22, or negative for the fast levels down to -7).
    Zstd {
        /// The zstd level.
        level: i32,
    },
}

/// Whether blocks are compressed with a shared zstd dictionary.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dictionary {
    /// No dictionary.
    Off,
    /// Train a dictionary of at most `max_bytes` on the first `sample_bytes` of values (in key
    /// order). Blocks are held back (up to about `sample_bytes`) until training is done. If zstd
    /// cannot train one (too few or too uniform samples), blocks are compressed without.
    Train {
        /// Upper bound of the dictionary size.
        max_bytes: usize,
        /// How many bytes of values to train on.
        sample_bytes: usize,
    },
    /// Use this dictionary (for example the previous version's, so unchanged blocks stay
    /// byte-identical across versions).
    Use(Vec<u8>),
}

/// Writer settings. `WriterOptions::default()` is what `snapkv build` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterOptions {
    /// Block compression. Default: zstd level 3.
    pub compression: Compression,
    /// Target uncompressed block size in bytes. Blocks end at content-defined points past half
    /// this size, or earlier when the next entry would take the block over twice this size; a
    /// single large entry may exceed it. Default: 4096.
    pub block_size: u32,
    /// Dictionary mode. Default: train a dictionary of up to 64 KiB on 4 MiB of values.
    pub dictionary: Dictionary,
    /// Bits per key of the key filter; 0 writes no filter. Default: 10 (about 1% of misses pass
    /// the filter and cost a block search).
    pub filter_bits_per_key: u32,
    /// Threads compressing blocks; 0 means one per core. Output does not depend on it.
    pub threads: usize,
    /// The format version written: 2 (the default, [`crate::FORMAT_VERSION`]), or 1 for readers
    /// that do not read version 2 yet. Version 2 adds a hash index that takes a lookup straight
    /// to its entry; it keeps whole keys in blocks, and holds 24 bytes per key in memory until
    /// [`SnapshotWriter::finish`], or no more than a [`Spill`] budget (version 1: 8 bytes per
    /// key for the filter).
    pub format_version: u32,
    /// Where a version 2 writer keeps key hashes that outgrow a memory budget. Default: none
    /// (every key's 24 bytes stay in memory).
    pub spill: Option<Spill>,
}

/// A memory budget for a version 2 writer's key hashes and locations (24 bytes per key), and
/// the directory of the unnamed temporary file that takes them beyond it. Finishing reads them
/// back a few partitions of the perfect hash at a time, within the same budget; what the
/// writer holds for its keys then is the filter and lookup sections it builds (about 6 bytes
/// per key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spill {
    /// The directory of the temporary file (removed when the writer is dropped, or by the
    /// system if the process dies).
    pub dir: PathBuf,
    /// Bytes of key records held in memory: at least 2 MiB is sensible.
    pub memory: usize,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            compression: Compression::Zstd { level: 3 },
            block_size: 4096,
            dictionary: Dictionary::Train {
                max_bytes: 64 * 1024,
                sample_bytes: 4 << 20,
            },
            filter_bits_per_key: 10,
            threads: 0,
            format_version: layout::FORMAT_VERSION,
            spill: None,
        }
    }
}

impl WriterOptions {
    fn check(&self) -> Result<()> {
        let versions = layout::MIN_FORMAT_VERSION..=layout::FORMAT_VERSION;
        if !versions.contains(&self.format_version) {
            return Err(Error::InvalidOption(format!(
                "format version {} is outside {}..={}",
                self.format_version,
                versions.start(),
                versions.end()
            )));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size) {
            return Err(Error::InvalidOption(format!(
                "block size {} is outside {MIN_BLOCK_SIZE}..={MAX_BLOCK_SIZE}",
                self.block_size
            )));
        }
        if let Compression::Zstd { level } = self.compression {
            if !(-7..=22).contains(&level) || level == 0 {
                return Err(Error::InvalidOption(format!(
                    "zstd level {level} is outside -7..=-1 and 1..=22"
                )));
            }
        }
        if self.filter_bits_per_key > 64 {
            return Err(Error::InvalidOption(format!(
                "{} filter bits per key is more than 64",
                self.filter_bits_per_key
            )));
        }
        if let Dictionary::Train { max_bytes, .. } = self.dictionary {
            if !(256..=(1 << 20)).contains(&max_bytes) {
                return Err(Error::InvalidOption(format!(
                    "dictionary size {max_bytes} is outside 256..=1048576"
                )));
            }
        }
        Ok(())
    }
}

/// What a finished snapshot contains, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriteSummary {
    /// Keys written.
    pub key_count: u64,
    /// Blocks written.
    pub block_count: u64,
    /// Blocks stored raw (compression did not pay, or was off).
    pub raw_blocks: u64,
    /// Total file size.
    pub file_bytes: u64,
    /// Blocks before compression (entries: keys and values).
    pub block_bytes_raw: u64,
    /// Blocks as stored.
    pub block_bytes_stored: u64,
    /// The FST index.
    pub index_bytes: u64,
    /// The key filter.
    pub filter_bytes: u64,
    /// The lookup section (hash index; version 2).
    pub lookup_bytes: u64,
    /// The dictionary.
    pub dictionary_bytes: u64,
    /// The block table.
    pub block_table_bytes: u64,
    /// The metadata JSON.
    pub metadata_bytes: u64,
}

/// Writes to the underlying output while counting bytes and hashing them for the whole-file
/// checksum.
struct Output<W> {
    inner: W,
    pos: u64,
    hasher: Xxh3,
}

impl<W: Write> Output<W> {
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes)?;
        self.hasher.update(bytes);
        self.pos += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> Result<()> {
        let n = layout::padding(self.pos);
        self.write(&[0u8; 8][..n])
    }

    /// Pads to alignment, then writes a section and returns its reference.
    fn section(&mut self, bytes: &[u8]) -> Result<SectionRef> {
        self.pad()?;
        let r = SectionRef::of(self.pos, bytes);
        self.write(bytes)?;
        Ok(r)
    }
}

/// A block's stored bytes and codec.
type Stored = Result<(Vec<u8>, Codec)>;
/// A compressed block: uncompressed length, stored bytes and codec.
type Done = (u32, Stored);
/// Blocks go to the compression threads in groups of about this many bytes: one hand-off (and
/// thread wake-up) per group rather than per block.
const GROUP_BYTES: usize = 64 << 10;

/// Compresses blocks, on worker threads or inline, and hands them back in block order.
enum Pipeline {
    Inline(Compressor),
    Threads {
        /// Groups of blocks, in block order.
        submit: Submitter<Vec<Vec<u8>>>,
        /// Compressed groups, in the order they were submitted.
        done: Pool<Vec<Done>>,
        /// Groups allowed between submission and writing (bounds the memory they hold).
        max_in_flight: u64,
        /// Blocks not yet sent, and their bytes.
        group: Vec<Vec<u8>>,
        group_bytes: usize,
    },
}

impl Pipeline {
    fn start(threads: usize, spec: &Arc<CompressionSpec>) -> Pipeline {
        let level = spec.level.unwrap_or(0);
        if threads <= 1 {
            return Pipeline::Inline(Compressor::new(level));
        }
        let spec = Arc::clone(spec);
        let (submit, done) = pool::start(
            threads,
            threads,
            move || Compressor::new(level),
            move |c: &mut Compressor, group: Vec<Vec<u8>>| {
                group
                    .into_iter()
                    .map(|raw| {
                        let raw_len = raw.len() as u32;
                        (raw_len, c.compress(&spec, raw))
                    })
                    .collect()
            },
        );
        Pipeline::Threads {
            submit,
            done,
            max_in_flight: 2 * threads as u64,
            group: Vec::new(),
            group_bytes: 0,
        }
    }
}

/// Holds back blocks and collects value samples until a dictionary can be trained.
struct Training {
    max_bytes: usize,
    sample_bytes: usize,
    samples: Vec<u8>,
    sizes: Vec<usize>,
    blocks: Vec<Vec<u8>>,
    /// Bytes of the held-back blocks.
    held_bytes: usize,
}

/// Streams a snapshot to any [`Write`].
///
/// Keys go in strictly increasing bytewise order. Misuse (`OutOfOrder`, `DuplicateKey`, `EmptyKey`,
/// `KeyTooLong`, `ValueTooLarge`) is reported before anything changes, so the writer stays usable
/// after such an error; after an I/O error (`Io`, `Spill`) the output is incomplete and must be
/// discarded.
/// Nothing is valid until [`SnapshotWriter::finish`] returns.
pub struct SnapshotWriter<W: Write> {
    out: Output<W>,
    options: WriterOptions,
    metadata: Metadata,
    /// Entries of the block being filled.
    block: Vec<u8>,
    /// The last key inserted (the previous key for prefix compression and ordering).
    last_key: Vec<u8>,
    /// The last key of the previous block, while its separator waits for the next first key.
    pending_separator: Option<Vec<u8>>,
    index: fst::MapBuilder<Vec<u8>>,
    /// Version 1: the filter hash of each key (when there is a filter).
    key_hashes: Vec<u64>,
    /// Version 2: the 128-bit hash of each key, and its location: `block << 32 | offset`, or
    /// the file offset of its entry when every block is stored raw (no compression).
    records: Records,
    key_count: u64,
    /// Blocks cut so far (the next block's number).
    blocks_cut: u32,
    /// Entry counts per cut block, until the block is written.
    block_entries: Vec<u32>,
    entries_in_block: u32,
    training: Option<Training>,
    spec: Arc<CompressionSpec>,
    dictionary: Vec<u8>,
    pipeline: Option<Pipeline>,
    table: Vec<u8>,
    summary: WriteSummary,
}

/// Seed of the hash that places content-defined block boundaries.
const CUT_SEED: u64 = 0x736e_6170_6b76_6375;

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot: checks the options and writes the header.
    pub fn new(out: W, options: WriterOptions, metadata: Metadata) -> Result<Self> {
        options.check()?;
        let level = match options.compression {
            Compression::None => None,
            Compression::Zstd { level } => Some(level),
        };
        let (training, dictionary) = match (&options.dictionary, level) {
            (_, None) | (Dictionary::Off, _) => (None, Vec::new()),
            (Dictionary::Use(d), _) => (None, d.clone()),
            (
                Dictionary::Train {
                    max_bytes,
                    sample_bytes,
                },
                _,
            ) => (
                Some(Training {
                    max_bytes: *max_bytes,
                    sample_bytes: *sample_bytes,
                    samples: Vec::new(),
                    sizes: Vec::new(),
                    blocks: Vec::new(),
                    held_bytes: 0,
                }),
                Vec::new(),
            ),
        };
        let spec = Arc::new(CompressionSpec {
            level,
            dict: match (level, dictionary.is_empty()) {
                (Some(l), false) => Some(cdict(&dictionary, l)?),
                _ => None,
            },
        });
        let mut out = Output {
            inner: out,
            pos: 0,
            hasher: Xxh3::new(),
        };
        out.write(&layout::encode_header(options.format_version))?;
        let records = Records::new(match (&options.spill, options.format_version) {
            (Some(spill), 2..) => Some((spill.dir.clone(), spill.memory)),
            _ => None,
        });
        Ok(SnapshotWriter {
            out,
            options,
            metadata,
            block: Vec::new(),
            last_key: Vec::new(),
            pending_separator: None,
            index: fst::MapBuilder::memory(),
            key_hashes: Vec::new(),
            records,
            key_count: 0,
            blocks_cut: 0,
            block_entries: Vec::new(),
            entries_in_block: 0,
            training,
            spec,
            dictionary,
            pipeline: None,
            table: Vec::new(),
            summary: WriteSummary::default(),
        })
    }

    /// How blocks hold keys, by the format version written.
    fn keys(&self) -> Keys {
        Keys::of(self.options.format_version)
    }

    /// Adds one entry. `key` must be larger than every key added before.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        if key.is_empty() {
            return Err(Error::EmptyKey);
        }
        if key.len() > MAX_KEY_LEN {
            return Err(Error::KeyTooLong {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(Error::ValueTooLarge {
                len: value.len(),
                max: MAX_VALUE_LEN,
            });
        }
        if self.key_count > 0 {
            match key.cmp(&self.last_key) {
                std::cmp::Ordering::Greater => {}
                std::cmp::Ordering::Equal => return Err(Error::DuplicateKey { key: key.to_vec() }),
                std::cmp::Ordering::Less => {
                    return Err(Error::OutOfOrder {
                        previous: self.last_key.clone(),
                        got: key.to_vec(),
                    })
                }
            }
        }
        let keys = self.keys();
        if keys == Keys::Whole && self.key_count >= u64::from(u32::MAX) {
            return Err(Error::TooManyKeys {
                max: u64::from(u32::MAX),
            });
        }
        let target = self.options.block_size as usize;
        let bound = block::entry_len_bound(keys, key, value);
        if self.entries_in_block > 0 && self.block.len() + bound > 2 * target {
            self.cut_block()?;
        }
        if self.entries_in_block == 0 {
            if let Some(last) = self.pending_separator.take() {
                let sep = separator(&last, key);
                self.insert_separator(sep, self.blocks_cut - 1)?;
            }
            self.last_key.clear();
        }
        let before = self.block.len();
        block::put_entry(&mut self.block, keys, &self.last_key, key, value);
        let entry_len = self.block.len() - before;
        self.entries_in_block += 1;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.key_count += 1;
        match keys {
            Keys::Prefixed if self.options.filter_bits_per_key > 0 => {
                self.key_hashes.push(xxh3_64(key))
            }
            Keys::Prefixed => {}
            Keys::Whole => {
                // The block being filled is the next to be cut; offsets in a block of more
                // than one entry are below 2 × the block size, so they fit 32 bits.
                let location = match self.spec.level {
                    // Blocks are written as they are cut (no compression threads, no
                    // dictionary training): the one being filled will start where the output
                    // stands now.
                    None => self.out.pos + before as u64,
                    Some(_) => u64::from(self.blocks_cut) << 32 | before as u64,
                };
                self.records.push(lookup::key_hash(key), location)?;
            }
        }
        if let Some(t) = &mut self.training {
            if t.samples.len() < t.sample_bytes && !value.is_empty() {
                t.samples.extend_from_slice(value);
                t.sizes.push(value.len());
            }
        }
        // Content-defined boundary: past half the target, an entry ends its block with
        // probability entry_len / (target / 2), decided by a hash of its key alone. Expected
        // block size is about the target, and boundaries move only near changed keys.
        let half = (target / 2) as u128;
        if self.block.len() >= target / 2
            && (u128::from(xxh3_64_with_seed(key, CUT_SEED)) * half) >> 64 < entry_len as u128
        {
            self.cut_block()?;
        }
        Ok(())
    }

    fn insert_separator(&mut self, separator: Vec<u8>, block: u32) -> Result<()> {
        self.index
            .insert(&separator, u64::from(block))
            .map_err(|_| Error::InvalidOption("index separators out of order".into()))
    }

    /// Ends the current block and hands it to compression.
    fn cut_block(&mut self) -> Result<()> {
        if self.entries_in_block == 0 {
            return Ok(());
        }
        if self.blocks_cut == u32::MAX {
            return Err(Error::TooManyBlocks {
                max: u64::from(u32::MAX),
            });
        }
        self.blocks_cut += 1;
        self.block_entries.push(self.entries_in_block);
        self.entries_in_block = 0;
        self.pending_separator = Some(self.last_key.clone());
        // The next block starts with room for the largest block cut without a large entry.
        let mut raw = std::mem::replace(
            &mut self.block,
            Vec::with_capacity(2 * self.options.block_size as usize),
        );
        if let Some(t) = &mut self.training {
            // Held back for a while: only its bytes.
            raw.shrink_to_fit();
            t.held_bytes += raw.len();
            t.blocks.push(raw);
            // Small or empty values fill the sample slowly: bound what is held back anyway.
            if t.samples.len() >= t.sample_bytes || t.held_bytes >= 4 * t.sample_bytes {
                self.end_training()?;
            }
            return Ok(());
        }
        self.submit(raw)
    }

    /// Trains the dictionary on the samples so far and releases the held-back blocks.
    fn end_training(&mut self) -> Result<()> {
        let Some(t) = self.training.take() else {
            return Ok(());
        };
        // zstd needs a fair number of samples; with fewer, or if training fails, go without.
        if t.sizes.len() >= 64 && t.samples.len() >= 4 * t.max_bytes.min(16 * 1024) {
            if let Ok(dict) = zstd::dict::from_continuous(&t.samples, &t.sizes, t.max_bytes) {
                let level = self.spec.level.unwrap_or(3);
                self.spec = Arc::new(CompressionSpec {
                    level: self.spec.level,
                    dict: Some(cdict(&dict, level)?),
                });
                self.dictionary = dict;
            }
        }
        for raw in t.blocks {
            self.submit(raw)?;
        }
        Ok(())
    }

    fn submit(&mut self, raw: Vec<u8>) -> Result<()> {
        if self.pipeline.is_none() {
            let threads = crate::pool::threads(self.options.threads);
            let threads = if self.spec.level.is_none() {
                1
            } else {
                threads
            };
            self.pipeline = Some(Pipeline::start(threads, &self.spec));
        }
        let raw_len = raw.len() as u32;
        match self.pipeline.as_mut().expect("started above") {
            Pipeline::Inline(c) => {
                let block = c.compress(&self.spec, raw)?;
                self.write_block(block, raw_len)
            }
            Pipeline::Threads {
                group, group_bytes, ..
            } => {
                *group_bytes += raw.len();
                group.push(raw);
                if *group_bytes >= GROUP_BYTES {
                    self.write_ready(false)?;
                }
                Ok(())
            }
        }
    }

    /// Sends the group of blocks, then writes finished groups, in order, until no more than
    /// the allowed number are in flight; with `all`, until none is.
    fn write_ready(&mut self, all: bool) -> Result<()> {
        let stopped = || Error::Compression("a compression thread stopped");
        if let Some(Pipeline::Threads {
            submit,
            group,
            group_bytes,
            ..
        }) = self.pipeline.as_mut()
        {
            if !group.is_empty() {
                if !submit.submit(std::mem::take(group)) {
                    return Err(stopped());
                }
                *group_bytes = 0;
            }
        }
        loop {
            let Some(Pipeline::Threads {
                submit,
                done,
                max_in_flight,
                ..
            }) = self.pipeline.as_mut()
            else {
                return Ok(());
            };
            let allowed = if all { 0 } else { *max_in_flight };
            if submit.submitted() - done.received() <= allowed {
                return Ok(());
            }
            // `None`: a compression thread panicked.
            let blocks = done.recv().ok_or_else(stopped)?;
            for (raw_len, block) in blocks {
                self.write_block(block?, raw_len)?;
            }
        }
    }

    fn write_block(&mut self, (stored, codec): (Vec<u8>, Codec), raw_len: u32) -> Result<()> {
        let block = self.summary.block_count as usize;
        let entry = BlockEntry {
            offset: self.out.pos,
            stored_len: stored.len() as u32,
            raw_len,
            checksum: xxh3_64(&stored),
            entries: self.block_entries[block],
            codec,
        };
        self.out.write(&stored)?;
        self.table.extend_from_slice(&entry.encode());
        self.summary.block_count += 1;
        self.summary.block_bytes_raw += u64::from(raw_len);
        self.summary.block_bytes_stored += stored.len() as u64;
        if codec == Codec::Raw {
            self.summary.raw_blocks += 1;
        }
        Ok(())
    }

    /// Writes the last block and every section, and returns the output with a summary.
    pub fn finish(mut self) -> Result<(W, WriteSummary)> {
        self.cut_block()?;
        self.end_training()?;
        self.write_ready(true)?;
        // Every block is written: the compression threads end.
        self.pipeline = None;
        if let Some(last) = self.pending_separator.take() {
            self.insert_separator(last, self.blocks_cut - 1)?;
        }
        let index = std::mem::replace(&mut self.index, fst::MapBuilder::memory())
            .into_inner()
            .map_err(|_| Error::InvalidOption("index could not be built".into()))?;
        let bits = self.options.filter_bits_per_key;
        let (filter, lookup) = match self.keys() {
            Keys::Prefixed => (
                filter::build(std::mem::take(&mut self.key_hashes).into_iter(), bits),
                Vec::new(),
            ),
            Keys::Whole => {
                // The filter and the perfect hash read the same hashes: they are built side by
                // side (the compression threads are done).
                let mut filter = filter::Builder::new(self.records.len(), bits);
                let threads = crate::pool::threads(self.options.threads);
                let direct = self.spec.level.is_none();
                let lookup = lookup::build(&mut self.records, direct, threads, filter.as_mut())?
                    .ok_or(Error::NoPerfectHash)?;
                self.records = Records::new(None);
                (
                    filter.map(filter::Builder::finish).unwrap_or_default(),
                    lookup,
                )
            }
        };
        self.metadata.key_count = self.key_count;
        self.metadata.format = FormatInfo {
            compression: match self.options.compression {
                Compression::None => "none".into(),
                Compression::Zstd { .. } => "zstd".into(),
            },
            level: self.spec.level.unwrap_or(0),
            block_size: self.options.block_size,
            dictionary_bytes: self.dictionary.len() as u64,
            filter_bits_per_key: if filter.is_empty() {
                0
            } else {
                self.options.filter_bits_per_key
            },
        };
        let metadata = serde_json::to_vec(&self.metadata)
            .map_err(|_| Error::InvalidOption("metadata could not be serialized".into()))?;

        let dictionary = std::mem::take(&mut self.dictionary);
        let table = std::mem::take(&mut self.table);
        let mut footer = Footer {
            version: self.options.format_version,
            key_count: self.key_count,
            block_count: self.summary.block_count,
            ..Footer::default()
        };
        for section in layout::sections_of(footer.version) {
            let bytes = match section {
                Section::Dictionary => &dictionary,
                Section::BlockTable => &table,
                Section::Index => &index,
                Section::Filter => &filter,
                Section::Lookup => &lookup,
                _ => &metadata,
            };
            footer.set(*section, self.out.section(bytes)?);
        }
        self.out.pad()?;
        let mut bytes = footer.encode();
        let covered = bytes.len() - layout::FILE_CHECKSUM_TAIL;
        self.out.write(&bytes[..covered])?;
        let file_checksum = self.out.hasher.digest();
        bytes[covered..covered + 8].copy_from_slice(&file_checksum.to_le_bytes());
        self.out.inner.write_all(&bytes[covered..])?;
        self.out.inner.flush()?;
        self.out.pos += layout::FILE_CHECKSUM_TAIL as u64;

        let s = &mut self.summary;
        s.key_count = self.key_count;
        s.file_bytes = self.out.pos;
        s.index_bytes = index.len() as u64;
        s.filter_bytes = filter.len() as u64;
        s.lookup_bytes = lookup.len() as u64;
        s.dictionary_bytes = dictionary.len() as u64;
        s.block_table_bytes = table.len() as u64;
        s.metadata_bytes = metadata.len() as u64;
        Ok((self.out.inner, *s))
    }
}

fn cdict(dict: &[u8], level: i32) -> Result<zstd::zstd_safe::CDict<'static>> {
    zstd::zstd_safe::CDict::try_create(dict, level)
        .ok_or(Error::Compression("could not load the dictionary"))
}

/// A short key `s` with `last <= s < next`: the index only needs to tell blocks apart.
pub(crate) fn separator(last: &[u8], next: &[u8]) -> Vec<u8> {
    let p = common_prefix(last, next);
    if p < last.len() && next.len() > p + 1 {
        // next[p] > last[p], so next[..=p] > last, and it is a proper prefix of next.
        next[..=p].to_vec()
    } else {
        last.to_vec()
    }
}
