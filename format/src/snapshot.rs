//! The reader: a snapshot over bytes in memory (or a mapping), shared across threads.

use crate::block::{self, Cursor, Keys};
use crate::cache::{BlockCache, CacheStats};
use crate::codec;
use crate::error::{Error, Result, Section};
use crate::filter::Filter;
use crate::layout::{self, BlockEntry, Codec, Footer, HEADER_LEN, MIN_FILE_LEN};
use crate::lookup::{self, Lookup};
use crate::metadata::Metadata;
use crate::MAX_KEY_LEN;
use bytes::{Buf, Bytes};
use fst::Streamer;
use std::ops::{Bound, Range};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;
use zstd::zstd_safe::DDict;

/// Where a key's entry is, if anywhere (from the filter and the index).
enum Place {
    /// The filter or the index rules the key out.
    Absent,
    /// At this file offset (a direct lookup: every block is raw); 0 is an unused slot.
    Direct(usize),
    /// In `block`: at offset `at` of its entries (version 2), or, when `at` is `None`, found
    /// by searching them (version 1).
    Block { block: u32, at: Option<usize> },
}

/// The range of `key`'s value in `buf`, the entries of `block`, if there (`at`: as
/// [`Place::Block`]).
fn value_in(buf: &[u8], key: &[u8], block: u32, at: Option<usize>) -> Result<Option<Range<usize>>> {
    match at {
        Some(offset) => block::entry_at(buf, offset, key, block),
        None => block::find(buf, key, block),
    }
}

/// Reader settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    /// Bound of the block cache, in bytes of decompressed blocks; 0 disables it. With room for
    /// every compressed block of the file, the cache is a table by block number (about 40 B per
    /// block, filled as blocks are read: no lock, no eviction); with less, shards evict.
    /// Default: 64 MiB.
    pub cache_bytes: usize,
    /// Copy the sections every lookup reads (the FST index, the filter and the hash lookup)
    /// into anonymous memory, in huge pages where the system allows them (Linux transparent
    /// huge pages, `madvise` or `always`), and read them from there. A lookup then touches no
    /// page of the input for its index, and its few random index reads miss the TLB far less
    /// often than over 4 KiB pages of a mapping. Costs anonymous memory the size of those
    /// sections ([`Stats::index_memory_bytes`]; about 6 B per key in version 2). When the
    /// memory cannot be had the sections are read from the input, and that figure is 0.
    /// Default: off.
    pub index_in_memory: bool,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            cache_bytes: 64 << 20,
            index_in_memory: false,
        }
    }
}

/// Sizes and counts of an open snapshot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// File size.
    pub file_bytes: u64,
    /// Keys.
    pub key_count: u64,
    /// Blocks.
    pub block_count: u64,
    /// Blocks stored raw (served without copying).
    pub raw_blocks: u64,
    /// Blocks as stored in the file.
    pub block_bytes_stored: u64,
    /// Blocks once decompressed.
    pub block_bytes_raw: u64,
    /// FST index.
    pub index_bytes: u64,
    /// Key filter.
    pub filter_bytes: u64,
    /// Lookup section (hash index; version 2).
    pub lookup_bytes: u64,
    /// zstd dictionary.
    pub dictionary_bytes: u64,
    /// Block table.
    pub block_table_bytes: u64,
    /// Metadata JSON.
    pub metadata_bytes: u64,
    /// Anonymous memory holding a copy of the index sections ([`OpenOptions::index_in_memory`]).
    pub index_memory_bytes: u64,
    /// The block cache.
    pub cache: CacheStats,
}

/// The data blocks of a snapshot opened before its file is complete
/// ([`Snapshot::open_filling`]): a file whose header and every section after the data region
/// are in place, and whose blocks arrive (from storage, by range) while it serves.
pub trait Fill: Send + Sync {
    /// Returns once bytes `range` of the file are in place: every block they touch, checked
    /// against its checksum in the block table. Waits for them, for a bounded time; an
    /// [`Error::Unavailable`] when they cannot be had. Called before every read of the data
    /// region, so the answer for bytes in place must be quick (a lookup in a table of flags).
    fn ensure(&self, range: Range<u64>) -> Result<()>;
}

struct Inner {
    data: Bytes,
    /// The index sections (FST index, filter and lookup, in file order), copied
    /// into anonymous memory or a slice of `data`; `hot[i]` is `data[hot_base + i]`. The
    /// index, filter and lookup are read from it, their positions relative to `hot_base`.
    hot: Bytes,
    hot_base: usize,
    /// Whether `hot` is a copy.
    hot_copied: bool,
    footer: Footer,
    /// The hash index (version 2).
    lookup: Option<Lookup>,
    /// End of the data region (start of the dictionary section).
    data_end: u64,
    table: Range<usize>,
    index: fst::Map<Bytes>,
    /// The filter and its bytes' range in `hot`.
    filter: Option<(Filter, Range<usize>)>,
    dict: Option<DDict<'static>>,
    /// Where the data blocks come from while the file is being filled in
    /// ([`Snapshot::open_filling`]); `None`: every byte of the input is in place.
    fill: Option<Arc<dyn Fill>>,
    metadata: Metadata,
    cache: BlockCache,
    /// Reads of a block try the cache before the block table: blocks are compressed (a raw
    /// block is never cached, so in an uncompressed file the probe would always miss).
    cache_first: bool,
}

/// An open snapshot. Cloning is cheap (a reference count); all methods take `&self` and the
/// snapshot is `Send + Sync`: share one between threads.
///
/// Values from raw blocks are slices of the input [`Bytes`] (no copy). Values from compressed
/// blocks are slices of the decompressed block, which the block cache keeps for the next lookup.
#[derive(Clone)]
pub struct Snapshot {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("bytes", &self.inner.data.len())
            .field("keys", &self.inner.footer.key_count)
            .field("blocks", &self.inner.footer.block_count)
            .finish()
    }
}

