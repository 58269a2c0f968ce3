//! Sync: watch each dataset's source, load new versions off the async workers, swap them in.
//!
//! Whatever fails, a dataset keeps serving what it has, and the failure stays visible (logs,
//! `/v1/datasets/{ds}`, `snapkv_sync_last_success`) until a good version replaces the bad one.

use crate::registry::{CachedRelease, Check, Dataset, Fallback, LiveVersions, Loaded};
use snapkv_format::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Where a dataset's snapshots come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Source {
    /// A local snapshot file, reloaded when the path is replaced by a new file.
    File {
        /// Dataset name.
        name: String,
        /// The snapshot file.
        path: PathBuf,
    },
    /// A dataset in a store: its `CURRENT` version is fetched into `cache`, verified, and
    /// served. On start, the newest complete version already in `cache` is served at once.
    Store {
        /// Dataset name (in the store, and as served).
        name: String,
        /// The store.
        store: snapkv_store::Store,
        /// The local cache directory.
        cache: snapkv_store::Cache,
    },
}

impl Source {
    pub(crate) fn name(&self) -> &str {
        match self {
            Source::File { name, .. } | Source::Store { name, .. } => name,
        }
    }

    pub(crate) fn describe(&self) -> String {
        match self {
            Source::File { path, .. } => format!("file:{}", path.display()),
            Source::Store { store, .. } => store.url().to_owned(),
        }
    }
}

/// How a dataset is followed: settings every source shares.
#[derive(Clone)]
pub(crate) struct Follow {
    pub interval: Duration,
    /// How versions are opened (the block cache bound is the whole dataset's).
    pub open: OpenOptions,
    pub preview_staged: bool,
    /// The shards of sharded store versions to hold (`None`: all).
    pub shards: Option<snapkv_format::Selection>,
    /// Most bytes the cache directory may hold (`None`: what its disk has).
    pub cache_limit: Option<u64>,
    /// Fetch new versions by delta (the blocks a cached version holds are copied).
    pub delta: bool,
    /// Reusable bytes read anyway between two missing stretches of a delta fetch.
    pub delta_gap: u64,
    /// Open a version lazily when the dataset serves nothing yet (`--ready-when opened`),
    /// a lookup waiting at most this long for a block still in storage.
    pub lazy: Option<Duration>,
    /// Bandwidth bound of downloads, in bytes per second.
    pub max_download_rate: Option<u64>,
}

/// Follows `source` for dataset `d` until `stop` changes.
pub(crate) async fn follow(
    source: Source,
    d: Arc<Dataset>,
    how: Follow,
    stop: watch::Receiver<bool>,
) {
    match source {
        Source::File { path, .. } => watch_file(d, path, how.interval, how.open, stop).await,
        Source::Store { store, cache, .. } => {
            let staged = how.preview_staged.then(|| StagedPreview::new(&cache));
            watch_store(d, store, cache, staged, how, stop).await
        }
    }
}

/// Fetch options for a reader: downloads verified through the mapping (not read into
/// memory), only the shards held, by delta unless turned off.
fn fetch_options(how: &Follow) -> snapkv_store::FetchOptions {
    let mut options = snapkv_store::FetchOptions::default();
    options.open = crate::mapped();
    options.shards = how.shards;
    options.delta = how.delta;
    options.delta_gap = how.delta_gap;
    options.max_bytes_per_sec = how.max_download_rate;
    options
}

/// The directory under a cache directory where staged versions are downloaded for preview:
/// apart from the served versions (a reader starts from the newest version in its cache, which
/// must never be a staged one), and not a dataset name (those start with a letter or digit).
const STAGED_DIR: &str = ".staged";

/// Following `STAGED` of a dataset, for `serve --preview-staged`.
struct StagedPreview {
    cache: snapkv_store::Cache,
    /// The cache directory it is under: its room is shared with the served versions.
    main: snapkv_store::Cache,
    /// The tag of the last `STAGED` read.
    tag: Option<snapkv_store::Tag>,
    /// The version it names, and when it was staged.
    named: Option<(String, SystemTime)>,
}

impl StagedPreview {
    fn new(cache: &snapkv_store::Cache) -> StagedPreview {
        StagedPreview {
            cache: snapkv_store::Cache::new(cache.dir().join(STAGED_DIR)),
            main: cache.clone(),
            tag: None,
            named: None,
        }
    }

