//! Datasets and the snapshot each one serves, swapped atomically.

use crate::time::rfc3339;
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use prometheus_client::metrics::counter::Counter;
use snapkv_format::{OpenOptions, Shards, Snapshot, ValueEncoding};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One loaded, verified snapshot version of a dataset: one file, or the range shards of a
/// sharded version, which load and swap together.
pub(crate) struct Loaded {
    pub snapshot: Shards,
    pub version: String,
    pub version_header: HeaderValue,
    pub content_type: HeaderValue,
    pub json: bool,
    pub path: PathBuf,
    pub file_bytes: u64,
    /// Blocks in the file (counted once at load: the dataset info must not walk the block
    /// table per request).
    pub block_count: u64,
    /// When the snapshot was built: its metadata's `created_at`, else the time it was published
    /// (store sources) or the file's modification time (file sources). Always set, so the
    /// build age metric never disappears.
    pub built_at: SystemTime,
    /// When the version was published (store sources: its manifest's `created_at`), or the
    /// file's modification time (file sources).
    pub published_at: SystemTime,
    pub loaded_at: SystemTime,
    /// The files of a version opened lazily ([`Loaded::open_lazy`]), by held shard, whose
    /// blocks are still arriving; empty for a version whose files are all in place.
    pub filling: Vec<Arc<snapkv_store::Filling>>,
    /// Versions the server manages (downloaded into its cache dir) are removed once no request,
    /// value or slot holds them any more; files named by the user are never removed.
    release: Option<CachedRelease>,
    released: AtomicBool,
}

/// How much of a file is read when it is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Every byte checked (the snapshot's full verification): a file not verified before.
    Verify,
    /// Verified when it was fetched: read once, to bring it into the page cache before the
    /// first request (lookups then rarely fault on the async workers).
    Warm,
    /// Verified when it was fetched, and not expected to serve soon (a previous version held at
    /// start-up): its pages come in as requests touch them.
    Open,
}

/// Where the opened files of a `Loaded` come from, and what it holds beside them.
struct Placed {
    path: PathBuf,
    file_bytes: u64,
    splits: Option<Vec<bytes::Bytes>>,
    first: usize,
    fallback: Fallback,
    release: Option<CachedRelease>,
    counting: Option<Counting>,
    filling: Vec<Arc<snapkv_store::Filling>>,
}

/// What a snapshot's metadata may leave out, and where the server takes it from instead.
pub(crate) struct Fallback {
    /// The version label: the store's version name, or the file's modification time.
    pub version: String,
    /// The build time: the version's publish time, or the file's modification time.
    pub built_at: SystemTime,
    /// The publish time, or the file's modification time.
    pub published_at: SystemTime,
}

/// A cached version to remove from the cache directory when released.
pub(crate) struct CachedRelease {
    pub cache: snapkv_store::Cache,
    pub dataset: String,
    pub version: String,
    /// How many `Loaded` of each of the dataset's cached versions exist: a version loaded
    /// again (a rollback to it) while an older `Loaded` of it is still held must not lose its
    /// directory when that older one goes.
    pub live: LiveVersions,
}

/// Counts of loaded versions of one dataset's cache entries, by version.
pub(crate) type LiveVersions = Arc<Mutex<std::collections::HashMap<String, usize>>>;

/// One count of a cache entry in [`LiveVersions`], taken back when dropped unless kept.
struct Counting {
    live: LiveVersions,
    version: String,
    keep: bool,
}

impl Counting {
    fn new(live: &LiveVersions, version: &str) -> Counting {
        *live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(version.to_owned())
            .or_default() += 1;
        Counting {
            live: Arc::clone(live),
            version: version.to_owned(),
            keep: false,
        }
    }
}

