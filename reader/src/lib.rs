//! The snapkv reader: memory-mapped snapshots and the HTTP server that answers lookups from them.
//!
//! [`open_snapshot`] maps a snapshot file and opens it; values of raw blocks are slices of the
//! mapping, handed out without copying. [`run`] serves datasets over HTTP from a bound listener
//! until a shutdown future completes, so tests bind `127.0.0.1:0`.
//!
//! ```no_run
//! let snapshot = snapkv_reader::open_snapshot(
//!     std::path::Path::new("predictions.snapkv"),
//!     &snapkv_format::OpenOptions::default(),
//! )?;
//! println!("{} keys", snapshot.len());
//! # Ok::<(), snapkv_reader::OpenError>(())
//! ```

mod api;
mod cluster;
mod conn;
mod metrics;
mod mmap;
mod registry;
mod server;
mod sync;
mod time;
mod ui;

pub use cluster::Peer;
pub use mmap::report_sigbus;
pub use server::{run, Config, Limits, ServeError};
pub use sync::Source;

use snapkv_format::{OpenOptions, Snapshot};
use std::path::{Path, PathBuf};

/// Why a snapshot file could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("cannot read {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The path names something other than a regular file (a directory, a FIFO, a device):
    /// snapshots are files, and a FIFO would block the open until something writes to it.
    #[error("{} is {what}, not a snapshot file", path.display())]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is: `a directory`, `a FIFO`, ….
        what: &'static str,
    },
    /// The file is not a valid snapshot.
    #[error("{} is not a valid snapshot", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: snapkv_format::Error,
    },
    /// The files are not the shards of one version: their key ranges do not match the split
    /// keys.
    #[error("the shards of {} do not form one version", path.display())]
    Shards {
        /// The first shard's file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: snapkv_format::ShardError,
    },
}

/// How the store opens local snapshot files to verify them (before a publish, after a
/// download): memory-mapped with [`open_snapshot`], so a large file is not read into memory.
pub fn mapped() -> snapkv_store::OpenSnapshot {
    std::sync::Arc::new(|path| Ok(open_snapshot(path, &OpenOptions::default())?))
}

/// Maps the snapshot at `path` read-only and opens it (see [`Snapshot::open_with`]: structure
/// and section checksums are checked, data blocks are not; call [`Snapshot::verify`] for that).
///
/// The file must not be modified or truncated while the snapshot (or any value from it) is alive:
/// snapshot files are immutable once written, and replaced by renaming a new file over the name.
pub fn open_snapshot(path: &Path, options: &OpenOptions) -> Result<Snapshot, OpenError> {
    let io = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let not_a_file = |t: std::fs::FileType| {
        use std::os::unix::fs::FileTypeExt;
        let what = if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_socket() {
            "a socket"
        } else if t.is_block_device() || t.is_char_device() {
            "a device"
        } else {
            "not a regular file"
        };
        OpenError::NotAFile {
            path: path.to_owned(),
            what,
        }
    };
    // Checked before opening: opening a FIFO waits for a writer.
    let kind = std::fs::metadata(path).map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(not_a_file(kind));
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let kind = file.metadata().map_err(io)?.file_type();
    if !kind.is_file() {
        return Err(not_a_file(kind));
    }
    // SAFETY: snapshot files are immutable by contract (spec/FORMAT.md, "Assumptions"), which
    // this function's documentation passes on to its caller.
    #[allow(unsafe_code)]
    let bytes = unsafe { mmap::map_read_only(&file) }.map_err(io)?;
    Snapshot::open_with(bytes, options).map_err(|source| OpenError::Format {
        path: path.to_owned(),
        source,
    })
}

/// Maps a file of a lazily opened version ([`snapkv_store::Store::open_lazy`]) and opens it
/// as a snapshot whose data blocks `filling` brings in as lookups need them.
pub(crate) fn open_filling(
    filling: &std::sync::Arc<snapkv_store::Filling>,
    options: &OpenOptions,
) -> Result<Snapshot, OpenError> {
    let path = filling.path();
    let io = |source| OpenError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // SAFETY: the file is the filling's own (created at its full size, never truncated), and
    // the snapshot reads its data region only where the filling says it is in place: the
    // contract of `map_filling`.
    #[allow(unsafe_code)]
    let bytes = unsafe { mmap::map_filling(&file) }.map_err(io)?;
    let fill: std::sync::Arc<dyn snapkv_format::Fill> = filling.clone();
    Snapshot::open_filling(bytes, options, fill).map_err(|source| OpenError::Format {
        path: path.to_owned(),
        source,
    })
}
