//! Publishing a version: verify, claim, upload, check, manifest, compare-and-swap `CURRENT`.

use crate::current::Swap;
use crate::error::{Error, Result};
use crate::files::{
    self, blocking, read_chunk, report, LocalSnapshot, OpenSnapshot, Progress, RateLimit,
};
use crate::history::HistoryEntry;
use crate::layout::{
    check_file_name, check_name, default_version, now_rfc3339, DatasetPaths, MAX_MANIFEST_BYTES,
};
use crate::manifest::{
    format_xxh3, identity, nonce, Claim, Manifest, ManifestFile, Pin, Pointer, MANIFEST_VERSION,
};
use crate::objects::Cap;
use crate::policy::{Candidate, CheckOptions, Checked, PolicyReport};
use crate::Store;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use xxhash_rust::xxh3::Xxh3;

/// Smallest multipart part S3 accepts (all parts but the last).
const MIN_PART_SIZE: usize = 5 << 20;
/// S3 takes at most 10,000 parts; part sizes grow for files that would need more.
const MAX_PARTS: u64 = 9_000;
/// How often a publisher refreshes its claim while uploading. `gc` treats an incomplete
/// version as abandoned only after its newest object is older than the grace period, which
/// must be much longer than this.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(60);

/// How to publish.
#[derive(Clone)]
#[non_exhaustive]
pub struct PublishOptions {
    /// The version. Default: the version recorded in the files' metadata if they name one,
    /// else the current UTC time as `YYYYMMDDTHHMMSSZ`.
    pub version: Option<String>,
    /// Multipart part size in bytes (at least 5 MiB; grows for files over ~9,000 parts).
    /// Default: 16 MiB.
    pub part_size: usize,
    /// Parts in flight at once, per file. Default: 8.
    pub concurrency: usize,
    /// Bandwidth bound for the upload, in bytes per second. Default: none.
    pub max_bytes_per_sec: Option<u64>,
    /// Told about bytes uploaded.
    pub progress: Option<Progress>,
    /// Opens each local file for the verification pass before upload.
    /// Default: [`crate::read_snapshot`].
    pub open: OpenSnapshot,
    /// Stage the version: make it complete but leave `CURRENT` as it is, for
    /// [`Store::promote`] later. Default: false (a pinned dataset stages regardless).
    pub stage: bool,
    /// Why: recorded in the dataset's history. Required with `force`.
    pub reason: Option<String>,
    /// Publish even if the version breaks rules of the dataset's policy (recorded in the
    /// history with the rules overridden). Default: false.
    pub force: bool,
    /// Where the policy check downloads the current version when a rule compares values
    /// [default: a temporary directory, removed afterwards].
    pub download_dir: Option<PathBuf>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            version: None,
            part_size: 16 << 20,
            concurrency: 8,
            max_bytes_per_sec: None,
            progress: None,
            open: files::default_open(),
            stage: false,
            reason: None,
            force: false,
            download_dir: None,
        }
    }
}

impl std::fmt::Debug for PublishOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishOptions")
            .field("version", &self.version)
            .field("part_size", &self.part_size)
            .field("concurrency", &self.concurrency)
            .field("max_bytes_per_sec", &self.max_bytes_per_sec)
            .field("stage", &self.stage)
            .field("reason", &self.reason)
            .field("force", &self.force)
            .field("download_dir", &self.download_dir)
            .finish_non_exhaustive()
    }
}

/// What [`Store::publish`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Published {
    /// The manifest written.
    pub manifest: Manifest,
    /// The version `CURRENT` named before, if any (and still names, when staged).
    pub previous: Option<String>,
    /// Whether the version was staged (complete, not current) rather than made current:
    /// asked for, or because the dataset is pinned.
    pub staged: bool,
    /// The pin that made the publish stage, if any.
    pub pinned: Option<Pin>,
    /// The policy checks the version passed (or was forced past).
    pub checks: PolicyReport,
}

