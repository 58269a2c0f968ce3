//! Datasets and the snapshot each one serves, swapped atomically.

use crate::time::rfc3339;
use arc_swap::ArcSwapOption;
use http::HeaderValue;
use snapkv_format::{OpenOptions, Snapshot, ValueEncoding};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// One loaded, verified snapshot version of a dataset.
pub(crate) struct Loaded {
    pub snapshot: Snapshot,
    pub version: String,
    pub version_header: HeaderValue,
    pub content_type: HeaderValue,
    pub json: bool,
    pub path: PathBuf,
    pub file_bytes: u64,
    pub loaded_at: SystemTime,
    /// Files the server manages (downloaded into its cache dir) are unlinked once no request,
    /// value or slot holds the version any more; files named by the user are never removed.
    remove_when_dropped: AtomicBool,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        if self.remove_when_dropped.load(Ordering::Acquire) {
            // The mapping is gone with `snapshot`; the file is no longer needed. Failure only
            // leaves a file for the next start-up's cache clean-up.
            if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot remove old snapshot");
            }
        }
    }
}

impl Loaded {
    /// Maps, opens and fully verifies a snapshot file: blocking, run it off the async workers.
    /// Verification reads every byte, which also brings the file into the page cache before
    /// the first request (lookups then rarely fault on the async workers).
    pub fn open(
        path: &Path,
        cache_bytes: usize,
        fallback_version: &str,
    ) -> Result<Loaded, crate::OpenError> {
        let mut options = OpenOptions::default();
        options.cache_bytes = cache_bytes;
        let snapshot = crate::open_snapshot(path, &options)?;
        snapshot
            .verify()
            .map_err(|source| crate::OpenError::Format {
                path: path.to_owned(),
                source,
            })?;
        let meta = snapshot.metadata();
        let version = meta
            .version
            .clone()
            .unwrap_or_else(|| fallback_version.to_owned());
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
        Ok(Loaded {
            version_header: header(&version, "unknown"),
            content_type: header(&content_type, "application/octet-stream"),
            version,
            json,
            path: path.to_owned(),
            file_bytes: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
            loaded_at: SystemTime::now(),
            snapshot,
            remove_when_dropped: AtomicBool::new(false),
        })
    }

    /// Unlink the file once the last holder lets go.
    pub fn remove_when_dropped(&self) {
        self.remove_when_dropped.store(true, Ordering::Release);
    }
}

/// The outcome of the last sync attempts of a dataset.
#[derive(Debug, Clone, Default)]
pub(crate) struct SyncStatus {
    pub last_attempt: Option<SystemTime>,
    pub last_success: Option<SystemTime>,
    pub last_error: Option<String>,
    pub failures: u64,
}

/// A served dataset: the current version, the previous one (for instant local rollback) and
/// the sync status.
pub(crate) struct Dataset {
    pub name: String,
    pub source: String,
    pub current: ArcSwapOption<Loaded>,
    pub previous: ArcSwapOption<Loaded>,
    pub status: Mutex<SyncStatus>,
    /// Whether files of replaced versions are removed (server-managed cache files).
    pub managed_files: bool,
}

impl Dataset {
    pub fn new(name: String, source: String, managed_files: bool) -> Dataset {
        Dataset {
            name,
            source,
            current: ArcSwapOption::empty(),
            previous: ArcSwapOption::empty(),
            status: Mutex::new(SyncStatus::default()),
            managed_files,
        }
    }

    /// Serves `loaded` from now on. Requests that already hold the old version finish on it;
    /// the old version becomes the previous one, and the one before that is released (its
    /// file removed when managed and no longer held).
    pub fn swap(&self, loaded: Loaded) {
        let version = loaded.version.clone();
        let old = self.current.swap(Some(Arc::new(loaded)));
        if let Some(old) = old {
            tracing::info!(dataset = %self.name, from = %old.version, to = %version, "swapped");
            if let Some(evicted) = self.previous.swap(Some(old)) {
                if self.managed_files && !self.holds_path(&evicted.path) {
                    evicted.remove_when_dropped();
                }
            }
        } else {
            tracing::info!(dataset = %self.name, %version, "loaded");
        }
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
                s.last_success = Some(now);
                s.last_error = None;
            }
            Err(e) => {
                tracing::warn!(dataset = %self.name, error = %e, "sync failed; serving the version it has");
                s.last_error = Some(e);
                s.failures += 1;
            }
        }
    }

    pub fn status(&self) -> SyncStatus {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The dataset's description for `/v1/datasets/{ds}`.
    pub fn info(&self) -> serde_json::Value {
        let current = self.current.load_full();
        let previous = self.previous.load_full();
        let status = self.status();
        let t = |t: Option<SystemTime>| t.map(rfc3339);
        let mut v = serde_json::json!({
            "name": self.name,
            "source": self.source,
            "ready": current.is_some(),
            "previous_version": previous.as_ref().map(|p| p.version.clone()),
            "sync": {
                "last_attempt": t(status.last_attempt),
                "last_success": t(status.last_success),
                "last_error": status.last_error,
                "failures": status.failures,
            },
        });
        if let Some(c) = current {
            let m = c.snapshot.metadata();
            let s = c.snapshot.stats().ok();
            v["version"] = c.version.clone().into();
            v["keys"] = c.snapshot.len().into();
            v["file"] = c.path.display().to_string().into();
            v["file_bytes"] = c.file_bytes.into();
            v["blocks"] = s.map(|s| s.block_count).into();
            v["built_at"] = m.created_at.clone().into();
            v["loaded_at"] = rfc3339(c.loaded_at).into();
            v["content_type"] = c.content_type.to_str().unwrap_or_default().into();
            v["metadata"] = serde_json::to_value(m).unwrap_or_default();
        }
        v
    }
}
