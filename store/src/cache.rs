//! The fetch side: downloading a version into a local cache directory, verified.

use crate::delta::{Bases, Counters, Transfer};
use crate::error::{Error, Result};
use crate::files::{self, blocking, report, OpenSnapshot, Progress, RateLimit};
use crate::layout::{check_name, DatasetPaths, MANIFEST};
use crate::manifest::{parse_xxh3, Manifest, ManifestFile};
use crate::Store;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::{GetOptions, GetRange, GetResultPayload};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use xxhash_rust::xxh3::Xxh3;

/// A local directory of downloaded versions:
///
/// ```text
/// <dir>/<dataset>/<version>/<file>             complete files: verified, read-only
/// <dir>/<dataset>/<version>/.<file>.partial    a download under way or interrupted
/// <dir>/<dataset>/<version>/MANIFEST.json      written last: every file is complete
/// ```
///
/// A file gets its final name only after it was fsynced and verified (size and XXH3 against
/// the manifest, then the snapshot's own full verification) and made read-only; it is never
/// modified afterwards. Whoever maps a file may rely on that.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

/// A complete version in a [`Cache`]. Two are equal when they describe the same files of the
/// same version; what the fetch that returned one moved ([`CachedVersion::transfer`]) is not
/// compared.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct CachedVersion {
    /// The dataset.
    pub dataset: String,
    /// The version.
    pub version: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest, as fetched from the store.
    pub manifest: Manifest,
    /// The files held, by position in the manifest: all of them, or the shards a reader
    /// holding part of a sharded version fetched ([`FetchOptions::shards`]).
    pub held: std::ops::Range<usize>,
    /// What the fetch that returned this moved: nothing when the version was in the cache.
    pub transfer: Transfer,
}

impl PartialEq for CachedVersion {
    fn eq(&self, other: &Self) -> bool {
        (
            &self.dataset,
            &self.version,
            &self.dir,
            &self.manifest,
            &self.held,
        ) == (
            &other.dataset,
            &other.version,
            &other.dir,
            &other.manifest,
            &other.held,
        )
    }
}

impl CachedVersion {
    /// Path of the file called `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Paths of the files held, in manifest order (shard order, for sharded versions).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.manifest.files[self.held.clone()]
            .iter()
            .map(|f| self.path(&f.name))
            .collect()
    }
}

/// The files of `manifest` that `selection` holds, by position: all of them when there is no
/// selection or the version is not sharded (an unsharded version is one shard, which every
/// selection but a `Range` past it holds).
pub fn held_files(
    manifest: &Manifest,
    selection: Option<&snapkv_format::Selection>,
) -> Result<std::ops::Range<usize>> {
    let all = 0..manifest.files.len();
    let Some(selection) = selection else {
        return Ok(all);
    };
    let count = if manifest.sharding.is_some() {
        manifest.files.len()
    } else {
        1
    };
    match selection.held(count) {
        Some(held) if manifest.sharding.is_some() => Ok(held),
        Some(_) => Ok(all),
        None => Err(Error::Refused {
            reason: format!(
                "this reader holds {selection}, and version {} has {count} shard{}: none of                  them is held",
                manifest.version,
                if count == 1 { "" } else { "s" }
            ),
        }),
    }
}

