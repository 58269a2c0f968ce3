//! `Snapshot`: a memory-mapped snapshot file, read in-process.

use crate::errors::{error_chain, CorruptError, SnapkvError};
use crate::table;
use bytes::Bytes;
use pyo3::exceptions::{PyKeyError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyBytes, PyList, PyString, PyTuple};
use std::ops::Bound as Edge;
use std::path::PathBuf;
use std::sync::Mutex;

/// A memory-mapped snapshot file.
///
/// `snap[key]` (KeyError when absent), `get(key, default=None)`, `get_many(keys)`,
/// `scan(prefix=None, start=, end=, limit=)`, `to_arrow(...)`, `key in snap`, `len(snap)`,
/// `iter(snap)` (the keys in order), `metadata`, `schema`, `verify()`.
///
/// Values decode to Python objects for JSON datasets and to bytes for raw ones. Keys are str,
/// bytes, int, or a tuple of them (a composite key, joined with "/"). Lookups share the file's
/// pages and a bounded block cache; one Snapshot is safe to use from several threads at once.
///
///     >>> snap = snapkv.Snapshot("scores.snapkv")
///     >>> snap[42], snap.get(7), snap.get_many([42, 7])
///     ({'score': 0.93}, None, [{'score': 0.93}, None])
#[pyclass(frozen, module = "snapkv")]
pub(crate) struct Snapshot {
    inner: snapkv_format::Snapshot,
    json: bool,
}

/// `json.loads`, looked up once.
fn json_loads(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOADS: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    Ok(LOADS
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("json")?.getattr("loads")?.unbind())
        })?
        .bind(py))
}

/// The key bytes of a Python key: `str` (UTF-8), `bytes`, `int` (its decimal text), or a
/// tuple of those joined with `/` (a composite key).
pub(crate) fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    let mut out = Vec::new();
    append_key(key, &mut out, true)?;
    Ok(out)
}

fn append_key(key: &Bound<'_, PyAny>, out: &mut Vec<u8>, tuple_ok: bool) -> PyResult<()> {
    if let Ok(s) = key.cast::<PyString>() {
        out.extend_from_slice(s.to_cow()?.as_bytes());
    } else if let Ok(b) = key.cast::<PyBytes>() {
        out.extend_from_slice(b.as_bytes());
    } else if key.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(
            "a key cannot be a bool: use an int or a str",
        ));
    } else if let Ok(i) = key.extract::<i128>() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let (true, Ok(t)) = (tuple_ok, key.cast::<PyTuple>()) {
        if t.is_empty() {
            return Err(PyValueError::new_err(
                "a composite key needs at least one part",
            ));
        }
        for (i, part) in t.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            append_key(&part, out, false)?;
        }
    } else {
        return Err(PyTypeError::new_err(format!(
            "a key is a str, bytes, int or a tuple of them, not {}",
            key.get_type().name()?
        )));
    }
    Ok(())
}

/// The bytes of a key as `Snapshot` looks it up (see [`key_bytes`]): `("SE", 42)` is
/// `b"SE/42"`. For the HTTP client, which sends keys as the in-process reader reads them.
#[pyfunction(name = "key_bytes")]
pub(crate) fn py_key_bytes<'py>(key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Ok(PyBytes::new(key.py(), &key_bytes(key)?))
}

/// A key as Python: `str` when it is UTF-8 (every key built from text, integers, dates and
/// times is), else `bytes`.
fn key_object<'py>(py: Python<'py>, key: &[u8]) -> Bound<'py, PyAny> {
    match std::str::from_utf8(key) {
        Ok(s) => PyString::new(py, s).into_any(),
        Err(_) => PyBytes::new(py, key).into_any(),
    }
}

fn corrupt(e: snapkv_format::Error) -> PyErr {
    CorruptError::new_err(error_chain(&e))
}

impl Snapshot {
    fn lookup(&self, key: &[u8]) -> PyResult<Option<Bytes>> {
        self.inner.get(key).map_err(corrupt)
    }

    /// A stored value as Python: JSON values parsed, raw ones as `bytes`.
    fn decode<'py>(&self, py: Python<'py>, value: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        decode(py, self.json, value)
    }
}

pub(crate) fn decode<'py>(
    py: Python<'py>,
    json: bool,
    value: &[u8],
) -> PyResult<Bound<'py, PyAny>> {
    if !json {
        return Ok(PyBytes::new(py, value).into_any());
    }
    let text = std::str::from_utf8(value)
        .map_err(|e| CorruptError::new_err(format!("a JSON value is not UTF-8: {e}")))?;
    json_loads(py)?.call1((PyString::new(py, text),))
}

fn bound(value: Option<&Bound<'_, PyAny>>, inclusive: bool) -> PyResult<Edge<Vec<u8>>> {
    Ok(match value {
        None => Edge::Unbounded,
        Some(k) if inclusive => Edge::Included(key_bytes(k)?),
        Some(k) => Edge::Excluded(key_bytes(k)?),
    })
}

