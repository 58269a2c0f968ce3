//! Comparing two snapshots: which keys were added, removed or changed, how the schema changed,
//! and which value fields changed on a sample of the changed keys.
//!
//! [`diff`] walks both files once, in key order, as a sorted merge (key ranges in parallel).
//! Counts are exact. Blocks that the two files store identically at the same point of the merge
//! are counted from the block table without being decompressed (see
//! [`DiffOptions::skip_identical_blocks`] for why that is exact), so two versions written with
//! the same dictionary cost little more than their changed blocks. `spec/FORMAT.md` ("Diff")
//! specifies the result.
//!
//! ```
//! use snapkv_format::{diff, DiffOptions, Metadata, Snapshot, SnapshotWriter, WriterOptions};
//!
//! let write = |entries: &[(&str, &str)]| -> snapkv_format::Result<Snapshot> {
//!     let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default())?;
//!     for (k, v) in entries {
//!         w.insert(k.as_bytes(), v.as_bytes())?;
//!     }
//!     Snapshot::open(w.finish()?.0)
//! };
//! let old = write(&[("a", "1"), ("b", "2"), ("c", "3")])?;
//! let new = write(&[("b", "2"), ("c", "4"), ("d", "5")])?;
//! let d = diff(&old, &new, &DiffOptions::default())?;
//! assert_eq!((d.added, d.removed, d.changed, d.unchanged), (1, 1, 1, 1));
//! assert_eq!(&d.examples.changed[0].key[..], b"c");
//! # Ok::<(), snapkv_format::Error>(())
//! ```

use crate::block::Cursor;
use crate::error::{Error, Result, Section};
use crate::layout::{BlockEntry, Codec};
use crate::metadata::{Metadata, ValueEncoding};
use crate::snapshot::Snapshot;
use bytes::Bytes;
use serde_json::Value;
use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use xxhash_rust::xxh3::xxh3_64_with_seed;

/// What [`diff`] computes besides the exact counts, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DiffOptions {
    /// Example entries kept of each kind (added, removed, changed): the first ones in key
    /// order. Default: 5.
    pub examples: usize,
    /// Most changed keys whose values are compared field by field (when both snapshots hold
    /// JSON values). The sample is the changed keys whose hash starts with `k` zero bits, about
    /// one in `2^k`, for the smallest `k` that keeps it within this bound: between about half
    /// the bound and the bound once there are more changed keys than that, spread over the key
    /// space. 0 turns the comparison off. Default: 10,000.
    pub sample: usize,
    /// Most distinct top-level fields counted by the sample; fields first seen after that are
    /// left out and [`ColumnSample::truncated`] is set. Default: 1,024.
    pub max_columns: usize,
    /// Threads comparing key ranges at once; 0 means one per core. The result does not
    /// depend on it (but for [`BlockStats`]). Default: 0.
    pub threads: usize,
    /// Count blocks that need not be decoded without decoding them. Default: true.
    ///
    /// When the merge stands at the start of a block in both files, every key before it in
    /// either file has been merged already, and every key still to come is at least that
    /// block's first key. If the two blocks then hold the same entries, those entries are in
    /// both files with the same values, and the merge would count each as unchanged and stand
    /// at the start of the next blocks again: so they are counted from the block table
    /// (`entries`) instead. Two blocks hold the same entries when their stored bytes are equal
    /// and decode the same way (same codec and, for blocks compressed with the dictionary, the
    /// same dictionary bytes): then neither is decompressed. Otherwise both are decompressed,
    /// and if the raw bytes are equal the entries are still not decoded.
    ///
    /// Skipped blocks are taken at their word, as [`Snapshot::len`] takes the footer's: a file
    /// whose block table lies about entry counts gives wrong counts rather than an error.
    /// Verify untrusted files first ([`Snapshot::verify`]). With `false`, every entry of both
    /// files is decoded and compared.
    pub skip_identical_blocks: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            examples: 5,
            sample: 10_000,
            max_columns: 1024,
            threads: 0,
            skip_identical_blocks: true,
        }
    }
}

/// The differences between an old and a new snapshot, from [`diff`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Diff {
    /// Keys only in the new snapshot.
    pub added: u64,
    /// Keys only in the old snapshot.
    pub removed: u64,
    /// Keys in both whose values differ (byte for byte).
    pub changed: u64,
    /// Keys in both with the same value.
    pub unchanged: u64,
    /// The first few entries of each kind.
    pub examples: Examples,
    /// How the metadata's schema, key columns and value encoding changed.
    pub schema: SchemaDiff,
    /// Field-by-field comparison of a sample of the changed keys; `None` unless both snapshots
    /// hold JSON values ([`ValueEncoding::Json`]) and [`DiffOptions::sample`] is not 0.
    pub columns: Option<ColumnSample>,
    /// How much of the files was read.
    pub blocks: BlockStats,
}

impl Diff {
    /// Keys of the old snapshot.
    pub fn old_keys(&self) -> u64 {
        self.removed + self.changed + self.unchanged
    }

    /// Keys of the new snapshot.
    pub fn new_keys(&self) -> u64 {
        self.added + self.changed + self.unchanged
    }

    /// The share of keys present in both whose value changed, 0 to 1 (0 when no key is in
    /// both).
    pub fn changed_share(&self) -> f64 {
        let both = self.changed + self.unchanged;
        if both == 0 {
            0.0
        } else {
            self.changed as f64 / both as f64
        }
    }

    /// True when the snapshots hold the same entries and the same schema.
    pub fn is_empty(&self) -> bool {
        self.added == 0 && self.removed == 0 && self.changed == 0 && self.schema.is_empty()
    }
}

/// Example entries of each kind, in key order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Examples {
    /// Keys only in the new snapshot (`old` is `None`).
    pub added: Vec<Example>,
    /// Keys only in the old snapshot (`new` is `None`).
    pub removed: Vec<Example>,
    /// Keys whose value changed (both values present).
    pub changed: Vec<Example>,
}

/// One key and its values in the old and new snapshot.
///
/// Values share the bytes they were read from (the file, or a decompressed block): holding an
/// example keeps its block in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Example {
    /// The key.
    pub key: Bytes,
    /// Its value in the old snapshot.
    pub old: Option<Bytes>,
    /// Its value in the new snapshot.
    pub new: Option<Bytes>,
}