/// How to fetch.
#[derive(Clone)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Bandwidth bound for the download, in bytes per second. Default: none.
    pub max_bytes_per_sec: Option<u64>,
    /// Files downloaded at once. Default: 2.
    pub concurrency: usize,
    /// Told about bytes of the version put in place: downloaded, or copied from files the
    /// cache holds (a delta fetch).
    pub progress: Option<Progress>,
    /// Opens each downloaded file for the snapshot's full verification.
    /// Default: [`crate::read_snapshot`].
    pub open: OpenSnapshot,
    /// The shards of a sharded version to fetch (a reader holding part of it); the other
    /// files are left out. Default: all.
    pub shards: Option<snapkv_format::Selection>,
    /// Delta fetch: assemble each file from the data blocks that files of the dataset already
    /// in the cache hold, reading only the rest by range (then checked as a full download is;
    /// any failure falls back to one). Default: on.
    pub delta: bool,
    /// In a delta fetch, the most bytes of reusable blocks read anyway between two missing
    /// stretches, to save a request. Default: 0 (fewest bytes: keys changed at random places
    /// make one read per changed block; raise it where requests cost more than bytes).
    pub delta_gap: u64,
    /// Range reads of a delta fetch in flight, per file (each at most 4 MiB). Default: 16.
    pub range_concurrency: usize,
    /// In a delta fetch of a version 2 file, rebuild its index, filter and lookup sections
    /// from the assembled blocks (decompressing every block and building the perfect hash:
    /// seconds of CPU per gigabyte; key records, 24 bytes per key, beyond 64 MiB spilled to
    /// an unnamed temporary file in the cache directory)
    /// and read only those whose rebuild does not match the footer's checksums. Default: on.
    pub rebuild_sections: bool,
    /// Threads of a rebuild (0: one per core). Default: 0.
    pub rebuild_threads: usize,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            max_bytes_per_sec: None,
            concurrency: 2,
            progress: None,
            open: files::default_open(),
            shards: None,
            delta: true,
            delta_gap: 0,
            range_concurrency: 16,
            rebuild_sections: true,
            rebuild_threads: 0,
        }
    }
}

impl std::fmt::Debug for FetchOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FetchOptions")
            .field("max_bytes_per_sec", &self.max_bytes_per_sec)
            .field("concurrency", &self.concurrency)
            .field("delta", &self.delta)
            .field("delta_gap", &self.delta_gap)
            .field("range_concurrency", &self.range_concurrency)
            .field("rebuild_sections", &self.rebuild_sections)
            .finish_non_exhaustive()
    }
}

/// The file in a dataset's cache directory naming the version served ([`Cache::record_served`]).
const SERVED: &str = ".served";