fn range_of(r: layout::SectionRef) -> Range<usize> {
    // Bounds were checked against the input length in `Footer::decode`.
    r.offset as usize..(r.offset + r.len) as usize
}

/// What the compressed blocks of a block table decompress to, as their entries say (the cache
/// holds only those): a sizing figure, read without checking the entries (reading a block
/// checks its entry, and its decompressed length against it).
fn compressed_raw_bytes(table: &[u8]) -> u64 {
    table
        .chunks_exact(layout::BLOCK_ENTRY_LEN)
        .filter(|e| e[28] != Codec::Raw as u8)
        .map(|e| u64::from(layout::u32_at(e, 12)))
        .sum()
}

/// Alignment of the copied index sections: a huge page (2 MiB on x86-64 and arm64 with 4 KiB
/// pages), so that the copy spans as few as its length allows.
const HUGE_PAGE: usize = 2 << 20;

/// The bytes the index sections are read from, the offset of their first byte in the file, and
/// whether they are a copy: the run of sections from the FST index to the end of the lookup
/// (index, filter, lookup), copied into anonymous memory if `copy`, else a slice of `data`. A
/// copy that cannot be had leaves them in `data`.
fn hot_sections(data: &Bytes, footer: &Footer, copy: bool) -> (Bytes, usize, bool) {
    // Sections are in file order (checked by `Footer::decode`); version 1's lookup section is
    // empty where the filter ends.
    let start = footer.section(Section::Index).offset as usize;
    let end = range_of(footer.section(Section::Lookup)).end;
    if !copy || end == start {
        return (data.slice(start..end), start, false);
    }
    let len = end - start;
    // Room to start the copy at a huge page boundary; the pages before it are never touched,
    // so they take no memory.
    let Ok(mut map) = memmap2::MmapMut::map_anon(len + HUGE_PAGE) else {
        return (data.slice(start..end), start, false);
    };
    let pad = (HUGE_PAGE - map.as_ptr() as usize % HUGE_PAGE) % HUGE_PAGE;
    // Huge pages for the whole ones the copy spans; its tail (all of a copy shorter than a
    // huge page) stays in small pages, so a small index does not take 2 MiB. A hint: without
    // huge pages (another system, or THP disabled) the copy still works.
    #[cfg(target_os = "linux")]
    {
        let whole = len / HUGE_PAGE * HUGE_PAGE;
        if whole > 0 {
            let _ = map.advise_range(memmap2::Advice::HugePage, pad, whole);
        }
    }
    map[pad..pad + len].copy_from_slice(&data[start..end]);
    match map.make_read_only() {
        Ok(map) => (Bytes::from_owner(map).slice(pad..pad + len), start, true),
        Err(_) => (data.slice(start..end), start, false),
    }
}

impl Snapshot {
    /// Opens a snapshot with default [`OpenOptions`].
    pub fn open(data: impl Into<Bytes>) -> Result<Snapshot> {
        Snapshot::open_with(data, &OpenOptions::default())
    }

    /// Opens a snapshot: checks the header and footer, the bounds of every section and the
    /// checksums of every section but the data blocks (those are checked when a compressed block
    /// is first read, and all of them by [`Snapshot::verify`]). Cost: proportional to the index,
    /// filter and block table, not to the values.
    pub fn open_with(data: impl Into<Bytes>, options: &OpenOptions) -> Result<Snapshot> {
        Snapshot::open_inner(data.into(), options, None)
    }

    /// [`Snapshot::open_with`] of a file whose data blocks are still arriving: its header and
    /// every section from the dictionary to the footer are in `data` (and checked here as
    /// always), and `fill` is asked for the bytes of the data region before each read of
    /// them. A block read that `fill` cannot serve fails with its error
    /// ([`Error::Unavailable`]); nothing is read from the data region before `fill` said it
    /// is in place. [`Snapshot::warm`] does nothing; [`Snapshot::verify`] first waits for the
    /// whole data region.
    pub fn open_filling(
        data: impl Into<Bytes>,
        options: &OpenOptions,
        fill: Arc<dyn Fill>,
    ) -> Result<Snapshot> {
        Snapshot::open_inner(data.into(), options, Some(fill))
    }