/// A column of the source schema (a field of the Arrow schema in the metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaField {
    /// The column name.
    pub name: String,
    /// Its Arrow type as stored in the metadata (the JSON of `arrow_schema::DataType`, such as
    /// `"Int64"` or `{"Timestamp": ["Microsecond", "UTC"]}`).
    pub data_type: Value,
    /// Whether it may be null.
    pub nullable: bool,
}

/// A column present in both schemas whose property changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FieldChange<T> {
    /// The column name.
    pub name: String,
    /// The property in the old schema.
    pub old: T,
    /// The property in the new schema.
    pub new: T,
}

/// A property of the snapshot that changed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Change<T> {
    /// The old snapshot's.
    pub old: T,
    /// The new snapshot's.
    pub new: T,
}

/// Schema changes, by column name. Field metadata, schema metadata and column order are not
/// compared.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SchemaDiff {
    /// Columns only in the new schema, in its order.
    pub added: Vec<SchemaField>,
    /// Columns only in the old schema, in its order.
    pub removed: Vec<SchemaField>,
    /// Columns whose type changed, in the new schema's order.
    pub retyped: Vec<FieldChange<Value>>,
    /// Columns whose nullability changed, in the new schema's order.
    pub nullability: Vec<FieldChange<bool>>,
    /// The key columns, if they changed.
    pub key_columns: Option<Change<Vec<String>>>,
    /// The value encoding, if it changed.
    pub value_encoding: Option<Change<ValueEncoding>>,
    /// The schemas differ but cannot be compared column by column: one snapshot has none, or
    /// one is not an Arrow schema (an object with a `fields` list of objects with a `name`).
    pub incomparable: bool,
}

impl SchemaDiff {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.retyped.is_empty()
            && self.nullability.is_empty()
            && self.key_columns.is_none()
            && self.value_encoding.is_none()
            && !self.incomparable
    }
}

/// The field-by-field comparison of the JSON values of a sample of the changed keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnSample {
    /// Changed keys in the sample.
    pub keys: u64,
    /// About one changed key in this many is in the sample (a power of two; 1 when all
    /// are). Which ones is decided by a hash of the key, so the sample spreads evenly over
    /// the key space and picks the same keys whatever else changed.
    pub one_in: u64,
    /// Sampled keys whose old or new value is not a JSON object: not counted by field.
    pub not_objects: u64,
    /// Every top-level field of the sampled values, with how many sampled keys it changed in;
    /// in the order they are first met, in key order (within a key, the old value's fields in
    /// its order, then those only in the new value).
    pub columns: Vec<ColumnChange>,
    /// More than [`DiffOptions::max_columns`] distinct fields were seen: some are left out.
    pub truncated: bool,
}

impl ColumnSample {
    /// Sampled keys whose values are both JSON objects: what [`ColumnChange`] counts are of.
    pub fn objects(&self) -> u64 {
        self.keys - self.not_objects
    }
}

/// How often one top-level field of the JSON values changed in the sample.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ColumnChange {
    /// The field name.
    pub name: String,
    /// Sampled keys where the field differs: its value changed, or it is in only one of the
    /// two values (`added` and `removed` are part of this count).
    pub changed: u64,
    /// Sampled keys whose new value has the field and whose old value does not.
    pub added: u64,
    /// Sampled keys whose old value has the field and whose new value does not.
    pub removed: u64,
}

/// How the blocks of the two files were read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockStats {
    /// Blocks of the old snapshot.
    pub old_blocks: u64,
    /// Blocks of the new snapshot.
    pub new_blocks: u64,
    /// Pairs of blocks stored identically: counted without decompressing either.
    pub skipped: u64,
    /// Pairs of blocks stored differently with identical raw bytes (different dictionaries or
    /// compression): decompressed, but their entries not decoded.
    pub equal_raw: u64,
    /// Blocks of the old snapshot whose entries were decoded and merged (a block that two key
    /// ranges share counts in both).
    pub decoded_old: u64,
    /// Blocks of the new snapshot whose entries were decoded and merged (likewise).
    pub decoded_new: u64,
}

/// Compares `old` with `new`: exact counts of added, removed, changed and unchanged keys, the
/// first [`DiffOptions::examples`] of each kind, schema changes, and a field-by-field
/// comparison of a sample of the changed keys' JSON values.
///
/// A sorted merge of both files in key order. With more than one thread the key space is cut
/// into ranges at block boundaries of the file with more blocks, and the ranges are merged in
/// parallel; the result does not depend on the number of threads (but for
/// [`BlockStats`], where a block that two ranges share is read by both). Memory is bounded by
/// the options and the number of ranges, not by the files: two blocks per thread, and per
/// range (up to eight per thread) its examples and its sample's field counts (about 3.6 KB per
/// field, at most [`DiffOptions::max_columns`] fields), kept until every range is done. Errors
/// are those of reading the files (a corrupt block); the files are not verified (see
/// [`DiffOptions::skip_identical_blocks`]).
pub fn diff(old: &Snapshot, new: &Snapshot, options: &DiffOptions) -> Result<Diff> {
    let json = old.metadata().value_encoding == ValueEncoding::Json
        && new.metadata().value_encoding == ValueEncoding::Json;
    let ctx = Context {
        old,
        new,
        options,
        sample: json && options.sample > 0,
        same_dictionary: old.dictionary() == new.dictionary(),
    };
    let threads = crate::pool::threads(options.threads);
    let ranges = plan(old, new, threads)?;
    // `plan` makes one range for one thread.
    let parts = if ranges.len() <= 1 {
        (ranges.iter().enumerate())
            .map(|(i, r)| diff_range(&ctx, r, i as u64))
            .collect::<Result<Vec<_>>>()?
    } else {
        in_parallel(&ctx, &ranges, threads)?
    };
    let mut d = Diff {
        schema: schema_diff(old.metadata(), new.metadata()),
        ..Diff::default()
    };
    d.blocks.old_blocks = old.block_count();
    d.blocks.new_blocks = new.block_count();
    let mut sampler: Option<Sampler> = None;
    let keep = |to: &mut Vec<Example>, from: Vec<Example>| {
        let room = options.examples.saturating_sub(to.len());
        to.extend(from.into_iter().take(room));
    };
    for p in parts {
        d.added += p.added;
        d.removed += p.removed;
        d.changed += p.changed;
        d.unchanged += p.unchanged;
        keep(&mut d.examples.added, p.examples.added);
        keep(&mut d.examples.removed, p.examples.removed);
        keep(&mut d.examples.changed, p.examples.changed);
        let b = &mut d.blocks;
        b.skipped += p.blocks.skipped;
        b.equal_raw += p.blocks.equal_raw;
        b.decoded_old += p.blocks.decoded_old;
        b.decoded_new += p.blocks.decoded_new;
        sampler = match (sampler, p.sampler) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        };
    }
    d.columns = sampler.map(Sampler::finish);
    Ok(d)
}

