//! The raw object operations of the layout, each done one way for publish, fetch and admin:
//! reading a small object within a size limit, `HEAD`, create-if-absent, listing, deleting.
//!
//! Backend errors are classified in `error.rs` (through [`Store::err`]); this module decides only
//! which backend answers are not errors here (a missing object for `exists`, an existing one for
//! `create`, …). What is not shared stays with its one user: the compare-and-swap of `CURRENT`
//! (current.rs), multipart uploads (publish.rs) and ranged, streamed downloads (cache.rs).

use crate::error::{is_absent, Error, Result};
use crate::files::blocking;
use crate::layout::{
    DatasetPaths, CLAIM, MANIFEST, MAX_CLAIM_BYTES, MAX_CURRENT_BYTES, MAX_MANIFEST_BYTES,
};
use crate::Store;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetResult, ListResult, ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};

/// A kind of small object the layout reads whole, and how large it may be.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cap {
    /// What the object is, for messages.
    what: &'static str,
    /// The most bytes it may have.
    bytes: u64,
}

impl Cap {
    /// `CURRENT`.
    pub(crate) const CURRENT: Cap = Cap {
        what: "CURRENT",
        bytes: MAX_CURRENT_BYTES,
    };
    /// `MANIFEST.json`.
    pub(crate) const MANIFEST: Cap = Cap {
        what: "manifest",
        bytes: MAX_MANIFEST_BYTES,
    };
    /// `PUBLISHING.json`.
    pub(crate) const CLAIM: Cap = Cap {
        what: "publishing claim",
        bytes: MAX_CLAIM_BYTES,
    };
    /// `STAGED`.
    pub(crate) const STAGED: Cap = Cap {
        what: "STAGED",
        bytes: crate::layout::MAX_STAGED_BYTES,
    };
    /// A shard receipt.
    pub(crate) const RECEIPT: Cap = Cap {
        what: "shard receipt",
        bytes: crate::commit::MAX_RECEIPT_BYTES,
    };
    /// `POLICY.json`.
    pub(crate) const POLICY: Cap = Cap {
        what: "policy",
        bytes: crate::layout::MAX_POLICY_BYTES,
    };
    /// An entry of `history/`.
    pub(crate) const HISTORY: Cap = Cap {
        what: "history entry",
        bytes: crate::layout::MAX_HISTORY_ENTRY_BYTES,
    };
}

/// The answer of [`Store::get_small_opts`].
pub(crate) enum Got {
    /// The object exists and is no larger than its cap says; its body is still unread.
    Found(Box<SmallObject>),
    /// The condition of a conditional `GET` held: the object is unchanged.
    NotModified,
    /// There is no object at the path.
    Missing,
}

/// A small object whose `GET` was answered: metadata now, body on [`Store::read_small`].
pub(crate) struct SmallObject {
    path: ObjectPath,
    cap: Cap,
    result: GetResult,
}

impl SmallObject {
    /// The object's metadata, as the `GET` answered it.
    pub(crate) fn meta(&self) -> &ObjectMeta {
        &self.result.meta
    }
}

/// Why [`read_capped`] stopped.
#[derive(Debug)]
enum Capped {
    /// The stream failed.
    Storage(object_store::Error),
    /// The stream went past the cap: this many bytes had arrived when reading stopped.
    Over(u64),
}

impl Store {
    /// An object-store error of `op` on `path`, classified by [`Error::storage`].
    pub(crate) fn err(&self, op: &'static str, path: &ObjectPath, e: object_store::Error) -> Error {
        Error::storage(&self.url, self.cloud.as_deref(), op, path.as_ref(), e)
    }

