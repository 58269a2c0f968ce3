//! `diff` speed: two versions of the realistic workload (hex32 keys, ~100-byte JSON values)
//! with a known set of changes (1% of values changed, 0.5% of keys removed, 0.5% added), diffed
//! on one thread, on every core and without skipping blocks, and compared with a plain
//! iteration over both files (`Snapshot::iter`, one thread). Every diff is checked against the
//! changes made. See `benches/README.md`.
//!
//! ```text
//! cargo bench --bench diff                                   # 1M entries per version
//! SNAPKV_BENCH_ENTRIES=10_000_000 nice -n 10 cargo bench --bench diff
//! ```
//!
//! Environment: `SNAPKV_BENCH_ENTRIES` (entries of the old version, default 1_000_000),
//! `SNAPKV_BENCH_RUNS` (runs of each measurement, the fastest counts; default 3),
//! `SNAPKV_BENCH_SECONDS` (no further runs of a measurement after this long; default 60).
//!
//! Two pairs of files: `default`, each version written with `WriterOptions::default()` (so each
//! trains its own dictionary: no stored block is shared), and `shared-dict`, the new version
//! written with the old one's dictionary (`Dictionary::Use`), so that unchanged blocks are
//! stored byte for byte alike. Rates are keys of both files per second.

mod common;

use common::{Dataset, Workload};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use snapkv_format::{
    diff, Dictionary, Diff, DiffOptions, Metadata, Snapshot, SnapshotWriter, ValueEncoding,
    WriterOptions,
};
use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

/// What the new version is made of, and what the diff must find.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Changes {
    added: u64,
    removed: u64,
    changed: u64,
    unchanged: u64,
    /// Changed values whose `score` changed too (every changed value's `active` flips).
    score_changed: u64,
}

/// The changed value: `active` flipped, and for three changes in ten `score` too.
fn change(value: &[u8], also_score: bool, out: &mut Vec<u8>) {
    let text = std::str::from_utf8(value).expect("generated values are UTF-8");
    let mut v = if text.contains("\"active\":true") {
        text.replace("\"active\":true", "\"active\":false")
    } else {
        text.replace("\"active\":false", "\"active\":true")
    };
    if also_score {
        v = v.replace("\"score\":", "\"score\":1");
    }
    out.extend_from_slice(v.as_bytes());
}

fn metadata() -> Metadata {
    let mut m = Metadata::default();
    m.value_encoding = ValueEncoding::Json;
    m
}

fn write_old(data: &Dataset, options: &WriterOptions) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), options.clone(), metadata()).unwrap();
    for i in 0..data.len() {
        w.insert(data.keys.get(i), data.values.get(i)).unwrap();
    }
    w.finish().unwrap().0
}

/// Writes the new version: the old entries with the seeded changes, merged with new keys.
fn write_new(data: &Dataset, options: &WriterOptions) -> (Vec<u8>, Changes) {
    let n = data.len();
    let mut rng = SmallRng::seed_from_u64(0xd1ff);
    let mut fresh: Vec<u128> = (0..n / 200).map(|_| rng.random()).collect();
    fresh.sort_unstable();
    fresh.dedup();
    let mut fresh = fresh.into_iter().map(|k| format!("{k:032x}")).peekable();
    let mut w = SnapshotWriter::new(Vec::new(), options.clone(), metadata()).unwrap();
    let mut c = Changes::default();
    let mut value = Vec::new();
    for i in 0..n {
        let key = data.keys.get(i);
        while let Some(k) = fresh.next_if(|k| k.as_bytes() < key) {
            w.insert(k.as_bytes(), b"{\"id\":1,\"user\":\"new.user\",\"country\":\"US\",\"since\":\"2026-01-01\",\"score\":1.00,\"active\":true}")
                .unwrap();
            c.added += 1;
        }
        // A fresh key equal to an old one is dropped (a 2^-128 chance).
        fresh.next_if(|k| k.as_bytes() == key);
        let roll = rng.random_range(0..1000u32);
        if roll < 5 {
            c.removed += 1;
            continue;
        }
        if roll < 15 {
            value.clear();
            let also_score = roll < 8;
            change(data.values.get(i), also_score, &mut value);
            w.insert(key, &value).unwrap();
            c.changed += 1;
            c.score_changed += u64::from(also_score);
        } else {
            w.insert(key, data.values.get(i)).unwrap();
            c.unchanged += 1;
        }
    }
    for k in fresh {
        w.insert(k.as_bytes(), b"{\"id\":1}").unwrap();
        c.added += 1;
    }
    (w.finish().unwrap().0, c)
}

/// Runs `f` `runs` times (at least once, until `cap` is spent) and returns the fastest time.
/// Also returns the CPU time (all threads) of the fastest run: with several threads, wall time
/// shrinks only if the machine has idle cores.
/// CPU time of this process so far (zero where it cannot be read).
fn cpu_time_now() -> Duration {
    Duration::try_from_secs_f64(common::process_cpu_secs()).unwrap_or_default()
}