impl Drop for Counting {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = live.get_mut(&self.version) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                live.remove(&self.version);
            }
        }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let Some(r) = self.release.take() else { return };
        let still_loaded = {
            let mut live = r.live.lock().unwrap_or_else(|e| e.into_inner());
            let n = live.get_mut(&r.version).map_or(0, |n| {
                *n = n.saturating_sub(1);
                *n
            });
            if n == 0 {
                live.remove(&r.version);
            }
            n > 0
        };
        if still_loaded || !self.released.load(Ordering::Acquire) {
            return;
        }
        // Unlinking a mapped file is safe: the mapping keeps the inode until it goes. Removing
        // a multi-GB version is blocking file-system work, and the last holder is often a
        // request on an async worker: it runs on the blocking pool when there is a runtime.
        // Failure only leaves a directory for the next start-up's clean-up.
        let remove = move || {
            // Loaded again meanwhile (a rollback to it): its directory stays. The removal runs
            // under the lock, so a load of this version counted later finds no complete files.
            let live = r.live.lock().unwrap_or_else(|e| e.into_inner());
            if live.get(&r.version).is_some_and(|n| *n > 0) {
                return;
            }
            if let Err(e) = r.cache.remove(&r.dataset, &r.version) {
                tracing::warn!(dataset = %r.dataset, version = %r.version, error = %e, "cannot remove an old version");
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

impl Loaded {
    /// [`Loaded::open_shards`] of one file.
    pub fn open(
        path: &Path,
        options: &OpenOptions,
        fallback: Fallback,
        release: Option<CachedRelease>,
        check: Check,
    ) -> Result<Loaded, crate::OpenError> {
        Loaded::open_shards(
            &[path.to_owned()],
            None,
            0,
            options,
            fallback,
            release,
            check,
        )
    }

    /// Maps, opens and fully verifies snapshot files: one, or the shards of a sharded version
    /// in shard order with their split keys (checked against the shards' key ranges): all of
    /// them, or a run of them from shard number `first`. Each file is opened with `options`,
    /// with an equal part of their block cache bound. Blocking: run it off the async workers.
    /// Verification reads every byte, which also brings the file into the page cache before
    /// the first request (lookups then rarely fault on the async workers).
    ///
    /// `release` names the cache entry to remove once this version is replaced and no longer
    /// held. `check` says how much of the files is read.
    pub fn open_shards(
        paths: &[PathBuf],
        splits: Option<Vec<bytes::Bytes>>,
        first: usize,
        options: &OpenOptions,
        fallback: Fallback,
        release: Option<CachedRelease>,
        check: Check,
    ) -> Result<Loaded, crate::OpenError> {
        // Counted as loaded before its files are opened: a removal of this cache entry (an
        // older `Loaded` of it let go) that comes later keeps the directory, and one that came
        // first leaves no complete files to open.
        let counting = release.as_ref().map(|r| Counting::new(&r.live, &r.version));
        let mut options = options.clone();
        // The dataset's block cache bound, shared out between its shards.
        options.cache_bytes /= paths.len().max(1);
        let mut opened = Vec::with_capacity(paths.len());
        let mut file_bytes = 0;
        for path in paths {
            let snapshot = crate::open_snapshot(path, &options)?;
            match check {
                Check::Warm => snapshot.warm(),
                Check::Open => {}
                Check::Verify => {
                    snapshot
                        .verify()
                        .map_err(|source| crate::OpenError::Format {
                            path: path.to_owned(),
                            source,
                        })?;
                }
            }
            file_bytes += std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            opened.push(snapshot);
        }
        let path = paths.first().cloned().unwrap_or_default();
        Loaded::assemble(
            opened,
            Placed {
                path,
                file_bytes,
                splits,
                first,
                fallback,
                release,
                counting,
                filling: Vec::new(),
            },
        )
    }

    /// Opens the files of a version opened lazily ([`snapkv_store::Store::open_lazy`]): they
    /// answer while their blocks arrive. Not a cache entry this `Loaded` removes: the version
    /// is loaded again once complete, and that `Loaded` manages it.
    pub fn open_lazy(
        lazy: &snapkv_store::LazyVersion,
        splits: Option<Vec<bytes::Bytes>>,
        options: &OpenOptions,
        fallback: Fallback,
    ) -> Result<Loaded, crate::OpenError> {
        let files = lazy.files();
        let mut options = options.clone();
        options.cache_bytes /= files.len().max(1);
        let mut opened = Vec::with_capacity(files.len());
        let mut file_bytes = 0;
        for (f, m) in files.iter().zip(&lazy.manifest.files[lazy.held.clone()]) {
            opened.push(crate::open_filling(f, &options)?);
            file_bytes += m.bytes;
        }
        Loaded::assemble(
            opened,
            Placed {
                path: files
                    .first()
                    .map(|f| f.path().to_owned())
                    .unwrap_or_default(),
                file_bytes,
                splits,
                first: lazy.held.start,
                fallback,
                release: None,
                counting: None,
                filling: files.to_vec(),
            },
        )
    }

    /// A `Loaded` of opened snapshot files.
    fn assemble(mut opened: Vec<Snapshot>, placed: Placed) -> Result<Loaded, crate::OpenError> {
        let Placed {
            path,
            file_bytes,
            splits,
            first,
            fallback,
            release,
            mut counting,
            filling,
        } = placed;
        let snapshot = match splits {
            None if opened.len() == 1 => Shards::single(opened.remove(0)),
            splits => {
                Shards::subset(first, opened, splits.unwrap_or_default()).map_err(|source| {
                    crate::OpenError::Shards {
                        path: path.clone(),
                        source,
                    }
                })?
            }
        };
        let meta = snapshot.shards()[0].metadata();
        let version = meta
            .version
            .clone()
            .unwrap_or_else(|| fallback.version.clone());
        let built_at = meta
            .created_at
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .unwrap_or(fallback.built_at);
        let block_count = snapshot.shards().iter().map(Snapshot::block_count).sum();
        let json = meta.value_encoding == ValueEncoding::Json;
        let content_type = meta.content_type.clone().unwrap_or_else(|| {
            if json {
                "application/json"
            } else {
                "application/octet-stream"
            }
            .to_owned()
        });
        let header = |s: &str, default: &'static str| {
            HeaderValue::from_str(s).unwrap_or(HeaderValue::from_static(default))
        };
        if let Some(c) = &mut counting {
            // The count now belongs to the `Loaded`, whose `Drop` takes it back.
            c.keep = true;
        }
        Ok(Loaded {
            version_header: header(&version, "unknown"),
            content_type: header(&content_type, "application/octet-stream"),
            version,
            json,
            path,
            file_bytes,
            block_count,
            built_at,
            published_at: fallback.published_at,
            loaded_at: SystemTime::now(),
            snapshot,
            filling,
            release,
            released: AtomicBool::new(false),
        })
    }

    /// Waits, without blocking the thread, for the bytes a lookup of `key` reads when they
    /// are still arriving (a version opened lazily); at once otherwise. An
    /// [`snapkv_format::Error::Unavailable`] when storage does not deliver them in time.
    pub async fn ready_for(&self, key: &[u8]) -> Result<(), snapkv_format::Error> {
        if self.filling.is_empty() {
            return Ok(());
        }
        let shard = self.snapshot.shard_of(key);
        let held = self.snapshot.held();
        let (Some(snapshot), Some(filling)) = (
            self.snapshot.shard(shard),
            self.filling.get(shard.wrapping_sub(held.start)),
        ) else {
            return Ok(());
        };
        match snapshot.bytes_for(key)? {
            Some(range) => filling.ready(range).await,
            None => Ok(()),
        }
    }

    /// The cache entry (the store's version name) this version was loaded from, if the server
    /// manages it.
    pub fn cache_entry(&self) -> Option<&str> {
        self.release.as_ref().map(|r| r.version.as_str())
    }

    /// Removes the version from the cache directory once the last holder lets go.
    pub fn release(&self) {
        self.released.store(true, Ordering::Release);
    }
}

/// What a store dataset's source says, as last read (`CURRENT`, and `STAGED` for readers that
/// preview staged versions), for the freshness metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Upstream {
    /// The version `CURRENT` names, when it was published, and when this reader first saw
    /// `CURRENT` name it.
    pub current: Option<(String, SystemTime, SystemTime)>,
    /// The staged version newer than `CURRENT`, and when it was staged.
    pub staged: Option<(String, SystemTime)>,
}

