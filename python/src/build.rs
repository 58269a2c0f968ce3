//! `build`: a snapshot file from an Arrow C stream.

use crate::errors::{build_error, parse};
use arrow_array::ffi_stream::ArrowArrayStreamReader;
use arrow_pyarrow::FromPyArrow;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use snapkv_builder::{BatchInput, BigNumbers, BuildOptions, Input, OnDuplicate, Values};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Builds a snapshot file from an Arrow C stream (see `snapkv.build`). The GIL is released
/// while building; the stream's producer takes it back when it needs Python.
#[pyfunction]
#[pyo3(signature = (
    data, key, output, *, dataset=None, version=None, value_columns=None, raw_value=None,
    compression="zstd:3", memory_limit="1GiB", on_duplicate="error", labels=None,
    json_bigint="number", name="data", shard=None, format_version=snapkv_format::FORMAT_VERSION,
    dictionary_from=None, dictionary_from_store=None, store_options=None
))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn build(
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
    json_bigint: &str,
    name: &str,
    shard: Option<(u32, u32)>,
    format_version: u32,
    dictionary_from: Option<PathBuf>,
    dictionary_from_store: Option<String>,
    store_options: Option<BTreeMap<String, String>>,
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
    options.json_bigint = parse("json_bigint", json_bigint, |s| match s {
        "number" => Ok(BigNumbers::Number),
        "string" => Ok(BigNumbers::String),
        _ => Err("expected number or string".into()),
    })?;
    options.user_metadata = labels.unwrap_or_default();
    options.shard_of = shard;
    let versions = snapkv_format::MIN_FORMAT_VERSION..=snapkv_format::FORMAT_VERSION;
    if !versions.contains(&format_version) {
        return Err(PyValueError::new_err(format!(
            "format_version {format_version} is not a format version this build writes \
             ({} to {})",
            versions.start(),
            versions.end()
        )));
    }
    options.writer.format_version = format_version;
    if dictionary_from.is_some() || dictionary_from_store.is_some() {
        if options.writer.compression == snapkv_format::Compression::None {
            return Err(PyValueError::new_err(
                "a dictionary to compress with needs compression (it is \"none\")",
            ));
        }
        if dictionary_from.is_some() && dictionary_from_store.is_some() {
            return Err(PyValueError::new_err(
                "dictionary_from and dictionary_from_store: give one",
            ));
        }
    }
    if let Some(path) = dictionary_from {
        options.writer.dictionary = snapkv_builder::dictionary_of(&path).map_err(build_error)?;
    }
    if let Some(url) = dictionary_from_store {
        let Some(dataset) = options.dataset.clone() else {
            return Err(PyValueError::new_err(
                "dictionary_from_store needs dataset=: the dataset whose current version's \
                 dictionary is used",
            ));
        };
        let store = crate::store::open(&url, store_options)?;
        let index = shard.map(|(i, _)| i);
        let found = crate::store::run(py, || store.current_dictionary(&dataset, index))?;
        if let Some(d) = found {
            options.writer.dictionary = match d.is_empty() {
                true => snapkv_format::Dictionary::Off,
                false => snapkv_format::Dictionary::Use(d),
            };
        }
    }
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