fn best<T>(runs: usize, cap: Duration, mut f: impl FnMut() -> T) -> (Duration, Duration, T) {
    let started = Instant::now();
    let (mut fastest, mut cpu) = (Duration::MAX, Duration::ZERO);
    let mut out = None;
    for _ in 0..runs {
        let (t, c) = (Instant::now(), cpu_time_now());
        out = Some(black_box(f()));
        if t.elapsed() < fastest {
            fastest = t.elapsed();
            cpu = cpu_time_now().saturating_sub(c);
        }
        if started.elapsed() > cap {
            break;
        }
    }
    (fastest, cpu, out.expect("ran once"))
}

/// Iterates over every entry of both snapshots, touching keys and values.
fn iterate(a: &Snapshot, b: &Snapshot) -> u64 {
    let mut n = 0u64;
    for s in [a, b] {
        for kv in s.iter() {
            let (k, v) = kv.unwrap();
            n += (k.len() + v.len()) as u64 & 1;
        }
    }
    n
}

#[track_caller]
fn check(d: &Diff, c: &Changes) {
    assert_eq!(
        (d.added, d.removed, d.changed, d.unchanged),
        (c.added, c.removed, c.changed, c.unchanged),
        "the diff disagrees with the changes made"
    );
    let columns = d.columns.as_ref().expect("JSON values are sampled");
    let active = columns.columns.iter().find(|c| c.name == "active").unwrap();
    assert_eq!(
        active.changed, columns.keys,
        "every sampled change flips `active`"
    );
}

fn main() {
    let n = common::entries_from_env();
    let runs = common::env_usize("SNAPKV_BENCH_RUNS").unwrap_or(3);
    let cap = Duration::from_secs(common::env_usize("SNAPKV_BENCH_SECONDS").unwrap_or(60) as u64);
    let t = Instant::now();
    let data = common::generate(Workload::Realistic, n);
    eprintln!("generated {n} entries in {:.1?}", t.elapsed());

    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut table = format!(
        "| files | keys (old + new) | old file | iterate both | diff, 1 thread | diff, {threads} threads \
         | diff without skipping, 1 thread | diff (1 thread) vs iterate | blocks of the old file: \
         skipped / equal raw / decoded |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let defaults = WriterOptions::default();
    let t = Instant::now();
    let old_bytes = write_old(&data, &defaults);
    let old = Snapshot::open(old_bytes).unwrap();
    eprintln!("wrote the old version in {:.1?}", t.elapsed());
    let mut shared = defaults.clone();
    shared.dictionary = Dictionary::Use(old.dictionary().to_vec());
    let with = |threads: usize, skip: bool| {
        let mut o = DiffOptions::default();
        o.threads = threads;
        o.skip_identical_blocks = skip;
        o
    };
    for (name, options) in [("default", &defaults), ("shared-dict", &shared)] {
        let t = Instant::now();
        let (new_bytes, changes) = write_new(&data, options);
        let new = Snapshot::open(new_bytes).unwrap();
        eprintln!(
            "[{name}] wrote the new version in {:.1?}: {changes:?}",
            t.elapsed()
        );
        let keys = old.len() + new.len();
        let rate = |d: Duration| keys as f64 / d.as_secs_f64() / 1e6;
        let cell =
            |t: Duration, cpu: Duration| format!("{t:.2?} ({:.1}M keys/s, CPU {cpu:.1?})", rate(t));
        let measure = |what: &str, options: &DiffOptions| {
            let (t, cpu, d) = best(runs, cap, || diff(&old, &new, options).unwrap());
            check(&d, &changes);
            eprintln!("[{name}] {what}: {} {:?}", cell(t, cpu), d.blocks);
            (t, cell(t, cpu), d)
        };
        let (t_one, one, d) = measure("diff, 1 thread", &with(1, true));
        let (_, all, _) = measure("diff, all threads", &with(0, true));
        let (_, full, _) = measure("diff without skipping, 1 thread", &with(1, false));
        let (t_iter, cpu, _) = best(runs, cap, || iterate(&old, &new));
        let iter = cell(t_iter, cpu);
        eprintln!("[{name}] iterate both: {iter}");
        let b = d.blocks;
        let file_mb = old.stats().unwrap().file_bytes as f64 / 1e6;
        table.push_str(&format!(
            "| {name} | {keys} | {file_mb:.0} MB | {iter} | {one} | {all} | {full} | {:.2}× | \
             {} / {} / {} of {} |\n",
            t_iter.as_secs_f64() / t_one.as_secs_f64(),
            b.skipped,
            b.equal_raw,
            b.decoded_old,
            b.old_blocks,
        ));
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "diff of two versions of {n} entries (1% of values changed, 0.5% of keys removed, 0.5% \
         added); fastest of {runs} runs; keys/s counts the keys of both files; {threads} cores, \
         load {}\n\n{table}",
        common::loadavg()
    )
    .unwrap();
}
