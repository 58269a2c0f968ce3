//! Inputs in object storage, opened as `snapkv publish` opens its store (same URLs, options
//! and environment). Text and Arrow streams are read as one streaming `GET`; Parquet and
//! Arrow IPC files by range, so a Parquet build fetches only its footer and the column chunks
//! it needs.

use super::{
    check_compression, from_name, is_hidden, partitions_of, sniff, Location, Reading, Source,
};
use crate::error::{Error, Result};
use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use snapkv_store::Store;
use std::io::{Read, Seek, SeekFrom};
use std::sync::{Arc, OnceLock};

/// Bytes fetched per range request when an Arrow IPC file is read through `Read`.
const CURSOR_CHUNK: u64 = 8 << 20;

/// The runtime that object reads run on: builds are synchronous, and block on it from their
/// reading threads. One worker drives every request of the process.
fn runtime() -> std::io::Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    if let Some(rt) = RUNTIME.get() {
        return Ok(rt);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("snapkv-input")
        .enable_all()
        .build()?;
    Ok(RUNTIME.get_or_init(|| rt))
}

/// Runs `f` to completion from a synchronous build thread.
fn block_on<T>(f: impl std::future::Future<Output = T>) -> std::io::Result<T> {
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(std::io::Error::other(
            "a build that reads object storage cannot run on an async runtime's thread: \
             run it on a blocking thread (spawn_blocking)",
        ));
    }
    Ok(runtime()?.block_on(f))
}

/// A store location the inputs below it are read from.
pub(crate) struct Objects {
    store: Store,
}

impl std::fmt::Debug for Objects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Objects")
            .field("url", &self.store.url())
            .finish()
    }
}

fn io(e: snapkv_store::Error) -> std::io::Error {
    std::io::Error::other(e)
}

impl Objects {
    /// The object at `path` as a stream of its bytes.
    pub(crate) fn stream(&self, path: &str) -> std::io::Result<ObjectStream> {
        let chunks = block_on(self.store.read_from(path, 0))?.map_err(io)?;
        Ok(ObjectStream {
            chunks,
            current: Bytes::new(),
        })
    }

    /// Random access to the object at `path`, whose size is `size` (asked for if unknown).
    pub(crate) fn file(
        self: &Arc<Self>,
        path: &str,
        size: Option<u64>,
    ) -> std::io::Result<ObjectFile> {
        let len = match size {
            Some(s) => s,
            None => {
                block_on(self.store.object(path))?
                    .map_err(io)?
                    .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))?
                    .size
            }
        };
        Ok(ObjectFile {
            objects: self.clone(),
            path: path.to_owned(),
            len,
        })
    }
}

/// The bytes of one `GET`, as [`Read`].
pub(crate) struct ObjectStream {
    chunks: BoxStream<'static, snapkv_store::Result<Bytes>>,
    current: Bytes,
}

impl Read for ObjectStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match block_on(self.chunks.next())? {
                None => return Ok(0),
                Some(chunk) => self.current = chunk.map_err(io)?,
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// An object read by range.
#[derive(Clone)]
pub(crate) struct ObjectFile {
    objects: Arc<Objects>,
    path: String,
    len: u64,
}

impl ObjectFile {
    /// The object's size.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// `length` bytes from `start` (fewer at the end of the object).
    pub(crate) fn range(&self, start: u64, length: u64) -> std::io::Result<Bytes> {
        let end = start.saturating_add(length).min(self.len);
        if start >= end {
            return Ok(Bytes::new());
        }
        block_on(self.objects.store.read_range(&self.path, start..end))?.map_err(io)
    }

