//! The comparison table: builds each workload under each configuration and prints Markdown
//! tables of build speed, sizes, lookup speed (one thread) and ratios against Sparkey, built
//! from its C source and measured in the same run on the same entries, in the same order, with
//! the same lookup sequence (uncompressed, and in Snappy blocks of 4 KiB); Sparkey's published
//! figures are kept for its zstd build, which the C source here lacks. See `benches/README.md`.
//!
//! ```text
//! CARGO_TARGET_DIR=/work/target-bench cargo bench -j2 --bench table
//! SNAPKV_BENCH_ENTRIES=10_000_000 CARGO_TARGET_DIR=/work/target-bench cargo bench -j2 --bench table
//! ```
//!
//! Environment:
//! - `SNAPKV_BENCH_ENTRIES`: entries per workload (default 1_000_000).
//! - `SNAPKV_BENCH_LOOKUPS`: lookups per measurement (default 2_000_000).
//! - `SNAPKV_BENCH_SECONDS`: time cap of one lookup measurement (default 20): a slow
//!   configuration stops early and reports the rate over the lookups it did.
//! - `SNAPKV_BENCH_WORKLOADS`: `sparkey`, `realistic`, `prefixed` (comma-separated; default
//!   all).
//! - `SNAPKV_BENCH_DIR`: where Sparkey's files are written (default: the system's temporary
//!   directory); they are removed at the end of each workload.
//! - `SNAPKV_BENCH_CONFIGS`: configuration names to run (comma-separated; default all).

mod common;

use common::{Column, Dataset, Workload};
use fst::{IntoStreamer, Streamer};
use snapkv_format::{
    Compression, Dictionary, Metadata, OpenOptions, Snapshot, SnapshotWriter, WriteSummary,
    WriterOptions,
};
use std::fmt::Write as _;
use std::hint::black_box;
use std::time::{Duration, Instant};

/// One writer configuration, and how the reader opens its files.
struct Config {
    name: &'static str,
    options: WriterOptions,
    /// [`OpenOptions::index_in_memory`].
    index_in_memory: bool,
}

fn configs() -> Vec<Config> {
    let with = |compression: Compression, dictionary: Option<Dictionary>, block_size: u32| {
        let mut o = WriterOptions::default();
        o.compression = compression;
        if let Some(d) = dictionary {
            o.dictionary = d;
        }
        o.block_size = block_size;
        o.threads = 0;
        o
    };
    let zstd3 = Compression::Zstd { level: 3 };
    let v1 = |mut o: WriterOptions| {
        o.format_version = 1;
        o
    };
    let mut all = vec![
        Config {
            name: "none-4k",
            options: with(Compression::None, Some(Dictionary::Off), 4096),
            index_in_memory: false,
        },
        Config {
            name: "none-4k-v1",
            options: v1(with(Compression::None, Some(Dictionary::Off), 4096)),
            index_in_memory: false,
        },
        Config {
            name: "zstd3-4k",
            options: with(zstd3, Some(Dictionary::Off), 4096),
            index_in_memory: false,
        },
        Config {
            name: "zstd3-dict-1k",
            options: with(zstd3, None, 1024),
            index_in_memory: false,
        },
        Config {
            name: "zstd3-dict-4k",
            options: with(zstd3, None, 4096),
            index_in_memory: false,
        },
        Config {
            name: "zstd3-dict-4k-v1",
            options: v1(with(zstd3, None, 4096)),
            index_in_memory: false,
        },
        Config {
            name: "zstd3-dict-16k",
            options: with(zstd3, None, 16384),
            index_in_memory: false,
        },
    ];
    // The same files read with their index sections copied into huge pages.
    for (name, base) in [
        ("none-4k-mem", "none-4k"),
        ("zstd3-dict-4k-mem", DEFAULT_CONFIG),
    ] {
        let options = all
            .iter()
            .find(|c| c.name == base)
            .expect("a base")
            .options
            .clone();
        all.push(Config {
            name,
            options,
            index_in_memory: true,
        });
    }
    assert!(
        all.iter()
            .any(|c| c.name == DEFAULT_CONFIG && c.options == WriterOptions::default()),
        "{DEFAULT_CONFIG} must be WriterOptions::default()"
    );
    match std::env::var("SNAPKV_BENCH_CONFIGS") {
        Ok(list) => {
            let wanted: Vec<&str> = list.split(',').map(str::trim).collect();
            all.into_iter()
                .filter(|c| wanted.contains(&c.name))
                .collect()
        }
        Err(_) => all,
    }
}

/// The configuration equal to `WriterOptions::default()`.
const DEFAULT_CONFIG: &str = "zstd3-dict-4k";

/// Sparkey's published figures for this machine class: one thread, 10M entries.
struct Sparkey {
    lookups_raw: f64,
    file_raw: f64,
    build_raw: f64,
    lookups_zstd: f64,
    file_zstd: f64,
    /// Not published for workload (a).
    build_zstd: Option<f64>,
}

const SPARKEY_ENTRIES: f64 = 10_000_000.0;

/// Sparkey's published figures for `workload`, if it published any.
fn sparkey(workload: Workload) -> Option<Sparkey> {
    Some(match workload {
        Workload::Sparkey => Sparkey {
            lookups_raw: 1.34e6,
            file_raw: 414e6,
            build_raw: 1.63e6,
            lookups_zstd: 62e3,
            file_zstd: 225e6,
            build_zstd: None,
        },
        Workload::Realistic => Sparkey {
            lookups_raw: 952e3,
            file_raw: 1.52e9,
            build_raw: 1.30e6,
            lookups_zstd: 73e3,
            file_zstd: 506e6,
            build_zstd: Some(546e3),
        },
        Workload::Prefixed => return None,
    })
}