/// The outcome of the last sync attempts of a dataset.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncStatus {
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub failures: u64,
    /// Failures since the last success.
    pub streak: u64,
}

/// The cache directory's space when a store dataset last fetched a version, for
/// `/v1/datasets/{ds}`.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheSpace {
    /// Bytes of the files under the cache directory (`None`: could not be measured).
    pub used: Option<u64>,
    /// Bytes free on its file system (`None`: could not be measured).
    pub free: Option<u64>,
    /// The size limit on the cache directory (`serve --cache-dir-limit`).
    pub limit: Option<u64>,
    /// The last time the previous version was released to make room: that version, the
    /// version that needed the room, and when.
    pub released: Option<(String, String, SystemTime)>,
}

/// A served dataset: the current version, the previous one (for instant local rollback) and
/// the sync status.
pub(crate) struct Dataset {
    pub name: String,
    pub source: String,
    pub current: ArcSwapOption<Loaded>,
    pub previous: ArcSwapOption<Loaded>,
    /// A staged version downloaded for preview (`serve --preview-staged`): answers only
    /// requests pinned to it.
    pub staged: ArcSwapOption<Loaded>,
    pub status: Mutex<SyncStatus>,
    /// What the source says (store sources).
    pub upstream: Mutex<Upstream>,
    /// Key lookups that found a value (the `lookups` metric's series of this dataset).
    pub hits: Counter,
    /// Key lookups that found nothing.
    pub misses: Counter,
    /// Bytes its syncs read from storage (the `sync_bytes_downloaded` metric's series).
    pub sync_downloaded: Counter,
    /// Bytes its syncs copied from versions in the cache.
    pub sync_reused: Counter,
    /// Bytes of index sections its syncs rebuilt from blocks.
    pub sync_rebuilt: Counter,
    /// The cache-dir versions loaded now (store sources).
    pub live: LiveVersions,
    /// The same, for the staged preview's own cache directory.
    pub staged_live: LiveVersions,
    /// The store the dataset follows (store sources).
    pub store: Option<snapkv_store::Store>,
    /// The last history answer: when it was read, for how many entries, the body.
    pub history: tokio::sync::Mutex<Option<(std::time::Instant, usize, bytes::Bytes)>>,
    /// The cache directory's space (store sources, once a version was fetched).
    pub cache_space: Mutex<Option<CacheSpace>>,
}