/// What every range of a diff shares.
struct Context<'a> {
    old: &'a Snapshot,
    new: &'a Snapshot,
    options: &'a DiffOptions,
    /// Compare JSON values field by field.
    sample: bool,
    /// The two files have the same dictionary bytes.
    same_dictionary: bool,
}

/// A range of keys, `(lower, upper]` (unbounded where `None`), that is a run of whole blocks
/// of `split` (true: the old file, false: the new one).
struct KeyRange {
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
    split: bool,
    blocks: Range<u64>,
}

/// Fewest blocks of a range worth a thread's start.
const MIN_RANGE_BLOCKS: u64 = 16;
/// Ranges per thread: more than one, so that a thread with a cheap range takes another.
const RANGES_PER_THREAD: u64 = 8;

/// Cuts the key space into ranges at block boundaries of the file with more blocks: at the
/// separator `s` of the block before each cut, every key of that file's earlier blocks is
/// `<= s` and every key of its later blocks is `> s` (FORMAT.md, "Index").
fn plan(old: &Snapshot, new: &Snapshot, threads: usize) -> Result<Vec<KeyRange>> {
    let split = old.block_count() >= new.block_count();
    let by = if split { old } else { new };
    let blocks = by.block_count();
    let wanted = if threads <= 1 {
        1
    } else {
        (threads as u64 * RANGES_PER_THREAD).min(blocks / MIN_RANGE_BLOCKS)
    };
    if wanted <= 1 {
        return Ok(vec![KeyRange {
            lower: None,
            upper: None,
            split,
            blocks: 0..blocks,
        }]);
    }
    // Range `p` starts at block `p * blocks / wanted`; its lower bound is the separator of the
    // block before.
    let cuts: Vec<u64> = (1..wanted).map(|p| p * blocks / wanted).collect();
    let mut separators = Vec::with_capacity(cuts.len());
    let mut stream = by.index().stream();
    let mut want = cuts.iter().peekable();
    while let Some((sep, block)) = fst::Streamer::next(&mut stream) {
        if want.next_if(|c| **c == block + 1).is_some() {
            separators.push(sep.to_vec());
        }
    }
    if separators.len() != cuts.len() {
        return Err(Error::Corrupt {
            section: Section::Index,
            offset: 0,
            detail: "index entry count differs from the block count",
        });
    }
    let starts = std::iter::once(0).chain(cuts.iter().copied());
    let ends = cuts.iter().copied().chain(std::iter::once(blocks));
    // Range i lies between bounds i and i + 1: unbounded, the separators, unbounded.
    let bounds: Vec<Option<Vec<u8>>> = std::iter::once(None)
        .chain(separators.into_iter().map(Some))
        .chain(std::iter::once(None))
        .collect();
    Ok((starts.zip(ends).zip(bounds.windows(2)))
        .map(|((start, end), bounds)| KeyRange {
            lower: bounds[0].clone(),
            upper: bounds[1].clone(),
            split,
            blocks: start..end,
        })
        .collect())
}