impl Snapshot {
    /// Runs `query` (a dict, or its JSON text) with no budget but the answer's size (in
    /// process, the caller owns the machine), the GIL released.
    fn answer(&self, py: Python<'_>, query: &Bound<'_, PyAny>) -> PyResult<snapkv_query::Answer> {
        let text: String = if let Ok(s) = query.cast::<PyString>() {
            s.to_cow()?.into_owned()
        } else {
            py.import("json")?
                .getattr("dumps")?
                .call1((query,))?
                .extract()?
        };
        let to_value_error = |e: snapkv_query::QueryError| match e {
            snapkv_query::QueryError::Read(e) => corrupt(e),
            e => PyValueError::new_err(e.to_string()),
        };
        let plan = snapkv_query::Query::parse(text.as_bytes())
            .and_then(|q| q.plan(self.inner.metadata()))
            .map_err(to_value_error)?;
        let mut limits = snapkv_query::Limits::default();
        limits.max_rows_scanned = u64::MAX;
        limits.max_bytes_read = u64::MAX;
        limits.max_time = std::time::Duration::from_secs(u64::from(u32::MAX));
        let shards = snapkv_format::Shards::single(self.inner.clone());
        py.detach(|| snapkv_query::run(&shards, &plan, &limits))
            .map_err(to_value_error)
    }
}

#[pymethods]
impl Snapshot {
    /// Maps the file at `path` and checks its structure (not every block: see `verify`).
    /// Decompressed blocks are kept for later lookups up to `cache_bytes` (as `snapkv serve`'s
    /// default); `index_in_memory` copies the index sections into anonymous memory.
    #[new]
    #[pyo3(
        signature = (path, *, cache_bytes=256 << 20, index_in_memory=false),
        text_signature = "(path, *, cache_bytes=268435456, index_in_memory=False)"
    )]
    fn new(path: PathBuf, cache_bytes: usize, index_in_memory: bool) -> PyResult<Snapshot> {
        let mut options = snapkv_format::OpenOptions::default();
        options.cache_bytes = cache_bytes;
        options.index_in_memory = index_in_memory;
        let inner = snapkv_reader::open_snapshot(&path, &options).map_err(|e| match &e {
            snapkv_reader::OpenError::Io { .. } => PyOSError::new_err(error_chain(&e)),
            _ => CorruptError::new_err(error_chain(&e)),
        })?;
        let json = inner.metadata().value_encoding == snapkv_format::ValueEncoding::Json;
        Ok(Snapshot { inner, json })
    }

    fn __len__(&self) -> usize {
        usize::try_from(self.inner.len()).unwrap_or(usize::MAX)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.lookup(&key_bytes(key)?)?.is_some())
    }

    fn __getitem__<'py>(&self, key: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
        match self.lookup(&key_bytes(key)?)? {
            Some(v) => self.decode(key.py(), &v),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Iterates over every key, in key order.
    fn __iter__(&self) -> Scan {
        Scan::new(self.inner.iter(), self.json, ScanItems::Keys, None)
    }

    /// The value of `key`, or `default` when it is absent.
    #[pyo3(signature = (key, default=None))]
    fn get<'py>(
        &self,
        key: &Bound<'py, PyAny>,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = key.py();
        match self.lookup(&key_bytes(key)?)? {
            Some(v) => self.decode(py, &v),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// The values of `keys`, in order, `None` where a key is absent. The lookups run without
    /// the GIL.
    fn get_many<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyList>> {
        let keys = keys
            .try_iter()?
            .map(|k| key_bytes(&k?))
            .collect::<PyResult<Vec<_>>>()?;
        let values = py.detach(|| {
            keys.iter()
                .map(|k| self.inner.get(k))
                .collect::<Result<Vec<_>, _>>()
        });
        let values = values.map_err(corrupt)?;
        let out = PyList::empty(py);
        for v in values {
            match v {
                Some(v) => out.append(self.decode(py, &v)?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out)
    }

    /// `(key, value)` pairs in key order: those whose keys start with `prefix`, from `start`
    /// (inclusive) to `end` (exclusive), at most `limit` of them.
    #[pyo3(signature = (prefix=None, *, start=None, end=None, limit=None))]
    fn scan(
        &self,
        prefix: Option<&Bound<'_, PyAny>>,
        start: Option<&Bound<'_, PyAny>>,
        end: Option<&Bound<'_, PyAny>>,
        limit: Option<u64>,
    ) -> PyResult<Scan> {
        let iter = range(&self.inner, prefix, start, end)?;
        Ok(Scan::new(iter, self.json, ScanItems::Pairs, limit))
    }

    /// The entries (optionally only those under `prefix`, or from `start` to `end`) as a
    /// pyarrow Table with the stored schema: the key columns, then the value columns.
    #[pyo3(signature = (prefix=None, *, start=None, end=None, limit=None))]
    fn to_arrow<'py>(
        &self,
        py: Python<'py>,
        prefix: Option<&Bound<'py, PyAny>>,
        start: Option<&Bound<'py, PyAny>>,
        end: Option<&Bound<'py, PyAny>>,
        limit: Option<u64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let iter = range(&self.inner, prefix, start, end)?;
        let limit = limit.unwrap_or(u64::MAX);
        let metadata = self.inner.metadata();
        let (schema, batches) = py.detach(|| {
            table::collect(
                metadata,
                iter.take(usize::try_from(limit).unwrap_or(usize::MAX)),
            )
        })?;
        table::to_pyarrow_table(py, schema, batches)
    }

    /// Runs a query over the rows (a dict, or its JSON text): select (`keys`, `prefix`,
    /// `start`/`end`), `filter`, `fields`, `group_by` with `aggregates`, `order_by`, `limit`;
    /// the same queries as `snapkv query` and the server's `/query`. Returns
    /// `{"rows": [...], "stats": {...}}`. The GIL is released while it runs. A malformed
    /// query, an unknown field or a type mismatch raises `ValueError` naming the field.
    fn query<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let answer = self.answer(py, query)?;
        let text =
            serde_json::to_string(&answer).map_err(|e| SnapkvError::new_err(e.to_string()))?;
        json_loads(py)?.call1((text,))
    }

    /// Runs a query as `query` does and returns the rows as a `pyarrow.Table`: a column per
    /// answer field in the query's order (`group_by` fields, then aggregates), typed from the
    /// values; the schema's metadata holds `snapkv.stats` and `snapkv.version`.
    fn query_table<'py>(
        &self,
        py: Python<'py>,
        query: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let answer = self.answer(py, query)?;
        let version = self.inner.metadata().version.clone();
        let ipc = py
            .detach(|| answer.to_arrow_ipc(version.as_deref()))
            .map_err(|e| SnapkvError::new_err(e.to_string()))?;
        let ipc = PyBytes::new(py, &ipc);
        py.import("pyarrow.ipc")?
            .getattr("open_stream")?
            .call1((ipc,))?
            .call_method0("read_all")
    }

    /// The metadata, as a dict (dataset, version, created_at, key_columns, schema, …).
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let text = serde_json::to_string(self.inner.metadata())
            .map_err(|e| SnapkvError::new_err(e.to_string()))?;
        json_loads(py)?.call1((text,))
    }

    /// The schema of `to_arrow`'s table, as a pyarrow Schema.
    #[getter]
    fn schema<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        table::to_pyarrow_schema(py, table::output_schema(self.inner.metadata())?)
    }

    /// Checks every block's checksum; raises `CorruptError` naming the first bad one.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.verify()).map_err(corrupt)
    }

    fn __repr__(&self) -> String {
        let m = self.inner.metadata();
        format!(
            "Snapshot(dataset={:?}, version={:?}, keys={})",
            m.dataset.as_deref().unwrap_or(""),
            m.version.as_deref().unwrap_or(""),
            self.inner.len()
        )
    }
}