impl Cache {
    /// A cache in `dir` (created when something is fetched into it).
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The cache's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn version_dir(&self, dataset: &str, version: &str) -> PathBuf {
        self.dir.join(dataset).join(version)
    }

    /// The complete version `version` of `dataset`, if the cache has it: its marker manifest
    /// is there and every file has the manifest's size (files were verified before they got
    /// their names; this does not read them). Blocking file I/O.
    pub fn get(&self, dataset: &str, version: &str) -> Result<Option<CachedVersion>> {
        self.get_held(dataset, version, None)
    }

    /// [`Cache::get`] of the shards `selection` holds: the version is there when those files
    /// are.
    pub fn get_held(
        &self,
        dataset: &str,
        version: &str,
        selection: Option<&snapkv_format::Selection>,
    ) -> Result<Option<CachedVersion>> {
        check_name("dataset name", dataset)?;
        check_name("version", version)?;
        let dir = self.version_dir(dataset, version);
        let marker = dir.join(MANIFEST);
        let bytes = match std::fs::read(&marker) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", marker, e)),
        };
        let Ok(manifest) = Manifest::parse(&bytes, &marker.display().to_string(), dataset, version)
        else {
            return Ok(None);
        };
        let Ok(held) = held_files(&manifest, selection) else {
            return Ok(None);
        };
        for f in &manifest.files[held.clone()] {
            match std::fs::metadata(dir.join(&f.name)) {
                Ok(m) if m.is_file() && m.len() == f.bytes => {}
                _ => return Ok(None),
            }
        }
        Ok(Some(CachedVersion {
            dataset: dataset.to_owned(),
            version: version.to_owned(),
            dir,
            manifest,
            held,
            transfer: Transfer::default(),
        }))
    }

    /// The complete versions of `dataset` in the cache, oldest first: what a reader can serve
    /// at start-up without asking storage. Blocking file I/O.
    pub fn versions(&self, dataset: &str) -> Result<Vec<CachedVersion>> {
        self.versions_held(dataset, None)
    }

    /// [`Cache::versions`] that hold the shards `selection` names.
    pub fn versions_held(
        &self,
        dataset: &str,
        selection: Option<&snapkv_format::Selection>,
    ) -> Result<Vec<CachedVersion>> {
        let mut found = Vec::new();
        for name in self.version_names(dataset)? {
            if let Some(v) = self.get_held(dataset, &name, selection)? {
                found.push(v);
            }
        }
        found.sort_by(|a, b| a.version.cmp(&b.version));
        Ok(found)
    }

    /// The names of `dataset`'s version directories in the cache, complete or not.
    fn version_names(&self, dataset: &str) -> Result<Vec<String>> {
        check_name("dataset name", dataset)?;
        let dir = self.dir.join(dataset);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if check_name("version", &name).is_ok() && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// The snapshot files of `dataset` in the cache that a fetch of `version` may copy blocks
    /// from: every file under its final name (verified when it got it) in the directories of
    /// the dataset's other versions, complete or not. Blocking file I/O.
    pub(crate) fn reusable_files(&self, dataset: &str, version: &str) -> Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        for name in self.version_names(dataset)? {
            if name == version {
                continue;
            }
            let dir = self.version_dir(dataset, &name);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let file_name = entry.file_name();
                let Some(n) = file_name.to_str() else {
                    continue;
                };
                let is_file = entry.file_type().is_ok_and(|t| t.is_file());
                if is_file && n != MANIFEST && check_name("file name", n).is_ok() {
                    found.push(entry.path());
                }
            }
        }
        Ok(found)
    }

    /// Records that `version` of `dataset` is the one served, so that a restart serves it again
    /// before storage answers (after a rollback, the newest version in the cache is not the
    /// one to serve). The record is replaced atomically: a crash leaves the old one or the new.
    pub fn record_served(&self, dataset: &str, version: &str) -> Result<()> {
        check_name("dataset name", dataset)?;
        check_name("version", version)?;
        let dir = self.dir.join(dataset);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", &dir, e))?;
        write_durably(&dir, &dir.join(SERVED), version.as_bytes())
    }

    /// The version last recorded as served by [`Cache::record_served`], if any (a record that
    /// is not a valid version name is ignored).
    pub fn served(&self, dataset: &str) -> Result<Option<String>> {
        check_name("dataset name", dataset)?;
        let path = self.dir.join(dataset).join(SERVED);
        match std::fs::read_to_string(&path) {
            Ok(v) => Ok(check_name("version", v.trim())
                .ok()
                .map(|()| v.trim().to_owned())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("read", path, e)),
        }
    }

    /// The versions of `dataset` in the cache that are not complete for `selection`: downloads
    /// under way, or left behind by a process that stopped.
    pub fn incomplete(
        &self,
        dataset: &str,
        selection: Option<&snapkv_format::Selection>,
    ) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for name in self.version_names(dataset)? {
            if self.get_held(dataset, &name, selection)?.is_none() {
                found.push(name);
            }
        }
        Ok(found)
    }

    /// Bytes of the files under the cache directory, all datasets, complete or partial (what
    /// a size limit on the cache counts). Blocking file I/O.
    pub fn bytes_used(&self) -> Result<u64> {
        tree_bytes(&self.dir, 4)
    }

    /// Bytes of the files in `version`'s directory of `dataset`, complete or partial: what a
    /// download of it has written so far. Blocking file I/O.
    pub fn version_bytes(&self, dataset: &str, version: &str) -> Result<u64> {
        check_name("dataset name", dataset)?;
        check_name("version", version)?;
        tree_bytes(&self.version_dir(dataset, version), 1)
    }

    /// Bytes free for this process on the file system holding the cache directory (of its
    /// nearest existing ancestor before anything was fetched).
    #[cfg(unix)]
    pub fn free_bytes(&self) -> Result<u64> {
        let mut dir = self.dir.as_path();
        loop {
            match rustix::fs::statvfs(dir) {
                Ok(s) => return Ok(s.f_bavail.saturating_mul(s.f_frsize)),
                Err(rustix::io::Errno::NOENT) => match dir.parent() {
                    Some(p) if !p.as_os_str().is_empty() => dir = p,
                    _ => dir = Path::new("."),
                },
                Err(e) => return Err(Error::io("stat", dir, e.into())),
            }
        }
    }

    /// Bytes free on the cache directory's file system: not measured here (unlimited).
    #[cfg(not(unix))]
    pub fn free_bytes(&self) -> Result<u64> {
        Ok(u64::MAX)
    }

    /// Removes a version from the cache (its marker first, so a crash midway leaves an
    /// incomplete version, never a marker without files). Files that are mapped stay
    /// readable through their mappings. Blocking file I/O.
    pub fn remove(&self, dataset: &str, version: &str) -> Result<()> {
        check_name("dataset name", dataset)?;
        check_name("version", version)?;
        let dir = self.version_dir(dataset, version);
        remove_if_exists(&dir.join(MANIFEST))?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", dir, e)),
            _ => Ok(()),
        }
    }
}

