//! The temporary files and directories builds in this process have open, so that a process
//! made to exit at once (a second Ctrl-C or SIGTERM) can still remove them:
//! [`remove_temporary_files`]. Each is registered while it exists and unregistered when its
//! owner removes or keeps it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static TEMPORARY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Notes a temporary file or directory.
pub(crate) fn register(path: &Path) {
    if let Ok(mut paths) = TEMPORARY.lock() {
        paths.push(path.to_owned());
    }
}

/// Forgets a temporary file or directory: removed or kept by its owner.
pub(crate) fn unregister(path: &Path) {
    if let Ok(mut paths) = TEMPORARY.lock() {
        if let Some(i) = paths.iter().rposition(|p| p == path) {
            paths.swap_remove(i);
        }
    }
}

/// Removes every temporary file and directory of the builds under way in this process, for a
/// process about to exit without finishing them. The builds themselves fail at their next
/// write; call this only before exiting.
pub fn remove_temporary_files() {
    let paths = match TEMPORARY.lock() {
        Ok(mut paths) => std::mem::take(&mut *paths),
        Err(_) => return,
    };
    for path in paths {
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

/// A [`tempfile::TempDir`] registered while it exists.
pub(crate) struct TempDir(tempfile::TempDir);

impl TempDir {
    pub(crate) fn new(dir: tempfile::TempDir) -> TempDir {
        register(dir.path());
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        unregister(self.0.path());
    }
}
