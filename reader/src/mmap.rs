//! The project's one memory mapping.

use bytes::Bytes;
use std::fs::File;
use std::io;

/// Maps `file` read-only and wraps the mapping in [`Bytes`], so that slices of it (values of raw
/// blocks) can be handed out, and outlive this call, without copying. The mapping is unmapped
/// when the last slice is dropped.
///
/// # Safety
///
/// The caller promises that nobody modifies or truncates the file while any slice of the
/// mapping is alive. Modifying it would change bytes that safe code holds as immutable;
/// truncating it turns reads of the lost pages into `SIGBUS`. Snapshot files are immutable by
/// contract (`spec/FORMAT.md`, "Assumptions"): they are written under a temporary name, made
/// read-only and renamed into place, and replaced only by renaming another file over the name,
/// which leaves the mapped inode untouched.
#[allow(unsafe_code)]
pub(crate) unsafe fn map_read_only(file: &File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        // A zero-length mapping is an error on some systems; nothing to map anyway.
        return Ok(Bytes::new());
    }
    // SAFETY: forwarded to our caller (see `# Safety`): the file does not change while mapped.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(map))
}
