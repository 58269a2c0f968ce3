//! Delta fetch: a version's file assembled from the data blocks of files the cache already
//! holds, with range reads of what they lack (`spec/STORE.md`, readers, "Delta fetch").
//!
//! The block list is the file's own block table (offset, length, XXH3 of each block's stored
//! bytes), rebuilt from the file's block list object (`.<file>.blocks`, about 40% of the
//! table's bytes) or read by range from the end of the object, after the footer. A block whose
//! length and checksum some cached file has is copied from there; the changed blocks are read
//! by range. The index, filter and lookup, which every version rewrites, are rebuilt from the
//! assembled blocks ([`Rebuild`]) and read only where the rebuild does not match the footer.
//! The assembled file is then checked exactly as a full download: size and XXH3 against the
//! manifest, then the snapshot's full verification.

use crate::error::{Error, Result};
use crate::files::{blocking, report, RateLimit};
use crate::manifest::ManifestFile;
use crate::{FetchOptions, Store};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use snapkv_format::{Rebuild, StoredBlock, Tail, TAIL_LEN};
use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Most bytes of a block table a delta fetch reads and holds (8M blocks: 32 GiB of raw data
/// at the default block size); a file with a larger one is downloaded whole.
const MAX_TABLE: u64 = 256 << 20;

/// Most bytes one range read asks for: a long run of changed blocks is read in pieces, so
/// memory stays bounded and pieces go in parallel.
const MAX_RANGE: u64 = 4 << 20;

/// What a fetch moved: bytes downloaded from storage, and bytes reused from files the cache
/// already held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Transfer {
    /// Bytes read from storage (whole objects, ranges, and the block lists of delta fetches).
    pub downloaded: u64,
    /// Bytes copied from files already in the cache.
    pub reused: u64,
    /// Files assembled by a delta fetch (the others were downloaded whole or were in place).
    pub delta_files: u64,
    /// Range reads of delta fetches (block lists included).
    pub range_reads: u64,
    /// Bytes of index sections rebuilt from the blocks of delta fetches, and of block tables
    /// rebuilt from block lists, rather than read (neither downloaded nor reused).
    pub rebuilt: u64,
}

/// [`Transfer`] counted by the tasks of one fetch.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    downloaded: AtomicU64,
    reused: AtomicU64,
    delta_files: AtomicU64,
    range_reads: AtomicU64,
    rebuilt: AtomicU64,
}

impl Counters {
    pub(crate) fn downloaded(&self, n: u64) {
        self.downloaded.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds `other`'s counts: what it read from storage always, what it reused, rebuilt and
    /// assembled when `kept` (a delta fetch that fell back kept none of that).
    fn add(&self, other: &Counters, kept: bool) {
        let add = |to: &AtomicU64, from: &AtomicU64| {
            to.fetch_add(from.load(Ordering::Relaxed), Ordering::Relaxed);
        };
        add(&self.downloaded, &other.downloaded);
        add(&self.range_reads, &other.range_reads);
        if kept {
            add(&self.reused, &other.reused);
            add(&self.rebuilt, &other.rebuilt);
            add(&self.delta_files, &other.delta_files);
        }
    }

    pub(crate) fn transfer(&self) -> Transfer {
        Transfer {
            downloaded: self.downloaded.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            delta_files: self.delta_files.load(Ordering::Relaxed),
            range_reads: self.range_reads.load(Ordering::Relaxed),
            rebuilt: self.rebuilt.load(Ordering::Relaxed),
        }
    }
}

/// The blocks of the cached files a delta fetch may copy, by (checksum, length).
pub(crate) struct Bases {
    paths: Vec<PathBuf>,
    blocks: HashMap<(u64, u32), (usize, u64)>,
}

impl Bases {
    /// Reads the block tables of `paths` (snapshot files verified when they were cached). A
    /// file that cannot be read or parsed is left out: it only costs reuse. Blocking file I/O.
    pub(crate) fn read(paths: Vec<PathBuf>) -> Bases {
        let mut bases = Bases {
            paths: Vec::new(),
            blocks: HashMap::new(),
        };
        for path in paths {
            match block_list(&path) {
                Ok(list) => {
                    let i = bases.paths.len();
                    for b in list {
                        bases
                            .blocks
                            .entry((b.checksum, b.len))
                            .or_insert((i, b.offset));
                    }
                    bases.paths.push(path);
                }
                Err(e) => tracing::debug!(path = %path.display(), error = %e, "not reused"),
            }
        }
        bases
    }

