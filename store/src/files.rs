//! Local files: opening snapshots for verification, reading and hashing off the async workers,
//! progress and bandwidth limits.

use crate::error::{BoxError, Error, Result};
use bytes::Bytes;
use snapkv_format::Snapshot;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;
use xxhash_rust::xxh3::Xxh3;

/// Opens a local snapshot file so that it can be verified. Called on Tokio's blocking pool.
///
/// The default, [`read_snapshot`], reads the whole file into memory. A reader that maps
/// files passes one that maps instead (`snapkv_reader::open_snapshot`), so that verifying a
/// large file does not hold it in memory.
pub type OpenSnapshot = Arc<dyn Fn(&Path) -> std::result::Result<Snapshot, BoxError> + Send + Sync>;

/// Called with each number of bytes transferred (uploaded or downloaded), from the task doing
/// the transfer: keep it cheap (update a progress bar, add to a counter).
pub type Progress = Arc<dyn Fn(u64) + Send + Sync>;

/// Opens a snapshot by reading the whole file into memory: the default [`OpenSnapshot`].
pub fn read_snapshot(path: &Path) -> std::result::Result<Snapshot, BoxError> {
    let bytes = std::fs::read(path)?;
    Ok(Snapshot::open(bytes)?)
}

pub(crate) fn default_open() -> OpenSnapshot {
    Arc::new(read_snapshot)
}

/// Runs blocking work on Tokio's blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// What verifying a local snapshot file found.
#[derive(Debug, Clone)]
pub(crate) struct LocalSnapshot {
    pub bytes: u64,
    pub xxh3: u64,
    pub keys: u64,
    /// Its snapshot format version.
    pub format_version: u32,
    pub metadata: snapkv_format::Metadata,
    /// Its first and last keys (none when it has no key).
    pub first_key: Option<Vec<u8>>,
    pub last_key: Option<Vec<u8>>,
    /// The shard it is, `(index, count)`, if its metadata says it is one.
    pub shard: Option<(u32, u32)>,
}

impl LocalSnapshot {
    /// Its place and key range, as the shard `(index, count)`.
    pub(crate) fn shard_info(&self, (index, count): (u32, u32)) -> crate::sharding::ShardInfo {
        crate::sharding::ShardInfo {
            index,
            count,
            first: self.first_key.clone(),
            last: self.last_key.clone(),
        }
    }
}

/// Opens `path` with `open`, runs the full [`Snapshot::verify`] pass, and hashes the file (a
/// separate read: the checksum covers exactly the bytes on disk). On the blocking pool.
pub(crate) async fn verify_local(path: PathBuf, open: OpenSnapshot) -> Result<LocalSnapshot> {
    blocking(move || {
        let corrupt = |source: BoxError| Error::Corrupt {
            what: path.display().to_string(),
            detail: "not a valid snapshot".into(),
            source: Some(source),
        };
        // An unreadable file is an I/O error; one that reads but does not parse is corrupt.
        let mut file = File::open(&path).map_err(|e| Error::io("open", &path, e))?;
        let snapshot = open(&path).map_err(corrupt)?;
        snapshot.verify().map_err(|e| corrupt(Box::new(e)))?;
        let (bytes, xxh3) =
            hash_reader(&mut file, Xxh3::new()).map_err(|e| Error::io("read", &path, e))?;
        let info = LocalSnapshot {
            bytes,
            xxh3,
            keys: snapshot.len(),
            format_version: snapshot.format_version(),
            metadata: snapshot.metadata().clone(),
            first_key: snapkv_format::shards::first_key(&snapshot).map(|k| k.to_vec()),
            last_key: snapkv_format::shards::last_key(&snapshot).map(|k| k.to_vec()),
            shard: crate::sharding::recorded_shard(&snapshot.metadata().builder),
        };
        if info.bytes != snapshot.stats().map(|s| s.file_bytes).unwrap_or(info.bytes) {
            return Err(Error::corrupt(
                path.display().to_string(),
                "the file changed while it was verified",
            ));
        }
        Ok(info)
    })
    .await
}

/// Feeds everything `r` yields to `hasher`; returns (bytes read, digest).
pub(crate) fn hash_reader(r: &mut impl Read, mut hasher: Xxh3) -> std::io::Result<(u64, u64)> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => return Ok((total, hasher.digest())),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

/// Reads up to `len` bytes of `file` into one buffer, hashing them, on the blocking pool.
/// Returns the file and hasher back with the chunk (empty at the end of the file).
pub(crate) async fn read_chunk(
    mut file: File,
    mut hasher: Box<Xxh3>,
    len: usize,
) -> std::io::Result<(File, Box<Xxh3>, Bytes)> {
    blocking(move || {
        let mut buf = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        buf.truncate(filled);
        hasher.update(&buf);
        Ok((file, hasher, Bytes::from(buf)))
    })
    .await
}

/// A bandwidth bound shared by concurrent transfers: the n-th byte is released no earlier than
/// `n / rate` seconds after the first.
#[derive(Debug)]
pub(crate) struct RateLimit {
    bytes_per_sec: u64,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RateLimit {
    pub(crate) fn new(bytes_per_sec: Option<u64>) -> Option<Arc<RateLimit>> {
        bytes_per_sec.filter(|&r| r > 0).map(|r| {
            Arc::new(RateLimit {
                bytes_per_sec: r,
                state: Mutex::new((None, 0)),
            })
        })
    }

    /// The bound.
    pub(crate) fn bytes_per_sec(&self) -> u64 {
        self.bytes_per_sec
    }

    /// Waits until `n` more bytes may go.
    pub(crate) async fn take(&self, n: u64) {
        let due = {
            let mut state = self.state.lock().unwrap();
            let start = *state.0.get_or_insert_with(Instant::now);
            state.1 += n;
            start + Duration::from_secs_f64(state.1 as f64 / self.bytes_per_sec as f64)
        };
        tokio::time::sleep_until(due).await;
    }
}

/// Calls the progress callback, if any.
pub(crate) fn report(progress: &Option<Progress>, n: u64) {
    if let Some(p) = progress {
        p(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spreads_bytes_over_time() {
        let limit = RateLimit::new(Some(1000)).unwrap();
        let start = tokio::time::Instant::now();
        for _ in 0..4 {
            limit.take(500).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1990), "{elapsed:?}");
        assert!(elapsed <= Duration::from_millis(2100), "{elapsed:?}");
        assert!(RateLimit::new(Some(0)).is_none());
    }
}