/// A Sparkey table built and measured in this run.
struct Peer {
    name: &'static str,
    /// Entries in the data set.
    entries: usize,
    /// Log and hash, and the hash alone.
    file_bytes: u64,
    index_bytes: u64,
    /// Wall-clock seconds to write the log and the hash.
    build_secs: f64,
    hits: Rate,
    misses: Rate,
}

/// The Sparkey configurations measured: those of its own benchmark.
fn peers() -> [(&'static str, snapkv_peers::sparkey::Compression); 2] {
    use snapkv_peers::sparkey::Compression;
    [
        ("Sparkey uncompressed", Compression::None),
        (
            "Sparkey Snappy 4K",
            Compression::Snappy { block_size: 4096 },
        ),
    ]
}

/// Builds Sparkey's files for `data` under `dir`, checks them, and times lookups of the same
/// keys in the same order as snapkv's.
fn measure_peer(
    data: &Dataset,
    (name, compression): (&'static str, snapkv_peers::sparkey::Compression),
    dir: &std::path::Path,
    hits: &Column,
    hit_idx: &[u32],
    misses: &Column,
    s: &Settings,
) -> Peer {
    let tag = format!("[{}/{name}]", data.workload.name());
    let t = Instant::now();
    let files = snapkv_peers::sparkey::write(
        &dir.join(name.replace(' ', "-")),
        compression,
        data.keys.iter().zip(data.values.iter()),
    )
    .expect("write Sparkey files");
    let build_secs = t.elapsed().as_secs_f64();
    let mut reader = snapkv_peers::sparkey::Reader::open(&files).expect("open Sparkey files");
    for (j, &i) in hit_idx.iter().enumerate().take(2000) {
        let v = reader.get(hits.get(j)).expect("get").expect("hit");
        assert_eq!(v, data.values.get(i as usize), "{tag} wrong value");
    }
    let hits = time_lookups(hits, true, s.cap, |k| {
        reader.get(k).expect("get").map(<[u8]>::len)
    });
    let misses = time_lookups(misses, false, s.cap, |k| {
        reader.get(k).expect("get").map(<[u8]>::len)
    });
    let peer = Peer {
        name,
        entries: data.len(),
        file_bytes: files.bytes().expect("size"),
        index_bytes: files.index_bytes().expect("size"),
        build_secs,
        hits,
        misses,
    };
    eprintln!(
        "{tag} built {} B ({} B hash) in {build_secs:.2} s, hits {:.0}/s, misses {:.0}/s",
        peer.file_bytes,
        peer.index_bytes,
        hits.per_sec(),
        misses.per_sec()
    );
    let _ = std::fs::remove_file(&files.log);
    let _ = std::fs::remove_file(&files.index);
    peer
}

/// A lookup measurement on one thread: wall-clock time and the time the thread was on a CPU
/// (other processes on the machine take CPU time from the benchmark; the on-CPU rate is what
/// an unloaded core would do, minus cache interference).
#[derive(Clone, Copy, Default)]
struct Rate {
    lookups: usize,
    secs: f64,
    cpu_secs: f64,
}

impl Rate {
    /// Lookups per on-CPU second (the figure the comparisons use).
    fn per_sec(self) -> f64 {
        self.lookups as f64 / self.cpu_secs
    }

    /// Lookups per wall-clock second.
    fn per_wall_sec(self) -> f64 {
        self.lookups as f64 / self.secs
    }

    /// Nanoseconds on CPU per lookup.
    fn ns(self) -> f64 {
        self.cpu_secs * 1e9 / self.lookups as f64
    }
}

/// Wall clock and this thread's CPU time.
struct Timer {
    wall: Instant,
    cpu: f64,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: thread_cpu_secs(),
        }
    }

    fn elapsed(&self) -> Duration {
        self.wall.elapsed()
    }

    fn rate(&self, lookups: usize) -> Rate {
        Rate {
            lookups,
            secs: self.wall.elapsed().as_secs_f64(),
            cpu_secs: thread_cpu_secs() - self.cpu,
        }
    }
}

/// This thread's time on a CPU, in seconds (Linux: `/proc/thread-self/schedstat`, in ns).
fn thread_cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(f64::NAN, |ns| ns as f64 / 1e9)
}

/// A build: wall-clock seconds, process CPU seconds, and how they split between inserting and
/// `finish` (waiting for the last blocks, the index and the filter).
#[derive(Clone, Copy, Default)]
struct BuildTime {
    secs: f64,
    cpu_secs: f64,
    finish_secs: f64,
}

/// Everything measured for one workload under one configuration.
struct Row {
    config: &'static str,
    build: BuildTime,
    summary: WriteSummary,
    hit_nocache: Rate,
    hit_default_cache: Rate,
    hit_full_cache: Rate,
    /// The same with `get_into` into one reused buffer (values copied, as Sparkey's reads).
    hit_full_cache_copied: Rate,
    /// Cache `used` bytes after the full-cache run.
    full_cache_used: usize,
    /// Hit ratio of the block cache during the timed full-cache run.
    full_cache_hit_ratio: f64,
    miss: Rate,
    /// The cache bound that keeps file + cache within Sparkey's uncompressed files (as built
    /// in this run), the lookups with it (warmed like the full cache), and its hit ratio;
    /// `None` when the file alone is larger or no block is compressed.
    budget: Option<(usize, Rate, f64)>,
    /// Entries in the data set.
    entries: usize,
}

