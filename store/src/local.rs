//! A local-directory store whose directory is created by the first write, never by opening
//! or reading: `versions`, `gc --dry-run` and `serve` leave no folder behind, and a reader
//! started before its store directory is mounted finds it once it appears.

use futures_util::stream::{self, BoxStream, StreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// [`LocalFileSystem`] rooted at `dir` once `dir` exists. Until then, reads find nothing
/// (`NotFound`, empty listings), as in an empty bucket, and a write creates the directory.
#[derive(Debug)]
pub(crate) struct LocalDir {
    /// The directory, absolute.
    dir: PathBuf,
    /// The file system store, once the directory exists. It is never unset: a directory
    /// removed later reads as empty through `LocalFileSystem` itself.
    fs: OnceLock<Arc<LocalFileSystem>>,
}

impl std::fmt::Display for LocalDir {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalDir({})", self.dir.display())
    }
}

impl LocalDir {
    /// A store over `dir` (absolute), opened now if the directory exists.
    pub(crate) fn new(dir: PathBuf) -> std::io::Result<LocalDir> {
        let local = LocalDir {
            dir,
            fs: OnceLock::new(),
        };
        local.open()?;
        Ok(local)
    }

    /// The file system store if the directory exists. Until it does, each call costs one
    /// `stat` (on the calling thread: it does not block for long, and a missing directory is
    /// a misconfiguration or a short wait for a mount).
    fn open(&self) -> std::io::Result<Option<Arc<LocalFileSystem>>> {
        if let Some(fs) = self.fs.get() {
            return Ok(Some(fs.clone()));
        }
        match std::fs::metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    format!("{} is not a directory", self.dir.display()),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        let fs = LocalFileSystem::new_with_prefix(&self.dir)
            .map_err(std::io::Error::other)?
            .with_fsync(true)
            .with_automatic_cleanup(true);
        Ok(Some(self.fs.get_or_init(|| Arc::new(fs)).clone()))
    }

    fn read(&self) -> Result<Option<Arc<LocalFileSystem>>> {
        self.open().map_err(|e| self.error(e))
    }

    fn write(&self) -> Result<Arc<LocalFileSystem>> {
        if let Some(fs) = self.read()? {
            return Ok(fs);
        }
        std::fs::create_dir_all(&self.dir).map_err(|e| self.error(e))?;
        self.read()?.ok_or_else(|| {
            self.error(std::io::Error::other(
                "the directory vanished as it was created",
            ))
        })
    }

    fn error(&self, e: std::io::Error) -> object_store::Error {
        object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!("store directory {}: {e}", self.dir.display()).into(),
        }
    }

    fn not_found(&self, location: &Path) -> object_store::Error {
        object_store::Error::NotFound {
            path: location.to_string(),
            source: format!("the store directory {} does not exist", self.dir.display()).into(),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for LocalDir {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.write()?.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.write()?.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.read()? {
            Some(fs) => fs.get_opts(location, options).await,
            None => Err(self.not_found(location)),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        match self.read() {
            Ok(Some(fs)) => fs.delete_stream(locations),
            // Nothing to delete in a directory that does not exist: local deletes of missing
            // objects succeed, as they do in `LocalFileSystem`.
            Ok(None) => locations,
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        match self.read() {
            Ok(Some(fs)) => fs.list(prefix),
            Ok(None) => stream::empty().boxed(),
            Err(e) => stream::once(async move { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.read()? {
            Some(fs) => fs.list_with_delimiter(prefix).await,
            None => Ok(ListResult {
                common_prefixes: Vec::new(),
                objects: Vec::new(),
                extensions: Default::default(),
            }),
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.write()?.copy_opts(from, to, options).await
    }
}