    fn open_inner(
        data: Bytes,
        options: &OpenOptions,
        fill: Option<Arc<dyn Fill>>,
    ) -> Result<Snapshot> {
        let min = MIN_FILE_LEN as u64;
        if (data.len() as u64) < min {
            return Err(Error::TooShort {
                len: data.len() as u64,
                min,
            });
        }
        let version = layout::check_header(&data)?;
        let footer = Footer::decode(&data)?;
        if footer.version != version {
            return Err(Error::Corrupt {
                section: Section::Footer,
                offset: (data.len() - layout::TAIL_VERSION) as u64,
                detail: "footer version differs from the header's",
            });
        }
        for section in layout::sections_of(version) {
            let r = footer.section(*section);
            let got = xxh3_64(&data[range_of(r)]);
            if got != r.checksum {
                return Err(Error::Checksum {
                    section: *section,
                    expected: r.checksum,
                    got,
                });
            }
        }
        let dict_ref = footer.section(Section::Dictionary);
        let dict = if dict_ref.len == 0 {
            None
        } else {
            Some(
                DDict::try_create(&data[range_of(dict_ref)]).ok_or(Error::Corrupt {
                    section: Section::Dictionary,
                    offset: dict_ref.offset,
                    detail: "zstd rejected the dictionary",
                })?,
            )
        };
        let index_ref = footer.section(Section::Index);
        let malformed = Error::Corrupt {
            section: Section::Index,
            offset: index_ref.offset,
            detail: "malformed FST",
        };
        if !crate::fst_check::fst_is_sound(&data[range_of(index_ref)]) {
            return Err(malformed);
        }
        let (hot, hot_base, hot_copied) = hot_sections(&data, &footer, options.index_in_memory);
        let rebase = |r: Range<usize>| r.start - hot_base..r.end - hot_base;
        let index =
            fst::Map::new(hot.slice(rebase(range_of(index_ref)))).map_err(|_| Error::Corrupt {
                section: Section::Index,
                offset: index_ref.offset,
                detail: "not a valid FST",
            })?;
        check_index(&index, footer.block_count).map_err(|detail| Error::Corrupt {
            section: Section::Index,
            offset: index_ref.offset,
            detail,
        })?;
        let filter_ref = footer.section(Section::Filter);
        let filter = Filter::parse(&data[range_of(filter_ref)], filter_ref.offset)?
            .map(|f| (f, rebase(range_of(filter_ref))));
        let lookup = match Keys::of(version) {
            Keys::Prefixed => None,
            Keys::Whole => {
                let r = footer.section(Section::Lookup);
                Some(
                    Lookup::parse(&data[range_of(r)], r.offset, footer.key_count)?
                        .rebased(hot_base),
                )
            }
        };
        let meta_ref = footer.section(Section::Metadata);
        let metadata: Metadata =
            serde_json::from_slice(&data[range_of(meta_ref)]).map_err(|_| Error::Corrupt {
                section: Section::Metadata,
                offset: meta_ref.offset,
                detail: "metadata is not the expected JSON object",
            })?;
        let table = range_of(footer.section(Section::BlockTable));
        let cache_first = options.cache_bytes > 0 && metadata.format.compression != "none";
        let cache = BlockCache::new(
            options.cache_bytes,
            // The block table's length is checked against the count (`Footer::decode`), so the
            // cache's table of blocks is bounded by the input. Block numbers are `u32`: a
            // larger count (a file of over 128 GiB of block table) caches the first 2^32 - 1.
            u32::try_from(footer.block_count).unwrap_or(u32::MAX),
            match cache_first {
                true => compressed_raw_bytes(&data[table.clone()]),
                false => 0,
            },
        );
        Ok(Snapshot {
            inner: Arc::new(Inner {
                data_end: dict_ref.offset,
                table,
                footer,
                lookup,
                index,
                filter,
                dict,
                fill,
                cache_first,
                metadata,
                cache,
                data,
                hot,
                hot_base,
                hot_copied,
            }),
        })
    }

