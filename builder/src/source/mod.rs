//! What a build reads. A caller names [`Input`]s — local paths, object-storage URLs, record
//! batches it holds — and discovery expands them into [`Source`]s: one file, object or stream
//! each, with its format, compression and partition values, read the same way wherever it
//! lives.

mod local;
mod objects;

use crate::error::{Error, Result};
use crate::InputFormat;
use arrow_array::RecordBatchReader;
use parquet::file::reader::{ChunkReader, Length};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use objects::Objects;

/// The name standard input goes by in messages.
pub(crate) const STDIN: &str = "<stdin>";

/// Hive's folder name for a null partition value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// One input of a build, as a caller names it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Input {
    /// A local file, a directory laid out the way Spark, Hive, DuckDB and pandas write them
    /// (`col=value/` partition folders; `_SUCCESS` and other `_`/`.` entries ignored), a glob,
    /// or `-` for standard input.
    Path(String),
    /// Object storage: `s3://`, `gs://`, `az://` (and `file://`) URLs name one object, every
    /// data object below a prefix (laid out as a directory is), or a glob in the last
    /// segments. `options` are those of `snapkv_store::Store::open` (credentials, endpoint,
    /// region…; the `AWS_*`, `GOOGLE_*`, `AZURE_*` variables are read too).
    Url {
        /// The URL.
        url: String,
        /// Store options, `KEY=VALUE`.
        options: Vec<(String, String)>,
    },
    /// Record batches a caller hands in (a Python job, a Spark task); read once.
    Batches(BatchInput),
}

impl Input {
    /// The input a command-line argument stands for: a URL with a scheme, or a local path.
    pub fn parse(arg: &str, options: &[(String, String)]) -> Input {
        match arg.split_once("://") {
            Some((scheme, _)) if !scheme.is_empty() && !scheme.contains('/') => Input::Url {
                url: arg.to_owned(),
                options: options.to_vec(),
            },
            _ => Input::Path(arg.to_owned()),
        }
    }
}

/// Record batches handed to a build by its caller.
#[derive(Clone)]
pub struct BatchInput {
    name: String,
    reader: Arc<Mutex<Option<Box<dyn RecordBatchReader + Send>>>>,
}

impl BatchInput {
    /// Batches from `reader`, called `name` in messages.
    pub fn new(name: impl Into<String>, reader: Box<dyn RecordBatchReader + Send>) -> BatchInput {
        BatchInput {
            name: name.into(),
            reader: Arc::new(Mutex::new(Some(reader))),
        }
    }

    /// The reader, the first time.
    pub(crate) fn take(&self) -> Option<Box<dyn RecordBatchReader + Send>> {
        self.reader.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl std::fmt::Debug for BatchInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchInput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// How a text input is compressed, from its name (`.gz`, `.zst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Where a source's bytes are.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    Stdin,
    File(PathBuf),
    /// An object, by its path below the store's root.
    Object(Arc<Objects>, String),
    Batches(BatchInput),
}

/// One data file, object or stream to read, in input order.
#[derive(Clone, Debug)]
pub(crate) struct Source {
    /// The name used in messages (the path or URL as found, or `<stdin>`).
    pub name: String,
    pub location: Location,
    pub format: InputFormat,
    pub compression: Compression,
    /// The CSV field delimiter.
    pub delimiter: u8,
    /// Size in bytes (compressed, as stored), when known.
    pub size: Option<u64>,
    /// Partition folders between the input folder and the file: name and value (`None` for
    /// Hive's null marker).
    pub partitions: Vec<(String, Option<String>)>,
}

/// How inputs are read, beyond where they are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reading {
    /// `--format`: every input's format, instead of detecting it.
    pub format: Option<InputFormat>,
    /// `--delimiter`: the CSV delimiter, instead of `,` (`\t` for `.tsv`).
    pub delimiter: Option<u8>,
}

