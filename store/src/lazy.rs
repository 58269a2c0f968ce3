//! Lazy open: a version served before its files are local (`spec/STORE.md`, readers, "Lazy
//! open").
//!
//! Each file is created at its full size as `.<file>.lazy` in the version's cache directory
//! (a sparse file), with its header and everything after the data region (dictionary, block
//! table, index, filter, lookup, metadata, footer) read by range and written in place: a
//! snapshot opens on that ([`snapkv_format::Snapshot::open_filling`]) and answers lookups. Its
//! data blocks arrive two ways into the same file: the reads lookups wait for, one run of
//! blocks at a time, and the background fill of every block still missing
//! ([`LazyVersion::complete`]). Each block is checked against its checksum in the block table
//! before it is written and marked present, and only present blocks are read; a block's bytes
//! are written once, or again with the same bytes when two reads of it race. Once every block
//! is present the file is checked as a full download is (size and XXH3 against the manifest,
//! then the snapshot's full verification), made read-only and renamed to its final name:
//! from then on it is an ordinary cached file.

use crate::cache::{held_files, remove_if_exists, sync_dir, write_durably, Cache, CachedVersion};
use crate::delta::Transfer;
use crate::error::{Error, Result};
use crate::files::{blocking, RateLimit};
use crate::layout::{DatasetPaths, MANIFEST};
use crate::manifest::{parse_xxh3, Manifest};
use crate::{FetchOptions, Store};
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use snapkv_format::{StoredBlock, Tail, TAIL_LEN};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// Most bytes one range read of a lazy open asks for.
const PIECE: u64 = 4 << 20;

/// Range reads for lookups in flight per file.
const LOOKUP_READS: usize = 64;

/// Most bytes of the sections after the data region a lazy open reads and writes before
/// it serves; a file with more is not opened lazily.
const MAX_SECTIONS: u64 = 4 << 30;

/// The runtime every lazily opened file reads storage on. A lookup waiting for a block may
/// block its thread (an async worker of the server's runtime, for some): the reads it waits
/// for run here, on threads of their own, through a store client whose connections belong to
/// this runtime.
fn fill_runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("snapkv-fill")
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::Refused {
            reason: format!("cannot start the threads that read lazily opened files: {e}"),
        })
}

/// Runs `task` on the fill runtime and waits for it.
async fn on_fill_runtime<T: Send + 'static>(
    task: impl std::future::Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    match fill_runtime()?.spawn(task).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(Error::Refused {
            reason: format!("the read task stopped: {e}"),
        }),
    }
}

/// A version opened before its files are local ([`Store::open_lazy`]): its files serve
/// lookups while [`LazyVersion::complete`] fills them in.
pub struct LazyVersion {
    /// The dataset.
    pub dataset: String,
    /// The version.
    pub version: String,
    /// Its directory in the cache.
    pub dir: PathBuf,
    /// Its manifest, as read from the store.
    pub manifest: Manifest,
    /// The files held, by position in the manifest (as [`CachedVersion::held`]).
    pub held: Range<usize>,
    files: Vec<Arc<Filling>>,
    /// Bytes read from storage already reported ([`LazyVersion::take_downloaded`]).
    reported: AtomicU64,
}

impl std::fmt::Debug for LazyVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyVersion")
            .field("dataset", &self.dataset)
            .field("version", &self.version)
            .field("files", &self.files.len())
            .finish_non_exhaustive()
    }
}

/// One file of a [`LazyVersion`]: a snapshot file whose data blocks are still arriving. Give
/// it to [`snapkv_format::Snapshot::open_filling`] (it is the [`snapkv_format::Fill`]) with the
/// bytes of [`Filling::path`].
pub struct Filling {
    /// `<version>/<file>`, for messages.
    what: String,
    path: PathBuf,
    file: Arc<File>,
    blocks: Vec<StoredBlock>,
    /// One bit per block: its bytes are in the file, checked. Set after the bytes are
    /// written (release), read before they are (acquire).
    present: Vec<AtomicU64>,
    /// Blocks not present.
    missing: AtomicU64,
    /// Reads lookups asked for, and why the last of a block failed.
    state: Mutex<Asked>,
    /// Told when a read lookups asked for ends (threads that block).
    changed: Condvar,
    /// Reads for lookups at once: many lookups of blocks far apart (a large mget) queue here
    /// rather than open a connection each.
    reads: tokio::sync::Semaphore,
    /// The same, for tasks that wait ([`Filling::ready`]).
    notify: tokio::sync::Notify,
    store: Store,
    object: ObjectPath,
    /// How long a lookup waits for its block.
    timeout: Duration,
    downloaded: AtomicU64,
    range_reads: AtomicU64,
    this: Weak<Filling>,
}