/// The index experiment: an FST over every key (shape a) against one over one key per block
/// (shape b, what the format stores).
struct IndexRow {
    a_build: Rate,
    a_bytes: usize,
    a_get: Rate,
    a_ge: Rate,
    b_keys: usize,
    b_bytes: usize,
    b_ge: Rate,
    /// The reader's one-walk lower bound, on each FST.
    a_walk: Rate,
    b_walk: Rate,
    b_format_index_bytes: u64,
    /// Shape (c): a perfect hash (`snapkv_format::mph`) over every key to a slot holding the
    /// key's ordinal, the key compared: its build, bytes (pilots + 4-byte slots) and lookup.
    c_build: Rate,
    c_bytes: usize,
    c_get: Rate,
}

struct Settings {
    /// `git_state()` at the start of the run.
    source: String,
    entries: usize,
    lookups: usize,
    cap: Duration,
}

fn main() {
    let settings = Settings {
        source: git_state(),
        entries: common::entries_from_env(),
        lookups: common::env_usize("SNAPKV_BENCH_LOOKUPS").unwrap_or(2_000_000),
        cap: Duration::from_secs(common::env_usize("SNAPKV_BENCH_SECONDS").unwrap_or(20) as u64),
    };
    let workloads: Vec<Workload> = match std::env::var("SNAPKV_BENCH_WORKLOADS") {
        Ok(list) => Workload::ALL
            .into_iter()
            .filter(|w| list.split(',').any(|s| s.trim() == w.name()))
            .collect(),
        Err(_) => Workload::ALL.to_vec(),
    };
    let started = Instant::now();
    let load_before = common::loadavg();
    eprintln!(
        "snapkv table bench: {} entries, {} lookups per measurement (cap {:?}), load {load_before}",
        settings.entries, settings.lookups, settings.cap
    );

    let mut results: Vec<(Workload, Vec<Peer>, Vec<Row>, IndexRow)> = Vec::new();
    for workload in workloads {
        let t = Instant::now();
        let data = common::generate(workload, settings.entries);
        eprintln!(
            "[{}] generated {} entries ({} B keys, {} B values) in {:.1?}",
            workload.name(),
            data.len(),
            data.keys.total_bytes(),
            data.values.total_bytes(),
            t.elapsed()
        );
        let (hits, hit_idx) = data.hit_keys(settings.lookups, 0xc0ffee);
        let misses = data.miss_keys(settings.lookups, 0xbadbad);
        let dir = match std::env::var_os("SNAPKV_BENCH_DIR") {
            Some(d) => tempfile::tempdir_in(d),
            None => tempfile::tempdir(),
        }
        .expect("a directory for Sparkey's files");
        let peers: Vec<Peer> = peers()
            .into_iter()
            .map(|p| measure_peer(&data, p, dir.path(), &hits, &hit_idx, &misses, &settings))
            .collect();
        let sparkey_raw = peers[0].file_bytes as f64;
        let mut rows = Vec::new();
        for config in configs() {
            rows.push(measure(
                &data,
                &config,
                &hits,
                &hit_idx,
                &misses,
                &settings,
                sparkey_raw,
            ));
        }
        let index = index_experiment(&data, &hits, &rows, &settings);
        results.push((workload, peers, rows, index));
    }
    let load_after = common::loadavg();

    let mut out = String::new();
    report(&mut out, &settings, &results, &load_before, &load_after);
    let _ = writeln!(
        out,
        "\nTotal run time {:.0} s.",
        started.elapsed().as_secs_f64()
    );
    print!("{out}");
}

/// The commit the benchmark runs at, and whether the format crate had local changes
/// (`SNAPKV_BENCH_SOURCE` overrides it, e.g. for a tree exported with `git archive`).
fn git_state() -> String {
    if let Ok(s) = std::env::var("SNAPKV_BENCH_SOURCE") {
        return s;
    }
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short", "HEAD"]) {
        Some(commit) => {
            let dirty =
                git(&["status", "--porcelain", "--", "format/src"]).is_some_and(|s| !s.is_empty());
            format!(
                "commit {commit}{}",
                if dirty {
                    " with local changes in format/src"
                } else {
                    ""
                }
            )
        }
        None => "unknown commit".into(),
    }
}

fn build(data: &Dataset, options: &WriterOptions) -> (Vec<u8>, WriteSummary, BuildTime) {
    // Reserve (without touching) more than any configuration writes, so the timing does not
    // include copying a growing Vec; page faults on first write are included.
    let out = Vec::with_capacity(data.payload_bytes() + data.len() * 8 + (1 << 20));
    let cpu = common::process_cpu_secs();
    let t = Instant::now();
    let mut w = SnapshotWriter::new(out, options.clone(), Metadata::default()).expect("writer");
    for (k, v) in data.keys.iter().zip(data.values.iter()) {
        w.insert(k, v).expect("insert");
    }
    let inserted = t.elapsed().as_secs_f64();
    let (bytes, summary) = w.finish().expect("finish");
    let secs = t.elapsed().as_secs_f64();
    let time = BuildTime {
        secs,
        cpu_secs: common::process_cpu_secs() - cpu,
        finish_secs: secs - inserted,
    };
    (bytes, summary, time)
}

/// Looks up `keys` in order on this thread until done or past `cap`. Every lookup must find a
/// value (`hit`) or none.
fn lookups(snapshot: &Snapshot, keys: &Column, hit: bool, cap: Duration) -> Rate {
    time_lookups(keys, hit, cap, |k| {
        snapshot.get(k).expect("get").map(|v| v.len())
    })
}

/// [`lookups`] through `get_into`, the values copied into one reused buffer.
fn lookups_copied(snapshot: &Snapshot, keys: &Column, hit: bool, cap: Duration) -> Rate {
    let mut buf = Vec::new();
    time_lookups(keys, hit, cap, |k| {
        buf.clear();
        let found = snapshot.get_into(k, &mut buf).expect("get_into");
        found.then_some(buf.len())
    })
}