    /// The value of `key`, if present.
    ///
    /// A miss usually stops at the key filter. A hit goes through the hash index straight to
    /// its entry (version 2), or walks the index to the key's block and searches it (version
    /// 1); errors mean the file is corrupt.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.place(key)? {
            Place::Absent => Ok(None),
            Place::Direct(at) => Ok(self.direct(at, key)?.map(|r| self.inner.data.slice(r))),
            Place::Block { block, at } => {
                let buf = self.block(block, true)?;
                Ok(value_in(&buf, key, block, at)?.map(|r| narrow(buf, r)))
            }
        }
    }

    /// [`Snapshot::get`] that appends the value of `key` to `out` instead of returning a shared
    /// slice; returns whether `key` is present (`out` is unchanged when it is not).
    ///
    /// A value in a cached block is copied while the block is held by the cache, without
    /// taking a reference to it: the reference count of a block shared with other threads is
    /// one more memory access (often a cache miss) per lookup, more than copying a value of a
    /// few hundred bytes costs. For values that are copied anyway (into a response, a Python
    /// object, a reused buffer).
    pub fn get_into(&self, key: &[u8], out: &mut Vec<u8>) -> Result<bool> {
        let found = |buf: &[u8], r: Option<Range<usize>>, out: &mut Vec<u8>| match r {
            Some(r) => {
                out.extend_from_slice(&buf[r]);
                true
            }
            None => false,
        };
        match self.place(key)? {
            Place::Absent => Ok(false),
            // Only the value's bytes are borrowed from the input (in a file still filling in,
            // other bytes may be holes being written).
            Place::Direct(at) => Ok(match self.direct(at, key)? {
                Some(r) => {
                    out.extend_from_slice(&self.inner.data[r]);
                    true
                }
                None => false,
            }),
            Place::Block { block, at } => {
                let read = |buf: &[u8], out: &mut Vec<u8>| {
                    value_in(buf, key, block, at).map(|r| found(buf, r, out))
                };
                if !self.inner.cache_first {
                    return read(&self.block(block, true)?, out);
                }
                if let Some(done) = self.inner.cache.with(block, |buf| read(buf, out)) {
                    return done;
                }
                // Not cached: decompressed without probing the cache a second time.
                read(&self.uncached(block, &self.entry(block)?, true)?, out)
            }
        }
    }

    /// Where `key`'s entry is, if it may be in the file: the filter, then the hash index
    /// (version 2) or the FST index (version 1).
    #[inline]
    fn place(&self, key: &[u8]) -> Result<Place> {
        let inner = &*self.inner;
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return Ok(Place::Absent);
        }
        // Version 2 hashes once for the filter and the lookup; version 1 filters on xxh3-64.
        let h = match inner.lookup {
            Some(_) => lookup::key_hash(key),
            None => [xxh3_64(key), 0],
        };
        if let Some((filter, range)) = &inner.filter {
            if !filter.may_contain(&inner.hot[range.clone()], h[0]) {
                return Ok(Place::Absent);
            }
        }
        let Some(lookup) = &inner.lookup else {
            return Ok(match self.block_for(key)? {
                Some(block) => Place::Block { block, at: None },
                None => Place::Absent,
            });
        };
        if inner.footer.key_count == 0 {
            return Ok(Place::Absent);
        }
        let (block, offset) = lookup.locate(&inner.hot, h);
        if lookup.direct {
            return Ok(Place::Direct(offset));
        }
        let block = u32::try_from(block)
            .ok()
            .filter(|b| u64::from(*b) < inner.footer.block_count)
            .ok_or_else(|| Error::Corrupt {
                section: Section::Lookup,
                offset: inner.footer.section(Section::Lookup).offset,
                detail: "lookup points past the block table",
            })?;
        Ok(Place::Block {
            block,
            at: Some(offset),
        })
    }

    /// The file range of the value of `key` if the entry at file offset `at` (from a direct
    /// lookup: every block is raw) holds it. The entry must lie in the data region; offset 0
    /// is an unused slot.
    fn direct(&self, at: usize, key: &[u8]) -> Result<Option<Range<usize>>> {
        let inner = &*self.inner;
        if at == 0 {
            return Ok(None);
        }
        let corrupt = |detail| Error::Corrupt {
            section: Section::Data,
            offset: at as u64,
            detail,
        };
        if at < HEADER_LEN {
            return Err(corrupt("lookup points before the data region"));
        }
        // An entry lies within one block: the block holding its first byte holds all of it.
        // In a file still filling in, nothing outside that block is read, whatever the entry
        // says (the blocks around it may be holes).
        let (start, end) = match &inner.fill {
            None => (0, inner.data_end as usize),
            Some(fill) => {
                fill.ensure(at as u64..at as u64 + 1)?;
                match self.block_at(at as u64)? {
                    Some(r) => (r.start as usize, r.end as usize),
                    None => return Err(corrupt("lookup points past the blocks")),
                }
            }
        };
        let region = &inner.data[start..end];
        let found = block::entry_at(region, at - start, key, 0).map_err(|e| match e {
            Error::CorruptBlock { detail, .. } => corrupt(detail),
            e => e,
        })?;
        Ok(found.map(|r| r.start + start..r.end + start))
    }

    /// The stored bytes of the block holding file offset `at` (`None` when no block does): a
    /// binary search of the block table.
    fn block_at(&self, at: u64) -> Result<Option<Range<u64>>> {
        let (mut lo, mut hi) = (0u64, self.inner.footer.block_count.min(u64::from(u32::MAX)));
        // Invariant: blocks before `lo` start at or before `at`; blocks from `hi` on after it.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry(mid as u32)?.offset <= at {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(None);
        }
        let e = self.entry((lo - 1) as u32)?;
        let end = e.offset + u64::from(e.stored_len);
        Ok((at < end).then_some(e.offset..end))
    }

    /// Asks the [`Fill`] of a file still being filled in for bytes `range` of its data region.
    #[inline]
    fn ensure(&self, range: Range<u64>) -> Result<()> {
        match &self.inner.fill {
            None => Ok(()),
            Some(fill) if range.start < range.end => fill.ensure(range),
            Some(_) => Ok(()),
        }
    }

    /// The bytes of the data region a lookup of `key` reads (the stored bytes of the block it
    /// leads to, or the first byte of the entry a direct lookup leads to), or `None` when the
    /// index alone answers (the key is absent). For a snapshot still being filled in
    /// ([`Snapshot::open_filling`]): the caller may wait for these bytes without blocking a
    /// thread before it looks the key up.
    pub fn bytes_for(&self, key: &[u8]) -> Result<Option<Range<u64>>> {
        Ok(match self.place(key)? {
            Place::Absent => None,
            Place::Direct(0) => None,
            Place::Direct(at) => Some(at as u64..at as u64 + 1),
            Place::Block { block, .. } => {
                let e = self.entry(block)?;
                Some(e.offset..e.offset + u64::from(e.stored_len))
            }
        })
    }

    /// Whether the file is still being filled in ([`Snapshot::open_filling`]).
    pub fn is_filling(&self) -> bool {
        self.inner.fill.is_some()
    }

    /// A cursor over the entries of `block`, for this file's key encoding.
    pub(crate) fn cursor(&self, block: u32) -> Cursor {
        Cursor::new(block, Keys::of(self.inner.footer.version))
    }

    /// The format version of the file (1 or 2).
    pub fn format_version(&self) -> u32 {
        self.inner.footer.version
    }

    /// The block that holds `key` if any does: the first whose separator is `>= key`.
    pub(crate) fn block_for(&self, key: &[u8]) -> Result<Option<u32>> {
        match lower_bound(self.inner.index.as_fst(), key).map(u32::try_from) {
            None => Ok(None),
            Some(Ok(b)) if u64::from(b) < self.inner.footer.block_count => Ok(Some(b)),
            Some(_) => Err(Error::Corrupt {
                section: Section::Index,
                offset: self.inner.footer.section(Section::Index).offset,
                detail: "index points past the block table",
            }),
        }
    }

    pub(crate) fn entry(&self, block: u32) -> Result<BlockEntry> {
        let inner = &*self.inner;
        let table = &inner.data[inner.table.clone()];
        BlockEntry::decode(table, inner.table.start as u64, block, inner.data_end)
    }

    /// A block's entries: a slice of the input for raw blocks, else decompressed (through the
    /// cache; `fill` says whether a miss is added to it).
    /// In a compressed file a cached block is taken without reading its table entry.
    pub(crate) fn block(&self, block: u32, fill: bool) -> Result<Bytes> {
        let inner = &*self.inner;
        if !inner.cache_first {
            return self.block_with(block, &self.entry(block)?, fill);
        }
        if let Some(b) = inner.cache.get(block) {
            return Ok(b);
        }
        self.uncached(block, &self.entry(block)?, fill)
    }

    /// [`Snapshot::block`] of a block whose table entry `e` was decoded already.
    #[inline]
    pub(crate) fn block_with(&self, block: u32, e: &BlockEntry, fill: bool) -> Result<Bytes> {
        if e.codec != Codec::Raw {
            if let Some(b) = self.inner.cache.get(block) {
                return Ok(b);
            }
        }
        self.uncached(block, e, fill)
    }

    /// A block not in the cache: a slice of the input when raw, else decompressed.
    fn uncached(&self, block: u32, e: &BlockEntry, fill: bool) -> Result<Bytes> {
        self.ensure(e.offset..e.offset + u64::from(e.stored_len))?;
        match e.codec {
            Codec::Raw => Ok(self.inner.data.slice(stored_range(e))),
            _ => self.decompress(block, e, fill),
        }
    }

    /// Checks and decompresses a compressed block whose table entry `e` was decoded already,
    /// and caches it if `fill`.
    fn decompress(&self, block: u32, e: &BlockEntry, fill: bool) -> Result<Bytes> {
        let inner = &*self.inner;
        inner.cache.missed(block);
        let stored = &inner.data[stored_range(e)];
        let got = xxh3_64(stored);
        if got != e.checksum {
            return Err(Error::BlockChecksum {
                block,
                expected: e.checksum,
                got,
            });
        }
        let raw = codec::decompress(
            e.codec,
            stored,
            e.raw_len as usize,
            inner.dict.as_ref(),
            block,
        )?;
        let raw = Bytes::from(raw);
        if fill {
            inner.cache.insert(block, raw.clone());
        }
        Ok(raw)
    }

    /// Entries with keys in `(start, end)` bounds, in key order. A scan reads blocks through the
    /// cache but does not fill it, so a long scan does not evict the hot blocks of lookups.
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Iter {
        let first = match start {
            Bound::Unbounded => Ok(Some(0)),
            Bound::Included(k) | Bound::Excluded(k) => self.block_for(k),
        };
        let (block, error) = match first {
            Ok(Some(b)) => (Some(b), None),
            Ok(None) => (None, None),
            Err(e) => (None, Some(e)),
        };
        let block = block.filter(|_| self.inner.footer.block_count > 0);
        Iter {
            snapshot: self.clone(),
            block: block.unwrap_or(0),
            buf: Bytes::new(),
            cursor: self.cursor(block.unwrap_or(0)),
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            loaded: false,
            one_block: false,
            done: block.is_none() && error.is_none(),
            error,
        }
    }

    /// The entries of block `block` (`0..block_count()`), in key order: for reading an even
    /// sample of a snapshot, a few blocks spread over it, without reading the rest. Empty for a
    /// block number out of range.
    pub fn block_entries(&self, block: u64) -> Iter {
        let block = u32::try_from(block)
            .ok()
            .filter(|b| u64::from(*b) < self.block_count());
        Iter {
            snapshot: self.clone(),
            block: block.unwrap_or(0),
            buf: Bytes::new(),
            cursor: self.cursor(block.unwrap_or(0)),
            start: Bound::Unbounded,
            end: Bound::Unbounded,
            loaded: false,
            one_block: true,
            done: block.is_none(),
            error: None,
        }
    }

    /// Up to `parts - 1` keys of the snapshot that cut the entries within `(start, end)` into
    /// runs of about as many blocks each, at least `min_blocks` each, in increasing order, each
    /// inside the bounds: for reading one range from several threads (`[start, k1)`, `[k1,
    /// k2)`, … `[kn, end)`). Each key is the first of a block (one block read per key). None
    /// when the range spans fewer than `2 × min_blocks` blocks.
    pub fn split_range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        parts: usize,
        min_blocks: u64,
    ) -> Result<Vec<Bytes>> {
        let blocks = self.inner.footer.block_count;
        if parts < 2 || blocks == 0 {
            return Ok(Vec::new());
        }
        let first = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => match self.block_for(k)? {
                Some(b) => u64::from(b),
                None => return Ok(Vec::new()),
            },
        };
        let last = match end {
            Bound::Unbounded => blocks - 1,
            Bound::Included(k) | Bound::Excluded(k) => {
                self.block_for(k)?.map_or(blocks - 1, u64::from)
            }
        };
        let span = last.saturating_sub(first) + 1;
        let parts = parts.min(usize::try_from(span / min_blocks.max(1)).unwrap_or(usize::MAX));
        let mut keys: Vec<Bytes> = Vec::new();
        for i in 1..parts as u64 {
            let block = first + span * i / parts as u64;
            if block <= first || block > last {
                continue;
            }
            let Some(entry) = self.block_entries(block).next() else {
                continue;
            };
            let (key, _) = entry?;
            let after_start = match start {
                Bound::Unbounded => true,
                Bound::Included(k) | Bound::Excluded(k) => &key[..] > k,
            };
            let before_end = match end {
                Bound::Unbounded => true,
                Bound::Included(k) | Bound::Excluded(k) => &key[..] < k,
            };
            if after_start && before_end && keys.last().is_none_or(|l| *l < key) {
                keys.push(key);
            }
        }
        Ok(keys)
    }

    /// Entries whose keys start with `prefix`, in key order.
    pub fn prefix(&self, prefix: &[u8]) -> Iter {
        match prefix_successor(prefix) {
            Some(end) => self.range(Bound::Included(prefix), Bound::Excluded(&end)),
            None => self.range(Bound::Included(prefix), Bound::Unbounded),
        }
    }

    /// Every entry, in key order.
    pub fn iter(&self) -> Iter {
        self.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// Reads one byte of every 4 KiB page of the input: for a memory-mapped file, brings every
    /// page into memory now rather than at the first lookup that needs it.
    pub fn warm(&self) {
        if self.inner.fill.is_some() {
            return;
        }
        let data = &self.inner.data;
        let folded = (0..data.len())
            .step_by(4096)
            .fold(0u8, |acc, i| acc ^ data[i]);
        std::hint::black_box(folded);
    }

    /// The stored bytes of a block whose table entry was decoded by [`Snapshot::entry`] (which
    /// checked that they lie in the data region). Not for a file still being filled in: the
    /// bytes are not asked of its [`Fill`].
    pub(crate) fn stored(&self, e: &BlockEntry) -> &[u8] {
        &self.inner.data[stored_range(e)]
    }

    /// Number of data blocks.
    pub fn block_count(&self) -> u64 {
        self.inner.footer.block_count
    }

    /// The index: block separators to block numbers `0, 1, 2, ...` in order (checked at open).
    pub(crate) fn index(&self) -> &fst::Map<Bytes> {
        &self.inner.index
    }

    /// The zstd dictionary the blocks were compressed with; empty when there is none.
    ///
    /// Writing the next version with it ([`Dictionary::Use`](crate::Dictionary::Use)) keeps
    /// unchanged blocks byte-identical across versions, which delta downloads and
    /// [`diff`](crate::diff()) make use of.
    pub fn dictionary(&self) -> &[u8] {
        let inner = &*self.inner;
        &inner.data[range_of(inner.footer.section(Section::Dictionary))]
    }

    /// The metadata section.
    pub fn metadata(&self) -> &Metadata {
        &self.inner.metadata
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.inner.footer.key_count
    }

    /// True when the snapshot holds no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.inner.cache.stats()
    }

    /// Bytes of anonymous memory holding a copy of the index sections
    /// ([`OpenOptions::index_in_memory`]); 0 when they are read from the input.
    pub fn index_memory_bytes(&self) -> u64 {
        match self.inner.hot_copied {
            true => self.inner.hot.len() as u64,
            false => 0,
        }
    }

    /// Sizes and counts. Walks the block table (a few milliseconds for millions of keys).
    pub fn stats(&self) -> Result<Stats> {
        let inner = &*self.inner;
        let f = &inner.footer;
        let mut s = Stats {
            file_bytes: inner.data.len() as u64,
            key_count: f.key_count,
            block_count: f.block_count,
            index_bytes: f.section(Section::Index).len,
            filter_bytes: f.section(Section::Filter).len,
            lookup_bytes: f.section(Section::Lookup).len,
            dictionary_bytes: f.section(Section::Dictionary).len,
            block_table_bytes: f.section(Section::BlockTable).len,
            metadata_bytes: f.section(Section::Metadata).len,
            index_memory_bytes: self.index_memory_bytes(),
            cache: inner.cache.stats(),
            ..Stats::default()
        };
        for b in 0..f.block_count as u32 {
            let e = self.entry(b)?;
            s.block_bytes_stored += u64::from(e.stored_len);
            s.block_bytes_raw += u64::from(e.raw_len);
            s.raw_blocks += u64::from(e.codec == Codec::Raw);
        }
        Ok(s)
    }

    /// Checks everything: the whole-file checksum, every block's checksum and contents (key
    /// order within and across blocks, entry counts), that the index separates the blocks, that
    /// the lookup leads every key to its entry, that the filter admits every key and that the
    /// key count matches. Reads the whole file, its blocks on one thread per core.
    pub fn verify(&self) -> Result<()> {
        self.verify_on(0)
    }

    /// [`Snapshot::verify`] on `threads` threads (0: one per core). Blocks are checked in runs
    /// on the threads; what spans blocks (contiguity, key order across blocks, the index's
    /// separators, the key count) is checked in block order as the runs come back, so the
    /// error reported is the first in block order (within one block, the first its own check
    /// meets).
    pub fn verify_on(&self, threads: usize) -> Result<()> {
        let inner = &*self.inner;
        self.ensure(HEADER_LEN as u64..inner.data_end)?;
        let data = &inner.data[..];
        let (expected, covered) = layout::file_checksum_field(data);
        let got = xxh3_64(&data[..covered]);
        if got != expected {
            return Err(Error::Checksum {
                section: Section::File,
                expected,
                got,
            });
        }
        let index_offset = inner.footer.section(Section::Index).offset;
        let bad_index = |detail| Error::Corrupt {
            section: Section::Index,
            offset: index_offset,
            detail,
        };
        let blocks = inner.footer.block_count as u32;
        let runs = blocks.div_ceil(VERIFY_RUN);
        let threads = crate::pool::threads(threads).clamp(1, runs.max(1) as usize);
        let next_run = std::sync::atomic::AtomicU32::new(0);
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (tx, rx) = std::sync::mpsc::channel::<(u32, Vec<Checked>)>();
        std::thread::scope(|scope| {
            for _ in 0..threads {
                let (tx, next_run, stop) = (tx.clone(), &next_run, &stop);
                scope.spawn(move || {
                    use std::sync::atomic::Ordering::Relaxed;
                    loop {
                        let run = next_run.fetch_add(1, Relaxed);
                        if run >= runs || stop.load(Relaxed) {
                            return;
                        }
                        let from = run * VERIFY_RUN;
                        let to = (from + VERIFY_RUN).min(blocks);
                        let mut checked = Vec::with_capacity((to - from) as usize);
                        for b in from..to {
                            let c = self.check_block(b);
                            let failed = matches!(c, Checked::Failed { .. });
                            checked.push(c);
                            if failed {
                                break;
                            }
                        }
                        if tx.send((run, checked)).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(tx);
            // Runs come back in any order; they are checked across in block order.
            let mut waiting = std::collections::BTreeMap::new();
            let mut separators = inner.index.stream();
            let mut next_offset = HEADER_LEN as u64;
            let mut prev_last: Option<Vec<u8>> = None;
            let mut prev_separator: Option<Vec<u8>> = None;
            let mut keys = 0u64;
            let mut b = 0u32;
            let result = (|| -> Result<()> {
                for run in 0..runs {
                    let checked = loop {
                        if let Some(c) = waiting.remove(&run) {
                            break c;
                        }
                        let Ok((r, c)) = rx.recv() else {
                            // A thread ended without its run: it panicked, which scope passes on.
                            return Ok(());
                        };
                        waiting.insert(r, c);
                    };
                    for c in checked {
                        let contiguity = Error::Corrupt {
                            section: Section::BlockTable,
                            offset: inner.table.start as u64 + u64::from(b) * 32,
                            detail: "blocks are not contiguous",
                        };
                        let (first, last, entries) = match c {
                            Checked::Failed { at, error } => {
                                return Err(match at {
                                    Some(offset) if offset != next_offset => contiguity,
                                    _ => error,
                                });
                            }
                            Checked::Ok {
                                offset,
                                end,
                                first,
                                last,
                                entries,
                            } => {
                                if offset != next_offset {
                                    return Err(contiguity);
                                }
                                next_offset = end;
                                (first, last, entries)
                            }
                        };
                        if prev_last.as_deref().is_some_and(|p| p >= &first[..])
                            || prev_separator.as_deref().is_some_and(|s| s >= &first[..])
                        {
                            return Err(Error::CorruptBlock {
                                block: b,
                                detail: "first key not above the previous block",
                            });
                        }
                        keys += u64::from(entries);
                        let Some((sep, value)) = separators.next() else {
                            return Err(bad_index("fewer separators than blocks"));
                        };
                        if value != u64::from(b) || sep < &last[..] {
                            return Err(bad_index("separator does not bound its block"));
                        }
                        prev_separator = Some(sep.to_vec());
                        prev_last = Some(last);
                        b += 1;
                    }
                }
                Ok(())
            })();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            result?;
            if next_offset + layout::padding(next_offset) as u64 != inner.data_end {
                return Err(Error::Corrupt {
                    section: Section::Data,
                    offset: next_offset,
                    detail: "bytes between the last block and the dictionary",
                });
            }
            if keys != inner.footer.key_count || inner.metadata.key_count != keys {
                return Err(Error::Corrupt {
                    section: Section::Footer,
                    offset: (data.len() - layout::TAIL_KEY_COUNT) as u64,
                    detail: "key count differs from the blocks",
                });
            }
            Ok(())
        })
    }

    /// The checks of [`Snapshot::verify`] that block `b` passes or fails on its own: its
    /// checksum, its entries (order, count), and that the lookup leads each of its keys to its
    /// entry and the filter admits it.
    fn check_block(&self, b: u32) -> Checked {
        let inner = &*self.inner;
        let e = match self.entry(b) {
            Ok(e) => e,
            Err(error) => return Checked::Failed { at: None, error },
        };
        let failed = |error| Checked::Failed {
            at: Some(e.offset),
            error,
        };
        let end = e.offset + u64::from(e.stored_len);
        let got = xxh3_64(&inner.data[e.offset as usize..end as usize]);
        if got != e.checksum {
            return failed(Error::BlockChecksum {
                block: b,
                expected: e.checksum,
                got,
            });
        }
        let buf = match self.block_with(b, &e, false) {
            Ok(buf) => buf,
            Err(error) => return failed(error),
        };
        let mut cursor = self.cursor(b);
        let mut entries = 0u32;
        let mut first = Vec::new();
        // The block's keys: their hashes, and where the lookup must place them.
        let (mut hashes, mut expected) = (Vec::new(), Vec::new());
        loop {
            match cursor.next(&buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(error) => return failed(error),
            }
            let key = cursor.key();
            if entries == 0 {
                first = key.to_vec();
            }
            entries += 1;
            match &inner.lookup {
                None => hashes.push([xxh3_64(key), 0]),
                Some(lookup) => {
                    hashes.push(lookup::key_hash(key));
                    expected.push(match lookup.direct {
                        true => (0, e.offset as usize + cursor.entry_offset()),
                        false => (u64::from(b), cursor.entry_offset()),
                    });
                }
            }
        }
        // The block's keys go through the lookup and the filter after the block, in a loop of
        // its own: their random reads are independent of each other, and a short loop lets the
        // processor have several in flight at once.
        for (i, h) in hashes.iter().enumerate() {
            if let Some(lookup) = &inner.lookup {
                if lookup.locate(&inner.hot, *h) != expected[i] {
                    return failed(Error::Corrupt {
                        section: Section::Lookup,
                        offset: inner.footer.section(Section::Lookup).offset,
                        detail: "the lookup does not lead a stored key to its entry",
                    });
                }
            }
            if let Some((filter, range)) = &inner.filter {
                if !filter.may_contain(&inner.hot[range.clone()], h[0]) {
                    return failed(Error::Corrupt {
                        section: Section::Filter,
                        offset: (inner.hot_base + range.start) as u64,
                        detail: "the filter rejects a stored key",
                    });
                }
            }
        }
        if entries == 0 || entries != e.entries {
            return failed(Error::CorruptBlock {
                block: b,
                detail: "entry count differs from the block table",
            });
        }
        Checked::Ok {
            offset: e.offset,
            end,
            first,
            last: cursor.key().to_vec(),
            entries,
        }
    }
}

/// Blocks [`Snapshot::verify`] hands a thread at a time.
const VERIFY_RUN: u32 = 256;

/// What [`Snapshot::check_block`] found.
enum Checked {
    /// The block passed its own checks: where it lies, its first and last keys, its entries.
    Ok {
        offset: u64,
        end: u64,
        first: Vec<u8>,
        last: Vec<u8>,
        entries: u32,
    },
    /// It failed one; `at` is its offset when its table entry was read.
    Failed { at: Option<u64>, error: Error },
}

/// Checks that the index maps `block_count` increasing separators to the block numbers
/// `0, 1, 2, ...` in order. The FST itself was checked by `fst_check` first, so walking it is
/// safe.
fn check_index(index: &fst::Map<Bytes>, block_count: u64) -> std::result::Result<(), &'static str> {
    if index.len() as u64 != block_count {
        return Err("index entry count differs from the block count");
    }
    let mut stream = index.stream();
    let mut expected = 0u64;
    while let Some((_, block)) = stream.next() {
        if block != expected {
            return Err("index does not map separators to blocks in order");
        }
        expected += 1;
    }
    if expected != block_count {
        return Err("index entry count differs from the block count");
    }
    Ok(())
}

/// The value of the first key `>= key` in `fst`, found in one walk down the FST without
/// allocating: follow `key`'s bytes, remembering the deepest node on the path that has a
/// transition above the path's byte; if `key` leaves the FST, continue from the first transition
/// above its byte there or, failing that, from the remembered one, down the smallest keys.
fn lower_bound<D: AsRef<[u8]>>(fst: &fst::raw::Fst<D>, key: &[u8]) -> Option<u64> {
    use fst::raw::{Fst, Node, Output};
    /// The smallest key of the subtree at `node`.
    fn leftmost<'f, D: AsRef<[u8]>>(
        fst: &'f Fst<D>,
        mut node: Node<'f>,
        mut out: Output,
    ) -> Option<u64> {
        loop {
            if node.is_final() {
                return Some(out.cat(node.final_output()).value());
            }
            if node.is_empty() {
                return None; // A non-final node without transitions: not a valid FST.
            }
            let t = node.transition(0);
            out = out.cat(t.out);
            node = fst.node(t.addr);
        }
    }
    let mut node = fst.root();
    let mut out = Output::zero();
    // The deepest alternative seen: a transition above the path, and the output before it.
    let mut above: Option<(Node<'_>, usize, Output)> = None;
    for &b in key {
        match node.find_input(b) {
            Some(i) => {
                if i + 1 < node.len() {
                    above = Some((node, i + 1, out));
                }
                let t = node.transition(i);
                out = out.cat(t.out);
                node = fst.node(t.addr);
            }
            None => {
                if let Some(i) = (0..node.len()).find(|&i| node.transition(i).inp > b) {
                    above = Some((node, i, out));
                }
                let (n, i, o) = above?;
                let t = n.transition(i);
                return leftmost(fst, fst.node(t.addr), o.cat(t.out));
            }
        }
    }
    if node.is_final() {
        return Some(out.cat(node.final_output()).value());
    }
    // Every key below `node` extends `key`, so is larger; without any, use the alternative.
    if !node.is_empty() {
        return leftmost(fst, node, out);
    }
    let (n, i, o) = above?;
    let t = n.transition(i);
    leftmost(fst, fst.node(t.addr), o.cat(t.out))
}

/// The smallest key larger than every key starting with `prefix` (`None`: there is none, the
/// prefix is all `0xff`): a prefix scan is the range from the prefix to it.
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The value at `r` of `buf`, narrowing the block handle itself rather than slicing it (one
/// reference count less).
#[inline]
fn narrow(mut buf: Bytes, r: Range<usize>) -> Bytes {
    buf.truncate(r.end);
    buf.advance(r.start);
    buf
}

/// Where a block's stored bytes lie in the input (checked by [`BlockEntry::decode`] to be
/// inside the data region).
fn stored_range(e: &BlockEntry) -> std::ops::Range<usize> {
    e.offset as usize..e.offset as usize + e.stored_len as usize
}

/// An iterator over entries in key order, from [`Snapshot::range`], [`Snapshot::prefix`] or
/// [`Snapshot::iter`]. Yields `(key, value)`; after an error it ends.
pub struct Iter {
    snapshot: Snapshot,
    block: u32,
    buf: Bytes,
    cursor: Cursor,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    loaded: bool,
    /// Stop at the end of the first block (for [`Snapshot::block_entries`]).
    one_block: bool,
    done: bool,
    error: Option<Error>,
}

impl Iter {
    fn step(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        loop {
            if !self.loaded {
                self.buf = self.snapshot.block(self.block, false)?;
                self.cursor = self.snapshot.cursor(self.block);
                self.loaded = true;
            }
            let Some(value) = self.cursor.next(&self.buf)? else {
                if self.one_block {
                    return Ok(None);
                }
                self.block += 1;
                if u64::from(self.block) >= self.snapshot.inner.footer.block_count {
                    return Ok(None);
                }
                self.loaded = false;
                continue;
            };
            let key = self.cursor.key();
            let before_start = match &self.start {
                Bound::Unbounded => false,
                Bound::Included(s) => key < &s[..],
                Bound::Excluded(s) => key <= &s[..],
            };
            if before_start {
                continue;
            }
            self.start = Bound::Unbounded;
            let past_end = match &self.end {
                Bound::Unbounded => false,
                Bound::Included(e) => key > &e[..],
                Bound::Excluded(e) => key >= &e[..],
            };
            if past_end {
                return Ok(None);
            }
            return Ok(Some((Bytes::copy_from_slice(key), self.buf.slice(value))));
        }
    }
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(e) = self.error.take() {
            self.done = true;
            return Some(Err(e));
        }
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl std::iter::FusedIterator for Iter {}

#[cfg(test)]
mod tests {
    use super::lower_bound;
    use fst::IntoStreamer;

    #[test]
    fn lower_bound_agrees_with_a_range_stream() {
        let keys: Vec<&[u8]> = vec![
            b"a", b"ab", b"abc", b"abd", b"b", b"ba", b"bz", b"c\xff", b"d",
        ];
        let map =
            fst::Map::from_iter(keys.iter().enumerate().map(|(i, k)| (*k, i as u64))).unwrap();
        let probes: Vec<&[u8]> = vec![
            b"",
            b"a",
            b"aa",
            b"ab",
            b"abb",
            b"abc",
            b"abca",
            b"abe",
            b"b",
            b"b\x00",
            b"bb",
            b"c",
            b"c\xff",
            b"c\xff\x00",
            b"d",
            b"d\x00",
            b"e",
            b"\x00",
            b"\xff",
        ];
        for p in probes {
            let want = fst::Streamer::next(&mut map.range().ge(p).into_stream()).map(|(_, v)| v);
            assert_eq!(lower_bound(map.as_fst(), p), want, "probe {p:?}");
        }
        let empty = fst::Map::default();
        assert_eq!(lower_bound(empty.as_fst(), b"a"), None);
    }
}