/// Expands the inputs into sources, in order: inputs as given, glob matches and directory
/// contents sorted by path.
pub(crate) fn discover(inputs: &[Input], reading: Reading) -> Result<Vec<Source>> {
    if inputs.is_empty() {
        return Err(Error::InvalidOption("no input given".into()));
    }
    let mut sources = Vec::new();
    let mut stdin_seen = false;
    for input in inputs {
        match input {
            Input::Path(p) if p == "-" => {
                if stdin_seen {
                    return Err(Error::InvalidOption(
                        "stdin (-) is given more than once".into(),
                    ));
                }
                stdin_seen = true;
                sources.push(local::stdin(reading)?);
            }
            Input::Path(p) => local::discover(p, reading, &mut sources)?,
            Input::Url { url, options } => match url.strip_prefix("file://") {
                Some(path) => local::discover(path, reading, &mut sources)?,
                None => objects::discover(url, options, reading, &mut sources)?,
            },
            Input::Batches(b) => sources.push(Source {
                name: b.name.clone(),
                location: Location::Batches(b.clone()),
                format: InputFormat::Arrow,
                compression: Compression::None,
                delimiter: b',',
                size: None,
                partitions: Vec::new(),
            }),
        }
    }
    check_partitions(&sources)?;
    Ok(sources)
}

/// The format and compression of a file from its name: `x.csv.gz` is gzip-compressed CSV.
/// `None` for the format when the name does not tell.
fn from_name(name: &str, reading: Reading) -> (Option<InputFormat>, Compression, u8) {
    let lower = name.to_ascii_lowercase();
    let (rest, compression) = if let Some(r) = lower.strip_suffix(".gz") {
        (r, Compression::Gzip)
    } else if let Some(r) = lower.strip_suffix(".zst") {
        (r, Compression::Zstd)
    } else if let Some(r) = lower.strip_suffix(".zstd") {
        (r, Compression::Zstd)
    } else {
        (lower.as_str(), Compression::None)
    };
    let ext = rest.rsplit_once('.').map(|(_, e)| e);
    let by_name = ext.and_then(InputFormat::from_extension);
    let format = reading.format.or(by_name);
    let tab = by_name == Some(InputFormat::Tsv) || reading.format == Some(InputFormat::Tsv);
    let delimiter = reading.delimiter.unwrap_or(if tab { b'\t' } else { b',' });
    (format, compression, delimiter)
}

/// Tells a format from a file's first bytes (Parquet and Arrow say what they are).
fn sniff(name: &str, head: &[u8]) -> Result<InputFormat> {
    if head.starts_with(b"PAR1") {
        Ok(InputFormat::Parquet)
    } else if head.starts_with(b"ARROW1") || head.starts_with(&[0xff, 0xff, 0xff, 0xff]) {
        Ok(InputFormat::Arrow)
    } else {
        Err(Error::UnknownFormat(name.to_owned()))
    }
}

/// Compression applies to text: Parquet and Arrow compress inside the file.
fn check_compression(name: &str, format: InputFormat, compression: Compression) -> Result<()> {
    if compression != Compression::None && matches!(format, InputFormat::Parquet) {
        return Err(Error::InvalidOption(format!(
            "{name}: a compressed {} file cannot be read; only text inputs (CSV, TSV, NDJSON, \
             Arrow streams) may be .gz or .zst (Parquet compresses inside the file)",
            format.name()
        )));
    }
    Ok(())
}

/// `_SUCCESS`, `_metadata`, `.part-0.crc`, `.DS_Store`, `_temporary/`...: not data.
fn is_hidden(name: &[u8]) -> bool {
    name.first().is_some_and(|c| *c == b'_' || *c == b'.')
}

