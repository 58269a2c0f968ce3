//! Backends and snapshot files for the store tests.
#![allow(dead_code)]

use snapkv_format::{Compression, Dictionary, Metadata, SnapshotWriter, WriterOptions};
use snapkv_store::Store;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The bucket the S3 tests use; every test works under its own prefix.
pub const BUCKET: &str = "snapkv-test";

/// Where the conformance suite runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Memory,
    Local,
    S3,
}

/// The S3-compatible endpoint `./scripts/test` starts. Tests that need it fail without it.
pub fn s3_endpoint() -> String {
    let endpoint = std::env::var("SNAPKV_TEST_S3_ENDPOINT").unwrap_or_default();
    assert!(
        !endpoint.is_empty(),
        "SNAPKV_TEST_S3_ENDPOINT is not set: run ./scripts/test, which starts an S3-compatible \
         server on 127.0.0.1 and sets it"
    );
    static BUCKET_MADE: OnceLock<()> = OnceLock::new();
    BUCKET_MADE.get_or_init(|| create_bucket(&endpoint));
    endpoint
}

/// Creates the test bucket with a plain path-style `PUT /bucket` (the test server accepts it
/// unsigned, and answers 200 when it already exists).
fn create_bucket(endpoint: &str) {
    let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr)
        .unwrap_or_else(|e| panic!("cannot reach the S3 test server at {endpoint}: {e}"));
    write!(
        s,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let status = answer.split_whitespace().nth(1).unwrap_or("");
    assert!(
        status == "200" || status == "409",
        "cannot create bucket {BUCKET}: {answer}"
    );
}

/// Store options that reach the test S3 server with dummy credentials.
pub fn s3_options() -> Vec<(String, String)> {
    [
        ("endpoint", s3_endpoint()),
        ("access_key_id", "snapkv-test".into()),
        ("secret_access_key", "snapkv-test".into()),
        ("region", "us-east-1".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// A unique name for this test's data.
pub fn unique(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

/// One test's world: a fresh store location and a scratch directory.
pub struct Env {
    pub backend: Backend,
    pub url: String,
    pub options: Vec<(String, String)>,
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new(backend: Backend, test: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (url, options) = match backend {
            Backend::Memory => (format!("memory://{}", unique(test)), Vec::new()),
            Backend::Local => (
                dir.path().join("store").to_str().unwrap().to_owned(),
                Vec::new(),
            ),
            Backend::S3 => (format!("s3://{BUCKET}/{}", unique(test)), s3_options()),
        };
        Env {
            backend,
            url,
            options,
            dir,
        }
    }

    /// A new handle on the store (separate connections, same data).
    pub fn store(&self) -> Store {
        Store::open(&self.url, &self.options).unwrap()
    }

    /// A scratch path.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a snapshot of about `bytes` bytes (incompressible values) at `name`.
    pub fn snapshot(&self, name: &str, bytes: usize, seed: u64) -> PathBuf {
        let path = self.path(name);
        write_snapshot(&path, bytes, seed, Metadata::default());
        path
    }
}

/// Writes a snapshot of about `bytes` bytes: keys `key-NNNNNNNN`, 1000-byte pseudo-random values.
pub fn write_snapshot(path: &Path, bytes: usize, seed: u64, metadata: Metadata) -> u64 {
    let mut options = WriterOptions::default();
    options.compression = Compression::None;
    options.dictionary = Dictionary::Off;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = SnapshotWriter::new(file, options, metadata).unwrap();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut value = vec![0u8; 1000];
    let n = (bytes / 1000).max(1) as u64;
    for i in 0..n {
        for chunk in value.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        w.insert(format!("key-{i:08}").as_bytes(), &value).unwrap();
    }
    w.finish().unwrap();
    n
}
