//! `CURRENT`: reading it (conditionally) and moving it by compare-and-swap.

use crate::error::Result;
use crate::files::blocking;
use crate::layout::{DatasetPaths, CURRENT_LOCK};
use crate::manifest::Pointer;
use crate::objects::{Cap, Got};
use crate::Store;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use std::path::PathBuf;

/// Identifies one write of `CURRENT` (its ETag and, where the store has them, object
/// version): the condition of a conditional read or of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    e_tag: Option<String>,
    version: Option<String>,
}

impl Tag {
    /// The tag of the write `meta` describes.
    pub(crate) fn of(meta: &object_store::ObjectMeta) -> Tag {
        Tag {
            e_tag: meta.e_tag.clone(),
            version: meta.version.clone(),
        }
    }

    /// The ETag, for a conditional read.
    pub(crate) fn e_tag(&self) -> Option<String> {
        self.e_tag.clone()
    }

    fn update_version(&self) -> UpdateVersion {
        UpdateVersion {
            e_tag: self.e_tag.clone(),
            version: self.version.clone(),
        }
    }
}

/// `CURRENT` as read: its content and the tag of the write that produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Current {
    /// The content.
    pub pointer: Pointer,
    /// Pass to [`Store::poll_current`] to be told only about changes.
    pub tag: Tag,
}

/// The answer of [`Store::poll_current`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poll {
    /// `CURRENT` is still the write the given tag names (no body was transferred).
    Unchanged,
    /// `CURRENT` is (now) this.
    Changed(Box<Current>),
    /// The dataset has no `CURRENT`: nothing was ever published.
    Missing,
}

/// The result of a compare-and-swap on `CURRENT`.
pub(crate) enum Swap {
    Done,
    /// The condition failed: somebody else wrote `CURRENT` since it was read.
    Lost,
}

impl Store {
    /// Reads `CURRENT` of `dataset`, or `None` if nothing was ever published.
    pub async fn current(&self, dataset: &str) -> Result<Option<Current>> {
        match self.poll_current(dataset, None).await? {
            Poll::Changed(c) => Ok(Some(*c)),
            Poll::Missing => Ok(None),
            Poll::Unchanged => unreachable!("an unconditional read always has an answer"),
        }
    }

    /// Reads `CURRENT` of `dataset` unless it is still the write `known` names: a conditional
    /// GET (`If-None-Match`), so polling an unchanged pointer transfers no body.
    ///
    /// A `CURRENT` over [`MAX_CURRENT_BYTES`](crate::MAX_CURRENT_BYTES) is
    /// [`Error::Corrupt`](crate::Error::Corrupt) (it is not read past the limit), as is one that
    /// does not parse.
    pub async fn poll_current(&self, dataset: &str, known: Option<&Tag>) -> Result<Poll> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let path = paths.current();
        let options = GetOptions {
            if_none_match: known.and_then(|t| t.e_tag.clone()),
            ..Default::default()
        };
        let object = match self.get_small_opts(&path, options, Cap::CURRENT).await? {
            Got::Found(object) => object,
            Got::NotModified => return Ok(Poll::Unchanged),
            Got::Missing => return Ok(Poll::Missing),
        };
        let tag = Tag::of(object.meta());
        if known.is_some_and(|k| k.e_tag.is_some() && *k == tag) {
            return Ok(Poll::Unchanged);
        }
        let bytes = self.read_small(*object).await?;
        let pointer = Pointer::parse(&bytes, &format!("{}/{}", dataset, crate::layout::CURRENT))?;
        Ok(Poll::Changed(Box::new(Current { pointer, tag })))
    }

    /// Writes `pointer` to `CURRENT` if it is still the write `expected` names (or, for
    /// `None`, if there is no `CURRENT`).
    pub(crate) async fn swap_current(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        pointer: &Pointer,
        expected: Option<&Tag>,
    ) -> Result<Swap> {
        let path = paths.current();
        let bytes = PutPayload::from(serde_json::to_vec_pretty(pointer).expect("serializable"));
        match self.put_if(dataset, &path, bytes, expected).await {
            Ok(swap) => Ok(swap),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                // A request that succeeded but whose answer was lost is retried, and the retry
                // fails its own condition: if CURRENT holds our nonce, the swap is ours.
                match self.current(dataset).await? {
                    Some(c) if c.pointer.nonce == pointer.nonce => Ok(Swap::Done),
                    _ => Ok(Swap::Lost),
                }
            }
            Err(e) => Err(self.err("PUT", &path, e)),
        }
    }

    /// Writes `bytes` to `path`, an object of `dataset`'s folder, if it is still the write
    /// `expected` names (`None`: if it does not exist). A failed condition is [`Swap::Lost`]
    /// on local directories, and `Precondition` or `AlreadyExists` elsewhere (where a retried
    /// request may also fail its own condition: the caller tells by reading the object).
    pub(crate) async fn put_if(
        &self,
        dataset: &str,
        path: &ObjectPath,
        bytes: PutPayload,
        expected: Option<&Tag>,
    ) -> object_store::Result<Swap> {
        if let Some(dir) = &self.local_dir {
            return self
                .swap_local(dir.join(dataset), path, bytes, expected)
                .await;
        }
        let mode = match expected {
            Some(tag) => PutMode::Update(tag.update_version()),
            None => PutMode::Create,
        };
        self.objects
            .put_opts(path, bytes, PutOptions::from(mode))
            .await
            .map(|_| Swap::Done)
    }

    /// Compare-and-swap on a local directory, whose object store cannot overwrite
    /// conditionally: under an exclusive `flock` on `<dataset>/CURRENT.lock`, compare the
    /// tag of `CURRENT` on disk, then replace it (staged file, fsync, rename). Every writer takes
    /// the lock, so nobody writes between the compare and the rename; readers need no lock, as
    /// the rename is atomic. The lock is released when the process dies, and the lock file is
    /// never removed (removing it would let two writers lock different files).
    async fn swap_local(
        &self,
        dataset_dir: PathBuf,
        path: &ObjectPath,
        bytes: PutPayload,
        expected: Option<&Tag>,
    ) -> object_store::Result<Swap> {
        let lock_path = dataset_dir.join(CURRENT_LOCK);
        let lock = blocking(move || lock_exclusive(&dataset_dir, &lock_path))
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "LocalFileSystem",
                source: Box::new(e),
            })?;
        let on_disk = match self.objects.head(path).await {
            Ok(meta) => Some(Tag::of(&meta)),
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if on_disk.as_ref() != expected {
            return Ok(Swap::Lost);
        }
        self.objects
            .put_opts(path, bytes, PutOptions::from(PutMode::Overwrite))
            .await?;
        drop(lock);
        Ok(Swap::Done)
    }
}

/// Opens (creating it and its directory if needed) and exclusively locks the lock file. The
/// lock lives as long as the returned file.
fn lock_exclusive(dir: &std::path::Path, path: &std::path::Path) -> std::io::Result<std::fs::File> {
    std::fs::create_dir_all(dir)?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    #[cfg(unix)]
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive)?;
    #[cfg(not(unix))]
    return Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "compare-and-swap on local directories needs flock (unix)",
    ));
    #[cfg(unix)]
    Ok(file)
}