fn range(
    snapshot: &snapkv_format::Snapshot,
    prefix: Option<&Bound<'_, PyAny>>,
    start: Option<&Bound<'_, PyAny>>,
    end: Option<&Bound<'_, PyAny>>,
) -> PyResult<snapkv_format::Iter> {
    match prefix {
        Some(p) => {
            if start.is_some() || end.is_some() {
                return Err(PyValueError::new_err(
                    "give a prefix, or start and end, not both",
                ));
            }
            Ok(snapshot.prefix(&key_bytes(p)?))
        }
        None => {
            let start = bound(start, true)?;
            let end = bound(end, false)?;
            Ok(snapshot.range(
                start.as_ref().map(Vec::as_slice),
                end.as_ref().map(Vec::as_slice),
            ))
        }
    }
}

#[derive(Clone, Copy)]
enum ScanItems {
    Keys,
    Pairs,
}

/// An iterator over a snapshot's entries in key order (from `Snapshot.scan` or iterating a
/// `Snapshot`). It keeps the snapshot's file mapped while it lives.
#[pyclass(frozen, module = "snapkv")]
pub(crate) struct Scan {
    state: Mutex<ScanState>,
    json: bool,
    items: ScanItems,
}

struct ScanState {
    iter: snapkv_format::Iter,
    left: u64,
}

impl Scan {
    fn new(iter: snapkv_format::Iter, json: bool, items: ScanItems, limit: Option<u64>) -> Scan {
        Scan {
            state: Mutex::new(ScanState {
                iter,
                left: limit.unwrap_or(u64::MAX),
            }),
            json,
            items,
        }
    }
}

#[pymethods]
impl Scan {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let next = {
            let mut state = self
                .state
                .lock()
                .map_err(|_| SnapkvError::new_err("a scan failed in another thread"))?;
            if state.left == 0 {
                return Ok(None);
            }
            state.left -= 1;
            state.iter.next()
        };
        let Some(entry) = next else {
            return Ok(None);
        };
        let (key, value) = entry.map_err(corrupt)?;
        let key = key_object(py, &key);
        Ok(Some(match self.items {
            ScanItems::Keys => key,
            ScanItems::Pairs => PyTuple::new(py, [key, decode(py, self.json, &value)?])?.into_any(),
        }))
    }
}