    /// Whether there is any block to reuse.
    pub(crate) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

/// The blocks of a local snapshot file, from its tail.
fn block_list(path: &Path) -> std::io::Result<Vec<StoredBlock>> {
    let mut f = File::open(path)?;
    let len = f.metadata()?.len();
    let end = read_at(&mut f, len.saturating_sub(TAIL_LEN), len.min(TAIL_LEN))?;
    let invalid = |e: snapkv_format::Error| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let tail = Tail::parse(&end, len).map_err(invalid)?;
    let r = tail.block_table_range();
    if r.end - r.start > MAX_TABLE {
        return Err(std::io::Error::other(
            "block table over the size a delta fetch reads",
        ));
    }
    let table = read_at(&mut f, r.start, r.end - r.start)?;
    tail.blocks(&table).map_err(invalid)
}

fn read_at(f: &mut File, at: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    f.seek(SeekFrom::Start(at))?;
    f.read_exact(&mut buf)?;
    Ok(buf)
}

/// One stretch of the file being assembled.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Bytes already in hand (the header, sections read before the plan, rebuilt sections).
    Known { at: u64, bytes: Bytes },
    /// `len` bytes copied from offset `from` of base file `base`, to offset `at`.
    Copy {
        base: usize,
        from: u64,
        at: u64,
        len: u64,
    },
    /// `len` bytes read from storage at offset `at`.
    Fetch { at: u64, len: u64 },
}

/// What a delta fetch of one file knows before it copies or reads any block: the file's
/// length, the header, its block list, and the bytes of its block table and its end.
struct Layout {
    len: u64,
    tail: Tail,
    blocks: Vec<StoredBlock>,
    /// Ranges of the sections in hand (the block table, the end; the dictionary and the
    /// metadata when the rest is rebuilt).
    known: Vec<(std::ops::Range<u64>, Bytes)>,
    /// Ranges of the sections to be rebuilt, neither read nor copied by the plan.
    deferred: Vec<std::ops::Range<u64>>,
}

/// The pieces of the file `layout` describes, in file order. Runs of blocks found one after
/// the other in one base are one copy, runs of missing blocks one read; a copy of at most
/// `gap` bytes between two reads is read instead, saving a request for a few bytes more. The
/// sections after the data region are read, but for those in hand (`known`) and those to be
/// rebuilt (`deferred`); padding is zero bytes, which a new file holds already.
fn plan(layout: &Layout, bases: &Bases, gap: u64) -> Vec<Piece> {
    let mut blocks: Vec<Piece> = Vec::new();
    for b in &layout.blocks {
        let len = u64::from(b.len);
        let piece = match bases.blocks.get(&(b.checksum, b.len)) {
            Some(&(base, from)) => Piece::Copy {
                base,
                from,
                at: b.offset,
                len,
            },
            None => Piece::Fetch { at: b.offset, len },
        };
        match (blocks.last_mut(), piece) {
            (
                Some(Piece::Copy {
                    base, from, len, ..
                }),
                Piece::Copy {
                    base: b,
                    from: f,
                    len: l,
                    ..
                },
            ) if *base == b && *from + *len == f => *len += l,
            (Some(Piece::Fetch { len, .. }), Piece::Fetch { len: l, .. }) => *len += l,
            (_, piece) => blocks.push(piece),
        }
    }
    let mut out = vec![Piece::Known {
        at: 0,
        bytes: Bytes::copy_from_slice(&layout.tail.header()),
    }];
    let mut i = 0;
    while i < blocks.len() {
        let short_copy_between_reads = matches!(blocks[i], Piece::Copy { len, .. } if len <= gap)
            && matches!(out.last(), Some(Piece::Fetch { .. }))
            && matches!(blocks.get(i + 1), Some(Piece::Fetch { .. }));
        if short_copy_between_reads {
            let (Piece::Copy { len: copy, .. }, Piece::Fetch { len: next, .. }) =
                (&blocks[i], &blocks[i + 1])
            else {
                unreachable!("matched above")
            };
            let Some(Piece::Fetch { len, .. }) = out.last_mut() else {
                unreachable!("matched above")
            };
            *len += copy + next;
            i += 2;
        } else {
            out.push(blocks[i].clone());
            i += 1;
        }
    }
    let sections = layout.tail.sections_range();
    let mut spans: Vec<(std::ops::Range<u64>, Option<Bytes>)> = layout
        .known
        .iter()
        .map(|(r, b)| (r.clone(), Some(b.clone())))
        .chain(layout.deferred.iter().map(|r| (r.clone(), None)))
        .collect();
    spans.sort_by_key(|(r, _)| r.start);
    let mut at = sections.start;
    let mut after_span = false;
    for (r, bytes) in spans {
        // Between the end of a section and the next one at a multiple of 8 lie only the
        // padding's zero bytes, which the new file holds already.
        let padding = after_span && r.start.saturating_sub(at) < 8 && r.start % 8 == 0;
        if r.start > at && !padding {
            out.push(Piece::Fetch {
                at,
                len: r.start - at,
            });
        }
        after_span = true;
        at = at.max(r.end);
        if let Some(bytes) = bytes {
            out.push(Piece::Known { at: r.start, bytes });
        }
    }
    if layout.len > at {
        out.push(Piece::Fetch {
            at,
            len: layout.len - at,
        });
    }
    out
}

impl Store {
    /// Assembles `file` of `version` into `partial` (replacing what is there) from the blocks
    /// `bases` holds and range reads of the rest, and checks its size and XXH3 against the
    /// manifest. `Ok(false)`: no block to reuse (or the stored object is not a snapshot whose
    /// blocks can be listed, or its block table is over [`MAX_TABLE`]), and nothing was
    /// written; a full download is the way. An error leaves no partial file.
    /// What it moved is added to `shared`: the bytes read from storage in any case, what it
    /// reused and rebuilt only when the file was assembled.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn fetch_delta(
        &self,
        path: &object_store::path::Path,
        list: &object_store::path::Path,
        file: &ManifestFile,
        partial: &Path,
        expected: (u64, u64),
        bases: &Arc<Bases>,
        options: &FetchOptions,
        limit: &Option<Arc<RateLimit>>,
        shared: &Arc<Counters>,
    ) -> Result<bool> {
        let counters = Arc::new(Counters::default());
        let result = self
            .assemble(
                path, list, file, partial, expected, bases, options, limit, &counters,
            )
            .await;
        shared.add(&counters, matches!(result, Ok(true)));
        result
    }

