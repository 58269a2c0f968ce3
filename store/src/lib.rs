//! snapkv's object-storage layout and protocol: publishing versioned snapshots, moving the
//! `CURRENT` pointer by compare-and-swap, and fetching versions into a local cache for readers.
//! `spec/STORE.md` is the specification; this crate implements it on [`object_store`].
//!
//! A [`Store`] is opened from a URL (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///dir`,
//! `memory://name`, or a plain directory path) and addresses any number of datasets:
//!
//! ```text
//! <root>/<dataset>/CURRENT                            which version readers serve (JSON)
//! <root>/<dataset>/CURRENT.lock                       local directories only: the CAS lock
//! <root>/<dataset>/versions/<version>/PUBLISHING.json the publisher's claim on the version
//! <root>/<dataset>/versions/<version>/<file>...       snapshot files
//! <root>/<dataset>/versions/<version>/MANIFEST.json   written last: the version is complete
//! ```
//!
//! The batch side calls [`Store::publish`], [`Store::versions`], [`Store::rollback`] and
//! [`Store::gc`]; [`Store::datasets`] lists the datasets of a store. Readers call [`Store::poll_current`] (a conditional GET), then
//! [`Store::fetch`] to download a version into a [`Cache`] directory, verified, read-only and
//! renamed into place; [`Cache::versions`] lists what is complete there without any storage.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use snapkv_format::{Metadata, SnapshotWriter, WriterOptions};
//! use snapkv_store::{Cache, FetchOptions, Poll, PublishOptions, Store};
//!
//! let dir = tempfile::tempdir()?;
//! let file = dir.path().join("part-0.snapkv");
//! let mut writer = SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default())?;
//! writer.insert(b"user:1", b"{\"score\":0.5}")?;
//! std::fs::write(&file, writer.finish()?.0)?;
//!
//! // Publish: upload, write the manifest, then move CURRENT by compare-and-swap.
//! let store = Store::open(&format!("memory://{}", line!()), &[])?;
//! let mut options = PublishOptions::default();
//! options.version = Some("20261127T031500Z".into());
//! let published = store.publish("scores", &[file], &options).await?;
//! assert_eq!(published.manifest.version, "20261127T031500Z");
//!
//! // Read: poll CURRENT, fetch the version into a cache directory.
//! let Poll::Changed(current) = store.poll_current("scores", None).await? else { panic!() };
//! let cache = Cache::new(dir.path().join("cache"));
//! let local = store
//!     .fetch("scores", &current.pointer.version, &cache, &FetchOptions::default())
//!     .await?;
//! assert!(local.path("part-0.snapkv").exists());
//! // Nothing changed since: the next poll is answered without a body.
//! assert!(matches!(store.poll_current("scores", Some(&current.tag)).await?, Poll::Unchanged));
//! # Ok(())
//! # }
//! ```

mod admin;
mod cache;
mod commit;
mod current;
mod delta;
mod diagnose;
mod error;
mod files;
mod history;
mod input;
mod layout;
mod lazy;
mod local;
mod manifest;
mod objects;
mod open;
mod policy;
mod publish;
mod rollout;
mod sharding;
mod staged;
mod uploads;

pub use admin::{GcOptions, GcReport, Incomplete, VersionInfo};
pub use cache::{held_files, Cache, CachedVersion, FetchOptions};
pub use commit::{Receipt, MAX_RECEIPT_BYTES};
pub use current::{Current, Poll, Tag};
pub use delta::Transfer;
pub use error::{error_chain, Error, Result};
pub use files::{read_snapshot, OpenSnapshot, Progress};
pub use history::HistoryEntry;
pub use input::Object;
pub use layout::{
    MAX_CLAIM_BYTES, MAX_CURRENT_BYTES, MAX_MANIFEST_BYTES, MAX_POLICY_BYTES, MAX_STAGED_BYTES,
};
pub use lazy::{Filling, LazyVersion};
pub use manifest::{Manifest, ManifestFile, Pin, Pointer, Sharding};
pub use policy::{
    CheckOptions, Outcome, Policy, PolicyCheck, PolicyReport, Rules, SchemaRule, EVERY_COLUMN,
    MAX_REQUIRED_KEYS, NULL_SAMPLE_ROWS, RULES,
};
pub use publish::{PublishOptions, Published};
pub use rollout::{ChangeOptions, Promoted};
pub use sharding::SHARD_KEY;
pub use staged::{Staged, StagedPoll};

use diagnose::Cloud;
use object_store::path::Path as ObjectPath;
use object_store::ObjectStore;
use std::path::PathBuf;
use std::sync::Arc;

/// A handle on one storage location. Cloning is cheap; clones share connections.
///
/// All methods are `async` and expect a Tokio runtime (with the `time` driver enabled); local
/// file I/O runs on Tokio's blocking pool, never on the async workers.
#[derive(Clone)]
pub struct Store {
    objects: Arc<dyn ObjectStore>,
    /// Prefix of every key: the path part of the URL (empty for local directories, whose
    /// directory is the object store's own root).
    root: ObjectPath,
    /// The directory of a local-directory store: compare-and-swap on `CURRENT` uses a lock file
    /// there, as the local object store has no conditional overwrite.
    local_dir: Option<PathBuf>,
    /// The URL as given, for messages.
    url: String,
    /// For cloud stores: what their error messages name (bucket, endpoint, credentials).
    cloud: Option<Arc<Cloud>>,
    /// For S3 stores: their open multipart uploads, which `gc` aborts.
    uploads: Option<Arc<uploads::S3Uploads>>,
    /// The options a cloud store was opened with, to open another client on it
    /// ([`Store::reconnected`]).
    options: Arc<[(String, String)]>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("url", &self.url).finish()
    }
}

impl Store {
    /// The location this store was opened on, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The same location through a client of its own (its own connections): for a cloud
    /// store, opened again with the same options; other stores have no connections and are
    /// shared.
    pub(crate) fn reconnected(&self) -> Result<Store> {
        match self.cloud {
            Some(_) => Store::open(&self.url, &self.options),
            None => Ok(self.clone()),
        }
    }

    /// Not part of the API: the underlying object store and root prefix, for tests that
    /// tamper with stored objects.
    #[doc(hidden)]
    pub fn raw_objects(&self) -> (Arc<dyn ObjectStore>, ObjectPath) {
        (self.objects.clone(), self.root.clone())
    }
}