    /// Removes what an earlier run downloaded: a staged version is held only once `STAGED`
    /// was read again.
    async fn clear(&self, name: &str) {
        let dir = self.cache.dir().join(name);
        let _ = tokio::task::spawn_blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot remove old staged downloads")
            }
            _ => {}
        })
        .await;
    }

    /// Reads `STAGED` and holds the version it names if it is newer than `served` (fetched and
    /// verified like a served version), or holds none.
    async fn follow(
        &mut self,
        store: &snapkv_store::Store,
        d: &Dataset,
        served: Option<&str>,
        how: &Follow,
    ) -> Result<(), String> {
        use snapkv_store::StagedPoll;
        match store.poll_staged(&d.name, self.tag.as_ref()).await {
            Ok(StagedPoll::Unchanged) => {}
            Ok(StagedPoll::Missing) => (self.tag, self.named) = (None, None),
            Ok(StagedPoll::Changed(s, tag)) => {
                let at = crate::time::parse_rfc3339(&s.staged_at).unwrap_or_else(SystemTime::now);
                (self.tag, self.named) = (Some(tag), Some((s.version, at)));
            }
            Err(e) => return Err(format!("staged preview: {}", error_chain(&e))),
        }
        let newer = self
            .named
            .clone()
            .filter(|(v, _)| served.is_none_or(|c| v.as_str() > c));
        d.saw_staged(newer.clone());
        let wanted = newer.as_ref().map(|(v, _)| v.as_str());
        let held = d.staged.load().as_ref().map(|l| l.version.clone());
        match wanted {
            None if held.is_some() => d.set_staged(None),
            None => {}
            Some(v) if held.as_deref() == Some(v) => {}
            Some(v) => {
                // `STAGED` moved on: the preview held before is no longer wanted, and its
                // room goes first.
                let before = d
                    .staged
                    .load_full()
                    .and_then(|l| l.cache_entry().map(str::to_owned));
                if let Some(before) = before {
                    d.set_staged(None);
                    wait_gone(self.cache.dir().join(&d.name).join(before)).await;
                }
                // A preview never takes the room of the served versions: with too little
                // room it is not held (the previous version is not released for it).
                let manifest = store
                    .manifest(&d.name, v)
                    .await
                    .map_err(|e| format!("staged preview of {v}: {}", error_chain(&e)))?;
                let needed = missing_bytes(&self.cache, &d.name, v, &manifest, how).await;
                let room = measure_space(d, &self.main, how.cache_limit).await;
                if needed > room {
                    return Err(format!(
                        "staged preview of {v}: not held, for lack of room in the cache ({needed} \
                         bytes needed, {room} left); the served versions keep theirs"
                    ));
                }
                let cached = store
                    .fetch(&d.name, v, &self.cache, &fetch_options(how))
                    .await
                    .map_err(|e| format!("staged preview of {v}: {}", error_chain(&e)))?;
                let loaded = load_cached(
                    cached,
                    &self.cache,
                    &d.staged_live,
                    how.open.clone(),
                    Check::Warm,
                )
                .await
                .map_err(|e| format!("staged preview of {v}: {e}"))?;
                d.set_staged(Some(loaded));
            }
        }
        Ok(())
    }
}

/// What identifies the file at a path: a replaced file has a new inode, size or mtime.
type FileIdentity = (u64, u64, u64, SystemTime);

fn file_identity(path: &Path) -> std::io::Result<FileIdentity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    if !m.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok((m.dev(), m.ino(), m.len(), m.modified()?))
}

/// Why a file could not be loaded, and whether trying the same file again could succeed.
struct LoadFailure {
    message: String,
    /// The file itself is at fault (corrupt, built for another dataset): the same file fails
    /// again. Otherwise (an I/O error, no memory for the mapping) the next poll retries.
    lasting: bool,
}