    /// [`Store::fetch_delta`], counting in `counters`.
    #[allow(clippy::too_many_arguments)]
    async fn assemble(
        &self,
        path: &object_store::path::Path,
        list: &object_store::path::Path,
        file: &ManifestFile,
        partial: &Path,
        expected: (u64, u64),
        bases: &Arc<Bases>,
        options: &FetchOptions,
        limit: &Option<Arc<RateLimit>>,
        counters: &Arc<Counters>,
    ) -> Result<bool> {
        let len = file.bytes;
        let read = |range: std::ops::Range<u64>| {
            let n = range.end - range.start;
            async move {
                if let Some(limit) = limit {
                    limit.take(n).await;
                }
                let bytes = self.get_exact(path, range).await?;
                counters.downloaded(n);
                counters.range_reads.fetch_add(1, Ordering::Relaxed);
                Ok::<Bytes, Error>(bytes)
            }
        };
        let end = read(len.saturating_sub(TAIL_LEN)..len).await?;
        let Ok(tail) = Tail::parse(&end, len) else {
            return Ok(false);
        };
        let table_range = tail.block_table_range();
        if table_range.end - table_range.start > MAX_TABLE {
            return Ok(false);
        }
        let table = match self.read_block_list(list, &tail, counters).await {
            Some(table) => {
                // Put in place from the list, not read.
                counters
                    .rebuilt
                    .fetch_add(table.len() as u64, Ordering::Relaxed);
                Bytes::from(table)
            }
            None => read(table_range.clone()).await?,
        };
        let Ok(blocks) = tail.blocks(&table) else {
            return Ok(false);
        };
        // Nothing to reuse (every block changed, or another dataset's blocks): a whole
        // download, before the dictionary and the metadata are read for nothing.
        if !blocks
            .iter()
            .any(|b| bases.blocks.contains_key(&(b.checksum, b.len)))
        {
            return Ok(false);
        }
        // The index, filter and lookup are rebuilt from the blocks rather than read, when
        // they are worth it; the dictionary and the metadata the rebuild needs are read.
        let deferred: Vec<std::ops::Range<u64>> = match tail.format_version() {
            2 if options.rebuild_sections => Rebuild::ranges(&tail).into(),
            _ => Vec::new(),
        };
        let rebuilt_bytes: u64 = deferred.iter().map(|r| r.end - r.start).sum();
        let mut known = vec![
            (table_range, table.clone()),
            (len - end.len() as u64..len, end),
        ];
        let mut deferred = deferred;
        let mut inputs = None;
        if rebuilt_bytes >= MIN_REBUILD {
            let dictionary = tail.dictionary_range();
            let metadata = tail.metadata_range();
            let sizes = (
                dictionary.end - dictionary.start,
                metadata.end - metadata.start,
            );
            if sizes.0 <= MAX_DICTIONARY && sizes.1 <= MAX_METADATA {
                let d = read(dictionary.clone()).await?;
                let m = read(metadata.clone()).await?;
                known.push((dictionary, d.clone()));
                known.push((metadata, m.clone()));
                inputs = Some((table.clone(), d, m));
            }
        }
        if inputs.is_none() {
            deferred.clear();
        }
        let layout = Layout {
            len,
            tail,
            blocks,
            known,
            deferred,
        };
        let pieces = plan(&layout, bases, options.delta_gap);
        let reused: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Copy { len, .. } => *len,
                _ => 0,
            })
            .sum();
        if reused == 0 {
            return Ok(false);
        }
        // Report what is in hand (header, sections read, padding), so the progress of the
        // file adds up to its size.
        let moved: u64 = pieces
            .iter()
            .map(|p| match p {
                Piece::Copy { len, .. } | Piece::Fetch { len, .. } => *len,
                Piece::Known { .. } => 0,
            })
            .chain(layout.deferred.iter().map(|r| r.end - r.start))
            .sum();
        report(&options.progress, len.saturating_sub(moved));
        let result =
            async {
                // Left by a fetch that stopped: its bytes are not trusted.
                let p = partial.to_owned();
                blocking(move || crate::cache::remove_if_exists(&p)).await?;
                let started = std::time::Instant::now();
                self.write_pieces(partial, len, &pieces, bases, options, &read, counters)
                    .await?;
                tracing::debug!(file = %partial.display(), elapsed = ?started.elapsed(), "blocks in place");
                if let Some((table, dictionary, metadata)) = inputs {
                    let started = std::time::Instant::now();
                    let rebuilt = rebuild(
                        partial,
                        &layout.tail,
                        (table, dictionary, metadata),
                        options,
                    )
                    .await;
                    tracing::debug!(file = %partial.display(), elapsed = ?started.elapsed(), "sections rebuilt");
                    let mut rest = layout.deferred.clone();
                    let mut pieces = Vec::new();
                    for (range, bytes) in rebuilt {
                        rest.retain(|r| *r != range);
                        counters
                            .rebuilt
                            .fetch_add(range.end - range.start, Ordering::Relaxed);
                        report(&options.progress, range.end - range.start);
                        pieces.push(Piece::Known {
                            at: range.start,
                            bytes: bytes.into(),
                        });
                    }
                    pieces.extend(rest.into_iter().filter(|r| r.end > r.start).map(|r| {
                        Piece::Fetch {
                            at: r.start,
                            len: r.end - r.start,
                        }
                    }));
                    self.write_pieces(partial, len, &pieces, bases, options, &read, counters)
                        .await?;
                }
                let target = partial.to_owned();
                blocking(move || -> Result<(u64, u64)> {
                    let io = |action, e| Error::io(action, &target, e);
                    let mut f = File::open(&target).map_err(|e| io("open", e))?;
                    f.sync_all().map_err(|e| io("fsync", e))?;
                    crate::files::hash_reader(&mut f, xxhash_rust::xxh3::Xxh3::new())
                        .map_err(|e| io("read", e))
                })
                .await
            }
            .await;
        let result = match result {
            Ok(found) if found == expected => {
                counters.delta_files.fetch_add(1, Ordering::Relaxed);
                Ok(true)
            }
            Ok(found) => Err(Error::corrupt(
                format!("assembled {}", file.name),
                format!(
                    "{} bytes with XXH3 {:016x}, where the manifest says {} bytes with {}",
                    found.0, found.1, file.bytes, file.xxh3
                ),
            )),
            Err(e) => Err(e),
        };
        if result.is_err() {
            let p = partial.to_owned();
            blocking(move || crate::cache::remove_if_exists(&p)).await?;
        }
        result
    }

    /// The block table of the file whose footer is `tail`, from its block list at `list`
    /// (`spec/STORE.md`, "Block lists"; checked against the footer's checksum of the table).
    /// `None` when there is none (versions published before block lists), it cannot be read
    /// or it does not check (the table is then read from the file).
    async fn read_block_list(
        &self,
        list: &object_store::path::Path,
        tail: &Tail,
        counters: &Counters,
    ) -> Option<Vec<u8>> {
        let table = tail.block_table_range();
        // A list is smaller than the table it describes, whatever its blocks.
        let cap = (table.end - table.start) + 4096;
        let got = match self.objects.get(list).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return None,
            Err(e) => {
                // The list only saves bytes: the table is read instead.
                tracing::debug!(%list, error = %e, "cannot read the block list; reading the table");
                return None;
            }
        };
        counters.range_reads.fetch_add(1, Ordering::Relaxed);
        if got.meta.size > cap {
            tracing::debug!(%list, size = got.meta.size, "block list larger than its table; not read");
            return None;
        }
        let bytes = match got.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(%list, error = %e, "cannot read the block list; reading the table");
                return None;
            }
        };
        counters.downloaded(bytes.len() as u64);
        match tail.table_from_block_list(&bytes) {
            Ok(table) => Some(table),
            Err(e) => {
                tracing::debug!(%list, error = %e, "block list does not check; reading the table");
                None
            }
        }
    }

    /// Writes `pieces` into `partial` (created at `len` bytes if it does not exist): the
    /// bytes in hand and the copies on the blocking pool, the reads a few at a time.
    #[allow(clippy::too_many_arguments)]
    async fn write_pieces<F, Fut>(
        &self,
        partial: &Path,
        len: u64,
        pieces: &[Piece],
        bases: &Arc<Bases>,
        options: &FetchOptions,
        read: &F,
        counters: &Arc<Counters>,
    ) -> Result<()>
    where
        F: Fn(std::ops::Range<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        let target = partial.to_owned();
        let local: Vec<Piece> = pieces
            .iter()
            .filter(|p| !matches!(p, Piece::Fetch { .. }))
            .cloned()
            .collect();
        let (b, c, progress) = (
            Arc::clone(bases),
            Arc::clone(counters),
            options.progress.clone(),
        );
        blocking(move || -> Result<()> {
            let io = |action, e| Error::io(action, &target, e);
            let mut out = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map_err(|e| io("create", e))?;
            out.set_len(len).map_err(|e| io("extend", e))?;
            let mut buf = vec![0u8; 1 << 20];
            for p in local {
                match p {
                    Piece::Known { at, bytes } => {
                        out.seek(SeekFrom::Start(at)).map_err(|e| io("seek", e))?;
                        out.write_all(&bytes).map_err(|e| io("write", e))?;
                    }
                    Piece::Copy {
                        base,
                        from,
                        at,
                        len,
                    } => {
                        let source = &b.paths[base];
                        let mut src =
                            File::open(source).map_err(|e| Error::io("open", source, e))?;
                        src.seek(SeekFrom::Start(from))
                            .map_err(|e| Error::io("seek", source, e))?;
                        out.seek(SeekFrom::Start(at)).map_err(|e| io("seek", e))?;
                        let mut left = len;
                        while left > 0 {
                            let n = left.min(buf.len() as u64) as usize;
                            src.read_exact(&mut buf[..n])
                                .map_err(|e| Error::io("read", source, e))?;
                            out.write_all(&buf[..n]).map_err(|e| io("write", e))?;
                            left -= n as u64;
                        }
                        c.reused.fetch_add(len, Ordering::Relaxed);
                        report(&progress, len);
                    }
                    Piece::Fetch { .. } => {}
                }
            }
            Ok(())
        })
        .await?;
        let reads: Vec<(u64, u64)> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Fetch { at, len } => Some((*at, *len)),
                _ => None,
            })
            .flat_map(|(at, len)| {
                (0..len.div_ceil(MAX_RANGE)).map(move |i| {
                    let start = at + i * MAX_RANGE;
                    (start, (at + len).min(start + MAX_RANGE) - start)
                })
            })
            .collect();
        let writes: Vec<_> = reads
            .into_iter()
            .map(|(at, n)| {
                let target = partial.to_owned();
                let progress = options.progress.clone();
                async move {
                    let bytes = read(at..at + n).await?;
                    report(&progress, n);
                    blocking(move || -> Result<()> {
                        let io = |action, e| Error::io(action, &target, e);
                        let mut out = std::fs::OpenOptions::new()
                            .write(true)
                            .open(&target)
                            .map_err(|e| io("open", e))?;
                        out.seek(SeekFrom::Start(at)).map_err(|e| io("seek", e))?;
                        out.write_all(&bytes).map_err(|e| io("write", e))
                    })
                    .await
                }
            })
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(options.range_concurrency.max(1))
            .try_collect::<()>()
            .await
    }
}