/// The `col=value` folders among `folders` (those between the input folder and a file).
fn partitions_of<'a>(
    name: &str,
    folders: impl Iterator<Item = &'a str>,
) -> Result<Vec<(String, Option<String>)>> {
    let mut partitions = Vec::new();
    for folder in folders {
        if let Some((col, value)) = folder.split_once('=') {
            let col = percent_decode(col, name)?;
            let value = percent_decode(value, name)?;
            partitions.push((col, (value != HIVE_NULL).then_some(value)));
        }
    }
    Ok(partitions)
}

/// Decodes Hive's `%XX` escapes in partition folder names. A `%` not followed by two hex
/// digits stays as it is (Hive and Spark leave it so); the decoded bytes must be UTF-8.
fn percent_decode(s: &str, name: &str) -> Result<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| Error::NotUtf8 {
            input: name.to_owned(),
            what: format!("the decoded partition folder name {s:?}"),
        })
}

/// Every file must sit under the same partition folders (same names, same order).
fn check_partitions(sources: &[Source]) -> Result<()> {
    let Some(first) = sources.first() else {
        return Ok(());
    };
    let names = |s: &Source| {
        s.partitions
            .iter()
            .map(|(n, _)| n.clone())
            .collect::<Vec<_>>()
    };
    let want = names(first);
    for s in sources {
        let got = names(s);
        if got != want {
            return Err(Error::Partitions(format!(
                "inconsistent partition folders: {} is under ({}) but {} is under ({})",
                first.name,
                want.join(", "),
                s.name,
                got.join(", ")
            )));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = got.iter().find(|n| !seen.insert(*n)) {
            return Err(Error::Partitions(format!(
                "{}: partition column {dup:?} appears twice in its path",
                s.name
            )));
        }
    }
    Ok(())
}

/// Counts the bytes read through it (for progress).
pub(crate) struct Counting<R> {
    pub inner: R,
    pub count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.count.store(at, Ordering::Relaxed);
        Ok(at)
    }
}

/// A source's bytes with random access (Parquet, Arrow IPC files).
pub(crate) enum RandomAccess {
    File(std::fs::File),
    Object(objects::ObjectFile),
}

/// [`Read`] and [`std::io::Seek`], boxed.
pub(crate) trait ReadSeek: Read + std::io::Seek + Send {}
impl<T: Read + std::io::Seek + Send> ReadSeek for T {}

impl RandomAccess {
    /// The bytes as one seekable reader.
    pub(crate) fn into_read_seek(self) -> Box<dyn ReadSeek> {
        match self {
            RandomAccess::File(f) => Box::new(f),
            RandomAccess::Object(o) => Box::new(o.cursor(0)),
        }
    }
}

impl Length for RandomAccess {
    fn len(&self) -> u64 {
        match self {
            RandomAccess::File(f) => f.len(),
            RandomAccess::Object(o) => o.len(),
        }
    }
}

impl ChunkReader for RandomAccess {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        Ok(match self {
            RandomAccess::File(f) => Box::new(f.get_read(start)?),
            RandomAccess::Object(o) => Box::new(o.cursor(start)),
        })
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        match self {
            RandomAccess::File(f) => f.get_bytes(start, length),
            RandomAccess::Object(o) => o
                .range(start, length as u64)
                .map_err(|e| parquet::errors::ParquetError::External(Box::new(e))),
        }
    }
}

impl Source {
    pub(crate) fn read_error(&self, e: std::io::Error) -> Error {
        Error::Read {
            input: self.name.clone(),
            source: e,
        }
    }