    /// `GET` of a small object with `options`: [`Got::Found`] only if its size (from the
    /// answer's metadata) is within `cap`; an object that says it is larger is
    /// [`Error::Corrupt`], and its body is not read.
    pub(crate) async fn get_small_opts(
        &self,
        path: &ObjectPath,
        options: GetOptions,
        cap: Cap,
    ) -> Result<Got> {
        let result = match self.objects.get_opts(path, options).await {
            Ok(r) => r,
            Err(object_store::Error::NotModified { .. }) => return Ok(Got::NotModified),
            Err(e) if is_absent(&e) => return Ok(Got::Missing),
            Err(e) => return Err(self.err("GET", path, e)),
        };
        if result.meta.size > cap.bytes {
            return Err(too_large(path, cap, result.meta.size, "bytes"));
        }
        Ok(Got::Found(Box::new(SmallObject {
            path: path.clone(),
            cap,
            result,
        })))
    }

    /// Reads the body of a small object, stopping with [`Error::Corrupt`] as soon as more
    /// bytes arrive than its cap allows (whatever its metadata said).
    pub(crate) async fn read_small(&self, object: SmallObject) -> Result<Bytes> {
        let SmallObject { path, cap, result } = object;
        let expected = result.meta.size;
        read_capped(result.into_stream(), cap.bytes, expected)
            .await
            .map_err(|e| match e {
                Capped::Storage(e) => self.err("GET", &path, e),
                Capped::Over(n) => too_large(&path, cap, n, "bytes or more"),
            })
    }

    /// `GET` of a small object, read whole within `cap`; `None` if there is none.
    pub(crate) async fn get_small(&self, path: &ObjectPath, cap: Cap) -> Result<Option<Bytes>> {
        match self
            .get_small_opts(path, GetOptions::default(), cap)
            .await?
        {
            Got::Found(object) => self.read_small(*object).await.map(Some),
            Got::Missing => Ok(None),
            Got::NotModified => unreachable!("an unconditional GET is never answered 304"),
        }
    }

    /// Bytes `range` of the object at `path`, exactly: a range read that returns another
    /// number of bytes is [`Error::Corrupt`].
    pub(crate) async fn get_exact(
        &self,
        path: &ObjectPath,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes> {
        let n = range.end - range.start;
        let bytes = self
            .objects
            .get_range(path, range)
            .await
            .map_err(|e| self.err("GET", path, e))?;
        if bytes.len() as u64 != n {
            return Err(Error::corrupt(
                format!("stored object {path}"),
                format!("a range read of {n} bytes returned {}", bytes.len()),
            ));
        }
        Ok(bytes)
    }

    /// `HEAD`: the object's metadata; [`Error::NotFound`] if there is none.
    pub(crate) async fn head(&self, path: &ObjectPath) -> Result<ObjectMeta> {
        self.objects
            .head(path)
            .await
            .map_err(|e| self.err("HEAD", path, e))
    }

    /// Whether an object exists at `path` (`HEAD`).
    pub(crate) async fn exists(&self, path: &ObjectPath) -> Result<bool> {
        match self.head(path).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Writes `body` at `path` only if nothing is there: true when this call created it, false
    /// when an object already exists (someone else's, or our own from an answer that was lost).
    pub(crate) async fn create(&self, path: &ObjectPath, body: Vec<u8>) -> Result<bool> {
        let options = PutOptions::from(PutMode::Create);
        match self
            .objects
            .put_opts(path, PutPayload::from(body), options)
            .await
        {
            Ok(_) => Ok(true),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(false),
            Err(e) => Err(self.err("PUT", path, e)),
        }
    }

    /// Writes `body` at `path`, replacing what is there.
    pub(crate) async fn put(&self, path: &ObjectPath, body: impl Into<PutPayload>) -> Result<()> {
        self.objects
            .put(path, body.into())
            .await
            .map(|_| ())
            .map_err(|e| self.err("PUT", path, e))
    }

    /// Every object under `folder`, at any depth (`LIST`).
    pub(crate) async fn list(&self, folder: &ObjectPath) -> Result<Vec<ObjectMeta>> {
        self.objects
            .list(Some(folder))
            .try_collect()
            .await
            .map_err(|e| self.err("LIST", folder, e))
    }

    /// The objects and sub-folders directly under `folder` (`LIST` with delimiter); the
    /// store's root when `folder` is empty.
    pub(crate) async fn list_folder(&self, folder: &ObjectPath) -> Result<ListResult> {
        let prefix = (!folder.as_ref().is_empty()).then_some(folder);
        self.objects
            .list_with_delimiter(prefix)
            .await
            .map_err(|e| self.err("LIST", folder, e))
    }

    /// The names of the sub-folders directly under `folder`, as listed (unsorted, unchecked).
    pub(crate) async fn list_subfolders(&self, folder: &ObjectPath) -> Result<Vec<String>> {
        Ok(self
            .list_folder(folder)
            .await?
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// The objects of one version folder.
    pub(crate) async fn list_version(
        &self,
        paths: &DatasetPaths,
        version: &str,
    ) -> Result<Vec<ObjectMeta>> {
        self.list(&paths.version(version)).await
    }

    /// Deletes the object at `path`; an object already gone is not an error.
    pub(crate) async fn delete(&self, path: &ObjectPath) -> Result<()> {
        match self.objects.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) if is_absent(&e) => Ok(()),
            Err(e) => Err(self.err("DELETE", path, e)),
        }
    }

    /// Deletes a version folder's `objects`: the manifest first (the version stops being
    /// complete), then the files, the claim last (so no new publisher can claim the version
    /// while its old files are still being deleted). On a local directory the version's
    /// directory is then removed whole, with the staging files of interrupted uploads.
    pub(crate) async fn delete_version(
        &self,
        paths: &DatasetPaths,
        version: &str,
        objects: Vec<ObjectMeta>,
    ) -> Result<()> {
        let (claims, files): (Vec<_>, Vec<_>) = objects
            .into_iter()
            .map(|o| o.location)
            .partition(|p| p.filename() == Some(CLAIM));
        for path in files.iter().filter(|p| p.filename() == Some(MANIFEST)) {
            self.delete(path).await?;
        }
        for path in files.iter().filter(|p| p.filename() != Some(MANIFEST)) {
            self.delete(path).await?;
        }
        for path in &claims {
            self.delete(path).await?;
        }
        if let Some(dir) = &self.local_dir {
            // Staging files of interrupted local uploads are invisible to listings.
            let folder = dir.join(paths.version(version).as_ref());
            blocking(move || match std::fs::remove_dir_all(&folder) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io("remove", folder, e))
                }
                _ => Ok(()),
            })
            .await?;
        }
        Ok(())
    }
}