impl Store {
    /// Downloads `version` of `dataset` into `cache`, or returns it at once if the cache
    /// already has it with the same manifest.
    ///
    /// Each file is downloaded to `.<name>.partial`, fsynced, checked against the manifest
    /// (size, XXH3), verified as a snapshot ([`snapkv_format::Snapshot::verify`], through
    /// `options.open`), made read-only and renamed to `<name>`; the version's `MANIFEST.json`
    /// is written last. An interrupted download resumes from its partial file on the next
    /// call (a partial whose bytes turn out wrong is discarded and fetched again once). A file
    /// that fails a check is deleted and reported as [`Error::Corrupt`]; nothing corrupt ever
    /// gets a final name.
    pub async fn fetch(
        &self,
        dataset: &str,
        version: &str,
        cache: &Cache,
        options: &FetchOptions,
    ) -> Result<CachedVersion> {
        let manifest = self.manifest(dataset, version).await?;
        self.fetch_listed(dataset, version, manifest, cache, options)
            .await
    }

    /// [`Store::fetch`] of the files `manifest` lists (a manifest read from the store, or one
    /// about to be written).
    pub(crate) async fn fetch_listed(
        &self,
        dataset: &str,
        version: &str,
        manifest: Manifest,
        cache: &Cache,
        options: &FetchOptions,
    ) -> Result<CachedVersion> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let dir = cache.version_dir(dataset, version);
        let marker = dir.join(MANIFEST);
        let held = held_files(&manifest, options.shards.as_ref())?;
        {
            let (cache, d, v) = (cache.clone(), dataset.to_owned(), version.to_owned());
            let selection = options.shards;
            if let Some(cached) =
                blocking(move || cache.get_held(&d, &v, selection.as_ref())).await?
            {
                if cached.manifest == manifest {
                    return Ok(cached);
                }
            }
        }
        {
            // A marker that differs from storage (the version was deleted and published
            // again): drop it; each file is re-checked against the new manifest below.
            let (dir, marker) = (dir.clone(), marker.clone());
            blocking(move || {
                remove_if_exists(&marker)?;
                std::fs::create_dir_all(&dir).map_err(|e| Error::io("create", dir, e))
            })
            .await?;
        }
        let limit = RateLimit::new(options.max_bytes_per_sec);
        let bases = if options.delta {
            let (cache, d, v) = (cache.clone(), dataset.to_owned(), version.to_owned());
            blocking(move || cache.reusable_files(&d, &v).map(Bases::read)).await?
        } else {
            Bases::read(Vec::new())
        };
        let bases = Arc::new(bases);
        let counters = Arc::new(Counters::default());
        // The futures are made before they are streamed: a closure in the stream's type would
        // keep callers from proving this future `Send` inside a spawned task.
        let fetches: Vec<_> = manifest.files[held.clone()]
            .iter()
            .map(|f| {
                let file = FileFetch {
                    paths: &paths,
                    version,
                    dir: &dir,
                    file: f,
                    bases: &bases,
                    counters: &counters,
                };
                self.fetch_file(file, options, &limit)
            })
            .collect();
        futures_util::stream::iter(fetches)
            .buffer_unordered(options.concurrency.max(1))
            .try_collect::<()>()
            .await?;
        let body = serde_json::to_vec_pretty(&manifest).expect("serializable");
        let (d, m) = (dir.clone(), marker.clone());
        blocking(move || write_durably(&d, &m, &body)).await?;
        Ok(CachedVersion {
            dataset: dataset.to_owned(),
            version: version.to_owned(),
            dir,
            manifest,
            held,
            transfer: counters.transfer(),
        })
    }

    async fn fetch_file(
        &self,
        fetch: FileFetch<'_>,
        options: &FetchOptions,
        limit: &Option<Arc<RateLimit>>,
    ) -> Result<()> {
        let FileFetch {
            paths,
            version,
            dir,
            file,
            bases,
            counters,
        } = fetch;
        let expected = (
            file.bytes,
            parse_xxh3(&file.xxh3).expect("checked when the manifest was parsed"),
        );
        let target = dir.join(&file.name);
        let partial = dir.join(format!(".{}.partial", file.name));
        let lazy = dir.join(format!(".{}.lazy", file.name));
        {
            let target = target.clone();
            let kept = blocking(move || -> Result<bool> {
                match File::open(&target) {
                    Ok(mut f) => {
                        let found = files::hash_reader(&mut f, Xxh3::new())
                            .map_err(|e| Error::io("read", &target, e))?;
                        if found == expected {
                            return Ok(true);
                        }
                        remove_if_exists(&target)?;
                        Ok(false)
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(Error::io("open", target, e)),
                }
            })
            .await?;
            if kept {
                return Ok(());
            }
        }
        let what = format!("{}/{}", version, file.name);
        let assembled = if bases.is_empty() || partial_started(&partial).await? {
            false
        } else {
            let path = paths.file(version, &file.name);
            // Assembled under a name of its own: a crash leaves no partial file that a full
            // download would take for a prefix of the object.
            let assembling = dir.join(format!(".{}.delta", file.name));
            match self
                .fetch_delta(
                    &path,
                    &paths.block_list(version, &file.name),
                    file,
                    &assembling,
                    expected,
                    bases,
                    options,
                    limit,
                    counters,
                )
                .await
            {
                Ok(true) => {
                    let (from, to) = (assembling.clone(), partial.clone());
                    blocking(move || {
                        std::fs::rename(&from, &to).map_err(|e| Error::io("rename", &from, e))
                    })
                    .await?;
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(file = %what, error = %e, "delta fetch failed; downloading the whole file");
                    false
                }
            }
        };
        let mut resume = true;
        if !assembled {
            loop {
                match self
                    .download(
                        paths, version, file, &partial, expected, resume, options, limit, counters,
                    )
                    .await
                {
                    Ok(()) => break,
                    Err(DownloadError::Resumed(_)) if resume => resume = false,
                    Err(DownloadError::Resumed(e) | DownloadError::Other(e)) => return Err(e),
                }
            }
        }
        let open = options.open.clone();
        blocking(move || {
            let verified = open(&partial).and_then(|s| s.verify().map_err(Into::into));
            if let Err(source) = verified {
                remove_if_exists(&partial)?;
                return Err(Error::Corrupt {
                    what: format!("downloaded {what}"),
                    detail: "not a valid snapshot".into(),
                    source: Some(source),
                });
            }
            let mut permissions = std::fs::metadata(&partial)
                .map_err(|e| Error::io("stat", &partial, e))?
                .permissions();
            permissions.set_readonly(true);
            std::fs::set_permissions(&partial, permissions)
                .map_err(|e| Error::io("make read-only", &partial, e))?;
            std::fs::rename(&partial, &target).map_err(|e| Error::io("rename", &partial, e))?;
            // What a lazy open of an earlier run left is not needed any more.
            remove_if_exists(&lazy)?;
            sync_dir(target.parent().expect("a file in a directory"))
        })
        .await
    }

    /// Downloads one object into `partial` (continuing it if `resume`), fsyncs it and checks
    /// size and XXH3.
    #[allow(clippy::too_many_arguments)]
    async fn download(
        &self,
        paths: &DatasetPaths,
        version: &str,
        file: &ManifestFile,
        partial: &Path,
        expected: (u64, u64),
        resume: bool,
        options: &FetchOptions,
        limit: &Option<Arc<RateLimit>>,
        counters: &Counters,
    ) -> Result<(), DownloadError> {
        let path = paths.file(version, &file.name);
        let size = file.bytes;
        let target = partial.to_owned();
        let offset = blocking(move || -> Result<u64> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map_err(|e| Error::io("open", &target, e))?;
            let len = f
                .metadata()
                .map_err(|e| Error::io("stat", &target, e))?
                .len();
            let keep = if resume && len <= size { len } else { 0 };
            f.set_len(keep)
                .map_err(|e| Error::io("truncate", &target, e))?;
            Ok(keep)
        })
        .await
        .map_err(DownloadError::Other)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let target = partial.to_owned();
        // The writer owns the file on the blocking pool; chunks reach it through a channel.
        // It hashes the kept prefix first, so the digest covers the whole file.
        let writer = tokio::task::spawn_blocking(move || -> Result<(u64, u64)> {
            let io = |action, e| Error::io(action, &target, e);
            let mut f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&target)
                .map_err(|e| io("open", e))?;
            let mut hasher = Xxh3::new();
            let mut buf = vec![0u8; 1 << 20];
            let mut left = offset;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                f.read_exact(&mut buf[..n]).map_err(|e| io("read", e))?;
                hasher.update(&buf[..n]);
                left -= n as u64;
            }
            f.seek(SeekFrom::Start(offset)).map_err(|e| io("seek", e))?;
            let mut total = offset;
            while let Some(chunk) = rx.blocking_recv() {
                f.write_all(&chunk).map_err(|e| io("write", e))?;
                hasher.update(&chunk);
                total += chunk.len() as u64;
            }
            f.sync_all().map_err(|e| io("fsync", e))?;
            Ok((total, hasher.digest()))
        });
        let streamed = self
            .stream_into(&path, offset, size, tx, options, limit, counters)
            .await;
        let found = match writer.await {
            Ok(r) => r.map_err(DownloadError::Other)?,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        streamed.map_err(DownloadError::Other)?;
        if found != expected {
            let what = format!("downloaded {version}/{}", file.name);
            let e = Error::corrupt(
                what,
                format!(
                    "{} bytes with XXH3 {:016x}, where the manifest says {} bytes with {}",
                    found.0, found.1, file.bytes, file.xxh3
                ),
            );
            let p = partial.to_owned();
            blocking(move || remove_if_exists(&p))
                .await
                .map_err(DownloadError::Other)?;
            return Err(if offset > 0 {
                DownloadError::Resumed(e)
            } else {
                DownloadError::Other(e)
            });
        }
        Ok(())
    }

    /// Streams the object from `offset` on into the writer's channel.
    #[allow(clippy::too_many_arguments)]
    async fn stream_into(
        &self,
        path: &object_store::path::Path,
        offset: u64,
        size: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
        options: &FetchOptions,
        limit: &Option<Arc<RateLimit>>,
        counters: &Counters,
    ) -> Result<()> {
        if offset == size {
            return Ok(());
        }
        let get = GetOptions {
            range: (offset > 0).then_some(GetRange::Offset(offset)),
            ..Default::default()
        };
        let result = self
            .objects
            .get_opts(path, get)
            .await
            .map_err(|e| self.err("GET", path, e))?;
        if result.meta.size != size {
            return Err(Error::corrupt(
                format!("stored object {path}"),
                format!("{} bytes, where the manifest says {size}", result.meta.size),
            ));
        }
        let mut stream = match result.payload {
            GetResultPayload::File(file, path) => file_pieces(file, path, result.range),
            GetResultPayload::Stream(stream) => stream,
        };
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| self.err("GET", path, e))?;
            if let Some(limit) = limit {
                limit.take(chunk.len() as u64).await;
            }
            report(&options.progress, chunk.len() as u64);
            counters.downloaded(chunk.len() as u64);
            if tx.send(chunk).await.is_err() {
                // The writer stopped: its error is the one to report.
                break;
            }
        }
        Ok(())
    }
}