/// Diffs the ranges on `threads` threads, each taking the next range not yet taken; returns
/// the results in range order, or the error of the first failed range in order.
fn in_parallel(ctx: &Context<'_>, ranges: &[KeyRange], threads: usize) -> Result<Vec<Part>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Mutex<Vec<Option<Result<Part>>>> =
        Mutex::new((0..ranges.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads.min(ranges.len()) {
            scope.spawn(|| loop {
                // After a failure the remaining ranges are not started.
                let i = next.fetch_add(1, Relaxed);
                if i >= ranges.len() || failed.load(Relaxed) {
                    return;
                }
                let r = diff_range(ctx, &ranges[i], i as u64);
                failed.fetch_or(r.is_err(), Relaxed);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut parts = Vec::with_capacity(results.len());
    let mut error = None;
    for r in results.into_iter().flatten() {
        match r {
            Ok(p) => parts.push(p),
            Err(e) => {
                error.get_or_insert(e);
            }
        }
    }
    // A range is left out only after some range failed.
    match error {
        Some(e) => Err(e),
        None => Ok(parts),
    }
}

/// The diff of one key range.
#[derive(Default)]
struct Part {
    added: u64,
    removed: u64,
    changed: u64,
    unchanged: u64,
    examples: Examples,
    sampler: Option<Sampler>,
    blocks: BlockStats,
}

/// Adds the example `make` makes to `to`, unless `keep` are there already.
fn keep_example(to: &mut Vec<Example>, keep: usize, make: impl FnOnce() -> Example) {
    if to.len() < keep {
        to.push(make());
    }
}

/// Merges the entries of `range` of both files. `number` orders the range among the others.
fn diff_range(ctx: &Context<'_>, range: &KeyRange, number: u64) -> Result<Part> {
    let options = ctx.options;
    let mut d = Part {
        sampler: ctx
            .sample
            .then(|| Sampler::new(options.sample as u64, options.max_columns, number)),
        ..Part::default()
    };
    let (old_blocks, new_blocks) = if range.split {
        (range.blocks.clone(), other_blocks(ctx.new, range)?)
    } else {
        (other_blocks(ctx.old, range)?, range.blocks.clone())
    };
    let (lower, upper) = (range.lower.as_deref(), range.upper.as_deref());
    let mut a = Side::new(ctx.old, old_blocks, lower, upper);
    let mut b = Side::new(ctx.new, new_blocks, lower, upper);
    let keep = options.examples;
    // Equal bytes mean equal entries only under one key encoding (one format version).
    let skip =
        options.skip_identical_blocks && ctx.old.format_version() == ctx.new.format_version();
    loop {
        match (a.state, b.state) {
            (State::Boundary, State::Boundary) => {
                // Every key of the range before these blocks has been merged, in both files.
                let (ea, eb) = (a.boundary_entry()?, b.boundary_entry()?);
                if skip
                    && same_stored(&ea, &eb, ctx.same_dictionary)
                    && a.snap.stored(&ea) == b.snap.stored(&eb)
                {
                    d.unchanged += u64::from(ea.entries);
                    d.blocks.skipped += 1;
                    a.skip_block();
                    b.skip_block();
                    continue;
                }
                let (ra, rb) = (a.read_block(&ea)?, b.read_block(&eb)?);
                if skip && ea.entries == eb.entries && ra == rb {
                    d.unchanged += u64::from(ea.entries);
                    d.blocks.equal_raw += 1;
                    a.skip_block();
                    b.skip_block();
                    continue;
                }
                a.open(ra)?;
                b.open(rb)?;
            }
            (State::Boundary, _) => {
                let raw = a.read_block(&a.boundary_entry()?)?;
                a.open(raw)?;
            }
            (_, State::Boundary) => {
                let raw = b.read_block(&b.boundary_entry()?)?;
                b.open(raw)?;
            }
            (State::Done, State::Done) => break,
            (sa, sb) => {
                // Both at an entry, or one side done: a done side sorts after every key.
                let order = match (sa, sb) {
                    (State::Entry, State::Done) => Ordering::Less,
                    (State::Done, State::Entry) => Ordering::Greater,
                    _ => a.key().cmp(b.key()),
                };
                match order {
                    Ordering::Less => {
                        d.removed += 1;
                        keep_example(&mut d.examples.removed, keep, || Example {
                            key: a.key_bytes(),
                            old: Some(a.value_bytes()),
                            new: None,
                        });
                        a.advance()?;
                    }
                    Ordering::Greater => {
                        d.added += 1;
                        keep_example(&mut d.examples.added, keep, || Example {
                            key: b.key_bytes(),
                            old: None,
                            new: Some(b.value_bytes()),
                        });
                        b.advance()?;
                    }
                    Ordering::Equal => {
                        if a.value() == b.value() {
                            d.unchanged += 1;
                        } else {
                            d.changed += 1;
                            if let Some(s) = &mut d.sampler {
                                s.offer(a.key(), a.value(), b.value());
                            }
                            keep_example(&mut d.examples.changed, keep, || Example {
                                key: a.key_bytes(),
                                old: Some(a.value_bytes()),
                                new: Some(b.value_bytes()),
                            });
                        }
                        a.advance()?;
                        b.advance()?;
                    }
                }
            }
        }
    }
    d.blocks.decoded_old = a.decoded;
    d.blocks.decoded_new = b.decoded;
    Ok(d)
}

/// The blocks of `snap` that can hold keys of `range`, a range cut at another file's blocks:
/// from the first block whose separator is `>= lower` (the blocks before hold only keys
/// `< lower`) through the first whose separator is `>= upper` (the blocks after hold only keys
/// `> upper`).
fn other_blocks(snap: &Snapshot, range: &KeyRange) -> Result<Range<u64>> {
    let count = snap.block_count();
    let start = match &range.lower {
        None => 0,
        Some(k) => snap.block_for(k)?.map_or(count, u64::from),
    };
    // `block_for` names a block only when there is one (`b < count`).
    let end = match &range.upper {
        None => count,
        Some(k) => snap.block_for(k)?.map_or(count, |b| u64::from(b) + 1),
    };
    Ok(start..end.max(start))
}

/// True when two blocks with equal stored bytes would decode to equal raw bytes: the same
/// codec and table entry (but for the offset), and for dictionary blocks the same dictionary.
fn same_stored(a: &BlockEntry, b: &BlockEntry, same_dictionary: bool) -> bool {
    a.codec == b.codec
        && (a.codec != Codec::ZstdDict || same_dictionary)
        && a.stored_len == b.stored_len
        && a.raw_len == b.raw_len
        && a.checksum == b.checksum
        && a.entries == b.entries
}

/// Where one side of the merge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of block `next`, nothing of it read.
    Boundary,
    /// At an entry of the loaded block.
    Entry,
    /// Past the last entry of the range.
    Done,
}

/// One snapshot walked block by block, entry by entry, over the keys `(lower, upper]` of a
/// run of its blocks.
struct Side<'s> {
    snap: &'s Snapshot,
    /// The next block to read.
    next: u64,
    /// The end of the run.
    end: u64,
    /// Entries up to this key are passed over (in the first block read).
    lower: Option<&'s [u8]>,
    /// The range ends at entries past this key.
    upper: Option<&'s [u8]>,
    buf: Bytes,
    cursor: Cursor,
    value: Range<usize>,
    state: State,
    /// Blocks whose entries were decoded.
    decoded: u64,
}

impl<'s> Side<'s> {
    fn new(
        snap: &'s Snapshot,
        blocks: Range<u64>,
        lower: Option<&'s [u8]>,
        upper: Option<&'s [u8]>,
    ) -> Side<'s> {
        let mut side = Side {
            snap,
            next: blocks.start,
            end: blocks.end,
            lower,
            upper,
            buf: Bytes::new(),
            cursor: snap.cursor(0),
            value: 0..0,
            state: State::Done,
            decoded: 0,
        };
        side.state = side.after_block();
        side
    }

    /// The number of the next block. The format addresses blocks with `u32`s; a footer that
    /// claims more is corrupt.
    fn next_block(&self) -> Result<u32> {
        u32::try_from(self.next).map_err(|_| Error::Corrupt {
            section: Section::Footer,
            offset: 0,
            detail: "more blocks than the format addresses",
        })
    }

    /// The table entry of the block at the boundary.
    fn boundary_entry(&self) -> Result<BlockEntry> {
        self.snap.entry(self.next_block()?)
    }

    /// The raw bytes of the block at the boundary, whose table entry is `e` (decompressed,
    /// not cached).
    fn read_block(&self, e: &BlockEntry) -> Result<Bytes> {
        self.snap.block_with(self.next_block()?, e, false)
    }

    /// Passes the block at the boundary without reading it. Its keys are above `lower` (they
    /// are those of a block of the other file in the range).
    fn skip_block(&mut self) {
        self.next += 1;
        self.lower = None;
        self.state = self.after_block();
    }

    fn after_block(&self) -> State {
        if self.next < self.end {
            State::Boundary
        } else {
            State::Done
        }
    }

    /// Starts on the block at the boundary, whose raw bytes are `raw`.
    fn open(&mut self, raw: Bytes) -> Result<()> {
        self.cursor = self.snap.cursor(self.next_block()?);
        self.buf = raw;
        self.next += 1;
        self.decoded += 1;
        self.advance()
    }

    /// Moves to the next entry of the range in the block, or to the boundary after the block.
    fn advance(&mut self) -> Result<()> {
        loop {
            let Some(value) = self.cursor.next(&self.buf)? else {
                self.state = self.after_block();
                return Ok(());
            };
            let key = self.cursor.key();
            if let Some(lower) = self.lower {
                if key <= lower {
                    continue;
                }
                self.lower = None;
            }
            if self.upper.is_some_and(|upper| key > upper) {
                self.next = self.end;
                self.state = State::Done;
                return Ok(());
            }
            self.value = value;
            self.state = State::Entry;
            return Ok(());
        }
    }

    fn key(&self) -> &[u8] {
        self.cursor.key()
    }

    fn key_bytes(&self) -> Bytes {
        Bytes::copy_from_slice(self.cursor.key())
    }

    fn value(&self) -> &[u8] {
        &self.buf[self.value.clone()]
    }

    fn value_bytes(&self) -> Bytes {
        self.buf.slice(self.value.clone())
    }
}

/// The schema changes between two snapshots' metadata (what [`diff()`] reports as
/// [`Diff::schema`]), from the metadata alone.
pub fn schema_diff(old: &Metadata, new: &Metadata) -> SchemaDiff {
    let mut s = SchemaDiff::default();
    if old.key_columns != new.key_columns {
        s.key_columns = Some(Change {
            old: old.key_columns.clone(),
            new: new.key_columns.clone(),
        });
    }
    if old.value_encoding != new.value_encoding {
        s.value_encoding = Some(Change {
            old: old.value_encoding,
            new: new.value_encoding,
        });
    }
    if old.schema == new.schema {
        return s;
    }
    let (Some(old_fields), Some(new_fields)) = (
        old.schema.as_ref().and_then(schema_fields),
        new.schema.as_ref().and_then(schema_fields),
    ) else {
        s.incomparable = true;
        return s;
    };
    let by_name = |fields: &[SchemaField]| -> BTreeMap<String, usize> {
        // The first of repeated names wins (Arrow schemas do not repeat names).
        let mut m = BTreeMap::new();
        for (i, f) in fields.iter().enumerate() {
            m.entry(f.name.clone()).or_insert(i);
        }
        m
    };
    let (old_names, new_names) = (by_name(&old_fields), by_name(&new_fields));
    for (i, f) in new_fields.iter().enumerate() {
        if new_names.get(&f.name) != Some(&i) {
            continue;
        }
        match old_names.get(&f.name) {
            None => s.added.push(f.clone()),
            Some(&j) => {
                let o = &old_fields[j];
                if o.data_type != f.data_type {
                    s.retyped.push(FieldChange {
                        name: f.name.clone(),
                        old: o.data_type.clone(),
                        new: f.data_type.clone(),
                    });
                }
                if o.nullable != f.nullable {
                    s.nullability.push(FieldChange {
                        name: f.name.clone(),
                        old: o.nullable,
                        new: f.nullable,
                    });
                }
            }
        }
    }
    for (i, f) in old_fields.iter().enumerate() {
        if old_names.get(&f.name) == Some(&i) && !new_names.contains_key(&f.name) {
            s.removed.push(f.clone());
        }
    }
    s
}

/// The columns of an Arrow schema as serde writes it: `{"fields": [{"name", "data_type",
/// "nullable", ...}], ...}`. `None` if it is not of that shape.
fn schema_fields(schema: &Value) -> Option<Vec<SchemaField>> {
    let fields = schema.get("fields")?.as_array()?;
    fields
        .iter()
        .map(|f| {
            Some(SchemaField {
                name: f.get("name")?.as_str()?.to_owned(),
                data_type: f.get("data_type").cloned().unwrap_or(Value::Null),
                nullable: f.get("nullable").and_then(Value::as_bool).unwrap_or(true),
            })
        })
        .collect()
}

/// Seed of the hash that picks the sampled keys (the ASCII bytes `"snapkvsa"`).
const SAMPLE_SEED: u64 = 0x736e_6170_6b76_7361;

/// Levels: a key's level is the number of leading zero bits of its hash, 0 to 64.
const LEVELS: usize = 65;

/// The level of a changed key: a key is in the sample at level `L` when its level is `>= L`,
/// which one key in `2^L` is.
fn sample_level(key: &[u8]) -> usize {
    xxh3_64_with_seed(key, SAMPLE_SEED).leading_zeros() as usize
}

/// Counts of one level.
#[derive(Debug, Clone, Copy, Default)]
struct LevelCounts {
    keys: u64,
    not_objects: u64,
}

/// Where a field was seen: the number of the key range, of the changed key in the range, and
/// of the field in the key's values. Positions sort in key order.
type Position = (u64, u64, u64);

const NEVER: Position = (u64::MAX, u64::MAX, u64::MAX);

/// One top-level field: per level, keys where it changed (all kinds), was added, was removed,
/// and was present at all; and per level where it was first seen.
struct FieldCounts {
    name: String,
    counts: [[u64; 4]; LEVELS],
    first: [Position; LEVELS],
}

/// Calls `f` with each top-level field of two JSON objects and its old and new values
/// (`None`: absent): the old object's fields in its order, then those only in the new one. A
/// repeated name counts once, with its last value (as JSON parsers read it).
fn each_field(old: &Fields, new: &Fields, mut f: impl FnMut(&str, Option<&Value>, Option<&Value>)) {
    let (o, n) = (old.lookup(), new.lookup());
    let mut done = HashSet::new();
    for (name, _) in old.0.iter().chain(&new.0) {
        if done.insert(name.as_str()) {
            f(
                name,
                o.get(name.as_str()).copied(),
                n.get(name.as_str()).copied(),
            );
        }
    }
}

/// The top-level fields in which two JSON object values differ, with their old and new values
/// (`None`: the field is absent from that value): the old value's fields in its order, then
/// those only in the new value. `None` when either value is not a JSON object.
///
/// This is the comparison behind [`ColumnSample`], for one changed key.
pub fn changed_fields(old: &[u8], new: &[u8]) -> Option<Vec<FieldChange<Option<Value>>>> {
    let old = serde_json::from_slice::<Fields>(old).ok()?;
    let new = serde_json::from_slice::<Fields>(new).ok()?;
    let mut changes = Vec::new();
    each_field(&old, &new, |name, o, n| {
        if o != n {
            changes.push(FieldChange {
                name: name.to_owned(),
                old: o.cloned(),
                new: n.cloned(),
            });
        }
    });
    Some(changes)
}

/// A JSON object's fields in the order of the text; parsing anything else fails.
struct Fields(Vec<(String, Value)>);

impl Fields {
    /// Values by name; of a repeated name, the last.
    fn lookup(&self) -> HashMap<&str, &Value> {
        self.0.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}

impl<'de> serde::Deserialize<'de> for Fields {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Fields, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Visitor)
    }
}

/// The field-by-field comparison of a bounded sample of the changed keys, made in one pass
/// without knowing their number, mergeable across key ranges.
///
/// The sample at level `L` is the changed keys of level `>= L` (see [`sample_level`]): about one
/// in `2^L`, chosen by key, so the same keys whatever else changed, and whatever the ranges
/// the keys were compared in. Counts are kept per level, so raising `L` drops the keys of the
/// lower levels from every count at once; `L` rises whenever the sample exceeds its bound, and
/// keys below `L` are not even parsed. Merging adds the counts of each level and raises `L`
/// again: a range's `L` is never above the merged one (its keys are part of the merged
/// sample), so no count the merged sample needs was dropped.
struct Sampler {
    bound: u64,
    max_columns: usize,
    level: usize,
    levels: [LevelCounts; LEVELS],
    names: HashMap<String, usize>,
    fields: Vec<FieldCounts>,
    truncated: bool,
    /// The number of the range being compared, and of the changed keys offered so far: the
    /// position of the next key in key order.
    range: u64,
    offered: u64,
}

impl Sampler {
    fn new(bound: u64, max_columns: usize, range: u64) -> Sampler {
        Sampler {
            bound: bound.max(1),
            max_columns,
            level: 0,
            levels: [LevelCounts::default(); LEVELS],
            names: HashMap::new(),
            fields: Vec::new(),
            truncated: false,
            range,
            offered: 0,
        }
    }

    fn size(&self) -> u64 {
        self.levels[self.level..].iter().map(|l| l.keys).sum()
    }

    /// Raises the level until the sample is within its bound.
    fn shrink(&mut self) {
        while self.size() > self.bound && self.level < LEVELS - 1 {
            self.level += 1;
        }
    }

    /// Considers the changed key `key` with values `old` and `new`.
    fn offer(&mut self, key: &[u8], old: &[u8], new: &[u8]) {
        let at = (self.range, self.offered, 0);
        self.offered += 1;
        let level = sample_level(key);
        if level < self.level {
            return;
        }
        self.levels[level].keys += 1;
        let parsed = (
            serde_json::from_slice::<Fields>(old),
            serde_json::from_slice::<Fields>(new),
        );
        let (Ok(old), Ok(new)) = parsed else {
            self.levels[level].not_objects += 1;
            self.shrink();
            return;
        };
        let mut ordinal = 0;
        each_field(&old, &new, |name, o, n| {
            let kind = match (o, n) {
                (Some(_), None) => Some(REMOVED),
                (None, _) => Some(ADDED),
                (Some(a), Some(b)) if a != b => Some(CHANGED),
                (Some(_), Some(_)) => None,
            };
            self.count(name, level, kind, (at.0, at.1, ordinal));
            ordinal += 1;
        });
        self.shrink();
    }

    /// The field called `name`, added if there is room.
    fn field(&mut self, name: &str) -> Option<&mut FieldCounts> {
        let id = match self.names.get(name) {
            Some(&id) => id,
            None if self.fields.len() >= self.max_columns => {
                self.truncated = true;
                return None;
            }
            None => {
                let id = self.fields.len();
                self.names.insert(name.to_owned(), id);
                self.fields.push(FieldCounts {
                    name: name.to_owned(),
                    counts: [[0; 4]; LEVELS],
                    first: [NEVER; LEVELS],
                });
                id
            }
        };
        Some(&mut self.fields[id])
    }

    /// Counts field `name` as present at `level`, and as changed if `kind` says how.
    fn count(&mut self, name: &str, level: usize, kind: Option<usize>, at: Position) {
        let Some(f) = self.field(name) else {
            return;
        };
        let counts = &mut f.counts[level];
        counts[PRESENT] += 1;
        if let Some(kind) = kind {
            counts[CHANGED] += 1;
            if kind != CHANGED {
                counts[kind] += 1;
            }
        }
        f.first[level] = f.first[level].min(at);
    }

    /// The sample of two ranges together.
    fn merge(mut self, other: Sampler) -> Sampler {
        for (l, o) in self.levels.iter_mut().zip(other.levels) {
            l.keys += o.keys;
            l.not_objects += o.not_objects;
        }
        self.truncated |= other.truncated;
        self.level = self.level.max(other.level);
        for f in other.fields {
            let Some(mine) = self.field(&f.name) else {
                continue;
            };
            for (m, o) in mine.counts.iter_mut().zip(f.counts) {
                for (m, o) in m.iter_mut().zip(o) {
                    *m += o;
                }
            }
            for (m, o) in mine.first.iter_mut().zip(f.first) {
                *m = (*m).min(o);
            }
        }
        self.shrink();
        self
    }

    fn finish(self) -> ColumnSample {
        let from = self.level;
        let sum = |f: &FieldCounts, k: usize| f.counts[from..].iter().map(|l| l[k]).sum();
        let mut fields: Vec<&FieldCounts> = (self.fields.iter())
            // Fields seen only in keys that left the sample are not in it.
            .filter(|f| sum(f, PRESENT) > 0)
            .collect();
        // In key order of the first sampled key that has them, in the order of its values.
        fields.sort_by_key(|f| f.first[from..].iter().min().copied());
        ColumnSample {
            keys: self.size(),
            one_in: 1u64.checked_shl(from as u32).unwrap_or(u64::MAX),
            not_objects: self.levels[from..].iter().map(|l| l.not_objects).sum(),
            columns: fields
                .into_iter()
                .map(|f| ColumnChange {
                    name: f.name.clone(),
                    changed: sum(f, CHANGED),
                    added: sum(f, ADDED),
                    removed: sum(f, REMOVED),
                })
                .collect(),
            truncated: self.truncated,
        }
    }
}

/// Indices of [`FieldCounts::counts`].
const CHANGED: usize = 0;
const ADDED: usize = 1;
const REMOVED: usize = 2;
const PRESENT: usize = 3;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Compression, Dictionary, SnapshotWriter, WriterOptions};

    fn bytes(entries: &[(&[u8], &[u8])], options: WriterOptions, metadata: Metadata) -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new(), options, metadata).unwrap();
        for (k, v) in entries {
            w.insert(k, v).unwrap();
        }
        w.finish().unwrap().0
    }

    fn write(entries: &[(&[u8], &[u8])], options: WriterOptions, metadata: Metadata) -> Snapshot {
        Snapshot::open(bytes(entries, options, metadata)).unwrap()
    }

    /// Equal stored bytes are not enough when the dictionaries differ: a frame that copies its
    /// whole block out of the dictionary reads the same under any dictionary of the same length,
    /// and decodes to whatever that dictionary holds.
    #[test]
    fn equal_frames_under_different_dictionaries_are_decoded() {
        let key = b"user:42";
        let (old_value, new_value) = (vec![b'a'; 300], vec![b'b'; 300]);
        let snapshot = |value: &[u8]| {
            // The dictionary is the block itself: the frame is a single match into it.
            let mut raw = Vec::new();
            crate::block::put_entry(&mut raw, crate::block::Keys::Whole, b"", key, value);
            let o = WriterOptions {
                compression: Compression::Zstd { level: 3 },
                dictionary: Dictionary::Use(raw),
                ..WriterOptions::default()
            };
            write(&[(key, value)], o, Metadata::default())
        };
        let (a, b) = (snapshot(&old_value), snapshot(&new_value));
        let (ea, eb) = (a.entry(0).unwrap(), b.entry(0).unwrap());
        assert_eq!(ea.codec, Codec::ZstdDict);
        assert!(same_stored(&ea, &eb, true));
        assert_eq!(a.stored(&ea), b.stored(&eb), "the frames should be equal");
        assert_ne!(a.dictionary(), b.dictionary());

        let d = diff(&a, &b, &DiffOptions::default()).unwrap();
        assert_eq!((d.changed, d.unchanged, d.blocks.skipped), (1, 0, 0));
        assert_eq!(d.examples.changed[0].old.as_deref(), Some(&old_value[..]));
        assert_eq!(d.examples.changed[0].new.as_deref(), Some(&new_value[..]));
    }

    #[test]
    fn a_corrupt_block_is_an_error() {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..2000u32)
            .map(|i| {
                (
                    format!("k{i:05}").into_bytes(),
                    format!("value {i}").repeat(3).into(),
                )
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = entries.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        let o = WriterOptions {
            block_size: 256,
            dictionary: Dictionary::Off,
            ..WriterOptions::default()
        };
        let mut data = bytes(&refs, o, Metadata::default());
        let good = Snapshot::open(data.clone()).unwrap();
        let e = good.entry(3).unwrap();
        assert_ne!(e.codec, Codec::Raw);
        data[e.offset as usize + 5] ^= 0xff;
        let bad = Snapshot::open(data).unwrap();
        for threads in [1, 4] {
            let options = DiffOptions {
                threads,
                ..DiffOptions::default()
            };
            for (x, y) in [(&good, &bad), (&bad, &good)] {
                match diff(x, y, &options) {
                    Err(Error::BlockChecksum { block: 3, .. }) => {}
                    other => panic!("{other:?}"),
                }
            }
        }
    }

    fn metadata(schema: Value, keys: &[&str], encoding: ValueEncoding) -> Metadata {
        Metadata {
            schema: Some(schema),
            key_columns: keys.iter().map(|k| k.to_string()).collect(),
            value_encoding: encoding,
            ..Metadata::default()
        }
    }

    fn field(name: &str, data_type: Value, nullable: bool) -> Value {
        serde_json::json!({"name": name, "data_type": data_type, "nullable": nullable,
            "dict_id": 0, "dict_is_ordered": false, "metadata": {}})
    }

    #[test]
    fn schema_changes_by_column_name() {
        let old = metadata(
            serde_json::json!({"fields": [
                field("id", "Utf8".into(), false),
                field("score", "Int64".into(), true),
                field("gone", "Utf8".into(), true),
                field("flag", "Boolean".into(), true),
                field("ts", serde_json::json!({"Timestamp": ["Microsecond", null]}), true),
            ], "metadata": {}}),
            &["id"],
            ValueEncoding::Json,
        );
        let new = metadata(
            serde_json::json!({"fields": [
                field("new", "Float64".into(), true),
                field("ts", serde_json::json!({"Timestamp": ["Microsecond", "UTC"]}), true),
                field("flag", "Boolean".into(), false),
                field("score", "Utf8".into(), true),
                field("id", "Utf8".into(), false),
            ], "metadata": {"other": "metadata is not compared"}}),
            &["id", "ts"],
            ValueEncoding::Raw,
        );
        let s = schema_diff(&old, &new);
        let names = |f: &[SchemaField]| f.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&s.added), ["new"]);
        assert_eq!(s.added[0].data_type, "Float64");
        assert_eq!(names(&s.removed), ["gone"]);
        let retyped: Vec<_> = s
            .retyped
            .iter()
            .map(|c| (&c.name[..], &c.old, &c.new))
            .collect();
        assert_eq!(
            retyped,
            [
                (
                    "ts",
                    &serde_json::json!({"Timestamp": ["Microsecond", null]}),
                    &serde_json::json!({"Timestamp": ["Microsecond", "UTC"]})
                ),
                ("score", &Value::from("Int64"), &Value::from("Utf8"))
            ]
        );
        let nullability: Vec<_> = s
            .nullability
            .iter()
            .map(|c| (&c.name[..], c.old, c.new))
            .collect();
        assert_eq!(nullability, [("flag", true, false)]);
        assert_eq!(s.key_columns.as_ref().unwrap().new, ["id", "ts"]);
        assert_eq!(
            s.value_encoding,
            Some(Change {
                old: ValueEncoding::Json,
                new: ValueEncoding::Raw
            })
        );
        assert!(!s.incomparable && !s.is_empty());

        assert!(schema_diff(&old, &old).is_empty());
        // Field order and metadata alone are no change.
        let mut reordered = old.clone();
        let mut schema = reordered.schema.take().unwrap();
        schema["fields"].as_array_mut().unwrap().reverse();
        schema["metadata"] = serde_json::json!({"x": "y"});
        reordered.schema = Some(schema);
        assert!(schema_diff(&old, &reordered).is_empty());

        let mut without = old.clone();
        without.schema = None;
        assert!(schema_diff(&old, &without).incomparable);
        let mut odd = old.clone();
        odd.schema = Some(serde_json::json!(["not", "arrow"]));
        let s = schema_diff(&odd, &old);
        assert!(s.incomparable && s.added.is_empty() && s.removed.is_empty());
    }

    /// The sample is the changed keys of the smallest level that keeps it within its bound, its
    /// counts are those of exactly those keys, and merging the samples of ranges gives the
    /// sample of all of them.
    #[test]
    fn the_sample_is_chosen_by_key_hash_and_merges() {
        let key = |i: u64| format!("key:{i:06}").into_bytes();
        // Field `f` changes in keys divisible by 3; `g` is added in odd ones, `h` in key 5 only.
        let values = |i: u64| {
            let new = match i {
                5 => format!("{{\"f\":{},\"g\":1,\"h\":0}}", i % 3),
                _ if i % 2 == 1 => format!("{{\"f\":{},\"g\":1}}", i % 3),
                _ => format!("{{\"f\":{}}}", i % 3),
            };
            ("{\"f\":0}".to_string(), new)
        };
        for (n, bound) in [
            (1u64, 1u64),
            (7, 7),
            (8, 7),
            (1000, 100),
            (1000, 1),
            (5000, 64),
            (5000, 3),
        ] {
            let offer = |s: &mut Sampler, range: std::ops::Range<u64>| {
                for i in range {
                    let (old, new) = values(i);
                    s.offer(&key(i), old.as_bytes(), new.as_bytes());
                }
            };
            let mut whole = Sampler::new(bound, 10, 0);
            offer(&mut whole, 0..n);
            // The same keys in three ranges, merged.
            let (a, b) = (n / 3, 2 * n / 3);
            let mut parts = [0..a, a..b, b..n].into_iter().enumerate().map(|(r, keys)| {
                let mut s = Sampler::new(bound, 10, r as u64);
                offer(&mut s, keys);
                s
            });
            let first = parts.next().unwrap();
            let merged = parts.fold(first, Sampler::merge).finish();
            let r = whole.finish();
            assert_eq!(merged, r, "n {n} bound {bound}");

            let level = r.one_in.trailing_zeros() as usize;
            let sampled: Vec<u64> = (0..n).filter(|i| sample_level(&key(*i)) >= level).collect();
            assert_eq!(r.keys, sampled.len() as u64, "n {n} bound {bound}");
            assert!(r.keys <= bound);
            // One level lower would have been too many.
            let below = (0..n)
                .filter(|i| sample_level(&key(*i)) + 1 >= level)
                .count() as u64;
            assert!(level == 0 || below > bound, "n {n} bound {bound}");
            let count = |p: &dyn Fn(u64) -> bool| sampled.iter().filter(|i| p(**i)).count() as u64;
            let f = count(&|i| i % 3 != 0);
            let g = count(&|i| i % 2 == 1);
            let h = count(&|i| i == 5);
            // In the order first seen: `f` in every key, `g` in the odd ones, `h` in key 5 only
            // (odd too), after `g` in its value.
            let mut want = vec![("f".to_string(), f, 0, 0)];
            if g > 0 {
                want.push(("g".to_string(), g, g, 0));
            }
            if h > 0 {
                want.push(("h".to_string(), h, h, 0));
            }
            let got: Vec<_> = (r.columns.iter())
                .map(|c| (c.name.clone(), c.changed, c.added, c.removed))
                .collect();
            assert_eq!(got, want, "n {n} bound {bound}");
        }
    }

    #[test]
    fn changed_fields_in_value_order() {
        let changes = changed_fields(
            br#"{"z":1,"a":[1],"same":true,"gone":"x","z":2}"#,
            br#"{"new":null,"a":[2],"same":true,"z":2}"#,
        )
        .unwrap();
        let got: Vec<_> = (changes.iter())
            .map(|c| (c.name.as_str(), c.old.clone(), c.new.clone()))
            .collect();
        let v = |j: &str| Some(serde_json::from_str::<Value>(j).unwrap());
        // `z` is repeated in the old value: its last value counts, and equals the new one.
        assert_eq!(
            got,
            [
                ("a", v("[1]"), v("[2]")),
                ("gone", v("\"x\""), None),
                ("new", None, v("null")),
            ]
        );
        assert_eq!(changed_fields(b"{}", b"[]"), None);
        assert_eq!(changed_fields(b"{", b"{}"), None);
        assert_eq!(changed_fields(b"{}", b"{}"), Some(vec![]));
    }
}