/// Collects `stream` into one buffer, stopping as soon as it yields more than `cap` bytes.
/// `expected` (the size the metadata announced, at most `cap`) sizes the buffer.
async fn read_capped(
    mut stream: BoxStream<'static, object_store::Result<Bytes>>,
    cap: u64,
    expected: u64,
) -> std::result::Result<Bytes, Capped> {
    let mut buf = Vec::with_capacity(expected.min(cap) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Capped::Storage)?;
        let total = (buf.len() as u64).saturating_add(chunk.len() as u64);
        if total > cap {
            return Err(Capped::Over(total));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// The error for a small object over its cap: `size` is what is known of its size (`bytes`
/// from metadata, `bytes or more` when the body was cut off).
fn too_large(path: &ObjectPath, cap: Cap, size: u64, unit: &str) -> Error {
    Error::corrupt(
        format!("{} object {path}", cap.what),
        format!(
            "{size} {unit}, over the limit of {} bytes for a {}",
            cap.bytes, cap.what
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::{Attributes, GetResultPayload};
    use std::sync::Arc;

    fn store() -> Store {
        Store {
            objects: Arc::new(InMemory::new()),
            root: ObjectPath::default(),
            local_dir: None,
            url: "memory://objects-test".into(),
            cloud: None,
            uploads: None,
            options: Arc::new([]),
        }
    }

    /// A `GET` answer whose metadata says `claimed` bytes and whose body is `chunks`.
    fn answer(path: &ObjectPath, claimed: u64, chunks: Vec<Bytes>) -> GetResult {
        GetResult {
            payload: GetResultPayload::Stream(
                futures_util::stream::iter(chunks.into_iter().map(Ok)).boxed(),
            ),
            meta: ObjectMeta {
                location: path.clone(),
                last_modified: chrono::Utc::now(),
                size: claimed,
                e_tag: None,
                version: None,
            },
            range: 0..claimed,
            attributes: Attributes::default(),
            extensions: Default::default(),
        }
    }

    #[tokio::test]
    async fn a_body_longer_than_its_metadata_says_is_cut_off_at_the_cap() {
        let store = store();
        let path = ObjectPath::from("ds/CURRENT");
        let chunk = Bytes::from(vec![b'x'; 40 << 10]);
        // Claims 100 bytes, sends 400 KiB in 40 KiB chunks: reading stops at the second chunk.
        let object = SmallObject {
            path: path.clone(),
            cap: Cap::CURRENT,
            result: answer(&path, 100, vec![chunk; 10]),
        };
        let e = store.read_small(object).await.unwrap_err();
        let Error::Corrupt { what, detail, .. } = &e else {
            panic!("{e:?}")
        };
        assert_eq!(what, "CURRENT object ds/CURRENT");
        assert_eq!(
            detail,
            &format!(
                "{} bytes or more, over the limit of 65536 bytes for a CURRENT",
                80 << 10
            )
        );

        // Exactly the cap, in pieces, is read whole.
        let pieces = vec![Bytes::from(vec![1u8; 65_000]), Bytes::from(vec![2u8; 536])];
        let object = SmallObject {
            path: path.clone(),
            cap: Cap::CURRENT,
            result: answer(&path, 1, pieces),
        };
        assert_eq!(store.read_small(object).await.unwrap().len(), 65_536);
    }

    #[tokio::test]
    async fn metadata_over_the_cap_is_refused_before_reading() {
        let store = store();
        let path = ObjectPath::from("ds/versions/v1/PUBLISHING.json");
        store
            .put(&path, vec![b' '; MAX_CLAIM_BYTES as usize + 1])
            .await
            .unwrap();
        let e = store.get_small(&path, Cap::CLAIM).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "publishing claim object ds/versions/v1/PUBLISHING.json is corrupt: 65537 bytes, \
             over the limit of 65536 bytes for a publishing claim"
        );
        let fits = ObjectPath::from("ds/versions/v1/MANIFEST.json");
        store.put(&fits, b"{}".to_vec()).await.unwrap();
        assert_eq!(
            store
                .get_small(&fits, Cap::MANIFEST)
                .await
                .unwrap()
                .unwrap(),
            &b"{}"[..]
        );
        let missing = ObjectPath::from("ds/CURRENT");
        assert_eq!(store.get_small(&missing, Cap::CURRENT).await.unwrap(), None);
    }

    #[tokio::test]
    async fn create_exists_list_and_delete() {
        let store = store();
        let paths = DatasetPaths::new(&ObjectPath::default(), "ds").unwrap();
        let claim = paths.claim("v1");
        assert!(!store.exists(&claim).await.unwrap());
        assert!(store.create(&claim, b"a".to_vec()).await.unwrap());
        assert!(!store.create(&claim, b"b".to_vec()).await.unwrap());
        assert_eq!(
            store.get_small(&claim, Cap::CLAIM).await.unwrap().unwrap(),
            &b"a"[..]
        );
        store
            .put(&paths.file("v1", "a.snapkv"), b"x".to_vec())
            .await
            .unwrap();
        store
            .put(&paths.manifest("v1"), b"{}".to_vec())
            .await
            .unwrap();
        store.put(&paths.claim("v2"), b"c".to_vec()).await.unwrap();
        let mut folders = store.list_subfolders(&paths.versions()).await.unwrap();
        folders.sort();
        assert_eq!(folders, ["v1", "v2"]);
        let objects = store.list_version(&paths, "v1").await.unwrap();
        assert_eq!(objects.len(), 3);
        store.delete_version(&paths, "v1", objects).await.unwrap();
        assert!(store.list_version(&paths, "v1").await.unwrap().is_empty());
        assert!(store.exists(&paths.claim("v2")).await.unwrap());
        // Deleting what is gone is not an error.
        store.delete(&claim).await.unwrap();
    }
}