impl Dataset {
    /// A dataset with nothing loaded yet, counting its lookups and syncs in `counters`.
    pub fn new(
        name: String,
        source: String,
        store: Option<snapkv_store::Store>,
        counters: crate::metrics::DatasetCounters,
    ) -> Dataset {
        Dataset {
            store,
            history: tokio::sync::Mutex::new(None),
            cache_space: Mutex::new(None),
            hits: counters.hits,
            misses: counters.misses,
            sync_downloaded: counters.sync_downloaded,
            sync_reused: counters.sync_reused,
            sync_rebuilt: counters.sync_rebuilt,
            name,
            source,
            current: ArcSwapOption::empty(),
            previous: ArcSwapOption::empty(),
            staged: ArcSwapOption::empty(),
            status: Mutex::new(SyncStatus::default()),
            upstream: Mutex::new(Upstream::default()),
            live: LiveVersions::default(),
            staged_live: LiveVersions::default(),
        }
    }

    /// Holds `loaded` as the staged version for preview (`None`: holds none), releasing the
    /// one held before.
    pub fn set_staged(&self, loaded: Option<Loaded>) {
        let version = loaded.as_ref().map(|l| l.version.clone());
        let old = self.staged.swap(loaded.map(Arc::new));
        match (&old, &version) {
            (_, Some(v)) => {
                tracing::info!(dataset = %self.name, version = %v, "holding a staged version for preview")
            }
            (Some(o), None) => {
                tracing::info!(dataset = %self.name, version = %o.version, "no longer holding the staged version")
            }
            (None, None) => {}
        }
        if let Some(old) = old {
            old.release();
        }
    }