    /// A reader positioned at `start`.
    pub(crate) fn cursor(&self, start: u64) -> ObjectCursor {
        ObjectCursor {
            file: self.clone(),
            pos: start,
            buf: Bytes::new(),
            buf_at: 0,
        }
    }
}

/// [`Read`] and [`Seek`] over an [`ObjectFile`], fetching [`CURSOR_CHUNK`] bytes at a time.
pub(crate) struct ObjectCursor {
    file: ObjectFile,
    pos: u64,
    buf: Bytes,
    /// Offset of `buf` in the object.
    buf_at: u64,
}

impl Read for ObjectCursor {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let in_buf = self.pos >= self.buf_at && self.pos < self.buf_at + self.buf.len() as u64;
        if !in_buf {
            if self.pos >= self.file.len {
                return Ok(0);
            }
            let want = CURSOR_CHUNK.max(out.len() as u64);
            self.buf = self.file.range(self.pos, want)?;
            self.buf_at = self.pos;
            if self.buf.is_empty() {
                return Ok(0);
            }
        }
        let skip = (self.pos - self.buf_at) as usize;
        let n = out.len().min(self.buf.len() - skip);
        out[..n].copy_from_slice(&self.buf[skip..skip + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectCursor {
    fn seek(&mut self, to: SeekFrom) -> std::io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.file.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start")
        })?;
        Ok(self.pos)
    }
}

/// An input URL's store and the glob in its last segments (`s3://b/out/day=*/*.parquet` →
/// `s3://b/out` and `day=*/*.parquet`).
fn split_glob(url: &str) -> (&str, Option<&str>) {
    let Some(at) = url.find(['*', '?', '[']) else {
        return (url, None);
    };
    match url[..at].rfind('/') {
        Some(slash) if url[..slash].contains("://") && !url[..slash].ends_with(':') => {
            (&url[..slash], Some(&url[slash + 1..]))
        }
        _ => (url, None),
    }
}

fn store_error(url: &str, e: snapkv_store::Error) -> Error {
    match e {
        snapkv_store::Error::Invalid { .. } => Error::InvalidOption(format!("input {url}: {e}")),
        e => Error::Read {
            input: url.to_owned(),
            source: io(e),
        },
    }
}

/// Runs a store request for the input `url` from a build thread.
fn wait<T>(
    url: &str,
    request: impl std::future::Future<Output = snapkv_store::Result<T>>,
) -> Result<T> {
    block_on(request)
        .map_err(|e| Error::Read {
            input: url.to_owned(),
            source: e,
        })?
        .map_err(|e| store_error(url, e))
}

/// Adds the data objects a URL names: one object, every object below it, or a glob's
/// matches.
pub(super) fn discover(
    url: &str,
    options: &[(String, String)],
    reading: Reading,
    out: &mut Vec<Source>,
) -> Result<()> {
    let (base, pattern) = split_glob(url);
    let store = Store::open(base, options).map_err(|e| store_error(url, e))?;
    let objects = Arc::new(Objects { store });
    let listed = wait(url, objects.store.list_objects(""))?;
    let pattern = match pattern {
        Some(p) => Some(
            glob::Pattern::new(p)
                .map_err(|e| Error::InvalidOption(format!("bad glob {url:?}: {e}")))?,
        ),
        None => None,
    };
    let matches = |rel: &str| {
        let Some(p) = &pattern else { return true };
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..Default::default()
        };
        // An object matches, or a folder it is in does.
        let mut prefix = rel;
        loop {
            if p.matches_with(prefix, options) {
                return true;
            }
            match prefix.rfind('/') {
                Some(i) => prefix = &prefix[..i],
                None => return false,
            }
        }
    };
    let base = base.trim_end_matches('/');
    let before = out.len();
    let listed_anything = !listed.is_empty();
    for object in listed {
        let rel = object.path.as_str();
        if object.size == 0 || rel.split('/').any(|s| is_hidden(s.as_bytes())) || !matches(rel) {
            continue;
        }
        let name = format!("{base}/{rel}");
        let folders = rel.rsplit_once('/').map_or("", |(f, _)| f);
        let partitions = partitions_of(&name, folders.split('/').filter(|s| !s.is_empty()))?;
        out.push(object_source(
            &objects,
            name,
            rel,
            object.size,
            partitions,
            reading,
        )?);
    }
    if out.len() > before {
        return Ok(());
    }
    if pattern.is_some() {
        return Err(Error::NoMatch(url.to_owned()));
    }
    // Not a folder: the URL may name one object.
    match wait(url, objects.store.object(""))? {
        Some(o) if o.size == 0 => Err(Error::EmptyFile(url.to_owned())),
        Some(o) => {
            out.push(object_source(
                &objects,
                url.to_owned(),
                "",
                o.size,
                Vec::new(),
                reading,
            )?);
            Ok(())
        }
        None if !listed_anything => Err(Error::NoMatch(url.to_owned())),
        None => Err(Error::EmptyDirectory(url.to_owned())),
    }
}

fn object_source(
    objects: &Arc<Objects>,
    name: String,
    rel: &str,
    size: u64,
    partitions: Vec<(String, Option<String>)>,
    reading: Reading,
) -> Result<Source> {
    let file_name = name.rsplit('/').next().unwrap_or_default();
    let (format, compression, delimiter) = from_name(file_name, reading);
    let format = match format {
        Some(f) => f,
        None => {
            let file = objects.file(rel, Some(size)).map_err(|e| Error::Read {
                input: name.clone(),
                source: e,
            })?;
            let head = file.range(0, 8).map_err(|e| Error::Read {
                input: name.clone(),
                source: e,
            })?;
            sniff(&name, &head)?
        }
    };
    check_compression(&name, format, compression)?;
    Ok(Source {
        name,
        location: Location::Object(objects.clone(), rel.to_owned()),
        format,
        compression,
        delimiter,
        size: Some(size),
        partitions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_at_their_folder() {
        assert_eq!(split_glob("s3://b/out/"), ("s3://b/out/", None));
        assert_eq!(
            split_glob("s3://b/out/day=*/*.parquet"),
            ("s3://b/out", Some("day=*/*.parquet"))
        );
        assert_eq!(split_glob("s3://b/*.csv"), ("s3://b", Some("*.csv")));
        assert_eq!(split_glob("s3://b*/x"), ("s3://b*/x", None));
    }
}
