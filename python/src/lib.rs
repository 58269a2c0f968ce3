//! The `snapkv._snapkv` extension module: the builder, the store and the snapshot reader of the
//! Rust crates, called from Python. Conversion only: every rule (limits, errors, formats) is the
//! crates'. Errors become Python exceptions; a panic becomes `pyo3_runtime.PanicException`,
//! never unwinding into the interpreter.

mod build;
mod errors;
mod snapshot;
mod store;
mod table;

use pyo3::prelude::*;

/// The native half of the `snapkv` package.
#[pymodule]
fn _snapkv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build::build, m)?)?;
    m.add_function(wrap_pyfunction!(store::publish, m)?)?;
    m.add_function(wrap_pyfunction!(store::versions, m)?)?;
    m.add_function(wrap_pyfunction!(store::rollback, m)?)?;
    m.add_function(wrap_pyfunction!(store::promote, m)?)?;
    m.add_function(wrap_pyfunction!(store::pin, m)?)?;
    m.add_function(wrap_pyfunction!(store::unpin, m)?)?;
    m.add_function(wrap_pyfunction!(store::history, m)?)?;
    m.add_function(wrap_pyfunction!(store::commit, m)?)?;
    m.add_function(wrap_pyfunction!(snapshot::py_key_bytes, m)?)?;
    m.add("MAX_KEY_LEN", snapkv_format::MAX_KEY_LEN)?;
    m.add_class::<snapshot::Snapshot>()?;
    m.add_class::<snapshot::Scan>()?;
    errors::register(m)?;
    Ok(())
}