/// Times `get` (the length of the value found, if any) over `keys` in order on this thread,
/// until done or past `cap`. Every lookup must find a value (`hit`) or none.
fn time_lookups(
    keys: &Column,
    hit: bool,
    cap: Duration,
    mut get: impl FnMut(&[u8]) -> Option<usize>,
) -> Rate {
    let t = Timer::start();
    let mut done = 0;
    let mut found = 0usize;
    let mut bytes = 0usize;
    while done < keys.len() {
        let end = (done + 1024).min(keys.len());
        for i in done..end {
            if let Some(len) = get(black_box(keys.get(i))) {
                found += 1;
                bytes += len;
            }
        }
        done = end;
        if t.elapsed() > cap {
            break;
        }
    }
    let rate = t.rate(done);
    black_box(bytes);
    let expected = if hit { done } else { 0 };
    assert_eq!(
        found, expected,
        "lookups found {found} of {done} (hit: {hit})"
    );
    rate
}

fn open(bytes: &bytes::Bytes, cache_bytes: usize, index_in_memory: bool) -> Snapshot {
    let mut o = OpenOptions::default();
    o.cache_bytes = cache_bytes;
    o.index_in_memory = index_in_memory;
    Snapshot::open_with(bytes.clone(), &o).expect("open")
}

fn measure(
    data: &Dataset,
    config: &Config,
    hits: &Column,
    hit_idx: &[u32],
    misses: &Column,
    s: &Settings,
    sparkey_raw: f64,
) -> Row {
    let tag = format!("[{}/{}]", data.workload.name(), config.name);
    let (file, summary, build_time) = build(data, &config.options);
    eprintln!(
        "{tag} built {} B in {:.2} s ({:.0} rows/s; {:.2} CPU-s; finish {:.2} s), {} blocks",
        summary.file_bytes,
        build_time.secs,
        data.len() as f64 / build_time.secs,
        build_time.cpu_secs,
        build_time.finish_secs,
        summary.block_count
    );
    let file = bytes::Bytes::from(file);

    // Correctness spot check, outside the timings.
    {
        let snap = open(&file, 0, config.index_in_memory);
        for (j, &i) in hit_idx.iter().enumerate().take(2000) {
            let v = snap.get(hits.get(j)).expect("get").expect("hit");
            assert_eq!(&v[..], data.values.get(i as usize), "{tag} wrong value");
        }
    }

    let snap = open(&file, 0, config.index_in_memory);
    let hit_nocache = lookups(&snap, hits, true, s.cap);
    let miss = lookups(&snap, misses, false, s.cap);
    drop(snap);
    eprintln!(
        "{tag} hits without cache {:.0}/s, misses {:.0}/s",
        hit_nocache.per_sec(),
        miss.per_sec()
    );

    // The default reader options: a 64 MiB cache, cold at the start of the run.
    let snap = open(
        &file,
        OpenOptions::default().cache_bytes,
        config.index_in_memory,
    );
    let hit_default_cache = lookups(&snap, hits, true, s.cap);
    drop(snap);

    // A cache able to hold every block (shards are filled by block number, so leave slack),
    // warmed by a sequential pass that touches every block, then timed.
    let capacity =
        summary.block_bytes_raw as usize * 5 / 4 + 16 * 2 * config.options.block_size as usize;
    let snap = open(&file, capacity, config.index_in_memory);
    let stride = warm_stride(data, config.options.block_size);
    warm(&snap, data, stride);
    let before = snap.cache_stats();
    let compressed_blocks = (summary.block_count - summary.raw_blocks) as usize;
    assert_eq!(
        before.blocks, compressed_blocks,
        "{tag} the warm-up did not load every compressed block"
    );
    let hit_full_cache = lookups(&snap, hits, true, s.cap);
    let after = snap.cache_stats();
    let (h, m) = (after.hits - before.hits, after.misses - before.misses);
    let full_cache_hit_ratio = if h + m == 0 {
        1.0
    } else {
        h as f64 / (h + m) as f64
    };
    let hit_full_cache_copied = lookups_copied(&snap, hits, true, s.cap);
    eprintln!(
        "{tag} hits with a 64 MiB cache {:.0}/s, with every block cached {:.0}/s ({} B cached), \
         values copied {:.0}/s",
        hit_default_cache.per_sec(),
        hit_full_cache.per_sec(),
        after.used,
        hit_full_cache_copied.per_sec(),
    );
    drop(snap);

    // The largest cache that keeps file + cache within Sparkey's uncompressed files.
    let budget = (sparkey_raw as usize)
        .checked_sub(summary.file_bytes as usize)
        .filter(|_| compressed_blocks > 0)
        .map(|budget| {
            let snap = open(&file, budget, config.index_in_memory);
            warm(&snap, data, stride);
            let before = snap.cache_stats();
            let rate = lookups(&snap, hits, true, s.cap);
            let after = snap.cache_stats();
            let (h, m) = (after.hits - before.hits, after.misses - before.misses);
            eprintln!(
                "{tag} hits with a {budget} B cache {:.0}/s, hit ratio {:.3}",
                rate.per_sec(),
                h as f64 / (h + m).max(1) as f64
            );
            (budget, rate, h as f64 / (h + m).max(1) as f64)
        });
    Row {
        config: config.name,
        build: build_time,
        summary,
        hit_nocache,
        hit_default_cache,
        hit_full_cache,
        hit_full_cache_copied,
        full_cache_used: after.used,
        full_cache_hit_ratio,
        miss,
        budget,
        entries: data.len(),
    }
}

/// A stride through the sorted keys that visits every block: blocks hold at least half the
/// target size of entries (except the last), and no entry is longer than the longest key and
/// value with three varints.
fn warm(snap: &Snapshot, data: &Dataset, stride: usize) {
    let mut i = 0;
    while i < data.len() {
        black_box(snap.get(data.keys.get(i)).expect("get"));
        i += stride;
    }
    black_box(snap.get(data.keys.get(data.len() - 1)).expect("get"));
}

