//! `publish`, `versions` and `rollback`: the store operations of the `snapkv` command, with
//! the same store URLs, options and environment.

use crate::errors::store_error;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use snapkv_store::{PublishOptions, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Opens `url` with `options` (`endpoint`, `region`, …).
fn open(url: &str, options: Option<BTreeMap<String, String>>) -> PyResult<Store> {
    let options: Vec<(String, String)> = options.unwrap_or_default().into_iter().collect();
    Store::open(url, &options).map_err(store_error)
}

/// Runs a store operation to completion on a runtime of its own, without the GIL.
fn run<T: Send, F: std::future::Future<Output = snapkv_store::Result<T>>>(
    py: Python<'_>,
    work: impl FnOnce() -> F + Send,
) -> PyResult<T> {
    py.detach(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(format!("cannot start the async runtime: {e}")))?;
        runtime.block_on(work()).map_err(store_error)
    })
}

/// Uploads snapshot files as a new version of a dataset and makes it current (see
/// `snapkv.publish`).
#[pyfunction]
#[pyo3(signature = (files, store, dataset, *, version=None, options=None))]
pub(crate) fn publish(
    py: Python<'_>,
    files: Vec<PathBuf>,
    store: &str,
    dataset: &str,
    version: Option<String>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Py<PyDict>> {
    let store = open(store, options)?;
    let mut publish = PublishOptions::default();
    publish.version = version;
    publish.open = Arc::new(|path| Ok(snapkv_reader::open_snapshot(path, &Default::default())?));
    let published = run(py, || store.publish(dataset, &files, &publish))?;
    let m = &published.manifest;
    let d = PyDict::new(py);
    d.set_item("dataset", &m.dataset)?;
    d.set_item("version", &m.version)?;
    d.set_item("previous", published.previous.as_deref())?;
    d.set_item(
        "files",
        m.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
    )?;
    d.set_item("bytes", m.total_bytes())?;
    d.set_item("keys", m.total_keys())?;
    d.set_item("created_at", &m.created_at)?;
    Ok(d.unbind())
}

/// The versions of a dataset, oldest first (see `snapkv.versions`).
#[pyfunction]
#[pyo3(signature = (store, dataset, *, options=None))]
pub(crate) fn versions(
    py: Python<'_>,
    store: &str,
    dataset: &str,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Py<PyList>> {
    let store = open(store, options)?;
    let versions = run(py, || store.versions(dataset))?;
    let out = PyList::empty(py);
    for v in versions {
        let d = PyDict::new(py);
        d.set_item("version", &v.version)?;
        d.set_item("current", v.current)?;
        d.set_item("complete", v.manifest.is_some())?;
        if let Some(m) = &v.manifest {
            d.set_item("created_at", &m.created_at)?;
            d.set_item(
                "files",
                m.files.iter().map(|f| f.name.as_str()).collect::<Vec<_>>(),
            )?;
            d.set_item("bytes", m.total_bytes())?;
            d.set_item("keys", m.total_keys())?;
        }
        out.append(d)?;
    }
    Ok(out.unbind())
}

/// Points CURRENT back at an older complete version (see `snapkv.rollback`).
#[pyfunction]
#[pyo3(signature = (store, dataset, to, *, options=None))]
pub(crate) fn rollback(
    py: Python<'_>,
    store: &str,
    dataset: &str,
    to: &str,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Py<PyDict>> {
    let store = open(store, options)?;
    let moved = run(py, || store.rollback(dataset, to))?;
    let d = PyDict::new(py);
    d.set_item("dataset", dataset)?;
    d.set_item("version", to)?;
    d.set_item("changed", moved.is_some())?;
    d.set_item(
        "previous",
        moved.as_ref().and_then(|p| p.previous.as_deref()),
    )?;
    Ok(d.unbind())
}
