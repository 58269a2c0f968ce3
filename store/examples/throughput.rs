//! Upload and download throughput of one large snapshot through a store.
//!
//! ```text
//! cargo run --release -p snapkv-store --example throughput -- \
//!     --store URL [--store-option KEY=VALUE]... [--mb 1024] [--dir SCRATCH]
//! ```
//!
//! Writes a snapshot of about `--mb` MiB of incompressible values into `SCRATCH` (kept for the
//! next run), publishes it as a new version of a fresh dataset, fetches it into a cache
//! directory, and prints MB/s for both. Publish includes the verification pass and the upload;
//! fetch includes the download, fsync, checksum and the snapshot's full verification.

use snapkv_format::{Compression, Dictionary, Metadata, SnapshotWriter, WriterOptions};
use snapkv_store::{Cache, FetchOptions, PublishOptions, Store};
use std::path::PathBuf;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut store = None;
    let mut options = Vec::new();
    let mut mb: u64 = 1024;
    let mut dir = std::env::temp_dir().join("snapkv-throughput");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--store" => store = Some(value()?),
            "--store-option" => {
                let kv = value()?;
                let (k, v) = kv.split_once('=').ok_or("--store-option KEY=VALUE")?;
                options.push((k.to_owned(), v.to_owned()));
            }
            "--mb" => mb = value()?.parse()?,
            "--dir" => dir = PathBuf::from(value()?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let url = store.ok_or("--store URL is required")?;
    std::fs::create_dir_all(&dir)?;
    let file = dir.join(format!("throughput-{mb}MiB.snapkv"));
    if !file.exists() {
        let started = Instant::now();
        write_snapshot(&file, mb << 20)?;
        eprintln!(
            "wrote {} in {:.1}s",
            file.display(),
            started.elapsed().as_secs_f64()
        );
    }
    let bytes = std::fs::metadata(&file)?.len();
    let store = Store::open(&url, &options)?;
    let dataset = format!("throughput-{}", std::process::id());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;

    let started = Instant::now();
    let mut publish = PublishOptions::default();
    publish.version = Some("v1".into());
    runtime.block_on(store.publish(&dataset, std::slice::from_ref(&file), &publish))?;
    let up = started.elapsed().as_secs_f64();

    let cache_dir = dir.join(format!("cache-{}", std::process::id()));
    let cache = Cache::new(&cache_dir);
    let started = Instant::now();
    runtime.block_on(store.fetch(&dataset, "v1", &cache, &FetchOptions::default()))?;
    let down = started.elapsed().as_secs_f64();

    let mbs = |secs: f64| bytes as f64 / 1e6 / secs;
    println!(
        "{url}: {:.0} MB snapshot; publish {up:.1}s = {:.0} MB/s; fetch {down:.1}s = {:.0} MB/s",
        bytes as f64 / 1e6,
        mbs(up),
        mbs(down)
    );
    cache.remove(&dataset, "v1")?;
    let _ = std::fs::remove_dir_all(&cache_dir);
    Ok(())
}

/// About `bytes` bytes: keys `key-NNNNNNNNNN`, 4 KiB pseudo-random values, stored raw.
fn write_snapshot(path: &std::path::Path, bytes: u64) -> Result<(), Box<dyn std::error::Error>> {
    let mut options = WriterOptions::default();
    options.compression = Compression::None;
    options.dictionary = Dictionary::Off;
    let out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let mut w = SnapshotWriter::new(out, options, Metadata::default())?;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut value = vec![0u8; 4096];
    for i in 0..bytes / 4096 {
        for chunk in value.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        w.insert(format!("key-{i:010}").as_bytes(), &value)?;
    }
    w.finish()?;
    Ok(())
}
