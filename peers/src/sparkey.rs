//! Sparkey: a log of entries (`.spl`, uncompressed or in Snappy blocks) and a hash file over it
//! (`.spi`), written and read through its C library as its own benchmark does: one reader, one
//! log iterator reused for every lookup, values copied into one reused buffer.
//!
//! The foreign calls are confined to this module. Each pointer it holds comes from the library
//! and is closed once, in `Drop`; the library only reads the key and value slices passed to it,
//! for the length passed with them.

#![allow(unsafe_code)]

use sparkey_sys as sys;
use std::ffi::{CStr, CString};
use std::io;
use std::path::{Path, PathBuf};

/// How the log stores its entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Entries as they are.
    None,
    /// Entries in Snappy-compressed blocks of `block_size` bytes.
    Snappy {
        /// Uncompressed bytes per block (Sparkey's benchmark uses 4096).
        block_size: u32,
    },
}

/// The two files of a Sparkey table.
#[derive(Debug, Clone)]
pub struct Files {
    /// The log of entries.
    pub log: PathBuf,
    /// The hash index over it.
    pub index: PathBuf,
}

impl Files {
    /// Bytes of both files.
    pub fn bytes(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.log)?.len() + std::fs::metadata(&self.index)?.len())
    }

    /// Bytes of the hash index alone.
    pub fn index_bytes(&self) -> io::Result<u64> {
        Ok(std::fs::metadata(&self.index)?.len())
    }
}

/// An error of the library as an `io::Error`: its code and message, and what was being done.
fn check(code: sys::returncode, what: &str) -> io::Result<()> {
    if let sys::returncode::SUCCESS = code {
        return Ok(());
    }
    // SAFETY: sparkey_errstring returns a pointer to a static NUL-terminated string for every
    // return code.
    let message = unsafe { CStr::from_ptr(sys::errstring(code)) }
        .to_string_lossy()
        .into_owned();
    Err(io::Error::other(format!(
        "sparkey {what}: {message} ({code:?})"
    )))
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path with a NUL byte"))
}

/// Writes `entries` (in the order given) as a Sparkey log at `base.spl` and its hash index at
/// `base.spi`, replacing files there.
pub fn write<'a>(
    base: &Path,
    compression: Compression,
    entries: impl Iterator<Item = (&'a [u8], &'a [u8])>,
) -> io::Result<Files> {
    let files = Files {
        log: base.with_extension("spl"),
        index: base.with_extension("spi"),
    };
    let (log, index) = (c_path(&files.log)?, c_path(&files.index)?);
    let (kind, block_size) = match compression {
        Compression::None => (sys::compression_type::COMPRESSION_NONE, 0),
        Compression::Snappy { block_size } => (
            sys::compression_type::COMPRESSION_SNAPPY,
            i32::try_from(block_size)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "block size"))?,
        ),
    };
    let mut writer: *mut sys::logwriter = std::ptr::null_mut();
    // SAFETY: `log` is a NUL-terminated path; on success the library sets `writer`.
    check(
        unsafe { sys::logwriter_create(&mut writer, log.as_ptr(), kind, block_size) },
        "create log",
    )?;
    let put = || -> io::Result<()> {
        for (key, value) in entries {
            // SAFETY: `writer` is open; the library reads `key.len()` bytes of `key` and
            // `value.len()` bytes of `value` during the call.
            check(
                unsafe {
                    sys::logwriter_put(
                        writer,
                        key.len() as u64,
                        key.as_ptr(),
                        value.len() as u64,
                        value.as_ptr(),
                    )
                },
                "put",
            )?;
        }
        Ok(())
    };
    let written = put();
    // SAFETY: `writer` is open, and closed here once (on success the library frees and nulls
    // it; a close whose flush fails leaks it, which the benchmarks treat as fatal anyway).
    let closed = check(unsafe { sys::logwriter_close(&mut writer) }, "close log");
    written?;
    closed?;
    // SAFETY: both are NUL-terminated paths; 0 lets the library choose the hash size.
    check(
        unsafe { sys::hash_write(index.as_ptr(), log.as_ptr(), 0) },
        "write hash",
    )?;
    Ok(files)
}

