//! Reading any object below a store's root: job output that `snapkv build` reads from the
//! same URLs, options and environment as `publish` writes to.

use crate::error::{Error, Result};
use crate::Store;
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, GetRange, ObjectStoreExt};
use std::ops::Range;

/// An object found below a store's root.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Object {
    /// Its path relative to the root, `/`-separated, as stored.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

impl Store {
    /// The full object path of `path`, relative to the root.
    fn below_root(&self, path: &str) -> Result<ObjectPath> {
        let joined = match (self.root.as_ref(), path.trim_matches('/')) {
            (root, "") => root.to_owned(),
            ("", rel) => rel.to_owned(),
            (root, rel) => format!("{root}/{rel}"),
        };
        ObjectPath::parse(&joined)
            .map_err(|e| Error::invalid("object path", format!("{path:?}: {e}")))
    }

    /// Every object below the folder `prefix` (relative to the root; `""` for all of it), at
    /// any depth, sorted by path.
    pub async fn list_objects(&self, prefix: &str) -> Result<Vec<Object>> {
        let folder = self.below_root(prefix)?;
        let mut objects: Vec<Object> = self
            .list(&folder)
            .await?
            .into_iter()
            .filter_map(|meta| {
                let parts: Vec<_> = meta.location.prefix_match(&self.root)?.collect();
                let path = parts
                    .iter()
                    .map(|p| p.as_ref())
                    .collect::<Vec<_>>()
                    .join("/");
                Some(Object {
                    path,
                    size: meta.size,
                })
            })
            .collect();
        objects.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(objects)
    }

    /// The object at `path` (relative to the root), `None` if there is none.
    pub async fn object(&self, path: &str) -> Result<Option<Object>> {
        let at = self.below_root(path)?;
        match self.head(&at).await {
            Ok(meta) => Ok(Some(Object {
                path: path.trim_matches('/').to_owned(),
                size: meta.size,
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Bytes `range` of the object at `path` (relative to the root).
    pub async fn read_range(&self, path: &str, range: Range<u64>) -> Result<Bytes> {
        let at = self.below_root(path)?;
        self.objects
            .get_range(&at, range)
            .await
            .map_err(|e| self.err("GET", &at, e))
    }

    /// The object at `path` (relative to the root) from byte `start` on, as it arrives; a
    /// failure part-way is the stream's last item.
    pub async fn read_from(
        &self,
        path: &str,
        start: u64,
    ) -> Result<BoxStream<'static, Result<Bytes>>> {
        let at = self.below_root(path)?;
        let mut options = GetOptions::default();
        if start > 0 {
            options.range = Some(GetRange::Offset(start));
        }
        let result = self
            .objects
            .get_opts(&at, options)
            .await
            .map_err(|e| self.err("GET", &at, e))?;
        let store = self.clone();
        Ok(result
            .into_stream()
            .map_err(move |e| store.err("GET", &at, e))
            .boxed())
    }
}