/// Bytes `range` of a local store's file, read in pieces of 1 MiB, each on the blocking pool
/// (the file system store's own stream reads 8 KiB per blocking task: a gigabyte takes seconds
/// of task switches).
fn file_pieces(
    file: File,
    path: PathBuf,
    range: std::ops::Range<u64>,
) -> futures_util::stream::BoxStream<'static, object_store::Result<Bytes>> {
    const PIECE: u64 = 1 << 20;
    let state = (file, Arc::new(path), range.start);
    futures_util::stream::try_unfold(state, move |(mut file, path, at)| {
        let end = range.end;
        async move {
            if at >= end {
                return Ok(None);
            }
            let len = (end - at).min(PIECE);
            let p = Arc::clone(&path);
            let (file, piece) = blocking(move || -> std::io::Result<(File, Vec<u8>)> {
                let mut piece = vec![0u8; len as usize];
                file.seek(SeekFrom::Start(at))?;
                file.read_exact(&mut piece)?;
                Ok((file, piece))
            })
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: format!("read {}: {e}", p.display()).into(),
            })?;
            Ok(Some((Bytes::from(piece), (file, path, at + len))))
        }
    })
    .boxed()
}

/// One file of a fetch, and what the fetch shares between its files.
struct FileFetch<'a> {
    paths: &'a DatasetPaths,
    version: &'a str,
    dir: &'a Path,
    file: &'a ManifestFile,
    bases: &'a Arc<Bases>,
    counters: &'a Arc<Counters>,
}