#[derive(Default)]
struct Asked {
    /// Blocks with a read under way for lookups.
    reading: HashSet<usize>,
    /// Blocks whose last such read failed, and why.
    failed: HashMap<usize, String>,
}

/// What a waiter does next.
enum Step {
    Done,
    Wait,
    Fail(String),
}

impl Filling {
    /// The file being filled in (`.<file>.lazy` in the version's directory).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Data blocks in the file.
    pub fn block_count(&self) -> u64 {
        self.blocks.len() as u64
    }

    /// Data blocks not in the file yet.
    pub fn blocks_missing(&self) -> u64 {
        self.missing.load(Ordering::Relaxed)
    }

    /// Bytes read from storage for this file so far.
    pub fn downloaded(&self) -> u64 {
        self.downloaded.load(Ordering::Relaxed)
    }

    fn has(&self, i: usize) -> bool {
        self.present[i / 64].load(Ordering::Acquire) & (1 << (i % 64)) != 0
    }

    /// The blocks bytes `range` of the file touch.
    fn blocks_in(&self, range: &Range<u64>) -> Range<usize> {
        let first = self
            .blocks
            .partition_point(|b| b.offset + u64::from(b.len) <= range.start);
        let end = self.blocks.partition_point(|b| b.offset < range.end);
        first..end.max(first)
    }

    fn end_of(&self, i: usize) -> u64 {
        self.blocks[i].offset + u64::from(self.blocks[i].len)
    }