/// Aborts a spawned task when dropped (also when the owning future is dropped midway).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Store {
    /// Publishes snapshot `files` as a new version of `dataset` and makes it current.
    ///
    /// In order: verify every file (full checksum pass) and hash it; refuse a version that is
    /// not newer than `CURRENT` or that already exists, and files whose manifest would be over
    /// [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES) ([`Error::Invalid`]); check the
    /// dataset's policy against the current version ([`Error::Policy`] unless forced); claim the
    /// version folder (`PUBLISHING.json`, create-if-absent); upload each file (multipart,
    /// bounded concurrency), checking that the bytes sent hash to what was verified; check
    /// every object's size; write `MANIFEST.json` (create-if-absent); then compare-and-swap
    /// `CURRENT` from what was read at the start.
    ///
    /// `CURRENT` only ever names versions whose manifest was written after all their files.
    /// If another publisher moved `CURRENT` meanwhile, this fails with [`Error::Conflict`]
    /// naming the winner; the version stays complete but not current.
    pub async fn publish<P: AsRef<Path>>(
        &self,
        dataset: &str,
        files: &[P],
        options: &PublishOptions,
    ) -> Result<Published> {
        let mut files: Vec<PathBuf> = files.iter().map(|f| f.as_ref().to_owned()).collect();
        let paths = DatasetPaths::new(&self.root, dataset)?;
        file_names(&files)?;
        let mut locals = Vec::with_capacity(files.len());
        for file in &files {
            locals.push(files::verify_local(file.clone(), options.open.clone()).await?);
        }
        // The shards of a sharded version are listed in shard order.
        let shards: Vec<_> = locals
            .iter()
            .map(|l| l.shard.map(|s| l.shard_info(s)))
            .collect();
        let sharding = match crate::sharding::plan(&shards) {
            Ok(Some((order, sharding))) => {
                files = order.iter().map(|&i| files[i].clone()).collect();
                locals = order.iter().map(|&i| locals[i].clone()).collect();
                Some(sharding)
            }
            Ok(None) => None,
            Err(e) => return Err(Error::invalid("files", e)),
        };
        let files = &files[..];
        let names = file_names(files)?;
        let version = choose_version(dataset, files, &locals, options.version.as_deref())?;

        let current = self.current(dataset).await?;
        if let Some(c) = &current {
            if version <= c.pointer.version {
                return Err(Error::Refused {
                    reason: format!(
                        "version {version} of {dataset} is not newer than the current version \
                         {}: publish a later version, or use rollback to return to an existing one",
                        c.pointer.version
                    ),
                });
            }
        }
        if self.exists(&paths.manifest(&version)).await? {
            return Err(already_exists(dataset, &version));
        }
        let mut manifest = new_manifest(dataset, &version, &names, &locals);
        manifest.sharding = sharding;
        check_manifest_size(&manifest)?;
        let check = CheckOptions {
            force: options.force,
            download_dir: options.download_dir.clone(),
            open: options.open.clone(),
        };
        let candidate = Candidate::Local {
            version: &version,
            files,
            names: &names,
            keys: manifest.total_keys(),
            metadata: &locals[0].metadata,
        };
        let Checked {
            report: checks,
            overridden,
        } = self
            .check_policy(
                dataset,
                current.as_ref(),
                candidate,
                &check,
                options.reason.as_deref(),
            )
            .await?;
        self.claim(&paths, dataset, &version, current.as_ref())
            .await?;
        if self.exists(&paths.manifest(&version)).await? {
            return Err(already_exists(dataset, &version));
        }
        let heartbeat = AbortOnDrop(tokio::spawn(
            self.clone().heartbeat(paths.clone(), version.clone()),
        ));

        let uploaded = self
            .upload_all(&paths, &version, files, &names, &locals, options)
            .await;
        if let Err(e) = uploaded {
            // A failure we live to see (not a kill): remove what this attempt wrote, so the
            // version can be published again at once. Best effort; gc covers what remains.
            drop(heartbeat);
            if let Err(cleanup) = self.abandon(&paths, &version).await {
                tracing::warn!(%version, error = %cleanup, "cannot remove an interrupted upload");
            }
            return Err(e);
        }

        // The version becomes complete now (the timestamp has the same length as the one
        // the size check saw).
        manifest.created_at = now_rfc3339();
        self.write_manifest(&paths, &manifest).await?;
        drop(heartbeat);

        self.make_current(
            &paths,
            current.as_ref(),
            manifest,
            options,
            Checked {
                report: checks,
                overridden,
            },
        )
        .await
    }

    /// Makes the complete version of `manifest` current by compare-and-swap from `current`
    /// (publish step 7), or stages it (asked to, or the dataset is pinned); records it in the
    /// history.
    pub(crate) async fn make_current(
        &self,
        paths: &DatasetPaths,
        current: Option<&crate::Current>,
        manifest: Manifest,
        options: &PublishOptions,
        checked: Checked,
    ) -> Result<Published> {
        let Checked {
            report: checks,
            overridden,
        } = checked;
        let (dataset, version) = (manifest.dataset.clone(), manifest.version.clone());
        let dataset = dataset.as_str();
        let previous = current.map(|c| c.pointer.version.clone());
        let pinned = current.and_then(|c| c.pointer.pin.clone());
        let reason = options.reason.as_deref();
        if options.stage || pinned.is_some() {
            // For readers that preview staged versions; the version is complete either way.
            if let Err(e) = self.mark_staged(dataset, &version).await {
                tracing::warn!(%dataset, %version, error = %e, "cannot record the staged version in STAGED");
            }
            let entry = HistoryEntry::new("stage", previous.as_deref(), Some(&version), reason)
                .overriding(overridden);
            self.record(paths, entry).await;
            return Ok(Published {
                manifest,
                previous,
                staged: true,
                pinned,
                checks,
            });
        }
        let pointer = Pointer::new(&version, previous.as_deref(), "publish");
        match self
            .swap_current(paths, dataset, &pointer, current.map(|c| &c.tag))
            .await?
        {
            Swap::Done => {
                let entry =
                    HistoryEntry::new("publish", previous.as_deref(), Some(&version), reason)
                        .overriding(overridden);
                self.record(paths, entry).await;
                Ok(Published {
                    manifest,
                    previous,
                    staged: false,
                    pinned: None,
                    checks,
                })
            }
            Swap::Lost => {
                let now = self.current(dataset).await?;
                let winner = match &now {
                    Some(c) => format!(
                        "{} was made current by {} at {}",
                        c.pointer.version, c.pointer.updated_by, c.pointer.updated_at
                    ),
                    None => "CURRENT was removed".into(),
                };
                Err(Error::Conflict {
                    reason: format!(
                        "lost the race for CURRENT of {dataset}: {winner} while {version} was \
                         being published. {version} is complete but not current: roll back to it \
                         to make it current, or let gc remove it"
                    ),
                    current: now.map(|c| Box::new(c.pointer)),
                })
            }
        }
    }

    /// Uploads every file and checks what is stored (steps 4 and 5 of the protocol).
    async fn upload_all(
        &self,
        paths: &DatasetPaths,
        version: &str,
        files: &[PathBuf],
        names: &[String],
        locals: &[LocalSnapshot],
        options: &PublishOptions,
    ) -> Result<()> {
        let limit = RateLimit::new(options.max_bytes_per_sec);
        for ((file, name), local) in files.iter().zip(names).zip(locals) {
            let path = paths.file(version, name);
            let (bytes, xxh3) = self
                .upload(&path, file, local.bytes, options, &limit)
                .await?;
            if (bytes, xxh3) != (local.bytes, local.xxh3) {
                return Err(Error::corrupt(
                    file.display().to_string(),
                    format!(
                        "the file changed while it was published ({bytes} bytes with XXH3 {} \
                         uploaded, {} bytes with {} verified)",
                        format_xxh3(xxh3),
                        local.bytes,
                        format_xxh3(local.xxh3)
                    ),
                ));
            }
            self.put_block_list(&paths.block_list(version, name), file)
                .await?;
        }
        for (name, local) in names.iter().zip(locals) {
            let path = paths.file(version, name);
            let meta = self.head(&path).await?;
            if meta.size != local.bytes {
                return Err(Error::corrupt(
                    format!("stored object {path}"),
                    format!("{} bytes stored, {} uploaded", meta.size, local.bytes),
                ));
            }
        }
        Ok(())
    }

    /// Deletes the objects of an incomplete version this process claimed, the claim last.
    async fn abandon(&self, paths: &DatasetPaths, version: &str) -> Result<()> {
        let objects = self.list_version(paths, version).await?;
        self.delete_version(paths, version, objects).await
    }

    /// Creates the claim on a version folder, or says who holds it.
    async fn claim(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        version: &str,
        current: Option<&crate::Current>,
    ) -> Result<()> {
        let now = now_rfc3339();
        let claim = Claim {
            version: version.to_owned(),
            started_at: now.clone(),
            heartbeat_at: now,
            by: identity(),
            nonce: nonce(),
        };
        let path = paths.claim(version);
        let body = serde_json::to_vec_pretty(&claim).expect("serializable");
        if self.create(&path, body).await? {
            return Ok(());
        }
        let held = self.read_claim(&path).await?;
        if held.as_ref().is_some_and(|h| h.nonce == claim.nonce) {
            // Our own create, retried after a lost answer.
            return Ok(());
        }
        let dead = held
            .as_ref()
            .and_then(|h| crate::manifest::gone_from_this_host(&h.by));
        let holder = match held {
            Some(h) => format!(
                "{} (started {}, last seen {})",
                h.by, h.started_at, h.heartbeat_at
            ),
            None => "another publisher".into(),
        };
        let advice = match dead {
            Some(pid) => format!(
                "process {pid} no longer runs on this host, so that attempt was abandoned: \
                 `snapkv gc --store {} --dataset {dataset} --keep N --grace 0s` removes it now \
                 (with every other incomplete version of {dataset}; by default gc waits an hour), \
                 or choose another version",
                self.url()
            ),
            None => "choose another version, or, if that attempt was abandoned, let gc remove \
                     it (`snapkv gc`, after its --grace period)"
                .to_owned(),
        };
        Err(Error::Conflict {
            reason: format!(
                "version {version} of {dataset} is already being published by {holder}: {advice}"
            ),
            current: current.map(|c| Box::new(c.pointer.clone())),
        })
    }

    /// Who claimed `version` (the claim's `by`), if a claim is there and parses.
    pub(crate) async fn claim_holder(
        &self,
        paths: &DatasetPaths,
        version: &str,
    ) -> Result<Option<String>> {
        Ok(self.read_claim(&paths.claim(version)).await?.map(|c| c.by))
    }

    /// Reads a claim: `None` if there is none, or if it does not parse. A claim over
    /// [`MAX_CLAIM_BYTES`](crate::MAX_CLAIM_BYTES) is [`Error::Corrupt`].
    async fn read_claim(&self, path: &ObjectPath) -> Result<Option<Claim>> {
        Ok(self
            .get_small(path, Cap::CLAIM)
            .await?
            .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
    }

    /// Refreshes the claim's `heartbeat_at` every [`HEARTBEAT`] until aborted, so that `gc`
    /// does not mistake a long upload for an abandoned one.
    async fn heartbeat(self, paths: DatasetPaths, version: String) {
        let path = paths.claim(&version);
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let Ok(Some(mut claim)) = self.read_claim(&path).await else {
                continue;
            };
            claim.heartbeat_at = now_rfc3339();
            let body = serde_json::to_vec_pretty(&claim).expect("serializable");
            if let Err(e) = self.put(&path, body).await {
                tracing::warn!(%path, error = %e, "cannot refresh the publishing claim");
            }
        }
    }

    /// Uploads one local file; returns the bytes sent and their XXH3.
    pub(crate) async fn upload(
        &self,
        path: &ObjectPath,
        local: &Path,
        size: u64,
        options: &PublishOptions,
        limit: &Option<Arc<RateLimit>>,
    ) -> Result<(u64, u64)> {
        let io = |e| Error::io("read", local, e);
        let open_path = local.to_owned();
        let mut file = blocking(move || std::fs::File::open(open_path))
            .await
            .map_err(io)?;
        let mut hasher = Box::new(Xxh3::new());
        let part_size = options
            .part_size
            .max(MIN_PART_SIZE)
            .max(size.div_ceil(MAX_PARTS) as usize);
        let mut sent = 0u64;
        if size < part_size as u64 {
            // One request: read one byte past the expected end, to notice a file that grew.
            let (_, hasher, bytes) = read_chunk(file, hasher, size as usize + 1)
                .await
                .map_err(io)?;
            if let Some(limit) = limit {
                limit.take(bytes.len() as u64).await;
            }
            let n = bytes.len() as u64;
            self.put(path, bytes).await?;
            report(&options.progress, n);
            return Ok((n, hasher.digest()));
        }
        let upload = self
            .objects
            .put_multipart(path)
            .await
            .map_err(|e| self.err("PUT", path, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, part_size);
        loop {
            let chunk = read_chunk(file, hasher, part_size).await;
            let bytes;
            (file, hasher, bytes) = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(io(e));
                }
            };
            if bytes.is_empty() {
                break;
            }
            if let Some(limit) = limit {
                limit.take(bytes.len() as u64).await;
            }
            if let Err(e) = writer.wait_for_capacity(options.concurrency.max(1)).await {
                let _ = writer.abort().await;
                return Err(self.err("PUT", path, e));
            }
            let n = bytes.len() as u64;
            writer.put(bytes);
            sent += n;
            report(&options.progress, n);
        }
        match writer.finish().await {
            Ok(_) => {}
            // A completion that succeeded but whose answer was lost is retried, and the retry
            // finds no upload. Only the claim holder writes here, so an object of the right
            // size at this path is ours (its bytes are checked by readers against the manifest).
            Err(object_store::Error::NotFound { .. })
                if self.head(path).await.is_ok_and(|meta| meta.size == sent) => {}
            Err(e) => return Err(self.err("PUT", path, e)),
        }
        Ok((sent, hasher.digest()))
    }

    /// Uploads the block list of the snapshot file at `local` (`spec/STORE.md`, "Block
    /// lists") to `path`: readers plan delta fetches from it rather than from the file's
    /// larger block table. Read from the file's end and table (checked against its checksum).
    pub(crate) async fn put_block_list(&self, path: &ObjectPath, local: &Path) -> Result<()> {
        let file = local.to_owned();
        let list = blocking(move || -> Result<Vec<u8>> {
            use std::os::unix::fs::FileExt;
            let io = |e| Error::io("read", &file, e);
            let f = std::fs::File::open(&file).map_err(io)?;
            let len = f.metadata().map_err(io)?.len();
            let n = len.min(snapkv_format::TAIL_LEN);
            let mut end = vec![0u8; n as usize];
            f.read_exact_at(&mut end, len - n).map_err(io)?;
            let bad = |source: snapkv_format::Error| Error::Corrupt {
                what: file.display().to_string(),
                detail: "its block table cannot be listed".into(),
                source: Some(Box::new(source)),
            };
            let tail = snapkv_format::Tail::parse(&end, len).map_err(bad)?;
            let r = tail.block_table_range();
            let mut table = vec![0u8; (r.end - r.start) as usize];
            f.read_exact_at(&mut table, r.start).map_err(io)?;
            tail.block_list(&table).map_err(bad)
        })
        .await?;
        self.put(path, list).await
    }

    async fn write_manifest(&self, paths: &DatasetPaths, manifest: &Manifest) -> Result<()> {
        let path = paths.manifest(&manifest.version);
        let body = serde_json::to_vec_pretty(manifest).expect("serializable");
        if self.create(&path, body).await? {
            return Ok(());
        }
        // Only the claim holder writes here: an existing manifest is our own create, retried
        // after a lost answer, unless it says otherwise.
        let stored = self.manifest(&manifest.dataset, &manifest.version).await?;
        if stored == *manifest {
            Ok(())
        } else {
            Err(already_exists(&manifest.dataset, &manifest.version))
        }
    }
}