    /// Serves `loaded` from now on. Requests that already hold the old version finish on it;
    /// the old version becomes the previous one, and the one before that is released (its
    /// file removed when managed and no longer held).
    pub fn swap(&self, loaded: Loaded) {
        let version = loaded.version.clone();
        let old = self.current.swap(Some(Arc::new(loaded)));
        if let Some(old) = old {
            if !old.filling.is_empty() {
                // Lazily opened files are not held as the previous version: replaced by
                // themselves complete, or by a newer version before they were.
                if old.version == version {
                    tracing::info!(dataset = %self.name, %version, "every block in place: serving the complete files");
                } else {
                    tracing::info!(dataset = %self.name, from = %old.version, to = %version, "swapped before the lazily opened version was complete");
                }
                return;
            }
            tracing::info!(dataset = %self.name, from = %old.version, to = %version, "swapped");
            if let Some(evicted) = self.previous.swap(Some(old)) {
                if !self.holds_path(&evicted.path) {
                    evicted.release();
                }
            }
        } else {
            tracing::info!(dataset = %self.name, %version, "loaded");
        }
    }

    /// Stops serving `version` if the version served is that one opened lazily (its files
    /// failed their checks once complete): the dataset serves nothing until another version
    /// is loaded.
    pub fn stop_serving_filling(&self, version: &str) {
        let current = self.current.load();
        if current
            .as_ref()
            .is_some_and(|c| !c.filling.is_empty() && c.version == version)
        {
            self.current.store(None);
        }
    }

    /// Holds `loaded` as the previous version if none is held (at start-up, the version
    /// served before the one the last run served); otherwise releases it.
    pub fn hold_previous(&self, loaded: Loaded) {
        // Only the dataset's sync task sets `current` and `previous`: nothing races this.
        if self.previous.load().is_none() && !self.holds_path(&loaded.path) {
            tracing::info!(dataset = %self.name, version = %loaded.version, "holding the previous version");
            self.previous.store(Some(Arc::new(loaded)));
        } else {
            loaded.release();
        }
    }

    /// Stops holding the previous version, to make room for a new one: its files are
    /// removed once no request holds it. Returns its cache entry when one was held and will
    /// go (not when it is also the current version, or not in the cache directory).
    pub fn release_previous(&self) -> Option<String> {
        let old = self.previous.swap(None)?;
        if self.holds_path(&old.path) {
            return None;
        }
        old.release();
        old.cache_entry().map(str::to_owned)
    }

    /// The cache entry of the previous version, if one is held there that
    /// [`Dataset::release_previous`] would release.
    pub fn previous_entry(&self) -> Option<String> {
        self.previous
            .load()
            .as_ref()
            .filter(|p| {
                self.current
                    .load()
                    .as_ref()
                    .is_none_or(|c| c.path != p.path)
            })
            .and_then(|p| p.cache_entry().map(str::to_owned))
    }