/// Opens the file at `path` for dataset `name` (blocking): refused when it was built for
/// another dataset (the rule `publish` applies), checked before the full verification.
fn load_file(
    name: &str,
    path: &Path,
    id: &FileIdentity,
    open: &OpenOptions,
) -> Result<Loaded, LoadFailure> {
    let failure = |e: crate::OpenError| LoadFailure {
        lasting: matches!(e, crate::OpenError::Format { .. }),
        message: error_chain(&e),
    };
    let snapshot = crate::open_snapshot(path, &Default::default()).map_err(failure)?;
    if let Some(built_for) = snapshot.metadata().dataset.as_deref() {
        if built_for != name {
            return Err(LoadFailure {
                message: format!(
                    "{} was built for dataset {built_for:?}, not {name:?}: serve it as \
                     --file {built_for}={}, or rebuild it with --dataset {name}",
                    path.display(),
                    path.display()
                ),
                lasting: true,
            });
        }
    }
    drop(snapshot);
    // A version label for files without one in their metadata: their mtime.
    let mtime = id.3;
    let fallback = Fallback {
        version: format!(
            "mtime-{}",
            mtime
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs()
        ),
        built_at: mtime,
        published_at: mtime,
    };
    Loaded::open(path, open, fallback, None, Check::Verify).map_err(failure)
}