fn warm_stride(data: &Dataset, block_size: u32) -> usize {
    let max_entry = data.keys.max_len() + data.values.max_len() + 15;
    ((block_size as usize / 2) / max_entry).max(1)
}

fn index_experiment(data: &Dataset, hits: &Column, rows: &[Row], s: &Settings) -> IndexRow {
    // Shape (a): an FST over every key, value = ordinal, built on one thread.
    let t = Timer::start();
    let mut b = fst::MapBuilder::memory();
    for (i, k) in data.keys.iter().enumerate() {
        b.insert(k, i as u64).expect("sorted keys");
    }
    let a = fst::Map::new(b.into_inner().expect("fst")).expect("fst");
    let a_build = t.rate(data.len());
    let a_get = time_index(hits, s.cap, |k| a.get(k));
    let a_ge = time_index(hits, s.cap, |k| first_ge(&a, k));
    let a_bytes = a.as_fst().as_bytes().len();
    let a_bytes_vec = a.into_fst().into_inner();

    // Shape (b) stand-in: every k-th key, k = keys per block of the default configuration.
    // (The format stores shortened separators, so its index is smaller: see `b_format_index`.)
    let default = rows
        .iter()
        .find(|r| r.config == DEFAULT_CONFIG)
        .or(rows.first())
        .expect("a configuration ran");
    let per_block = (data.len() as u64 / default.summary.block_count.max(1)).max(1) as usize;
    let mut b = fst::MapBuilder::memory();
    let mut b_keys = 0;
    for i in (per_block - 1..data.len()).step_by(per_block) {
        b.insert(data.keys.get(i), b_keys as u64)
            .expect("sorted keys");
        b_keys += 1;
    }
    let b = fst::Map::new(b.into_inner().expect("fst")).expect("fst");
    let b_ge = time_index(hits, s.cap, |k| first_ge(&b, k));
    let b_walk = time_index(hits, s.cap, |k| lower_bound(b.as_fst(), k));
    let a = fst::Map::new(a_bytes_vec).expect("fst");
    let a_walk = time_index(hits, s.cap, |k| lower_bound(a.as_fst(), k));

    // Shape (c): hash every key, build the function, fill the slots with ordinals.
    let t = Timer::start();
    let seed = 0;
    let hashes: Vec<[u64; 2]> = data.keys.iter().map(key_hash).collect();
    let ordinals: Vec<u64> = (0..data.len() as u64).collect();
    let mut placed = Vec::with_capacity(data.len());
    let built = snapkv_format::mph::build(&hashes, &ordinals, seed, 1, |i, s| placed.push((i, s)))
        .expect("a perfect hash (distinct hashes, a pilot for every bucket)");
    let mut slots = vec![u32::MAX; built.slots() as usize];
    for (i, s) in placed {
        slots[s as usize] = i as u32;
    }
    let c_build = t.rate(data.len());
    drop((hashes, ordinals));
    let buckets = built.pilots.len() as u64;
    let c_get = time_index(hits, s.cap, |k| {
        let h = key_hash(k);
        let b = snapkv_format::mph::bucket(h[1], seed, buckets);
        let p = (b >> built.shift) as usize;
        let (base, end) = (built.bases[p], built.bases[p + 1]);
        let slot =
            base + snapkv_format::mph::slot(h[0], seed, built.pilots[b as usize], end - base);
        let i = slots[slot as usize];
        (i != u32::MAX && data.keys.get(i as usize) == k).then_some(u64::from(i))
    });
    let c_bytes = 2 * built.pilots.len() + 8 * built.bases.len() + 4 * slots.len();
    IndexRow {
        a_build,
        a_bytes,
        a_get,
        a_ge,
        b_keys,
        b_bytes: b.as_fst().as_bytes().len(),
        b_ge,
        a_walk,
        b_walk,
        b_format_index_bytes: default.summary.index_bytes,
        c_build,
        c_bytes,
        c_get,
    }
}

/// A key's 128-bit hash as the format's lookup takes it: `[low, high]` halves of xxh3-128.
fn key_hash(k: &[u8]) -> [u64; 2] {
    let h = xxhash_rust::xxh3::xxh3_128(k);
    [h as u64, (h >> 64) as u64]
}

/// The value of the first key `>= key` through fst's range stream (allocates a stream).
fn first_ge(map: &fst::Map<Vec<u8>>, key: &[u8]) -> Option<u64> {
    map.range().ge(key).into_stream().next().map(|(_, v)| v)
}

/// The value of the first key `>= key` in one walk down the FST: a copy of the reader's
/// `lower_bound` (format/src/snapshot.rs, private there), timed here on its own.
fn lower_bound<D: AsRef<[u8]>>(fst: &fst::raw::Fst<D>, key: &[u8]) -> Option<u64> {
    use fst::raw::{Fst, Node, Output};
    fn leftmost<'f, D: AsRef<[u8]>>(
        fst: &'f Fst<D>,
        mut node: Node<'f>,
        mut out: Output,
    ) -> Option<u64> {
        loop {
            if node.is_final() {
                return Some(out.cat(node.final_output()).value());
            }
            if node.is_empty() {
                return None;
            }
            let t = node.transition(0);
            out = out.cat(t.out);
            node = fst.node(t.addr);
        }
    }
    let mut node = fst.root();
    let mut out = Output::zero();
    let mut above: Option<(Node<'_>, usize, Output)> = None;
    for &b in key {
        match node.find_input(b) {
            Some(i) => {
                if i + 1 < node.len() {
                    above = Some((node, i + 1, out));
                }
                let t = node.transition(i);
                out = out.cat(t.out);
                node = fst.node(t.addr);
            }
            None => {
                if let Some(i) = (0..node.len()).find(|&i| node.transition(i).inp > b) {
                    above = Some((node, i, out));
                }
                let (n, i, o) = above?;
                let t = n.transition(i);
                return leftmost(fst, fst.node(t.addr), o.cat(t.out));
            }
        }
    }
    if node.is_final() {
        return Some(out.cat(node.final_output()).value());
    }
    if !node.is_empty() {
        return leftmost(fst, node, out);
    }
    let (n, i, o) = above?;
    let t = n.transition(i);
    leftmost(fst, fst.node(t.addr), o.cat(t.out))
}