/// The manifest of `version` with these files, timestamped now.
fn new_manifest(
    dataset: &str,
    version: &str,
    names: &[String],
    locals: &[LocalSnapshot],
) -> Manifest {
    Manifest {
        manifest_version: MANIFEST_VERSION,
        dataset: dataset.to_owned(),
        version: version.to_owned(),
        created_at: now_rfc3339(),
        // What a reader must read to read every file.
        format_version: locals
            .iter()
            .map(|l| l.format_version)
            .max()
            .unwrap_or(snapkv_format::FORMAT_VERSION),
        published_by: identity(),
        files: names
            .iter()
            .zip(locals)
            .map(|(name, l)| ManifestFile {
                name: name.clone(),
                bytes: l.bytes,
                xxh3: format_xxh3(l.xxh3),
                keys: l.keys,
                built_at: l.metadata.created_at.clone(),
                builder: l.metadata.builder.clone(),
            })
            .collect(),
        sharding: None,
    }
}

/// Refuses a manifest readers would refuse as too large (see [`MAX_MANIFEST_BYTES`]), before
/// anything is written.
pub(crate) fn check_manifest_size(manifest: &Manifest) -> Result<()> {
    let size = serde_json::to_vec_pretty(manifest)
        .expect("serializable")
        .len() as u64;
    if size > MAX_MANIFEST_BYTES {
        return Err(Error::invalid(
            "files",
            format!(
                "the manifest of these {} files would be {size} bytes, over the limit of \
                 {MAX_MANIFEST_BYTES} bytes: publish fewer files, or files with fewer builder \
                 parameters",
                manifest.files.len()
            ),
        ));
    }
    Ok(())
}