    /// The cache directory's space as last recorded (nothing measured before the first).
    pub fn cache_space(&self) -> CacheSpace {
        self.cache_space
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Changes the record of the cache directory's space.
    pub fn update_cache_space(&self, change: impl FnOnce(&mut CacheSpace)) {
        let mut space = self.cache_space.lock().unwrap_or_else(|e| e.into_inner());
        change(space.get_or_insert_with(CacheSpace::default));
    }

    /// The held version labelled `version`: current, previous or staged.
    pub fn held(&self, version: &str) -> Option<Arc<Loaded>> {
        [&self.current, &self.previous, &self.staged]
            .into_iter()
            .find_map(|slot| slot.load_full().filter(|l| l.version == version))
    }

    /// The versions held, each with its role.
    pub fn held_versions(&self) -> Vec<(&'static str, String)> {
        [
            ("current", &self.current),
            ("previous", &self.previous),
            ("staged", &self.staged),
        ]
        .into_iter()
        .filter_map(|(role, slot)| slot.load().as_ref().map(|l| (role, l.version.clone())))
        .collect()
    }

    fn holds_path(&self, path: &Path) -> bool {
        let same =
            |slot: &ArcSwapOption<Loaded>| slot.load().as_ref().is_some_and(|l| l.path == path);
        same(&self.current) || same(&self.previous)
    }

    pub fn record(&self, result: Result<(), String>) {
        let mut s = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let now = SystemTime::now();
        s.last_attempt = Some(now);
        match result {
            Ok(()) => {
                if s.streak > 0 {
                    tracing::info!(dataset = %self.name, failures = s.streak, "sync recovered");
                }
                s.last_success = Some(now);
                s.last_error = None;
                s.streak = 0;
            }
            Err(e) => {
                s.streak += 1;
                // A store that stays down would otherwise log once per poll: a new error is
                // logged at once, a repeated one after 1, 2, 4, 8, ... failures in a row.
                if s.last_error.as_deref() != Some(e.as_str()) || s.streak.is_power_of_two() {
                    match self.current.load().as_ref() {
                        Some(c) => tracing::warn!(
                            dataset = %self.name,
                            error = %e,
                            failures = s.streak,
                            serving = %c.version,
                            "sync failed; still serving the version loaded before"
                        ),
                        None => tracing::warn!(
                            dataset = %self.name,
                            error = %e,
                            failures = s.streak,
                            "sync failed; nothing to serve yet, not ready"
                        ),
                    }
                }
                s.last_error = Some(e);
                s.failures += 1;
            }
        }
    }

    /// Records that `CURRENT` names `version`, published at `published_at`.
    pub fn saw_current(&self, version: &str, published_at: SystemTime) {
        let mut u = self.upstream.lock().unwrap_or_else(|e| e.into_inner());
        if u.current.as_ref().is_none_or(|(v, ..)| v != version) {
            u.current = Some((version.to_owned(), published_at, SystemTime::now()));
        }
    }

    /// Records the staged version newer than `CURRENT` (`None`: there is none).
    pub fn saw_staged(&self, staged: Option<(String, SystemTime)>) {
        self.upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .staged = staged;
    }

    pub fn upstream(&self) -> Upstream {
        self.upstream
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The dataset's description for `/v1/datasets/{ds}`, with `current` as its version.
    pub fn info(&self, current: Option<Arc<Loaded>>) -> serde_json::Value {
        let previous = self.previous.load_full();
        let status = self.status();
        let t = |t: Option<SystemTime>| t.map(rfc3339);
        let mut v = serde_json::json!({
            "name": self.name,
            "source": self.source,
            "ready": current.is_some(),
            "previous_version": previous.as_ref().map(|p| p.version.clone()),
            "staged_version": self.staged.load().as_ref().map(|s| s.version.clone()),
            "sync": {
                "last_attempt": t(status.last_attempt),
                "last_success": t(status.last_success),
                "last_error": status.last_error,
                "failures": status.failures,
            },
        });
        if let Some(space) = self
            .cache_space
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            v["cache"] = serde_json::json!({
                "bytes_used": space.used,
                "bytes_free": space.free,
                "limit_bytes": space.limit,
                "previous_released": space.released.map(|(version, for_version, at)| serde_json::json!({
                    "version": version,
                    "for_version": for_version,
                    "at": rfc3339(at),
                })),
            });
        }
        if let Some(c) = current {
            let m = c.snapshot.shards()[0].metadata();
            v["version"] = c.version.clone().into();
            v["keys"] = c.snapshot.len().into();
            v["file"] = c.path.display().to_string().into();
            v["file_bytes"] = c.file_bytes.into();
            v["blocks"] = c.block_count.into();
            v["shards"] = c.snapshot.count().into();
            v["shards_held"] = c.snapshot.held().collect::<Vec<_>>().into();
            v["built_at"] = rfc3339(c.built_at).into();
            v["loaded_at"] = rfc3339(c.loaded_at).into();
            v["content_type"] = c.content_type.to_str().unwrap_or_default().into();
            v["metadata"] = serde_json::to_value(m).unwrap_or_default();
            if !c.filling.is_empty() {
                // Opened lazily: how many of its blocks are still in storage only.
                let missing: u64 = c.filling.iter().map(|f| f.blocks_missing()).sum();
                v["lazy"] = serde_json::json!({ "blocks_missing": missing });
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snapkv_format::{Metadata, SnapshotWriter, WriterOptions};
    use std::time::Duration;

    /// A released version in a cache directory: `(version dir, loaded)`.
    fn released(dir: &Path) -> (PathBuf, Loaded) {
        let (version_dir, loaded) = cached(dir, &LiveVersions::default());
        loaded.release();
        (version_dir, loaded)
    }

    /// Version v1 of dataset d in the cache at `dir`, loaded: `(version dir, loaded)`.
    fn cached(dir: &Path, live: &LiveVersions) -> (PathBuf, Loaded) {
        let version_dir = dir.join("d").join("v1");
        std::fs::create_dir_all(&version_dir).unwrap();
        let path = version_dir.join("d.snapkv");
        let mut w =
            SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default()).unwrap();
        w.insert(b"k", b"v").unwrap();
        if !path.exists() {
            // Never rewritten: a mapped file must not change.
            std::fs::write(&path, w.finish().unwrap().0).unwrap();
        }
        let release = CachedRelease {
            cache: snapkv_store::Cache::new(dir),
            dataset: "d".into(),
            version: "v1".into(),
            live: Arc::clone(live),
        };
        let fallback = Fallback {
            version: "v1".into(),
            built_at: SystemTime::now(),
            published_at: SystemTime::now(),
        };
        let mut options = OpenOptions::default();
        options.cache_bytes = 1 << 20;
        let loaded = Loaded::open(&path, &options, fallback, Some(release), Check::Verify).unwrap();
        (version_dir, loaded)
    }

    #[test]
    fn a_version_loaded_again_keeps_its_directory() {
        let dir = tempfile::tempdir().unwrap();
        let live = LiveVersions::default();
        let (version_dir, old) = cached(dir.path(), &live);
        // Rolled back to: the same cache entry is loaded again while the old one is held.
        let (_, again) = cached(dir.path(), &live);
        old.release();
        drop(old);
        assert!(version_dir.exists(), "removed while loaded again");
        again.release();
        drop(again);
        assert!(!version_dir.exists());
    }

    #[test]
    fn removal_of_a_released_version_runs_on_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let (version_dir, loaded) = released(dir.path());
        let rt = tokio::runtime::Builder::new_current_thread()
            .max_blocking_threads(1)
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            // The one blocking thread is busy: a removal queued behind it cannot have run yet.
            let (tx, rx) = std::sync::mpsc::channel::<()>();
            let busy = tokio::task::spawn_blocking(move || rx.recv());
            drop(loaded);
            assert!(
                version_dir.exists(),
                "the last holder (an async task) removed the version itself"
            );
            tx.send(()).unwrap();
            busy.await.unwrap().unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while version_dir.exists() {
                assert!(tokio::time::Instant::now() < deadline, "never removed");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }

    #[test]
    fn without_a_runtime_the_removal_is_immediate() {
        let dir = tempfile::tempdir().unwrap();
        let (version_dir, loaded) = released(dir.path());
        drop(loaded);
        assert!(!version_dir.exists());
    }
}
