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

/// Maps `file`, a snapshot file still being filled in, read-only (see [`map_read_only`]).
///
/// # Safety
///
/// The caller promises that nobody truncates the file while any slice of the mapping is
/// alive, and that its bytes change only in this way: a run of bytes still a hole (zeros) is
/// written once with its final content (or again with the same content), and no code reads
/// such a run through the mapping before it was written. A snapshot opened with
/// [`snapkv_format::Snapshot::open_filling`] on a [`snapkv_store::Filling`] keeps the second
/// half: it reads data blocks only once the filling says they are in place (written, checked,
/// then marked with release ordering), and the filling writes a block only where it is not
/// marked, with the bytes its checksum names. The header and the sections after the data
/// region are written before the file is mapped.
#[allow(unsafe_code)]
pub(crate) unsafe fn map_filling(file: &File) -> io::Result<Bytes> {
    // SAFETY: forwarded to our caller (see `# Safety`): bytes change only where nothing has
    // read them, and the file keeps its length.
    unsafe { map_read_only(file) }
}

/// Makes a `SIGBUS` print a message and exit with status 2, rather than kill the process
/// without a word. The signal comes when a mapped page cannot be read: the file was truncated
/// while mapped, against the contract above, or its storage failed. For the command-line
/// program, which owns its process; a library embedding the reader leaves signals to its host.
#[allow(unsafe_code)]
pub fn report_sigbus() {
    extern "C" fn on_sigbus(_: libc::c_int) {
        const MESSAGE: &[u8] = b"error: a memory-mapped snapshot file shrank or could not be \
            read while in use (SIGBUS); snapshot files must not change while they are open: \
            write a new file and rename it over the old one\n";
        // SAFETY: `write` and `_exit` are async-signal-safe, and MESSAGE is static. Returning
        // would retry the faulting read forever, so the handler exits.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::_exit(2);
        }
    }
    // SAFETY: `action` is fully initialised (zeroed, then its handler and empty mask set), and
    // the handler calls only async-signal-safe functions.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut());
    }
}