    /// The source's bytes from the start, decompressed; `count` counts the bytes as stored.
    pub(crate) fn stream(&self, count: &Arc<AtomicU64>) -> Result<Box<dyn Read + Send>> {
        let raw: Box<dyn Read + Send> = match &self.location {
            Location::Stdin => Box::new(Counting {
                inner: std::io::stdin(),
                count: count.clone(),
            }),
            Location::File(p) => Box::new(Counting {
                inner: std::fs::File::open(p).map_err(|e| self.read_error(e))?,
                count: count.clone(),
            }),
            Location::Object(objects, path) => Box::new(Counting {
                inner: objects.stream(path).map_err(|e| self.read_error(e))?,
                count: count.clone(),
            }),
            Location::Batches(_) => {
                return Err(Error::InvalidOption(format!(
                    "{} holds record batches, not bytes",
                    self.name
                )))
            }
        };
        Ok(match self.compression {
            Compression::None => raw,
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(
                std::io::BufReader::with_capacity(1 << 20, raw),
            )),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| self.read_error(e))?)
            }
        })
    }

    /// Random access to the source's bytes, if it has any (files and objects, uncompressed).
    pub(crate) fn random_access(&self) -> Result<Option<RandomAccess>> {
        if self.compression != Compression::None {
            return Ok(None);
        }
        Ok(match &self.location {
            Location::File(p) => Some(RandomAccess::File(
                std::fs::File::open(p).map_err(|e| self.read_error(e))?,
            )),
            Location::Object(objects, path) => Some(RandomAccess::Object(
                objects
                    .file(path, self.size)
                    .map_err(|e| self.read_error(e))?,
            )),
            Location::Stdin | Location::Batches(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_hive_escapes() {
        let p = "x";
        assert_eq!(percent_decode("a%3Ab%2F", p).unwrap(), "a:b/");
        assert_eq!(percent_decode("100%", p).unwrap(), "100%");
        assert_eq!(percent_decode("%zz", p).unwrap(), "%zz");
        assert_eq!(percent_decode("plain", p).unwrap(), "plain");
        assert_eq!(percent_decode("%3a%3A", p).unwrap(), "::");
        assert_eq!(percent_decode("%C3%A9t%C3%A9", p).unwrap(), "été");
        assert_eq!(percent_decode("50%25", p).unwrap(), "50%");
        // Not an escape: kept as written.
        assert_eq!(percent_decode("%", p).unwrap(), "%");
        assert_eq!(percent_decode("a%4", p).unwrap(), "a%4");
        assert_eq!(percent_decode("%4g%", p).unwrap(), "%4g%");
        assert_eq!(percent_decode("%%41", p).unwrap(), "%A");
        assert!(percent_decode("%ff", p).is_err());
        // Half of a two-byte character.
        assert!(percent_decode("%C3", p).is_err());
    }

    #[test]
    fn hidden_names() {
        assert!(is_hidden(b"_SUCCESS"));
        assert!(is_hidden(b".part-0.crc"));
        assert!(!is_hidden(b"part-0.parquet"));
    }

    #[test]
    fn partition_folders() {
        let p = partitions_of("f", ["day=2024-01-01", "kind=a%2Fb", "nested"].into_iter()).unwrap();
        assert_eq!(
            p,
            [
                ("day".to_owned(), Some("2024-01-01".to_owned())),
                ("kind".to_owned(), Some("a/b".to_owned()))
            ]
        );
        let p = partitions_of("f", ["d=__HIVE_DEFAULT_PARTITION__"].into_iter()).unwrap();
        assert_eq!(p, [("d".to_owned(), None)]);
    }

    #[test]
    fn names_tell_format_and_compression() {
        let r = Reading {
            format: None,
            delimiter: None,
        };
        let f = |n| from_name(n, r);
        assert_eq!(
            f("a.csv"),
            (Some(InputFormat::Csv), Compression::None, b',')
        );
        assert_eq!(
            f("a.TSV.gz"),
            (Some(InputFormat::Tsv), Compression::Gzip, b'\t')
        );
        assert_eq!(
            f("a.ndjson.zst"),
            (Some(InputFormat::Ndjson), Compression::Zstd, b',')
        );
        assert_eq!(f("part-0"), (None, Compression::None, b','));
        let semi = Reading {
            format: Some(InputFormat::Csv),
            delimiter: Some(b';'),
        };
        assert_eq!(
            from_name("x.txt", semi),
            (Some(InputFormat::Csv), Compression::None, b';')
        );
    }
}