    /// Checks the blocks from number `first` that `bytes` (read from file offset
    /// `self.blocks[first].offset`) holds against their checksums, writes those not present
    /// and marks them present. Blocking file I/O.
    fn put(&self, first: usize, bytes: &[u8]) -> Result<()> {
        let start = self.blocks[first].offset;
        let mut i = first;
        // Runs of blocks to write: [from, to) in blocks.
        let mut runs: Vec<Range<usize>> = Vec::new();
        while i < self.blocks.len() && self.end_of(i) - start <= bytes.len() as u64 {
            let b = &self.blocks[i];
            let at = (b.offset - start) as usize;
            let stored = &bytes[at..at + b.len as usize];
            let got = xxhash_rust::xxh3::xxh3_64(stored);
            if got != b.checksum {
                return Err(Error::corrupt(
                    format!("stored object of {}", self.what),
                    format!(
                        "block {i} has XXH3 {got:016x}, where the file's block table says {:016x}",
                        b.checksum
                    ),
                ));
            }
            if !self.has(i) {
                match runs.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => runs.push(i..i + 1),
                }
            }
            i += 1;
        }
        for run in runs {
            let from = self.blocks[run.start].offset;
            let to = self.end_of(run.end - 1);
            let slice = &bytes[(from - start) as usize..(to - start) as usize];
            self.file
                .write_all_at(slice, from)
                .map_err(|e| Error::io("write", &self.path, e))?;
            for b in run {
                let was = self.present[b / 64].fetch_or(1 << (b % 64), Ordering::AcqRel);
                if was & (1 << (b % 64)) == 0 {
                    self.missing.fetch_sub(1, Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// Reads blocks `run` from storage and puts them in the file.
    async fn read_blocks(&self, run: Range<usize>) -> Result<()> {
        let range = self.blocks[run.start].offset..self.end_of(run.end - 1);
        let n = range.end - range.start;
        let bytes = self.store.get_exact(&self.object, range).await?;
        self.downloaded.fetch_add(n, Ordering::Relaxed);
        self.range_reads.fetch_add(1, Ordering::Relaxed);
        let me = self
            .this
            .upgrade()
            .expect("a filling reads only while alive");
        if n >= 64 << 10 {
            blocking(move || me.put(run.start, &bytes)).await
        } else {
            me.put(run.start, &bytes)
        }
    }

    /// Starts reads of the missing blocks of `want` that no read is under way for: runs of
    /// neighbours together, at most [`PIECE`] bytes each. Called with the state locked.
    fn ask(&self, want: Range<usize>, asked: &mut Asked) {
        let Some(me) = self.this.upgrade() else {
            return;
        };
        let Ok(runtime) = fill_runtime() else {
            return;
        };
        let mut runs: Vec<Range<usize>> = Vec::new();
        for i in want {
            if self.has(i) || asked.reading.contains(&i) {
                continue;
            }
            asked.reading.insert(i);
            asked.failed.remove(&i);
            match runs.last_mut() {
                Some(r) if r.end == i && self.end_of(i) - self.blocks[r.start].offset <= PIECE => {
                    r.end = i + 1
                }
                _ => runs.push(i..i + 1),
            }
        }
        for run in runs {
            let me = Arc::clone(&me);
            runtime.spawn(async move {
                let result = match me.reads.acquire().await {
                    Ok(_permit) => me.read_blocks(run.clone()).await,
                    Err(_) => Err(Error::Refused {
                        reason: "no more reads for lookups".into(),
                    }),
                };
                let mut asked = me.state.lock().unwrap_or_else(|e| e.into_inner());
                for i in run {
                    asked.reading.remove(&i);
                    if let Err(e) = &result {
                        asked.failed.insert(i, crate::error_chain(e));
                    }
                }
                drop(asked);
                me.changed.notify_all();
                me.notify.notify_waiters();
            });
        }
    }

    /// One look at the blocks of `want`: all present, some still being read (after asking
    /// for those that are not, on the `first` look), or one whose read failed since.
    fn step(&self, want: &Range<usize>, first: bool, asked: &mut Asked) -> Step {
        if first {
            self.ask(want.clone(), asked);
        }
        let mut waiting = false;
        for i in want.clone() {
            if self.has(i) {
                continue;
            }
            if asked.reading.contains(&i) {
                waiting = true;
                continue;
            }
            return Step::Fail(
                asked
                    .failed
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| "the read of its block failed".into()),
            );
        }
        match waiting {
            true => Step::Wait,
            false => Step::Done,
        }
    }

    fn unavailable(&self, range: &Range<u64>, reason: String) -> snapkv_format::Error {
        snapkv_format::Error::Unavailable {
            start: range.start,
            end: range.end,
            reason,
        }
    }

    fn timed_out(&self, range: &Range<u64>) -> snapkv_format::Error {
        self.unavailable(
            range,
            format!(
                "storage did not answer within {:?} (the file is still being downloaded)",
                self.timeout
            ),
        )
    }

    /// [`snapkv_format::Fill::ensure`] without blocking a thread: waits for bytes `range` of
    /// the file (reading the blocks they touch if no read of them is under way), at most the
    /// lookup timeout.
    pub async fn ready(&self, range: Range<u64>) -> snapkv_format::Result<()> {
        let want = self.blocks_in(&range);
        if want.clone().all(|i| self.has(i)) {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut first = true;
        loop {
            // Registered before the look, so that a read ending after it wakes this task.
            let notified = self.notify.notified();
            let step = {
                let mut asked = self.state.lock().unwrap_or_else(|e| e.into_inner());
                self.step(&want, first, &mut asked)
            };
            first = false;
            match step {
                Step::Done => return Ok(()),
                Step::Fail(reason) => return Err(self.unavailable(&range, reason)),
                Step::Wait => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Err(self.timed_out(&range));
                    }
                }
            }
        }
    }

    /// Reads every block still missing, `concurrency` reads at a time, at most [`PIECE`]
    /// bytes each, within `limit`.
    async fn fill_rest(
        self: Arc<Self>,
        concurrency: usize,
        limit: Option<Arc<RateLimit>>,
    ) -> Result<()> {
        // Under a bandwidth bound, reads of a quarter second's bytes: the file fills steadily
        // rather than in a few bursts after long waits.
        let piece = limit
            .as_ref()
            .map_or(PIECE, |l| (l.bytes_per_sec() / 4).clamp(4 << 10, PIECE));
        let mut runs: Vec<Range<usize>> = Vec::new();
        for i in 0..self.blocks.len() {
            if self.has(i) {
                continue;
            }
            match runs.last_mut() {
                Some(r) if r.end == i && self.end_of(i) - self.blocks[r.start].offset <= piece => {
                    r.end = i + 1
                }
                _ => runs.push(i..i + 1),
            }
        }
        let reads: Vec<_> = runs
            .into_iter()
            .map(|run| {
                let (me, limit) = (Arc::clone(&self), limit.clone());
                async move {
                    // Blocks lookups brought in meanwhile are not read again: the run is
                    // looked at when its turn under the bound comes, not when it was queued.
                    if let Some(limit) = &limit {
                        let bytes: u64 = run
                            .clone()
                            .filter(|&i| !me.has(i))
                            .map(|i| u64::from(me.blocks[i].len))
                            .sum();
                        limit.take(bytes).await;
                    }
                    let mut left: Vec<Range<usize>> = Vec::new();
                    for i in run.filter(|&i| !me.has(i)) {
                        match left.last_mut() {
                            Some(r) if r.end == i => r.end = i + 1,
                            _ => left.push(i..i + 1),
                        }
                    }
                    for r in left {
                        me.read_blocks(r).await?;
                    }
                    Ok(())
                }
            })
            .collect();
        futures_util::stream::iter(reads)
            .buffer_unordered(concurrency.max(1))
            .try_collect::<()>()
            .await?;
        self.changed.notify_all();
        self.notify.notify_waiters();
        Ok(())
    }
}

impl snapkv_format::Fill for Filling {
    fn ensure(&self, range: Range<u64>) -> snapkv_format::Result<()> {
        let want = self.blocks_in(&range);
        if want.clone().all(|i| self.has(i)) {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        let mut asked = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut first = true;
        loop {
            match self.step(&want, first, &mut asked) {
                Step::Done => return Ok(()),
                Step::Fail(reason) => return Err(self.unavailable(&range, reason)),
                Step::Wait => {}
            }
            first = false;
            let now = Instant::now();
            if now >= deadline {
                return Err(self.timed_out(&range));
            }
            asked = self
                .changed
                .wait_timeout(asked, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl LazyVersion {
    /// Its files, in manifest order (the held ones).
    pub fn files(&self) -> &[Arc<Filling>] {
        &self.files
    }

    /// Bytes read from storage for this version (index sections, blocks lookups waited for,
    /// the fill) since the last call.
    pub fn take_downloaded(&self) -> u64 {
        let total: u64 = self.files.iter().map(|f| f.downloaded()).sum();
        total.saturating_sub(self.reported.swap(total, Ordering::Relaxed))
    }

    /// Data blocks not in place yet, over all files.
    pub fn blocks_missing(&self) -> u64 {
        self.files.iter().map(|f| f.blocks_missing()).sum()
    }

    /// Fills in every missing block (reads by range, [`FetchOptions::range_concurrency`] at
    /// a time within [`FetchOptions::max_bytes_per_sec`]), then checks each file as a full
    /// download is (fsync, size and XXH3 against the manifest, the snapshot's full
    /// verification through [`FetchOptions::open`]), makes it read-only, renames it to its
    /// final name and writes the version's `MANIFEST.json`: the version is then an ordinary
    /// cached one. A failed read leaves the blocks in place for the next call; a file that
    /// fails its checks is [`Error::Corrupt`] (and stays where it is: it may be in use).
    pub async fn complete(&self, cache: &Cache, options: &FetchOptions) -> Result<CachedVersion> {
        let limit = RateLimit::new(options.max_bytes_per_sec);
        let fills: Vec<_> = self
            .files
            .iter()
            .map(|f| {
                let (f, limit, n) = (Arc::clone(f), limit.clone(), options.range_concurrency);
                on_fill_runtime(f.fill_rest(n, limit))
            })
            .collect();
        futures_util::stream::iter(fills)
            .buffer_unordered(options.concurrency.max(1))
            .try_collect::<()>()
            .await?;
        for (f, m) in self
            .files
            .iter()
            .zip(&self.manifest.files[self.held.clone()])
        {
            let expected = (
                m.bytes,
                parse_xxh3(&m.xxh3).expect("checked when the manifest was parsed"),
            );
            let (f, open) = (Arc::clone(f), options.open.clone());
            let target = self.dir.join(&m.name);
            let partial = self.dir.join(format!(".{}.partial", m.name));
            blocking(move || -> Result<()> {
                let path = &f.path;
                if !path.exists() && target.exists() {
                    // Checked and renamed by an earlier call that failed after it.
                    return Ok(());
                }
                f.file.sync_all().map_err(|e| Error::io("fsync", path, e))?;
                let mut reader = File::open(path).map_err(|e| Error::io("open", path, e))?;
                let found = crate::files::hash_reader(&mut reader, xxhash_rust::xxh3::Xxh3::new())
                    .map_err(|e| Error::io("read", path, e))?;
                if found != expected {
                    return Err(Error::corrupt(
                        format!("lazily opened {}", f.what),
                        format!(
                            "{} bytes with XXH3 {:016x}, where the manifest says {} bytes with \
                             {:016x}",
                            found.0, found.1, expected.0, expected.1
                        ),
                    ));
                }
                open(path)
                    .and_then(|s| s.verify().map_err(Into::into))
                    .map_err(|source| Error::Corrupt {
                        what: format!("lazily opened {}", f.what),
                        detail: "not a valid snapshot".into(),
                        source: Some(source),
                    })?;
                let mut permissions = std::fs::metadata(path)
                    .map_err(|e| Error::io("stat", path, e))?
                    .permissions();
                permissions.set_readonly(true);
                std::fs::set_permissions(path, permissions)
                    .map_err(|e| Error::io("make read-only", path, e))?;
                std::fs::rename(path, &target).map_err(|e| Error::io("rename", path, e))?;
                // A download of an earlier run is not resumed now.
                remove_if_exists(&partial)?;
                sync_dir(target.parent().expect("a file in a directory"))
            })
            .await?;
        }
        let body = serde_json::to_vec_pretty(&self.manifest).expect("serializable");
        let (d, m) = (self.dir.clone(), self.dir.join(MANIFEST));
        blocking(move || write_durably(&d, &m, &body)).await?;
        let mut transfer = Transfer {
            downloaded: self.take_downloaded(),
            ..Transfer::default()
        };
        for f in &self.files {
            transfer.range_reads += f.range_reads.load(Ordering::Relaxed);
        }
        let (c, d, v, shards) = (
            cache.clone(),
            self.dataset.clone(),
            self.version.clone(),
            options.shards,
        );
        let cached = blocking(move || c.get_held(&d, &v, shards.as_ref())).await?;
        let mut cached = cached.ok_or_else(|| {
            Error::corrupt(
                format!("lazily opened {}/{}", self.dataset, self.version),
                "complete, but not found in the cache",
            )
        })?;
        cached.transfer = transfer;
        Ok(cached)
    }
}

impl Store {
    /// Opens `version` of `dataset` in `cache` before its files are there: for each file held
    /// (see [`FetchOptions::shards`]), reads its footer and everything after its data region
    /// by range ([`FetchOptions::range_concurrency`] reads at a time) into a file of its full
    /// size, `.<file>.lazy`. The files then open as snapshots
    /// ([`snapkv_format::Snapshot::open_filling`]) whose blocks are read from storage when a
    /// lookup needs them, each lookup waiting at most `timeout` for its block; call
    /// [`LazyVersion::complete`] to fill in the rest. A lazy file left by an earlier run is
    /// started over.
    pub async fn open_lazy(
        &self,
        dataset: &str,
        version: &str,
        cache: &Cache,
        options: &FetchOptions,
        timeout: Duration,
    ) -> Result<LazyVersion> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let manifest = self.manifest(dataset, version).await?;
        let held = held_files(&manifest, options.shards.as_ref())?;
        let dir = cache.version_dir(dataset, version);
        {
            let dir = dir.clone();
            blocking(move || {
                remove_if_exists(&dir.join(MANIFEST))?;
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", dir, e))
            })
            .await?;
        }
        // Reads that lookups wait for must not need the caller's runtime (see
        // `fill_runtime`): a client of their own, made there.
        let store = {
            let s = self.clone();
            on_fill_runtime(async move { s.reconnected() }).await?
        };
        let mut files = Vec::with_capacity(held.len());
        for m in &manifest.files[held.clone()] {
            let open = OpenFile {
                store: store.clone(),
                what: format!("{version}/{}", m.name),
                object: paths.file(version, &m.name),
                path: dir.join(format!(".{}.lazy", m.name)),
                len: m.bytes,
                timeout,
                concurrency: options.range_concurrency,
            };
            files.push(on_fill_runtime(open.run()).await?);
        }
        Ok(LazyVersion {
            dataset: dataset.to_owned(),
            version: version.to_owned(),
            dir,
            manifest,
            held,
            files,
            reported: AtomicU64::new(0),
        })
    }
}

/// The opening of one file of a lazy version.
struct OpenFile {
    store: Store,
    what: String,
    object: ObjectPath,
    path: PathBuf,
    len: u64,
    timeout: Duration,
    concurrency: usize,
}

impl OpenFile {
    async fn run(self) -> Result<Arc<Filling>> {
        let OpenFile {
            store,
            what,
            object,
            path,
            len,
            timeout,
            concurrency,
        } = self;
        let downloaded = AtomicU64::new(0);
        let range_reads = AtomicU64::new(0);
        let read = |range: Range<u64>| {
            let (store, object, downloaded, range_reads) =
                (&store, &object, &downloaded, &range_reads);
            async move {
                let bytes = store.get_exact(object, range.clone()).await?;
                downloaded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                range_reads.fetch_add(1, Ordering::Relaxed);
                Ok::<(u64, Bytes), Error>((range.start, bytes))
            }
        };
        let not_snapshot = |source: snapkv_format::Error| Error::Corrupt {
            what: format!("stored object of {what}"),
            detail: "its end is not a snapshot's".into(),
            source: Some(Box::new(source)),
        };
        let (_, end) = read(len.saturating_sub(TAIL_LEN)..len).await?;
        let tail = Tail::parse(&end, len).map_err(not_snapshot)?;
        let sections = tail.sections_range();
        if sections.end - sections.start > MAX_SECTIONS {
            return Err(Error::Refused {
                reason: format!(
                    "{what}: {} bytes of index sections, over the {} a lazy open reads before \
                     it serves",
                    sections.end - sections.start,
                    MAX_SECTIONS
                ),
            });
        }
        let file = {
            let (path, header) = (path.clone(), tail.header());
            blocking(move || -> Result<File> {
                let io = |action, e| Error::io(action, &path, e);
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .read(true)
                    .write(true)
                    .open(&path)
                    .map_err(|e| io("create", e))?;
                f.set_len(len).map_err(|e| io("extend", e))?;
                f.write_all_at(&header, 0).map_err(|e| io("write", e))?;
                Ok(f)
            })
            .await?
        };
        let file = Arc::new(file);
        let pieces: Vec<Range<u64>> = (0..(sections.end - sections.start).div_ceil(PIECE))
            .map(|i| {
                let start = sections.start + i * PIECE;
                start..sections.end.min(start + PIECE)
            })
            .collect();
        let writes: Vec<_> = pieces
            .into_iter()
            .map(|r| {
                let (file, path) = (Arc::clone(&file), path.clone());
                let read = &read;
                async move {
                    let (at, bytes) = read(r).await?;
                    blocking(move || {
                        file.write_all_at(&bytes, at)
                            .map_err(|e| Error::io("write", &path, e))
                    })
                    .await
                }
            })
            .collect();
        futures_util::stream::iter(writes)
            .buffer_unordered(concurrency.max(1))
            .try_collect::<()>()
            .await?;
        let table = {
            let (file, path, range) = (Arc::clone(&file), path.clone(), tail.block_table_range());
            blocking(move || -> Result<Vec<u8>> {
                let mut table = vec![0u8; (range.end - range.start) as usize];
                file.read_exact_at(&mut table, range.start)
                    .map_err(|e| Error::io("read", &path, e))?;
                Ok(table)
            })
            .await?
        };
        let blocks = tail.blocks(&table).map_err(not_snapshot)?;
        let words = blocks.len().div_ceil(64);
        Ok(Arc::new_cyclic(|this| Filling {
            what,
            path,
            file,
            missing: AtomicU64::new(blocks.len() as u64),
            present: (0..words).map(|_| AtomicU64::new(0)).collect(),
            blocks,
            state: Mutex::new(Asked::default()),
            changed: Condvar::new(),
            reads: tokio::sync::Semaphore::new(LOOKUP_READS),
            notify: tokio::sync::Notify::new(),
            store,
            object,
            timeout,
            downloaded,
            range_reads,
            this: this.clone(),
        }))
    }
}