/// Loads the file at `path` and reloads it whenever the path points at a different file. A
/// file that cannot be loaded keeps its error recorded at every poll until another file
/// replaces it; a failure that is not the file's fault is retried at the next poll.
async fn watch_file(
    d: Arc<Dataset>,
    path: PathBuf,
    interval: Duration,
    open: OpenOptions,
    mut stop: watch::Receiver<bool>,
) {
    // The file last loaded or refused for good, and the outcome.
    let mut last: Option<(FileIdentity, Result<(), String>)> = None;
    loop {
        let p = path.clone();
        let id = tokio::task::spawn_blocking(move || file_identity(&p)).await;
        let result = match id {
            Ok(Ok(id)) => match &last {
                Some((seen, outcome)) if *seen == id => outcome.clone(),
                _ => {
                    let (p, name, open) = (path.clone(), d.name.clone(), open.clone());
                    let loaded =
                        tokio::task::spawn_blocking(move || load_file(&name, &p, &id, &open))
                            .await
                            .unwrap_or_else(|e| {
                                Err(LoadFailure {
                                    message: format!("loading task failed: {e}"),
                                    lasting: false,
                                })
                            });
                    match loaded {
                        Ok(l) => {
                            d.swap(l);
                            last = Some((id, Ok(())));
                            Ok(())
                        }
                        Err(f) => {
                            if f.lasting {
                                last = Some((id, Err(f.message.clone())));
                            }
                            Err(f.message)
                        }
                    }
                }
            },
            Ok(Err(e)) => Err(format!("cannot read {}: {e}", path.display())),
            Err(e) => Err(format!("task failed: {e}")),
        };
        d.record(result);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// What a version's manifest says of how its files serve: the split keys of a sharded
/// version (`None`: one file), and the version label and times its snapshots' metadata may
/// leave out. An error for several files that are not the shards of one version.
fn layout_of(
    manifest: &snapkv_store::Manifest,
    version: &str,
) -> Result<(Option<Vec<bytes::Bytes>>, Fallback), String> {
    let files = &manifest.files;
    let splits = match &manifest.sharding {
        Some(sharding) => Some(
            sharding
                .split_key_bytes()
                .ok_or_else(|| format!("version {version} has bad split keys"))?
                .into_iter()
                .map(bytes::Bytes::from)
                .collect::<Vec<_>>(),
        ),
        None if files.len() == 1 => None,
        None => {
            return Err(format!(
                "version {version} has {} files that are not the shards of one sharded version \
                 (its manifest has no sharding): a served version is one snapshot file, or the \
                 shards of one (snapkv build --shards)",
                files.len()
            ))
        }
    };
    let published = crate::time::parse_rfc3339(&manifest.created_at);
    let fallback = Fallback {
        version: version.to_owned(),
        built_at: files[0]
            .built_at
            .as_deref()
            .and_then(crate::time::parse_rfc3339)
            .or(published)
            .unwrap_or_else(SystemTime::now),
        published_at: published.unwrap_or_else(SystemTime::now),
    };
    Ok((splits, fallback))
}

/// Opens a cached version off the async workers; it was verified when it was fetched (`check`
/// says whether it is read once to warm it).
async fn load_cached(
    cached: snapkv_store::CachedVersion,
    cache: &snapkv_store::Cache,
    live: &LiveVersions,
    open: OpenOptions,
    check: Check,
) -> Result<Loaded, String> {
    let (splits, fallback) = layout_of(&cached.manifest, &cached.version)?;
    let paths = cached.paths();
    let first = cached.held.start;
    let release = CachedRelease {
        cache: cache.clone(),
        dataset: cached.dataset.clone(),
        version: cached.version.clone(),
        live: Arc::clone(live),
    };
    tokio::task::spawn_blocking(move || {
        Loaded::open_shards(&paths, splits, first, &open, fallback, Some(release), check)
    })
    .await
    .map_err(|e| format!("loading task failed: {e}"))?
    .map_err(|e| error_chain(&e))
}

/// Says that nothing is published for `name`, and which datasets the store does have.
async fn missing(store: &snapkv_store::Store, name: &str) -> String {
    let there = store.datasets_there().await;
    format!(
        "nothing published for dataset {name:?} in {} ({there})",
        store.url()
    )
}

/// Serves the newest complete version in the cache at once (no storage needed), then follows
/// `CURRENT` in the store: each new version is fetched, verified, opened, warmed and swapped in.
/// Whatever fails, the dataset keeps serving what it has and tries again at the next poll.
async fn watch_store(
    d: Arc<Dataset>,
    store: snapkv_store::Store,
    cache: snapkv_store::Cache,
    mut staged: Option<StagedPreview>,
    how: Follow,
    mut stop: watch::Receiver<bool>,
) {
    let (interval, open) = (how.interval, how.open.clone());
    let name = d.name.clone();
    if let Some(s) = &staged {
        s.clear(&name).await;
    }
    // Serve at once what was served before the restart (recorded at every swap: after a
    // rollback that is not the newest version in the cache), else the newest complete version.
    // Of the other complete versions only the newest stays, as the previous one; incomplete
    // downloads stay until `CURRENT` says whether they are still wanted.
    let listed = {
        let (c, n, shards) = (cache.clone(), name.clone(), how.shards);
        tokio::task::spawn_blocking(move || {
            let mut held = c.versions_held(&n, shards.as_ref())?;
            let recorded = c.served(&n).ok().flatten();
            let chosen = held
                .iter()
                .position(|v| Some(&v.version) == recorded.as_ref())
                .or_else(|| held.len().checked_sub(1));
            let Some(chosen) = chosen.map(|i| held.remove(i)) else {
                return Ok::<_, snapkv_store::Error>(None);
            };
            let previous = held.pop();
            for old in held {
                let _ = c.remove(&n, &old.version);
            }
            Ok(Some((chosen, previous)))
        })
        .await
    };
    // The store's version names (the cache entries), not the labels inside the files.
    let mut served: Option<String> = None;
    if let Ok(Ok(Some((chosen, previous)))) = listed {
        let version = chosen.version.clone();
        match load_cached(chosen, &cache, &d.live, open.clone(), Check::Warm).await {
            Ok(l) => {
                tracing::info!(dataset = %name, %version, "serving the cached version");
                d.swap(l);
                record_served(&cache, &name, &version).await;
                served = Some(version);
            }
            Err(e) => d.record(Err(e)),
        }
        // The version kept as the previous one is held as such again (a rollback to it is
        // instant; a version that does not fit beside the next is released for room).
        if let Some(p) = previous {
            let version = p.version.clone();
            match load_cached(p, &cache, &d.live, open.clone(), Check::Open).await {
                Ok(l) => d.hold_previous(l),
                Err(e) => {
                    tracing::warn!(dataset = %name, %version, error = %e, "cannot load the previous version")
                }
            }
        }
    }
    let mut backoff: Option<Backoff> = None;
    // A version opened lazily and served while its files are filled in.
    let mut lazy: Option<snapkv_store::LazyVersion> = None;
    // A version whose lazy open did not complete for good (its files failed their checks, or
    // the disk filled): fetched as any other from then on.
    let mut not_lazily: Option<String> = None;
    // The version `CURRENT` named when abandoned downloads were last removed.
    let mut tidied: Option<String> = None;
    let mut tag: Option<snapkv_store::Tag> = None;
    loop {
        let result = match store.poll_current(&name, tag.as_ref()).await {
            Ok(snapkv_store::Poll::Unchanged) => Ok(()),
            Ok(snapkv_store::Poll::Missing) => Err(missing(&store, &name).await),
            Ok(snapkv_store::Poll::Changed(current)) => {
                let version = current.pointer.version.clone();
                // For the freshness metrics: when the version was published (the pointer's
                // time if the manifest cannot be read now; the fetch reports why).
                let manifest = store.manifest(&name, &version).await.ok();
                let published_at = match &manifest {
                    Some(m) => crate::time::parse_rfc3339(&m.created_at),
                    None => crate::time::parse_rfc3339(&current.pointer.updated_at),
                };
                d.saw_current(&version, published_at.unwrap_or_else(SystemTime::now));
                // Once per version named: no other download starts until `CURRENT` moves.
                if tidied.as_deref() != Some(version.as_str()) {
                    forget_incomplete(&cache, &name, &version, how.shards).await;
                    tidied = Some(version.clone());
                }
                if served.as_deref() == Some(version.as_str()) {
                    tag = Some(current.tag);
                    Ok(())
                } else if let Some(b) = backoff.as_ref().filter(|b| b.waits(&version)) {
                    // The same error as the attempt that failed: the log says it again
                    // only after 1, 2, 4, ... failures in a row.
                    Err(b.error.clone())
                } else {
                    if lazy.as_ref().is_some_and(|l| l.version != version) {
                        // `CURRENT` moved on before the lazily opened version was complete:
                        // it serves until the new one is in, and is filled no further.
                        lazy = None;
                    }
                    if lazy.is_none()
                        && how.lazy.is_some()
                        && d.current.load().is_none()
                        && not_lazily.as_deref() != Some(version.as_str())
                    {
                        lazy = open_lazily(&store, &d, &cache, &version, manifest.as_ref(), &how)
                            .await;
                    }
                    let fetched = match &lazy {
                        Some(l) => {
                            let (done, again) = complete_lazily(l, &d, &cache, &how).await;
                            if !again {
                                not_lazily = Some(version.clone());
                            }
                            if done.is_ok() || !again {
                                lazy = None;
                            }
                            done
                        }
                        None => {
                            fetch_with_room(&store, &d, &cache, &version, manifest.as_ref(), &how)
                                .await
                        }
                    };
                    match fetched {
                        Ok(l) => {
                            d.swap(l);
                            record_served(&cache, &name, &version).await;
                            served = Some(version);
                            tag = Some(current.tag);
                            backoff = None;
                            Ok(())
                        }
                        Err(e) => {
                            let b = Backoff::after(backoff.take(), &version, e, interval);
                            tracing::info!(
                                dataset = %name,
                                %version,
                                failures = b.failures,
                                retry_in = ?b.until.saturating_duration_since(tokio::time::Instant::now()),
                                "cannot serve the version CURRENT names; trying it again later"
                            );
                            let error = b.error.clone();
                            backoff = Some(b);
                            Err(error)
                        }
                    }
                }
            }
            Err(e) => Err(error_chain(&e)),
        };
        let result = match (&mut staged, result) {
            (Some(s), Ok(())) => s.follow(&store, &d, served.as_deref(), &how).await,
            (_, result) => result,
        };
        d.record(result);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Fetches `version` into the cache and loads it. When the cache lacks room for it (its disk
/// is full, or `cache_limit` is reached), the previous version is released first (or when a
/// write fails for lack of space, and the fetch is tried again): what the cache holds is then
/// the version served and the one being fetched.
async fn fetch_with_room(
    store: &snapkv_store::Store,
    d: &Dataset,
    cache: &snapkv_store::Cache,
    version: &str,
    manifest: Option<&snapkv_store::Manifest>,
    how: &Follow,
) -> Result<Loaded, String> {
    let name = &d.name;
    if let Some(m) = manifest {
        let needed = missing_bytes(cache, name, version, m, how).await;
        let mut room = measure_space(d, cache, how.cache_limit).await;
        // What releasing would free: the previous version first, then a staged preview (the
        // next current version comes before a preview, often of itself). Nothing is released
        // when even both would leave too little room.
        let staged_cache = snapkv_store::Cache::new(cache.dir().join(STAGED_DIR));
        let previous = d.previous_entry();
        let staged = d
            .staged
            .load_full()
            .and_then(|l| l.cache_entry().map(str::to_owned));
        let freed = entry_bytes(cache, name, previous.as_deref()).await
            + entry_bytes(&staged_cache, name, staged.as_deref()).await;
        if needed > room && needed <= room.saturating_add(freed) {
            if previous.is_some() {
                release_previous_for(d, cache, version, how.cache_limit, "no room").await;
                room = measure_space(d, cache, how.cache_limit).await;
            }
            if let Some(staged) = staged.filter(|_| needed > room) {
                tracing::warn!(
                    dataset = %name,
                    %staged,
                    %version,
                    "the cache has no room for the new version: no longer holding the staged \
                     version for preview"
                );
                d.set_staged(None);
                wait_gone(staged_cache.dir().join(name).join(&staged)).await;
                room = measure_space(d, cache, how.cache_limit).await;
            }
        }
        if needed > room {
            return Err(no_room(d, version, needed, how.cache_limit));
        }
    }
    let options = fetch_options(how);
    let mut fetched = store.fetch(name, version, cache, &options).await;
    if let Err(e) = &fetched {
        // The disk filled while downloading (other files grew, or the space measured was
        // not all usable): room from the previous version, and the download resumes.
        if e.is_storage_full() && d.previous.load().is_some() {
            release_previous_for(d, cache, version, how.cache_limit, "disk full").await;
            fetched = store.fetch(name, version, cache, &options).await;
        }
    }
    let result = match fetched {
        Ok(cached) => {
            count_transfer(d, version, &cached.transfer);
            load_cached(cached, cache, &d.live, how.open.clone(), Check::Warm).await
        }
        Err(e) if e.is_storage_full() => Err(format!(
            "{} (the disk of the cache directory {} is full, with no previous version left \
                 to release: give the cache more room)",
            error_chain(&e),
            cache.dir().display()
        )),
        Err(e) => Err(error_chain(&e)),
    };
    measure_space(d, cache, how.cache_limit).await;
    result
}

/// Counts what a fetch of `version` moved in the dataset's metrics, and logs it.
fn count_transfer(d: &Dataset, version: &str, t: &snapkv_store::Transfer) {
    d.sync_downloaded.inc_by(t.downloaded);
    d.sync_reused.inc_by(t.reused);
    d.sync_rebuilt.inc_by(t.rebuilt);
    let total = t.downloaded + t.reused + t.rebuilt;
    if total > 0 {
        tracing::info!(
            dataset = %d.name,
            %version,
            bytes_downloaded = t.downloaded,
            bytes_reused = t.reused,
            bytes_rebuilt = t.rebuilt,
            downloaded_share = format_args!("{:.1}%", 100.0 * t.downloaded as f64 / total as f64),
            delta_files = t.delta_files,
            range_reads = t.range_reads,
            "fetched"
        );
    }
}

/// Opens `version` lazily and serves it (`--ready-when opened`, nothing served yet): its
/// footer and index sections are read, and lookups read the blocks they need from storage
/// until [`complete_lazily`] has them all. `None` when it cannot be (no room for it in the
/// cache, or storage failed): the version is then fetched whole, as without the flag.
async fn open_lazily(
    store: &snapkv_store::Store,
    d: &Dataset,
    cache: &snapkv_store::Cache,
    version: &str,
    manifest: Option<&snapkv_store::Manifest>,
    how: &Follow,
) -> Option<snapkv_store::LazyVersion> {
    let timeout = how.lazy?;
    let name = &d.name;
    if let Some(m) = manifest {
        // Whole files: a lazy open starts over whatever its directory holds.
        let needed = held_bytes(m, how);
        let room = measure_space(d, cache, how.cache_limit).await;
        if needed > room {
            tracing::warn!(dataset = %name, %version, error = %no_room(d, version, needed, how.cache_limit), "cannot open lazily");
            return None;
        }
    }
    let started = std::time::Instant::now();
    let lazy = match store
        .open_lazy(name, version, cache, &fetch_options(how), timeout)
        .await
    {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(dataset = %name, %version, error = %error_chain(&e), "cannot open lazily; downloading the version whole");
            return None;
        }
    };
    let (splits, fallback) = match layout_of(&lazy.manifest, version) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(dataset = %name, %version, error = %e, "cannot open lazily");
            return None;
        }
    };
    let open = how.open.clone();
    let opened = tokio::task::spawn_blocking(move || {
        let loaded = Loaded::open_lazy(&lazy, splits, &open, fallback);
        (loaded, lazy)
    })
    .await;
    let Ok((loaded, lazy)) = opened else {
        return None;
    };
    match loaded {
        Ok(l) => {
            let downloaded = lazy.take_downloaded();
            d.sync_downloaded.inc_by(downloaded);
            tracing::info!(
                dataset = %name,
                %version,
                elapsed = ?started.elapsed(),
                bytes_downloaded = downloaded,
                blocks_missing = lazy.blocks_missing(),
                "opened lazily: serving while the blocks arrive"
            );
            d.swap(l);
            Some(lazy)
        }
        Err(e) => {
            tracing::warn!(dataset = %name, %version, error = %error_chain(&e), "cannot open lazily; downloading the version whole");
            None
        }
    }
}

/// Fills in the blocks of a lazily opened version still missing, checks its files as a
/// download is, and loads them as an ordinary cached version. With the outcome, whether a
/// failure leaves the lazy open worth completing later (storage failed: what is in place
/// stays), or the version is to be fetched as any other (its files failed their checks).
async fn complete_lazily(
    lazy: &snapkv_store::LazyVersion,
    d: &Dataset,
    cache: &snapkv_store::Cache,
    how: &Follow,
) -> (Result<Loaded, String>, bool) {
    let cached = lazy.complete(cache, &fetch_options(how)).await;
    let again = match &cached {
        Err(e @ snapkv_store::Error::Corrupt { .. }) => {
            // What was served passed every check a lookup makes, but the file as a whole
            // does not: it is not served a moment longer.
            tracing::error!(dataset = %d.name, version = %lazy.version, error = %error_chain(e), "the lazily opened version failed its checks once complete; not serving it");
            d.stop_serving_filling(&lazy.version);
            false
        }
        // The disk is full: a fetch as any other makes room if it can, or says why not.
        Err(e) => !e.is_storage_full(),
        Ok(_) => true,
    };
    let result = match cached {
        Ok(cached) => {
            count_transfer(d, &lazy.version, &cached.transfer);
            load_cached(cached, cache, &d.live, how.open.clone(), Check::Open).await
        }
        Err(e) => {
            d.sync_downloaded.inc_by(lazy.take_downloaded());
            Err(error_chain(&e))
        }
    };
    measure_space(d, cache, how.cache_limit).await;
    (result, again)
}

/// Bytes of cache entry `entry` of dataset `name` (0 for none).
async fn entry_bytes(cache: &snapkv_store::Cache, name: &str, entry: Option<&str>) -> u64 {
    let Some(entry) = entry else { return 0 };
    let (c, n, v) = (cache.clone(), name.to_owned(), entry.to_owned());
    tokio::task::spawn_blocking(move || c.version_bytes(&n, &v))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(0)
}

/// Bytes that fetching `version` (described by `manifest`) into `cache` still has to write:
/// the sizes of the files held, less what its directory holds already.
async fn missing_bytes(
    cache: &snapkv_store::Cache,
    name: &str,
    version: &str,
    manifest: &snapkv_store::Manifest,
    how: &Follow,
) -> u64 {
    held_bytes(manifest, how).saturating_sub(entry_bytes(cache, name, Some(version)).await)
}

/// Bytes of the files of `manifest` this reader holds.
fn held_bytes(manifest: &snapkv_store::Manifest, how: &Follow) -> u64 {
    snapkv_store::held_files(manifest, how.shards.as_ref())
        .map(|held| manifest.files[held].iter().map(|f| f.bytes).sum())
        .unwrap_or(0)
}

/// The room left in the cache: the disk's free bytes, or less under `limit`. Records it in the
/// dataset's info.
async fn measure_space(d: &Dataset, cache: &snapkv_store::Cache, limit: Option<u64>) -> u64 {
    let c = cache.clone();
    let measured = tokio::task::spawn_blocking(move || {
        let used = c.bytes_used();
        let free = c.free_bytes();
        (used, free)
    })
    .await;
    let (used, free) = match measured {
        Ok((used, free)) => (used.ok(), free.ok()),
        Err(_) => (None, None),
    };
    if used.is_none() || free.is_none() {
        tracing::warn!(dataset = %d.name, dir = %cache.dir().display(), "cannot measure the cache directory's space");
    }
    d.update_cache_space(|s| (s.used, s.free, s.limit) = (used, free, limit));
    // What cannot be measured does not stop a download: the disk itself says when it is full.
    let free = free.unwrap_or(u64::MAX);
    match (limit, used) {
        (Some(l), Some(used)) => free.min(l.saturating_sub(used)),
        _ => free,
    }
}

/// Releases the previous version to make room for `version`, and waits until its files are
/// gone ([`wait_gone`]).
async fn release_previous_for(
    d: &Dataset,
    cache: &snapkv_store::Cache,
    version: &str,
    limit: Option<u64>,
    why: &str,
) {
    let Some(released) = d.release_previous() else {
        return;
    };
    tracing::warn!(
        dataset = %d.name,
        previous = %released,
        %version,
        reason = why,
        limit = ?limit,
        "the cache has no room for the new version: released the previous version (a rollback \
         to it downloads it again)"
    );
    wait_gone(cache.dir().join(&d.name).join(&released)).await;
    d.update_cache_space(|s| s.released = Some((released, version.to_owned(), SystemTime::now())));
}

/// Waits (at most 30 s) until the directory of a released version is gone: requests still
/// reading it finish first, then its files are removed.
async fn wait_gone(dir: PathBuf) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let d = dir.clone();
        let gone = tokio::task::spawn_blocking(move || !d.exists())
            .await
            .unwrap_or(true);
        if gone || tokio::time::Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Why `version` cannot be fetched: the cache's room, as last measured, is less than it needs.
fn no_room(d: &Dataset, version: &str, needed: u64, limit: Option<u64>) -> String {
    let space = d.cache_space();
    let known = |b: Option<u64>| b.map_or("an unknown number of".to_owned(), |b| b.to_string());
    let limit = match limit {
        Some(l) => format!(
            ", under --cache-dir-limit {l} bytes with {} bytes used",
            known(space.used)
        ),
        None => String::new(),
    };
    format!(
        "no room in the cache for version {version}: it needs {needed} more bytes, and the \
         cache's disk has {} bytes free{limit}, which releasing the previous version would not \
         make enough (a reader keeps the served version, the previous one and the one it \
         fetches): give the cache more room",
        known(space.free)
    )
}

/// Records the version served in the cache directory, for the next start.
async fn record_served(cache: &snapkv_store::Cache, name: &str, version: &str) {
    let (c, n, v) = (cache.clone(), name.to_owned(), version.to_owned());
    let recorded = tokio::task::spawn_blocking(move || c.record_served(&n, &v)).await;
    if let Ok(Err(e)) = recorded {
        tracing::warn!(dataset = %name, %version, error = %error_chain(&e), "cannot record the served version");
    }
}

/// Removes the incomplete downloads of versions other than `wanted` (the one `CURRENT`
/// names): left by a process that stopped, or by a version replaced before it arrived.
async fn forget_incomplete(
    cache: &snapkv_store::Cache,
    name: &str,
    wanted: &str,
    shards: Option<snapkv_format::Selection>,
) {
    let (c, n, w) = (cache.clone(), name.to_owned(), wanted.to_owned());
    let _ = tokio::task::spawn_blocking(move || {
        for v in c.incomplete(&n, shards.as_ref()).unwrap_or_default() {
            if v != w {
                match c.remove(&n, &v) {
                    Ok(()) => tracing::info!(dataset = %n, version = %v, "removed an abandoned download"),
                    Err(e) => tracing::warn!(dataset = %n, version = %v, error = %error_chain(&e), "cannot remove an abandoned download"),
                }
            }
        }
    })
    .await;
}

/// The version `CURRENT` names failed to download or open: it is tried again after a delay
/// that doubles with each failure in a row (from the poll interval, at most
/// [`Backoff::MAX`], with ±25% jitter so that readers spread out), not at every poll. A
/// different version in `CURRENT` is tried at once.
struct Backoff {
    version: String,
    failures: u32,
    until: tokio::time::Instant,
    error: String,
}

impl Backoff {
    const MAX: Duration = Duration::from_secs(300);

    /// The backoff after `version` failed with `error`, following `before`.
    fn after(before: Option<Backoff>, version: &str, error: String, interval: Duration) -> Backoff {
        let failures = before
            .filter(|b| b.version == version)
            .map_or(1, |b| b.failures.saturating_add(1));
        let base = interval
            .saturating_mul(1u32 << failures.min(16))
            .min(Backoff::MAX);
        // Jitter from the clock's sub-second digits: no two readers started together keep
        // polling together.
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let factor = 0.75 + f64::from(nanos % 1000) / 2000.0;
        Backoff {
            version: version.to_owned(),
            failures,
            until: tokio::time::Instant::now() + base.mul_f64(factor),
            error,
        }
    }

    /// Whether `version` is still to wait.
    fn waits(&self, version: &str) -> bool {
        self.version == version && tokio::time::Instant::now() < self.until
    }
}

/// `error: cause: cause`, for logs and the dataset info.
pub(crate) use snapkv_store::error_chain;
