//! The `snapkv._snapkv` extension module: the builder and the snapshot reader of the Rust crates,
//! called from Python. Conversion only: every rule (limits, errors, formats) is the crates'.
//! Errors become Python exceptions; a panic becomes `pyo3_runtime.PanicException`, never
//! unwinding into the interpreter.

use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_pyarrow::FromPyArrow;
use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyKeyError, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyTuple};
use snapkv_builder::{BatchInput, BuildOptions, Input, OnDuplicate, Values};
use std::collections::BTreeMap;
use std::path::PathBuf;

create_exception!(_snapkv, SnapkvError, PyException, "Any snapkv failure.");
create_exception!(
    _snapkv,
    BuildError,
    SnapkvError,
    "A build failed: bad input or options (the message says what and where)."
);
create_exception!(
    _snapkv,
    CorruptError,
    SnapkvError,
    "A snapshot file failed a check: it is corrupt or not a snapshot."
);

/// The exception for a build error: `OSError` for files that cannot be read or written,
/// `ValueError` for options, `BuildError` for the rest.
fn build_error(e: snapkv_builder::Error) -> PyErr {
    use snapkv_builder::Error as E;
    let message = error_chain(&e);
    match e {
        E::InvalidOption(_) => PyValueError::new_err(message),
        E::Read { .. } | E::Output { .. } | E::NoMatch(_) => PyOSError::new_err(message),
        _ => BuildError::new_err(message),
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

fn parse<T>(what: &str, value: &str, f: impl Fn(&str) -> Result<T, String>) -> PyResult<T> {
    f(value).map_err(|e| PyValueError::new_err(format!("{what}={value:?}: {e}")))
}

/// Builds a snapshot file from an Arrow C stream (see `snapkv.build`). The GIL is released
/// while building; the stream's producer takes it back when it needs Python.
#[pyfunction]
#[pyo3(signature = (
    data, key, output, *, dataset=None, version=None, value_columns=None, raw_value=None,
    compression="zstd:3", memory_limit="1GiB", on_duplicate="error", labels=None, name="data"
))]
#[allow(clippy::too_many_arguments)]
fn build(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    key: Vec<String>,
    output: PathBuf,
    dataset: Option<String>,
    version: Option<String>,
    value_columns: Option<Vec<String>>,
    raw_value: Option<String>,
    compression: &str,
    memory_limit: &str,
    on_duplicate: &str,
    labels: Option<BTreeMap<String, String>>,
    name: &str,
) -> PyResult<Py<PyDict>> {
    let stream = ArrowArrayStreamReader::from_pyarrow_bound(data).map_err(|e| {
        PyValueError::new_err(format!(
            "data must give an Arrow C stream (__arrow_c_stream__): {e}"
        ))
    })?;
    let input = Input::Batches(BatchInput::new(name, Box::new(stream)));
    let mut options = BuildOptions::new(vec![input], key);
    options.dataset = dataset;
    options.version = version;
    options.values = match raw_value {
        Some(c) => Values::Raw(c),
        None => Values::Json(value_columns),
    };
    options.writer.compression = parse("compression", compression, |s| match s {
        "none" => Ok(snapkv_format::Compression::None),
        "zstd" => Ok(snapkv_format::Compression::Zstd { level: 3 }),
        s => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(level)) => Ok(snapkv_format::Compression::Zstd { level }),
            _ => Err("expected none, zstd or zstd:LEVEL".into()),
        },
    })?;
    options.memory_limit = parse("memory_limit", memory_limit, snapkv_builder::parse_size)?;
    options.on_duplicate = parse("on_duplicate", on_duplicate, |s| match s {
        "error" => Ok(OnDuplicate::Error),
        "first" => Ok(OnDuplicate::First),
        "last" => Ok(OnDuplicate::Last),
        _ => Err("expected error, first or last".into()),
    })?;
    options.user_metadata = labels.unwrap_or_default();
    let summary = py
        .detach(|| snapkv_builder::build(&options, &output, &snapkv_builder::NoProgress))
        .map_err(build_error)?;
    let d = PyDict::new(py);
    d.set_item("output", summary.output.display().to_string())?;
    d.set_item("dataset", summary.dataset)?;
    d.set_item("version", summary.version)?;
    d.set_item("built_at", summary.built_at)?;
    d.set_item("rows", summary.rows)?;
    d.set_item("keys", summary.keys)?;
    d.set_item("duplicates_dropped", summary.duplicates)?;
    d.set_item("non_finite_floats", summary.non_finite_floats)?;
    d.set_item("bytes_out", summary.bytes_out)?;
    d.set_item("seconds", summary.seconds)?;
    Ok(d.unbind())
}