/// Whether a download of `partial` was started and left bytes: it is resumed, not assembled
/// again.
async fn partial_started(partial: &Path) -> Result<bool> {
    let p = partial.to_owned();
    blocking(move || match std::fs::metadata(&p) {
        Ok(m) => Ok(m.len() > 0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io("stat", p, e)),
    })
    .await
}

enum DownloadError {
    /// Bad bytes in a download that continued an earlier partial file: worth one fresh try.
    Resumed(Error),
    Other(Error),
}

/// Bytes of the regular files under `dir`, `depth` levels of directories down (symbolic links
/// are not followed; a directory that is gone counts as empty, one that cannot be read below
/// the top — `lost+found` of a volume — is skipped).
fn tree_bytes(dir: &Path, depth: u32) -> Result<u64> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io("list", dir, e)),
    };
    let mut total = 0u64;
    for entry in entries {
        let Ok(entry) = entry else { continue };
        // Entries removed while listed (a version released meanwhile) are skipped.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() {
            total += entry.metadata().map_or(0, |m| m.len());
        } else if kind.is_dir() && depth > 0 {
            match tree_bytes(&entry.path(), depth - 1) {
                Ok(b) => total += b,
                Err(e) => tracing::debug!(error = %e, "not counted in the cache's size"),
            }
        }
    }
    Ok(total)
}

pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("remove", path, e)),
        _ => Ok(()),
    }
}

pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("fsync", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Writes `path` as temp file → fsync → rename → fsync of the directory.
pub(crate) fn write_durably(dir: &Path, path: &Path, body: &[u8]) -> Result<()> {
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    f.write_all(body).map_err(|e| Error::io("write", &tmp, e))?;
    f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", &tmp, e))?;
    sync_dir(dir)
}