pub(crate) fn already_exists(dataset: &str, version: &str) -> Error {
    Error::Refused {
        reason: format!(
            "version {version} of {dataset} already exists; versions are immutable: publish \
             under another version"
        ),
    }
}

/// The names the files get in the version folder: their own, which must be unique.
fn file_names(files: &[PathBuf]) -> Result<Vec<String>> {
    if files.is_empty() {
        return Err(Error::invalid("arguments", "no file to publish"));
    }
    let mut seen = BTreeSet::new();
    files
        .iter()
        .map(|f| {
            let name = f
                .file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| Error::invalid("file name", format!("{}", f.display())))?;
            check_file_name(name)?;
            if !seen.insert(name.to_owned()) {
                return Err(Error::invalid(
                    "file name",
                    format!("{name:?} is given twice: file names must be unique in a version"),
                ));
            }
            Ok(name.to_owned())
        })
        .collect()
}

/// The version to publish as: the one asked for, else the one the files' metadata names,
/// else now. A file whose metadata names another dataset or version is refused.
pub(crate) fn choose_version(
    dataset: &str,
    files: &[PathBuf],
    locals: &[LocalSnapshot],
    asked: Option<&str>,
) -> Result<String> {
    let mut recorded: Option<&str> = None;
    for (file, local) in files.iter().zip(locals) {
        if let Some(d) = local.metadata.dataset.as_deref() {
            if d != dataset {
                return Err(Error::invalid(
                    "dataset",
                    format!(
                        "{} was built for dataset {d:?}, not {dataset:?}",
                        file.display()
                    ),
                ));
            }
        }
        if let Some(v) = local.metadata.version.as_deref() {
            if let Some(other) = asked.or(recorded).filter(|o| *o != v) {
                return Err(Error::invalid(
                    "version",
                    format!(
                        "{} was built as version {v:?}, which differs from {other:?}",
                        file.display()
                    ),
                ));
            }
            recorded = Some(v);
        }
    }
    let version = asked
        .or(recorded)
        .map(str::to_owned)
        .unwrap_or_else(default_version);
    check_name("version", &version)?;
    Ok(version)
}