/// Most bytes of a dictionary section read by [`Store::current_dictionary`].
const MAX_DICTIONARY: u64 = 64 << 20;

impl Store {
    /// The compression dictionary of the version `CURRENT` names for `dataset` (for a build of
    /// the next version: unchanged blocks then stay byte-identical and readers fetch only the
    /// changed ones). Of a sharded version, shard `shard` when it has one, else its first
    /// file. `Ok(None)` when the dataset has no current version; an empty dictionary when the
    /// file has none. Reads the manifest, then the file's end and dictionary by range.
    pub async fn current_dictionary(
        &self,
        dataset: &str,
        shard: Option<u32>,
    ) -> Result<Option<Vec<u8>>> {
        let Some(current) = self.current(dataset).await? else {
            return Ok(None);
        };
        let version = current.pointer.version;
        let manifest = self.manifest(dataset, &version).await?;
        let at = match (&manifest.sharding, shard) {
            (Some(_), Some(i)) if (i as usize) < manifest.files.len() => i as usize,
            _ => 0,
        };
        let file = &manifest.files[at];
        let paths = crate::layout::DatasetPaths::new(&self.root, dataset)?;
        let path = paths.file(&version, &file.name);
        let (tail, bytes) = self
            .stored_section(&path, file.bytes, Tail::dictionary_range, MAX_DICTIONARY)
            .await?;
        let dictionary = tail
            .dictionary(&bytes)
            .map_err(|e| stored_corrupt(&path, e))?;
        Ok(Some(dictionary.to_vec()))
    }

