//! The exceptions of the package, and the mapping of the crates' errors onto them.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyOSError, PyValueError};
use pyo3::prelude::*;

create_exception!(snapkv, SnapkvError, PyException, "Any snapkv failure.");
create_exception!(
    snapkv,
    BuildError,
    SnapkvError,
    "A build failed: bad input or options (the message says what and where)."
);
create_exception!(
    snapkv,
    CorruptError,
    SnapkvError,
    "A snapshot file or stored object failed a check: it is corrupt or not a snapshot."
);
create_exception!(
    snapkv,
    StoreError,
    SnapkvError,
    "A store operation failed: the store is unreachable, misconfigured, or lacks what was named."
);
create_exception!(
    snapkv,
    RefusedError,
    StoreError,
    "A publish or rollback contradicts the store's state: a version not newer than CURRENT, \
     a version that exists, an incomplete rollback target."
);
create_exception!(
    snapkv,
    ConflictError,
    StoreError,
    "Another publisher moved CURRENT (or claimed the version) first; nothing this call wrote \
     is current."
);

create_exception!(
    snapkv,
    PolicyError,
    RefusedError,
    "The version breaks rules of its dataset's policy (`snapkv policy`): nothing was uploaded \
     or moved. `report` holds every rule checked; `force=True` with a `reason` overrides."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("SnapkvError", py.get_type::<SnapkvError>())?;
    m.add("BuildError", py.get_type::<BuildError>())?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("StoreError", py.get_type::<StoreError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    Ok(())
}

/// An error and its causes, on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
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

/// The exception for a build error: `OSError` for files that cannot be read or written,
/// `ValueError` for options, `BuildError` for the rest.
pub(crate) fn build_error(e: snapkv_builder::Error) -> PyErr {
    use snapkv_builder::Error as E;
    // The builder's messages name the command's flags; here they are `build`'s arguments.
    let message = error_chain(&e)
        .replace(
            "--on-duplicate first or last",
            "on_duplicate=\"first\" or \"last\"",
        )
        .replace("--value-columns", "value_columns");
    match e {
        E::InvalidOption(_) => PyValueError::new_err(message),
        E::Read { .. } | E::Output { .. } | E::NoMatch(_) => PyOSError::new_err(message),
        _ => BuildError::new_err(message),
    }
}

/// The exception for a store error: `ValueError` for a bad URL, option or name, `OSError`
/// for local files, `CorruptError` for bytes that fail a check, `RefusedError` and
/// `ConflictError` for publish and rollback races, `StoreError` for the rest.
pub(crate) fn store_error(e: snapkv_store::Error) -> PyErr {
    use snapkv_store::Error as E;
    let message = error_chain(&e);
    match e {
        E::Invalid { .. } => PyValueError::new_err(message),
        E::Io { .. } => PyOSError::new_err(message),
        E::Corrupt { .. } => CorruptError::new_err(message),
        E::Refused { .. } => RefusedError::new_err(message),
        E::Policy { .. } => PolicyError::new_err(message),
        E::Conflict { .. } => ConflictError::new_err(message),
        _ => StoreError::new_err(message),
    }
}

/// A `ValueError` naming the argument for a value `f` rejects.
pub(crate) fn parse<T>(
    what: &str,
    value: &str,
    f: impl Fn(&str) -> Result<T, String>,
) -> PyResult<T> {
    f(value).map_err(|e| PyValueError::new_err(format!("{what}={value:?}: {e}")))
}