fn time_index(keys: &Column, cap: Duration, f: impl Fn(&[u8]) -> Option<u64>) -> Rate {
    let t = Timer::start();
    let mut done = 0;
    let mut found = 0usize;
    while done < keys.len() {
        let end = (done + 1024).min(keys.len());
        for i in done..end {
            found += usize::from(f(black_box(keys.get(i))).is_some());
        }
        done = end;
        if t.elapsed() > cap {
            break;
        }
    }
    black_box(found);
    t.rate(done)
}

// ---- Report ----

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

fn k(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else {
        format!("{:.0}k", rate / 1e3)
    }
}

fn ratio(x: f64) -> String {
    format!("{x:.2}×")
}

fn yes(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "no"
    }
}

fn report(
    out: &mut String,
    s: &Settings,
    results: &[(Workload, Vec<Peer>, Vec<Row>, IndexRow)],
    load_before: &str,
    load_after: &str,
) {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "## snapkv format: {} entries per workload\n\n\
         Format version {} (configurations ending in `-v1`: version 1; ending in `-mem`: read \
         with the index sections copied into huge pages, `OpenOptions::index_in_memory`). \
         Source: {}. {cores} cores; load average {load_before} at start, {load_after} at end. \
         Lookups: {} per measurement in a seeded shuffled order, one thread, stopped after {} s. \
         Lookup rates are per second *on CPU* (the thread's scheduled time, so other jobs on the \
         machine do not count against it); the wall-clock rates are in their own table. \
         Sizes in MB = 10^6 bytes.\n",
        s.entries,
        snapkv_format::FORMAT_VERSION,
        s.source,
        s.lookups,
        s.cap.as_secs()
    );

    let _ = writeln!(out, "### Build and size\n");
    let _ = writeln!(
        out,
        "Build: one writer with `threads: 0` (one compression thread per core), into a `Vec<u8>`, \
         index and filter included. *rows/s* is wall clock; *rows/CPU-s* divides by the CPU time \
         of all threads (a one-core equivalent, comparable to Sparkey's single-threaded puts/s); \
         *finish* is the wall time of `finish()` (last blocks, index, filter); *stored raw*: blocks \
         kept uncompressed because zstd saved less than 1/8.\n"
    );
    let _ = writeln!(
        out,
        "| workload | config | build rows/s | build CPU-s | rows/CPU-s | finish s | file MB | blocks | stored raw | blocks MB uncompressed | index B/key | filter B/key | dict KB |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (w, _, rows, _) in results {
        for r in rows {
            let n = r.entries as f64;
            let sm = &r.summary;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {:.2} | {} | {} | {} | {} | {:.3} | {:.2} | {:.1} |",
                w.label(),
                r.config,
                k(n / r.build.secs),
                r.build.cpu_secs,
                k(n / r.build.cpu_secs),
                r.build.finish_secs,
                mb(sm.file_bytes as f64),
                sm.block_count,
                sm.raw_blocks,
                mb(sm.block_bytes_raw as f64),
                sm.index_bytes as f64 / n,
                sm.filter_bytes as f64 / n,
                sm.dictionary_bytes as f64 / 1e3,
            );
        }
    }

    let _ = writeln!(out, "\n### Lookups, one thread (per on-CPU second)\n");
    let _ = writeln!(
        out,
        "*64 MiB* is `OpenOptions::default()`, cache cold at the start of the run. *all cached*: a \
         cache sized to hold every block, warmed by one pass over the blocks, then timed (*copied*: \
         through `get_into`, each value copied into one reused buffer, as Sparkey's reads are); \
         *cache used* is its `used` bytes after the run. *budget cache*: the largest cache that keeps \
         file + cache within Sparkey's uncompressed files (as built in this run), \
         warmed the same way; n/a when nothing is compressed or the file alone exceeds it. \
         Compression::None serves values from the file and caches nothing.\n"
    );
    let _ = writeln!(
        out,
        "| workload | config | hit/s no cache | hit/s 64 MiB | hit/s all cached | hit/s all cached, copied | cache used MB | file + cache MB | hit/s budget cache | budget MB (hit ratio) | miss/s |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (w, _, rows, _) in results {
        for r in rows {
            let (budget_rate, budget) = match r.budget {
                Some((bytes, rate, ratio)) => (
                    k(rate.per_sec()),
                    format!("{} ({ratio:.2})", mb(bytes as f64)),
                ),
                None => ("n/a".into(), "n/a".into()),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {budget_rate} | {budget} | {} |",
                w.label(),
                r.config,
                k(r.hit_nocache.per_sec()),
                k(r.hit_default_cache.per_sec()),
                k(r.hit_full_cache.per_sec()),
                k(r.hit_full_cache_copied.per_sec()),
                mb(r.full_cache_used as f64),
                mb((r.summary.file_bytes as usize + r.full_cache_used) as f64),
                k(r.miss.per_sec()),
            );
        }
    }

    let _ = writeln!(out, "\n### Lookups, one thread (per wall-clock second)\n");
    let _ = writeln!(
        out,
        "*CPU share*: on-CPU time / wall time over the four runs (1.00 = the thread never \
         waited for a core).\n"
    );
    let _ = writeln!(
        out,
        "| workload | config | hit/s no cache | hit/s 64 MiB | hit/s all cached | miss/s | CPU share |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (w, _, rows, _) in results {
        for r in rows {
            let runs = [r.hit_nocache, r.hit_default_cache, r.hit_full_cache, r.miss];
            let cpu: f64 = runs.iter().map(|r| r.cpu_secs).sum();
            let wall: f64 = runs.iter().map(|r| r.secs).sum();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {:.2} |",
                w.label(),
                r.config,
                k(r.hit_nocache.per_wall_sec()),
                k(r.hit_default_cache.per_wall_sec()),
                k(r.hit_full_cache.per_wall_sec()),
                k(r.miss.per_wall_sec()),
                cpu / wall,
            );
        }
    }

    let partial: Vec<String> = results
        .iter()
        .flat_map(|(w, _, rows, _)| {
            rows.iter().flat_map(move |r| {
                [
                    ("no cache", r.hit_nocache),
                    ("64 MiB", r.hit_default_cache),
                    ("all cached", r.hit_full_cache),
                    ("miss", r.miss),
                ]
                .into_iter()
                .filter(|(_, rate)| rate.lookups < s.lookups)
                .map(move |(what, rate)| {
                    format!("{} {} {what}: {}", w.name(), r.config, rate.lookups)
                })
            })
        })
        .collect();
    if !partial.is_empty() {
        let _ = writeln!(
            out,
            "\nStopped at the time cap (lookups done): {}.",
            partial.join("; ")
        );
    }
    let ratios: Vec<String> = results
        .iter()
        .flat_map(|(w, _, rows, _)| {
            rows.iter()
                .filter(|r| r.full_cache_hit_ratio < 1.0)
                .map(move |r| format!("{} {}: {:.4}", w.name(), r.config, r.full_cache_hit_ratio))
        })
        .collect();
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\nBlock cache hit ratio below 1 in the all-cached run: {}.",
            ratios.join("; ")
        );
    }

    let _ = writeln!(
        out,
        "\n### Index shapes (index only, one thread, ns on CPU)\n"
    );
    let _ = writeln!(
        out,
        "Shape (a): an `fst::Map` over every key (value = ordinal), built on one thread. Shape (b): \
         what the format stores, one separator per block (*format index B/key* from the default \
         configuration `{DEFAULT_CONFIG}`); its lookup cost is measured on a stand-in FST over \
         every k-th key (k = keys per block), through fst's `range().ge(key)` stream and through \
         a copy of the reader's one-walk `lower_bound` (what version 1's `get` uses). Shape \
         (c): the perfect hash of version 2's lookup section (`snapkv_format::mph`: 16-bit \
         pilots, 3 keys per bucket, partitions of 2^14 buckets, 97% load, built on one thread) into 4-byte slots holding the key's ordinal, with \
         the key compared (a random access to it, as a lookup reads its entry).\n"
    );
    let _ = writeln!(
        out,
        "| workload | (a) build keys/s | (a) B/key | (a) `get` ns | (a) `range().ge()` ns | (a) `lower_bound` ns | (b) format index B/key | (b) stand-in keys | (b) stand-in B/key | (b) `range().ge()` ns | (b) `lower_bound` ns | (c) build keys/s | (c) B/key | (c) lookup ns |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (w, _, rows, ix) in results {
        let n = rows.first().map_or(1, |r| r.entries) as f64;
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} ({} B) | {:.0} | {:.0} | {:.0} | {:.3} | {} | {:.3} | {:.0} | {:.0} | {} | {:.2} | {:.0} |",
            w.label(),
            k(ix.a_build.per_sec()),
            ix.a_bytes as f64 / n,
            ix.a_bytes,
            ix.a_get.ns(),
            ix.a_ge.ns(),
            ix.a_walk.ns(),
            ix.b_format_index_bytes as f64 / n,
            ix.b_keys,
            ix.b_bytes as f64 / n,
            ix.b_ge.ns(),
            ix.b_walk.ns(),
            k(ix.c_build.per_sec()),
            ix.c_bytes as f64 / n,
            ix.c_get.ns(),
        );
    }

    let _ = writeln!(
        out,
        "\n### Against Sparkey, measured in this run\n\n\
         Sparkey built from its C source (the `sparkey-sys` crate, `-O3`), on the same entries \
         in the same order, its hash written with its default hash size; lookups of the same \
         keys in the same order on one thread, through one reused log iterator and value buffer \
         as its own benchmark does.\n"
    );
    let _ = writeln!(
        out,
        "| workload | Sparkey | files MB | hash B/key | build rows/s | hits/s | misses/s |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (w, peers, _, _) in results {
        for p in peers {
            let n = p.entries as f64;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {} |",
                w.label(),
                p.name,
                mb(p.file_bytes as f64),
                p.index_bytes as f64 / n,
                k(n / p.build_secs),
                k(p.hits.per_sec()),
                k(p.misses.per_sec()),
            );
        }
    }
    let _ = writeln!(
        out,
        "\nRatios, snapkv over Sparkey (> 1: snapkv faster; for files < 1: snapkv smaller). \
         *U*: Sparkey uncompressed, *S*: Sparkey Snappy 4K. Builds are not alike: snapkv's \
         uses every core (`threads: 0`) into memory, Sparkey's one thread writes its two files; \
         *build per CPU-s / U* divides snapkv's by the CPU time of all its threads.\n"
    );
    let _ = writeln!(
        out,
        "| workload | config | hits, all cached / U | hits, all cached, copied / U | hits, no cache / U | hits, 64 MiB cache / S | misses / U | file / S | file / U | build / U | build per CPU-s / U |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (w, peers, rows, _) in results {
        let (u, sn) = (&peers[0], &peers[1]);
        for r in rows {
            let n = r.entries as f64;
            let file = r.summary.file_bytes as f64;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.label(),
                r.config,
                ratio(r.hit_full_cache.per_sec() / u.hits.per_sec()),
                ratio(r.hit_full_cache_copied.per_sec() / u.hits.per_sec()),
                ratio(r.hit_nocache.per_sec() / u.hits.per_sec()),
                ratio(r.hit_default_cache.per_sec() / sn.hits.per_sec()),
                ratio(r.miss.per_sec() / u.misses.per_sec()),
                ratio(file / sn.file_bytes as f64),
                ratio(file / u.file_bytes as f64),
                ratio((n / r.build.secs) / (n / u.build_secs)),
                ratio((n / r.build.cpu_secs) / (n / u.build_secs)),
            );
        }
    }

    let _ = writeln!(
        out,
        "\n### Against Sparkey's published figures (for its zstd build, which the C source measured \
         above lacks; one thread, 10M entries, this machine class; none for workload (c))\n"
    );
    let scale = s.entries as f64 / SPARKEY_ENTRIES;
    if (scale - 1.0).abs() > 1e-9 {
        let _ = writeln!(
            out,
            "This run has {} entries: Sparkey's file sizes are scaled linearly by {scale} for the \
             size ratios; speeds are compared as published.\n",
            s.entries
        );
    }
    let _ = writeln!(
        out,
        "Ratios > 1 are better for lookups and build, < 1 better for sizes. Lookups: the \
         all-cached run, per on-CPU second. Build: wall clock (2 threads), and per CPU-second \
         (one-core equivalent). Sparkey publishes no zstd build rate for workload (a).\n"
    );
    let _ = writeln!(
        out,
        "| workload | config | lookups / Sparkey uncompr. | lookups / Sparkey zstd | file / Sparkey zstd file | file + cache / Sparkey uncompr. file | build / Sparkey zstd | build per CPU-s / Sparkey zstd | build / Sparkey uncompr. |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for (w, _, rows, _) in results {
        let Some(sp) = sparkey(*w) else { continue };
        for r in rows {
            let n = r.entries as f64;
            let look = r.hit_full_cache.per_sec();
            let file = r.summary.file_bytes as f64;
            let total = file + r.full_cache_used as f64;
            let build = n / r.build.secs;
            let build_cpu = n / r.build.cpu_secs;
            let vs_zstd = |b: f64| sp.build_zstd.map_or("n/a".to_string(), |z| ratio(b / z));
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                w.label(),
                r.config,
                ratio(look / sp.lookups_raw),
                ratio(look / sp.lookups_zstd),
                ratio(file / (sp.file_zstd * scale)),
                ratio(total / (sp.file_raw * scale)),
                vs_zstd(build),
                vs_zstd(build_cpu),
                ratio(build / sp.build_raw),
            );
        }
    }

    let _ = writeln!(
        out,
        "\n### Targets (against Sparkey measured in this run)\n"
    );
    let _ = writeln!(out, "| workload | target | needed | snapkv | met |");
    let _ = writeln!(out, "|---|---|---:|---:|:---:|");
    for (w, peers, rows, _) in results {
        let (u, sn) = (&peers[0], &peers[1]);
        let mut lines = Vec::new();
        // The default configuration read both ways: from the mapped file, and with its index
        // sections in memory (what `snapkv serve` does).
        let default_mem = format!("{DEFAULT_CONFIG}-mem");
        for r in rows
            .iter()
            .filter(|r| r.config == DEFAULT_CONFIG || r.config == default_mem)
        {
            let c = r.config;
            let file = r.summary.file_bytes as f64;
            lines.extend([
                (
                    format!("`{c}` hits/s, every block cached >= 1.0x uncompressed"),
                    u.hits.per_sec(),
                    r.hit_full_cache.per_sec(),
                    r.hit_full_cache.per_sec() >= u.hits.per_sec(),
                ),
                (
                    format!("`{c}` hits/s, every block cached, values copied >= 1.0x uncompressed"),
                    u.hits.per_sec(),
                    r.hit_full_cache_copied.per_sec(),
                    r.hit_full_cache_copied.per_sec() >= u.hits.per_sec(),
                ),
                (
                    format!(
                        "`{c}` hits/s, default 64 MiB cache (file {} MB) >= 2x Snappy",
                        mb(file)
                    ),
                    2.0 * sn.hits.per_sec(),
                    r.hit_default_cache.per_sec(),
                    r.hit_default_cache.per_sec() >= 2.0 * sn.hits.per_sec(),
                ),
                (
                    format!("`{c}` file MB <= Snappy files"),
                    sn.file_bytes as f64,
                    file,
                    file <= sn.file_bytes as f64,
                ),
                (
                    format!("`{c}` misses/s >= 5M"),
                    5e6,
                    r.miss.per_sec(),
                    r.miss.per_sec() >= 5e6,
                ),
            ]);
        }
        for r in rows
            .iter()
            .filter(|r| r.config == "none-4k" || r.config == "none-4k-mem")
        {
            lines.push((
                format!("`{}` hits/s >= 1.5x uncompressed", r.config),
                1.5 * u.hits.per_sec(),
                r.hit_nocache.per_sec(),
                r.hit_nocache.per_sec() >= 1.5 * u.hits.per_sec(),
            ));
        }
        for (what, theirs, ours, ok) in lines {
            let fmt = |x: f64| {
                if what.contains("file MB") {
                    mb(x)
                } else {
                    k(x)
                }
            };
            let _ = writeln!(
                out,
                "| {} | {what} | {} | {} | {} |",
                w.label(),
                fmt(theirs),
                fmt(ours),
                yes(ok)
            );
        }
    }
}