    /// The footer of the stored snapshot at `path` (of `len` bytes) and the bytes of the part
    /// of it `range` names, at most `max` of them: two range reads from its end.
    pub(crate) async fn stored_section(
        &self,
        path: &object_store::path::Path,
        len: u64,
        range: impl Fn(&Tail) -> std::ops::Range<u64>,
        max: u64,
    ) -> Result<(Tail, Bytes)> {
        let end = self
            .get_exact(path, len.saturating_sub(TAIL_LEN)..len)
            .await?;
        let tail = Tail::parse(&end, len).map_err(|e| stored_corrupt(path, e))?;
        let r = range(&tail);
        if r.end - r.start > max {
            return Err(Error::corrupt(
                format!("stored object {path}"),
                format!(
                    "a section of {} bytes, more than the {max} read",
                    r.end - r.start
                ),
            ));
        }
        if r.is_empty() {
            return Ok((tail, Bytes::new()));
        }
        let bytes = self.get_exact(path, r).await?;
        Ok((tail, bytes))
    }
}

/// The error for a stored object that is not a valid snapshot.
pub(crate) fn stored_corrupt(path: &object_store::path::Path, e: snapkv_format::Error) -> Error {
    Error::Corrupt {
        what: format!("stored object {path}"),
        detail: "not a valid snapshot".into(),
        source: Some(Box::new(e)),
    }
}