/// A memory-mapped snapshot file (see `snapkv.Snapshot`).
#[pyclass(frozen, module = "snapkv._snapkv")]
struct Snapshot {
    inner: snapkv_format::Snapshot,
    json: bool,
}

/// The key bytes of a Python key: `str` (UTF-8), `bytes`, `int` (its decimal text), or a
/// tuple of those joined with `/` (a composite key).
fn key_bytes(key: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(s) = key.cast::<pyo3::types::PyString>() {
        return Ok(s.to_cow()?.into_owned().into_bytes());
    }
    if let Ok(b) = key.cast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if key.is_instance_of::<pyo3::types::PyBool>() {
        return Err(PyValueError::new_err("a key cannot be a bool"));
    }
    if let Ok(i) = key.extract::<i128>() {
        return Ok(i.to_string().into_bytes());
    }
    if let Ok(t) = key.cast::<PyTuple>() {
        let mut out = Vec::new();
        for (i, part) in t.iter().enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            out.extend(key_bytes(&part)?);
        }
        return Ok(out);
    }
    Err(PyValueError::new_err(format!(
        "a key is str, bytes, int or a tuple of them, not {}",
        key.get_type().name()?
    )))
}

impl Snapshot {
    fn lookup(&self, key: &[u8]) -> PyResult<Option<bytes::Bytes>> {
        self.inner
            .get(key)
            .map_err(|e| CorruptError::new_err(error_chain(&e)))
    }

    /// A stored value as Python: JSON values parsed, raw ones as `bytes`.
    fn decode(&self, py: Python<'_>, value: &[u8]) -> PyResult<Py<PyAny>> {
        if self.json {
            let json = py.import("json")?;
            Ok(json.call_method1("loads", (PyBytes::new(py, value),))?.unbind())
        } else {
            Ok(PyBytes::new(py, value).into_any().unbind())
        }
    }
}

#[pymethods]
impl Snapshot {
    /// Maps the file at `path` and checks its structure (not every block: see `verify`).
    #[new]
    fn new(path: PathBuf) -> PyResult<Snapshot> {
        let inner = snapkv_reader::open_snapshot(&path, &Default::default())
            .map_err(|e| match &e {
                snapkv_reader::OpenError::Io { .. } => PyOSError::new_err(error_chain(&e)),
                _ => CorruptError::new_err(error_chain(&e)),
            })?;
        let json = inner.metadata().value_encoding == snapkv_format::ValueEncoding::Json;
        Ok(Snapshot { inner, json })
    }

    fn __len__(&self) -> usize {
        self.inner.len() as usize
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.lookup(&key_bytes(key)?)?.is_some())
    }

    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        match self.lookup(&key_bytes(key)?)? {
            Some(v) => self.decode(py, &v),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// The value of `key`, or `default` when it is absent.
    #[pyo3(signature = (key, default=None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match self.lookup(&key_bytes(key)?)? {
            Some(v) => self.decode(py, &v),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    /// The values of `keys`, in order, `None` where a key is absent.
    fn get_many(&self, py: Python<'_>, keys: &Bound<'_, PyAny>) -> PyResult<Py<PyList>> {
        let out = PyList::empty(py);
        for key in keys.try_iter()? {
            match self.lookup(&key_bytes(&key?)?)? {
                Some(v) => out.append(self.decode(py, &v)?)?,
                None => out.append(py.None())?,
            }
        }
        Ok(out.unbind())
    }

    /// The metadata, as a dict (dataset, version, created_at, key_columns, schema, …).
    #[getter]
    fn metadata(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let text = serde_json::to_string(self.inner.metadata())
            .map_err(|e| SnapkvError::new_err(e.to_string()))?;
        Ok(py.import("json")?.call_method1("loads", (text,))?.unbind())
    }

    /// Checks every block's checksum; raises `CorruptError` naming the first bad one.
    fn verify(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.inner.verify())
            .map_err(|e| CorruptError::new_err(error_chain(&e)))
    }
}

/// The native half of the `snapkv` package.
#[pymodule]
fn _snapkv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build, m)?)?;
    m.add_class::<Snapshot>()?;
    m.add("SnapkvError", m.py().get_type::<SnapkvError>())?;
    m.add("BuildError", m.py().get_type::<BuildError>())?;
    m.add("CorruptError", m.py().get_type::<CorruptError>())?;
    Ok(())
}
