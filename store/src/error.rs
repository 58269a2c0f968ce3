//! The public error, grouped by what the caller can do about it. Backend errors stay private:
//! they are mapped once, in [`Error::storage`], and kept only as a `source()`.

use crate::diagnose::{summary, Cloud};
use crate::manifest::Pointer;
use std::path::PathBuf;

/// A boxed error from a layer below (object store, file system, snapshot format).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Result of this crate's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a store operation failed. Variants say what the caller can do; `source()` says why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A URL, option, name or argument is not acceptable: fix the invocation.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was rejected (`store URL`, `dataset name`, `version`, …).
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A named thing (dataset, version, object) does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for.
        what: String,
    },
    /// The request contradicts the store's state (a version that is not newer than
    /// `CURRENT`, a version that already exists, an incomplete rollback target): choose
    /// another version, or use `rollback`.
    #[error("{reason}")]
    Refused {
        /// What is in the way, and what to do instead.
        reason: String,
    },
    /// Another writer got there first: `CURRENT` moved, or the version was claimed, while
    /// this operation was under way. Nothing this operation wrote is visible in `CURRENT`.
    #[error("{reason}")]
    Conflict {
        /// Who won, and what is left behind.
        reason: String,
        /// `CURRENT` as read after losing, if it exists.
        current: Option<Box<Pointer>>,
    },
    /// The version breaks rules of its dataset's policy: nothing was uploaded (publish) or
    /// moved (promote). The report lists every rule checked; forcing (with a reason)
    /// overrides.
    #[error(
        "version {} of {} breaks its dataset's policy ({}):\n{report}\nFix the data, change the \
         policy (snapkv policy set), or force it with a reason (recorded in the history)",
        report.version,
        report.dataset,
        report.summary()
    )]
    Policy {
        /// Every rule checked.
        report: Box<crate::policy::PolicyReport>,
    },
    /// Bytes failed a check: a local file before upload, a stored object or manifest after
    /// download. Corrupt data is never renamed into a cache or made current.
    #[error("{what} is corrupt: {detail}")]
    Corrupt {
        /// The file or object.
        what: String,
        /// What does not match.
        detail: String,
        /// The format error, when the snapshot format found the fault.
        #[source]
        source: Option<BoxError>,
    },
    /// Storage could not be reached, or kept failing, after bounded retries: try again later
    /// (readers keep serving what they have).
    #[error("storage at {url} is unavailable ({op} {path})")]
    Unavailable {
        /// The store's URL.
        url: String,
        /// The operation (`GET`, `PUT`, `LIST`, …).
        op: &'static str,
        /// The object.
        path: String,
        /// The transport error.
        #[source]
        source: BoxError,
    },
    /// A local file or directory could not be read or written.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done (`read`, `create`, `rename`, …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store is not usable as configured: its bucket or container does not exist, or
    /// credentials are missing or refused. The message names the option or variable to set.
    #[error("{problem} ({url}): {hint}")]
    Misconfigured {
        /// The store's URL.
        url: String,
        /// What is missing or wrong.
        problem: String,
        /// What sets it.
        hint: String,
    },
    /// Any other storage failure (permission denied, an unsupported operation, a malformed
    /// answer): usually needs an operator.
    #[error("storage at {url} failed ({op} {path})")]
    Storage {
        /// The store's URL.
        url: String,
        /// The operation.
        op: &'static str,
        /// The object.
        path: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Maps an object-store error: the one place backend errors are classified. The cause
    /// is kept as one line (see [`summary`]).
    pub(crate) fn storage(
        url: &str,
        cloud: Option<&Cloud>,
        op: &'static str,
        path: &str,
        e: object_store::Error,
    ) -> Error {
        if let Some(e) = cloud.and_then(|c| c.diagnose(url, &e)) {
            return e;
        }
        match e {
            object_store::Error::NotFound { .. } => Error::NotFound {
                what: format!("object {path}"),
            },
            e if is_transport(&e) => {
                let mut cause = summary(&e);
                if let Some(hint) = cloud.and_then(Cloud::endpoint_hint) {
                    cause = format!("{cause} ({hint})");
                }
                Error::Unavailable {
                    url: url.to_owned(),
                    op,
                    path: path.to_owned(),
                    source: cause.into(),
                }
            }
            object_store::Error::NotImplemented { .. }
            | object_store::Error::NotSupported { .. } => Error::Storage {
                url: url.to_owned(),
                op,
                path: path.to_owned(),
                source: format!(
                    "{}; snapkv needs conditional writes (S3: If-None-Match and If-Match, \
                         the default `conditional_put=etag`)",
                    summary(&e)
                )
                .into(),
            },
            e => Error::Storage {
                url: url.to_owned(),
                op,
                path: path.to_owned(),
                source: summary(&e).into(),
            },
        }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Error {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn corrupt(what: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what: what.into(),
            detail: detail.into(),
            source: None,
        }
    }

    /// True for [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// True when a local file could not be written for lack of space: the disk (or the
    /// user's quota) is full.
    pub fn is_storage_full(&self) -> bool {
        match self {
            Error::Io { source, .. } => {
                source.kind() == std::io::ErrorKind::StorageFull
                    || source.kind() == std::io::ErrorKind::QuotaExceeded
            }
            _ => false,
        }
    }
}

/// True when `e` says the object is absent (not that the bucket is: see
/// [`crate::diagnose::is_missing_bucket_error`]).
pub(crate) fn is_absent(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
        && !crate::diagnose::is_missing_bucket_error(e)
}

/// True when the request never got an answer: connection refused, DNS failure, timeouts
/// (after the client's bounded retries).
fn is_transport(e: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err
            .downcast_ref::<object_store::client::HttpError>()
            .is_some()
        {
            return true;
        }
        next = err.source();
    }
    false
}

/// An error and its causes on one line, `error: cause: cause` (for logs and messages that
/// must say why, not only what).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}
