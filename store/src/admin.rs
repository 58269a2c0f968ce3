//! Listing datasets and versions, rolling back, and collecting garbage.

use crate::error::{Error, Result};
use crate::layout::{check_name, DatasetPaths, CURRENT, VERSIONS};
use crate::manifest::Manifest;
use crate::objects::Cap;
use crate::Store;
use futures_util::{StreamExt, TryStreamExt};
use std::time::Duration;

/// One version folder of a dataset.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct VersionInfo {
    /// The version.
    pub version: String,
    /// Whether `CURRENT` names it.
    pub current: bool,
    /// Its manifest; `None` for an incomplete version (an upload under way or abandoned).
    pub manifest: Option<Manifest>,
    /// What an incomplete version holds so far; `None` for a complete one.
    pub incomplete: Option<Incomplete>,
}

/// An incomplete version: an upload under way, or one a publisher abandoned.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Incomplete {
    /// Objects uploaded so far, the claim included.
    pub objects: usize,
    /// Their bytes.
    pub bytes: u64,
    /// When its newest object was written (`gc` deletes it once that is older than its grace
    /// period).
    pub newest: Option<chrono::DateTime<chrono::Utc>>,
    /// Who claimed it (`snapkv-store <version> on <host> (pid <pid>)`), when the claim reads.
    pub claimed_by: Option<String>,
    /// Whether that claimant was a process on this host that no longer runs.
    pub claimant_gone: bool,
}

/// What [`Store::gc`] keeps and deletes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// How many complete versions to keep (at least 1). Kept are the `keep` newest complete
    /// versions, the current one, and the `keep - 1` complete versions just older than the
    /// current one (the versions a rollback would go to). Default: 5.
    pub keep: usize,
    /// Incomplete versions whose newest object is younger than this are left alone (they may
    /// be uploads under way; a live publisher refreshes its claim every minute). Default: 1h.
    pub grace: Duration,
    /// Only report what would be deleted. Default: false.
    pub dry_run: bool,
}

impl Default for GcOptions {
    fn default() -> Self {
        GcOptions {
            keep: 5,
            grace: Duration::from_secs(3600),
            dry_run: false,
        }
    }
}

/// What [`Store::gc`] did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcReport {
    /// Complete versions deleted.
    pub deleted: Vec<String>,
    /// Incomplete versions deleted as abandoned.
    pub abandoned: Vec<String>,
    /// Complete versions kept.
    pub kept: Vec<String>,
    /// Incomplete versions left alone: younger than the grace period.
    pub in_progress: Vec<String>,
    /// Objects of kept complete versions that their manifest does not list (shard attempts
    /// that were not committed), deleted: `<version>/<object>`.
    pub unreferenced: Vec<String>,
    /// Staging files of a local-directory store (`<object>#<n>`, written before a rename into
    /// place) left by a killed writer and older than the grace period, deleted: paths under
    /// the dataset's folder.
    pub staging: Vec<String>,
    /// Multipart uploads of an S3 store started longer than the grace period ago and never
    /// completed (a publisher killed mid-upload), aborted: `<version>/<object>`. Their parts
    /// are stored and billed, but no object listing shows them.
    pub uploads: Vec<String>,
    /// Why open multipart uploads could not be listed or aborted (a missing permission, a
    /// store without the call): nothing else of gc depends on them.
    pub uploads_unlisted: Option<String>,
}

impl Store {
    /// Lists the version folders of `dataset`, oldest first, with their manifests.
    pub async fn versions(&self, dataset: &str) -> Result<Vec<VersionInfo>> {
        self.versions_with(dataset, true).await
    }