/// Sections smaller than this together are read rather than rebuilt.
const MIN_REBUILD: u64 = 256 << 10;
/// Most metadata bytes read for a rebuild (a larger metadata section: the sections are read).
const MAX_METADATA: u64 = 16 << 20;
/// Bytes of blocks a rebuild reads and decodes at a time.
const REBUILD_BATCH: u64 = 8 << 20;
/// Memory for the key records of a rebuild; beyond it they go to a temporary file in the
/// cache directory.
const REBUILD_MEMORY: usize = 64 << 20;

/// The sections of the assembled file `partial` rebuilt from its blocks, those that match the
/// footer (none when the rebuild fails: they are read instead).
async fn rebuild(
    partial: &Path,
    tail: &Tail,
    (table, dictionary, metadata): (Bytes, Bytes, Bytes),
    options: &FetchOptions,
) -> Vec<(std::ops::Range<u64>, Vec<u8>)> {
    let (target, tail) = (partial.to_owned(), tail.clone());
    let threads = options.rebuild_threads;
    let rebuilt = blocking(move || -> std::result::Result<_, String> {
        let spill = snapkv_format::Spill {
            dir: target
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_owned),
            memory: REBUILD_MEMORY,
        };
        let mut r = Rebuild::new(&tail, &table, &dictionary, &metadata, threads, Some(&spill))
            .map_err(|e| e.to_string())?;
        let blocks = tail.blocks(&table).map_err(|e| e.to_string())?;
        let f = File::open(&target).map_err(|e| e.to_string())?;
        let mut f = std::io::BufReader::with_capacity(1 << 20, f);
        f.seek(SeekFrom::Start(16)).map_err(|e| e.to_string())?;
        // Blocks are read a batch of about REBUILD_BATCH bytes at a time (blocks follow each
        // other) and decoded on the rebuild's threads.
        let mut batch = Vec::new();
        let mut from = 0;
        while from < blocks.len() {
            let start = blocks[from].offset;
            let mut to = from + 1;
            while to < blocks.len() && blocks[to].offset - start < REBUILD_BATCH {
                to += 1;
            }
            let run = &blocks[from..to];
            let end = run[run.len() - 1].offset + u64::from(run[run.len() - 1].len);
            batch.resize((end - start) as usize, 0);
            f.read_exact(&mut batch).map_err(|e| e.to_string())?;
            let stored: Vec<&[u8]> = run
                .iter()
                .map(|b| {
                    let at = (b.offset - start) as usize;
                    &batch[at..at + b.len as usize]
                })
                .collect();
            r.blocks(&stored).map_err(|e| e.to_string())?;
            from = to;
        }
        r.finish().map_err(|e| e.to_string())
    })
    .await;
    rebuilt.unwrap_or_else(|e| {
        tracing::debug!(file = %partial.display(), error = %e, "sections not rebuilt; reading them");
        Vec::new()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(offset: u64, len: u32, checksum: u64) -> StoredBlock {
        StoredBlock {
            offset,
            len,
            checksum,
        }
    }

    #[test]
    fn plan_copies_runs_and_reads_the_rest() {
        let mut w = snapkv_format::SnapshotWriter::new(
            Vec::new(),
            snapkv_format::WriterOptions::default(),
            snapkv_format::Metadata::default(),
        )
        .unwrap();
        w.insert(b"k", b"v").unwrap();
        let file = w.finish().unwrap().0;
        let len = file.len() as u64;
        let tail = Tail::parse(&file[file.len() - 192..], len).unwrap();
        // Cached: blocks 1, 2 (adjacent in base 0) and 4; 3 and 5 are missing, 4 is short.
        let bases = Bases {
            paths: vec![PathBuf::from("base")],
            blocks: [
                ((1, 100), (0, 16)),
                ((2, 100), (0, 116)),
                ((4, 10), (0, 900)),
            ]
            .into_iter()
            .collect(),
        };
        let blocks = vec![
            block(16, 100, 1),
            block(116, 100, 2),
            block(216, 50, 3),
            block(266, 10, 4),
            block(276, 20, 5),
        ];
        let layout = Layout {
            len,
            tail,
            blocks,
            known: Vec::new(),
            deferred: Vec::new(),
        };
        let pieces = plan(&layout, &bases, 16);
        assert!(matches!(pieces[0], Piece::Known { at: 0, .. }));
        assert_eq!(
            pieces[1],
            Piece::Copy {
                base: 0,
                from: 16,
                at: 16,
                len: 200
            }
        );
        // 3, the short copy of 4, and 5: one read.
        assert_eq!(pieces[2], Piece::Fetch { at: 216, len: 80 });
        // With no gap allowed, 4 is copied.
        let pieces = plan(&layout, &bases, 0);
        assert_eq!(pieces[2], Piece::Fetch { at: 216, len: 50 });
        assert!(matches!(
            pieces[3],
            Piece::Copy {
                at: 266,
                len: 10,
                ..
            }
        ));
        assert_eq!(pieces[4], Piece::Fetch { at: 276, len: 20 });
    }
}
