//! `publish`, `versions`, `rollback`, `promote`, `pin`, `unpin` and `history`: the store
//! operations of the `snapkv` command, with the same store URLs, options and environment.

use crate::errors::store_error;
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use snapkv_store::{ChangeOptions, Pin, Pointer, PolicyReport, PublishOptions, Store};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Opens `url` with `options` (`endpoint`, `region`, …).
pub(crate) fn open(url: &str, options: Option<BTreeMap<String, String>>) -> PyResult<Store> {
    let options: Vec<(String, String)> = options.unwrap_or_default().into_iter().collect();
    Store::open(url, &options).map_err(store_error)
}

/// Runs a store operation to completion on a runtime of its own, without the GIL.
pub(crate) fn run<T: Send, F: std::future::Future<Output = snapkv_store::Result<T>>>(
    py: Python<'_>,
    work: impl FnOnce() -> F + Send,
) -> PyResult<T> {
    let done = py.detach(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyOSError::new_err(format!("cannot start the async runtime: {e}")))?;
        PyResult::Ok(runtime.block_on(work()))
    })?;
    done.map_err(|e| policy_error(py, e))
}

/// [`store_error`], with the report of a policy refusal as the exception's `report`.
fn policy_error(py: Python<'_>, e: snapkv_store::Error) -> PyErr {
    let report = match &e {
        snapkv_store::Error::Policy { report } => Some(report_dict(py, report)),
        _ => None,
    };
    let err = store_error(e);
    if let Some(Ok(report)) = report {
        if let Err(e) = err.value(py).setattr("report", report) {
            return e;
        }
    }
    err
}

/// A policy report as a dict: `{dataset, version, current, stored_policy, passed, checks:
/// [{rule, outcome, detail}]}`.
fn report_dict<'py>(py: Python<'py>, report: &PolicyReport) -> PyResult<Bound<'py, PyAny>> {
    let mut value = serde_json::to_value(report)
        .map_err(|e| PyValueError::new_err(format!("cannot convert the report: {e}")))?;
    value["passed"] = report.passed().into();
    py.import("json")?
        .call_method1("loads", (value.to_string(),))
}

/// Uploads snapshot files as a new version of a dataset and makes it current (see
/// `snapkv.publish`).
#[pyfunction]
#[pyo3(signature = (files, store, dataset, *, version=None, stage=false, reason=None, force=false, shard=None, options=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn publish(
    py: Python<'_>,
    files: Vec<PathBuf>,
    store: &str,
    dataset: &str,
    version: Option<String>,
    stage: bool,
    reason: Option<String>,
    force: bool,
    shard: Option<(u32, u32)>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Py<PyDict>> {
    let store = open(store, options)?;
    if let Some(shard) = shard {
        let ([file], Some(version)) = (&files[..], version.as_deref()) else {
            return Err(PyValueError::new_err(
                "shard= uploads one file, the shard, as part of a given version=",
            ));
        };
        let mut publish = PublishOptions::default();
        publish.open = snapkv_reader::mapped();
        let receipt = run(py, || {
            store.publish_shard(dataset, file, shard, version, &publish)
        })?;
        let value = serde_json::to_value(&receipt)
            .map_err(|e| PyValueError::new_err(format!("cannot convert the receipt: {e}")))?;
        let d: Bound<'_, PyDict> = py
            .import("json")?
            .call_method1("loads", (value.to_string(),))?
            .cast_into()?;
        return Ok(d.unbind());
    }
    let mut publish = PublishOptions::default();
    publish.version = version;
    publish.stage = stage;
    publish.reason = reason;
    publish.force = force;
    publish.open = snapkv_reader::mapped();
    let published = run(py, || store.publish(dataset, &files, &publish))?;
    published_dict(py, &published)
}

/// What a publish or commit did: `{dataset, version, previous, files, bytes, keys,
/// created_at, staged, checks, pinned}`.
fn published_dict(py: Python<'_>, published: &snapkv_store::Published) -> PyResult<Py<PyDict>> {
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
    d.set_item("staged", published.staged)?;
    d.set_item("shards", m.sharding.as_ref().map(|s| s.shards))?;
    d.set_item("checks", report_dict(py, &published.checks)?)?;
    d.set_item(
        "pinned",
        published
            .pinned
            .as_ref()
            .map(|p| pin_dict(py, p))
            .transpose()?,
    )?;
    Ok(d.unbind())
}

fn pin_dict<'py>(py: Python<'py>, pin: &Pin) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("reason", &pin.reason)?;
    d.set_item("by", &pin.by)?;
    d.set_item("at", &pin.at)?;
    Ok(d)
}