    /// [`Store::versions`]; what incomplete versions hold is listed only when `details` asks
    /// (gc lists their objects itself, to delete them).
    async fn versions_with(&self, dataset: &str, details: bool) -> Result<Vec<VersionInfo>> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let current = self.current(dataset).await?.map(|c| c.pointer.version);
        let mut names: Vec<String> = self
            .list_subfolders(&paths.versions())
            .await?
            .into_iter()
            .filter(|v| check_name("version", v).is_ok())
            .collect();
        names.sort();
        let manifests: Vec<Option<Manifest>> = futures_util::stream::iter(names.iter())
            .map(|v| async move {
                match self.manifest(dataset, v).await {
                    Ok(m) => Ok(Some(m)),
                    Err(Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let mut infos = Vec::with_capacity(names.len());
        for (version, manifest) in names.into_iter().zip(manifests) {
            let incomplete = match manifest {
                None if details => Some(self.incomplete(&paths, &version).await?),
                _ => None,
            };
            infos.push(VersionInfo {
                current: current.as_deref() == Some(version.as_str()),
                version,
                manifest,
                incomplete,
            });
        }
        Ok(infos)
    }

    /// What an incomplete version holds: its objects, and its claim's holder.
    async fn incomplete(&self, paths: &DatasetPaths, version: &str) -> Result<Incomplete> {
        let objects = self.list_version(paths, version).await?;
        let claimed_by = self.claim_holder(paths, version).await?;
        Ok(Incomplete {
            objects: objects.len(),
            bytes: objects.iter().map(|o| o.size).sum(),
            newest: objects.iter().map(|o| o.last_modified).max(),
            claimant_gone: claimed_by
                .as_deref()
                .and_then(crate::manifest::gone_from_this_host)
                .is_some(),
            claimed_by,
        })
    }

    /// The datasets of this store, sorted: the folders directly under the root whose names
    /// are valid dataset names and that hold a `CURRENT` or a `versions/` folder (a dataset
    /// whose first publish is under way has only the latter). One listing of the root, then
    /// one of each such folder, in turn.
    pub async fn datasets(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .list_subfolders(&self.root)
            .await?
            .into_iter()
            .filter(|d| check_name("dataset name", d).is_ok())
            .collect();
        names.sort();
        // One listing per candidate, in turn: a plain loop keeps this future `Send` for
        // callers that spawn it (a stream of closures borrowing `self` would not be).
        let mut found = Vec::with_capacity(names.len());
        for name in names {
            let listing = self
                .list_folder(&DatasetPaths::new(&self.root, &name)?.folder())
                .await?;
            let current = listing
                .objects
                .iter()
                .any(|o| o.location.filename() == Some(CURRENT));
            let versions = listing
                .common_prefixes
                .iter()
                .any(|p| p.filename() == Some(VERSIONS));
            if current || versions {
                found.push(name);
            }
        }
        Ok(found)
    }

    /// What a "no such dataset" message says of this store: `datasets there: a, b`, `it holds
    /// no dataset`, or why its datasets cannot be listed.
    pub async fn datasets_there(&self) -> String {
        if let Some(dir) = self.local_dir.as_ref().filter(|d| !d.exists()) {
            return format!("the directory {} does not exist", dir.display());
        }
        match self.datasets().await {
            Ok(names) if names.is_empty() => "it holds no dataset".to_owned(),
            Ok(names) => format!("datasets there: {}", names.join(", ")),
            Err(e) => {
                let mut s = format!("cannot list its datasets: {e}");
                let mut source = std::error::Error::source(&e);
                while let Some(c) = source {
                    s.push_str(&format!(": {c}"));
                    source = c.source();
                }
                s
            }
        }
    }

    /// Deletes old complete versions of `dataset` and abandoned incomplete ones (see
    /// [`GcOptions`]). Never deletes the version `CURRENT` names. A complete version loses its
    /// manifest first, so an interrupted gc leaves an incomplete version, never a manifest
    /// naming missing files.
    pub async fn gc(&self, dataset: &str, options: &GcOptions) -> Result<GcReport> {
        if options.keep == 0 {
            return Err(Error::invalid("keep", "gc keeps at least 1 version"));
        }
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let versions = self.versions_with(dataset, false).await?;
        let current = versions
            .iter()
            .find(|v| v.current)
            .map(|v| v.version.clone());
        let complete: Vec<&str> = versions
            .iter()
            .filter(|v| v.manifest.is_some())
            .map(|v| v.version.as_str())
            .collect();
        let mut keep: Vec<&str> = complete.iter().rev().take(options.keep).copied().collect();
        if let Some(c) = current.as_deref() {
            keep.push(c);
            keep.extend(
                complete
                    .iter()
                    .rev()
                    .filter(|v| **v < c)
                    .take(options.keep - 1)
                    .copied(),
            );
        }
        let mut report = GcReport::default();
        let now = chrono::Utc::now();
        for info in &versions {
            let v = info.version.as_str();
            if let Some(manifest) = &info.manifest {
                if keep.contains(&v) {
                    report.kept.push(v.to_owned());
                    // The files and their block lists.
                    let listed: std::collections::BTreeSet<String> = manifest
                        .files
                        .iter()
                        .flat_map(|f| [f.name.clone(), crate::layout::block_list_name(&f.name)])
                        .collect();
                    let objects = self.list_version(&paths, v).await?;
                    let unreferenced: Vec<_> = objects
                        .into_iter()
                        .filter(|o| {
                            o.location.filename().is_some_and(|n| {
                                n != crate::layout::MANIFEST
                                    && n != crate::layout::CLAIM
                                    && !listed.contains(n)
                            })
                        })
                        .collect();
                    let newest = unreferenced.iter().map(|o| o.last_modified).max();
                    let old_enough = newest
                        .is_some_and(|t| (now - t).to_std().unwrap_or_default() >= options.grace);
                    if old_enough {
                        for o in unreferenced {
                            if !options.dry_run {
                                self.delete(&o.location).await?;
                            }
                            let name = o.location.filename().unwrap_or_default().to_owned();
                            report.unreferenced.push(format!("{v}/{name}"));
                        }
                    }
                    continue;
                }
                if !options.dry_run && !self.delete_complete(&paths, dataset, v).await? {
                    report.kept.push(v.to_owned());
                    continue;
                }
                report.deleted.push(v.to_owned());
            } else {
                if Some(v) == current.as_deref() {
                    continue;
                }
                let objects = self.list_version(&paths, v).await?;
                let newest = objects.iter().map(|o| o.last_modified).max();
                let age = newest.map_or(Duration::MAX, |t| (now - t).to_std().unwrap_or_default());
                if age < options.grace {
                    report.in_progress.push(v.to_owned());
                    continue;
                }
                if !options.dry_run {
                    self.delete_version(&paths, v, objects).await?;
                }
                report.abandoned.push(v.to_owned());
            }
        }
        if let Some(uploads) = &self.uploads {
            let folder = paths.versions();
            let strip = format!("{folder}/");
            // Listing uploads needs its own permission (s3:ListBucketMultipartUploads) and
            // API, which some stores lack: without it, gc does the rest and says so.
            let open = match uploads.list(&folder).await {
                Ok(open) => open,
                Err(e) => {
                    let mut why = e.to_string();
                    let mut source = std::error::Error::source(&e);
                    while let Some(c) = source {
                        why.push_str(&format!(": {c}"));
                        source = c.source();
                    }
                    report.uploads_unlisted = Some(why);
                    Vec::new()
                }
            };
            for u in open {
                // A store that ignores the prefix: only this dataset's uploads are touched.
                let Some(name) = u.key.strip_prefix(&strip) else {
                    continue;
                };
                // An upload of a version still being published (by the age of its objects,
                // which a live publisher keeps writing), or younger than the grace period
                // itself, may be a publisher at work.
                let version = name.split('/').next().unwrap_or_default();
                let age = (now - u.initiated).to_std().unwrap_or_default();
                if age < options.grace || report.in_progress.iter().any(|v| v == version) {
                    continue;
                }
                if !options.dry_run {
                    if let Err(e) = uploads.abort(&u).await {
                        // As for the listing: gc does the rest and says why.
                        report.uploads_unlisted = Some(e.to_string());
                        continue;
                    }
                }
                report.uploads.push(name.to_owned());
            }
        }
        if let Some(dir) = &self.local_dir {
            let folder = dir.join(dataset);
            let (grace, dry_run) = (options.grace, options.dry_run);
            report.staging =
                tokio::task::spawn_blocking(move || staging_files(&folder, grace, dry_run))
                    .await
                    .map_err(|e| Error::io("clean", dir, std::io::Error::other(e)))??;
        }
        Ok(report)
    }

    /// Deletes a complete version unless `CURRENT` comes to name it meanwhile; returns whether
    /// it was deleted.
    async fn delete_complete(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        version: &str,
    ) -> Result<bool> {
        let manifest_path = paths.manifest(version);
        let Some(manifest) = self.get_small(&manifest_path, Cap::MANIFEST).await? else {
            return Err(Error::NotFound {
                what: format!("object {manifest_path}"),
            });
        };
        self.delete(&manifest_path).await?;
        if self
            .current(dataset)
            .await?
            .is_some_and(|c| c.pointer.version == version)
        {
            // A rollback to this version raced with us: put the manifest back.
            self.put(&manifest_path, manifest).await?;
            return Ok(false);
        }
        let objects = self.list_version(paths, version).await?;
        self.delete_version(paths, version, objects).await?;
        Ok(true)
    }
}

/// The staging files under `folder` (`<name>#<digits>`: a local-directory store's writes in
/// progress, renamed into place when complete) last modified longer than `grace` ago, removed
/// unless `dry_run`; their paths relative to `folder`, sorted.
fn staging_files(folder: &std::path::Path, grace: Duration, dry_run: bool) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut dirs = vec![folder.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("list", &dir, e))?;
            let path = entry.path();
            let meta = entry.metadata().map_err(|e| Error::io("stat", &path, e))?;
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            let name = entry.file_name();
            let staging = name
                .to_str()
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            let age = meta
                .modified()
                .ok()
                .and_then(|t| t.elapsed().ok())
                .unwrap_or_default();
            if !staging || age < grace {
                continue;
            }
            if !dry_run {
                std::fs::remove_file(&path).map_err(|e| Error::io("remove", &path, e))?;
            }
            let relative = path.strip_prefix(folder).unwrap_or(&path);
            found.push(relative.display().to_string());
        }
    }
    found.sort();
    Ok(found)
}