/// A Sparkey table open for lookups on one thread.
pub struct Reader {
    hash: *mut sys::hashreader,
    log: *mut sys::logreader,
    iter: *mut sys::logiter,
    value: Vec<u8>,
}

impl Reader {
    /// Opens (maps) the table's files.
    pub fn open(files: &Files) -> io::Result<Reader> {
        let (log, index) = (c_path(&files.log)?, c_path(&files.index)?);
        let mut hash: *mut sys::hashreader = std::ptr::null_mut();
        // SAFETY: NUL-terminated paths; on success the library sets `hash`.
        check(
            unsafe { sys::hash_open(&mut hash, index.as_ptr(), log.as_ptr()) },
            "open hash",
        )?;
        // SAFETY: `hash` is open; its log reader lives as long as it.
        let log = unsafe { sys::hash_getreader(hash) };
        let mut iter: *mut sys::logiter = std::ptr::null_mut();
        // SAFETY: `log` is open; on success the library sets `iter`.
        if let Err(e) = check(unsafe { sys::logiter_create(&mut iter, log) }, "iterator") {
            // SAFETY: `hash` is open and closed once.
            unsafe { sys::hash_close(&mut hash) };
            return Err(e);
        }
        Ok(Reader {
            hash,
            log,
            iter,
            value: Vec::new(),
        })
    }

    /// The value of `key`, if the table has it (valid until the next call).
    pub fn get(&mut self, key: &[u8]) -> io::Result<Option<&[u8]>> {
        // SAFETY: `hash` and `iter` are open; the library reads `key.len()` bytes of `key`.
        check(
            unsafe { sys::hash_get(self.hash, key.as_ptr(), key.len() as u64, self.iter) },
            "get",
        )?;
        // SAFETY: `iter` is open.
        let state = unsafe { sys::logiter_state(self.iter) };
        if !matches!(state, sys::iter_state::ITER_ACTIVE) {
            return Ok(None);
        }
        // SAFETY: `iter` is open and positioned on an entry.
        let len = unsafe { sys::logiter_valuelen(self.iter) };
        self.value.resize(len as usize, 0);
        let mut filled = 0u64;
        // SAFETY: the library writes at most `len` bytes into `value`, which holds `len`.
        check(
            unsafe {
                sys::logiter_fill_value(
                    self.iter,
                    self.log,
                    len,
                    self.value.as_mut_ptr(),
                    &mut filled,
                )
            },
            "read value",
        )?;
        Ok(Some(&self.value[..filled as usize]))
    }

    /// Entries in the table.
    pub fn len(&self) -> u64 {
        // SAFETY: `hash` is open.
        unsafe { sys::hash_numentries(self.hash) }
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        // SAFETY: both are open and closed here once; the iterator before the table it reads.
        unsafe {
            sys::logiter_close(&mut self.iter);
            sys::hash_close(&mut self.hash);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_reads_both_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..10_000)
            .map(|i| {
                (
                    format!("key_{i}").into_bytes(),
                    format!("value_{i}").into_bytes(),
                )
            })
            .collect();
        for (n, compression) in [Compression::None, Compression::Snappy { block_size: 4096 }]
            .into_iter()
            .enumerate()
        {
            let files = write(
                &dir.path().join(format!("t{n}")),
                compression,
                entries.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
            )
            .unwrap();
            let mut r = Reader::open(&files).unwrap();
            assert_eq!(r.len(), 10_000);
            for (k, v) in entries.iter().step_by(97) {
                assert_eq!(r.get(k).unwrap(), Some(v.as_slice()));
            }
            assert_eq!(r.get(b"key_10000").unwrap(), None);
        }
    }
}