/// What a move of CURRENT wrote: `{dataset, version, changed, previous, pinned}`.
fn moved<'py>(
    py: Python<'py>,
    dataset: &str,
    version: &str,
    pointer: Option<&Pointer>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("dataset", dataset)?;
    d.set_item("version", pointer.map_or(version, |p| p.version.as_str()))?;
    d.set_item("changed", pointer.is_some())?;
    d.set_item("previous", pointer.and_then(|p| p.previous.as_deref()))?;
    d.set_item(
        "pinned",
        pointer
            .and_then(|p| p.pin.as_ref())
            .map(|p| pin_dict(py, p))
            .transpose()?,
    )?;
    Ok(d)
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

/// Points CURRENT at another complete version, pinning it by default (see `snapkv.rollback`).
#[pyfunction]
#[pyo3(signature = (store, dataset, to, *, pin=true, reason=None, options=None))]
pub(crate) fn rollback<'py>(
    py: Python<'py>,
    store: &str,
    dataset: &str,
    to: &str,
    pin: bool,
    reason: Option<String>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let store = open(store, options)?;
    let mut change = ChangeOptions::default();
    change.pin = pin;
    change.reason = reason;
    let pointer = run(py, || store.rollback_with(dataset, to, &change))?;
    moved(py, dataset, to, pointer.as_ref())
}

/// Makes a staged version current (see `snapkv.promote`).
#[pyfunction]
#[pyo3(signature = (store, dataset, version, *, reason=None, force=false, options=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn promote<'py>(
    py: Python<'py>,
    store: &str,
    dataset: &str,
    version: &str,
    reason: Option<String>,
    force: bool,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let store = open(store, options)?;
    let mut change = ChangeOptions::default();
    change.reason = reason;
    change.check.force = force;
    change.check.open = snapkv_reader::mapped();
    let promoted = run(py, || store.promote(dataset, version, &change))?;
    let d = moved(py, dataset, version, promoted.pointer.as_ref())?;
    if let Some(checks) = &promoted.checks {
        d.set_item("checks", report_dict(py, checks)?)?;
    }
    Ok(d)
}

/// Pins a dataset (see `snapkv.pin`).
#[pyfunction]
#[pyo3(signature = (store, dataset, *, reason, version=None, options=None))]
pub(crate) fn pin<'py>(
    py: Python<'py>,
    store: &str,
    dataset: &str,
    reason: &str,
    version: Option<String>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let store = open(store, options)?;
    let pointer = run(py, || store.pin(dataset, version.as_deref(), reason))?;
    moved(py, dataset, &pointer.version, Some(&pointer))
}

/// Releases the pin of a dataset (see `snapkv.unpin`).
#[pyfunction]
#[pyo3(signature = (store, dataset, *, reason=None, options=None))]
pub(crate) fn unpin<'py>(
    py: Python<'py>,
    store: &str,
    dataset: &str,
    reason: Option<String>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyDict>> {
    let store = open(store, options)?;
    let pointer = run(py, || store.unpin(dataset, reason.as_deref()))?;
    let version = pointer
        .as_ref()
        .map_or("", |p| p.version.as_str())
        .to_owned();
    moved(py, dataset, &version, pointer.as_ref())
}

/// The history of a dataset, oldest first (see `snapkv.history`).
#[pyfunction]
#[pyo3(signature = (store, dataset, *, last=None, options=None))]
pub(crate) fn history<'py>(
    py: Python<'py>,
    store: &str,
    dataset: &str,
    last: Option<usize>,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Bound<'py, PyList>> {
    let store = open(store, options)?;
    let entries = run(py, || store.history(dataset, last))?;
    let out = PyList::empty(py);
    for e in entries {
        let d = PyDict::new(py);
        d.set_item("seq", e.seq)?;
        d.set_item("at", &e.at)?;
        d.set_item("by", &e.by)?;
        d.set_item("action", &e.action)?;
        d.set_item("from", e.from.as_deref())?;
        d.set_item("to", e.to.as_deref())?;
        d.set_item("reason", e.reason.as_deref())?;
        d.set_item("forced", e.forced)?;
        d.set_item("overridden", &e.overridden)?;
        out.append(d)?;
    }
    Ok(out)
}

/// Completes a sharded version from its uploaded shards (see `snapkv.commit`).
#[pyfunction]
#[pyo3(signature = (store, dataset, version, shards, *, stage=false, reason=None, force=false, options=None))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn commit(
    py: Python<'_>,
    store: &str,
    dataset: &str,
    version: &str,
    shards: u32,
    stage: bool,
    reason: Option<String>,
    force: bool,
    options: Option<BTreeMap<String, String>>,
) -> PyResult<Py<PyDict>> {
    let store = open(store, options)?;
    let mut publish = PublishOptions::default();
    publish.stage = stage;
    publish.reason = reason;
    publish.force = force;
    publish.open = snapkv_reader::mapped();
    let published = run(py, || store.commit(dataset, version, shards, &publish))?;
    published_dict(py, &published)
}
