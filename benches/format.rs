//! Criterion benchmarks of the snapshot format: build, random-hit get and miss get, for the two
//! workloads of `common` (Sparkey's `key_N`/`value_N` and UUID-like keys with ~100-byte JSON
//! values), on `WriterOptions::default()` and on `Compression::None`.
//!
//! `cargo bench --bench format` (1M entries; `SNAPKV_BENCH_ENTRIES=100000` for a quicker run).
//! Snapshots are opened with `OpenOptions::default()` (64 MiB block cache). The `table` bench
//! produces the full comparison table.

mod common;

use common::{Column, Dataset, Workload};
use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, Throughput};
use snapkv_format::{Compression, Metadata, OpenOptions, Snapshot, SnapshotWriter, WriterOptions};
use std::hint::black_box;
use std::time::Duration;

fn configs() -> [(&'static str, WriterOptions); 2] {
    let mut none = WriterOptions::default();
    none.compression = Compression::None;
    [("default", WriterOptions::default()), ("none", none)]
}

fn build(data: &Dataset, options: &WriterOptions) -> Vec<u8> {
    let out = Vec::with_capacity(data.payload_bytes() + data.len() * 8 + (1 << 20));
    let mut w = SnapshotWriter::new(out, options.clone(), Metadata::default()).expect("writer");
    for (k, v) in data.keys.iter().zip(data.values.iter()) {
        w.insert(k, v).expect("insert");
    }
    w.finish().expect("finish").0
}

/// Looks keys up in a cycle; `hit` says whether every lookup must find its key.
fn bench_gets(
    c: &mut Criterion,
    group: &str,
    id: BenchmarkId,
    snapshot: &Snapshot,
    keys: &Column,
    hit: bool,
) {
    let mut g = c.benchmark_group(group);
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(1));
    let mut i = 0usize;
    g.bench_function(id, |b| {
        b.iter(|| {
            let key = keys.get(i);
            i += 1;
            if i == keys.len() {
                i = 0;
            }
            let v = snapshot.get(black_box(key)).expect("get");
            assert_eq!(v.is_some(), hit);
            v
        })
    });
    g.finish();
}

fn main() {
    let n = common::entries_from_env();
    let mut c = Criterion::default().configure_from_args();
    for workload in Workload::ALL {
        let data = common::generate(workload, n);
        let (hits, _) = data.hit_keys(n.min(1 << 20), 1);
        let misses = data.miss_keys(n.min(1 << 20), 2);
        for (config, options) in configs() {
            let param = format!("{}/{config}/{n}", workload.name());

            let mut g = c.benchmark_group("build");
            g.sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(5))
                .throughput(Throughput::Elements(n as u64));
            g.bench_function(BenchmarkId::from_parameter(&param), |b| {
                b.iter_batched(|| (), |()| build(&data, &options), BatchSize::PerIteration)
            });
            g.finish();

            let snapshot =
                Snapshot::open_with(build(&data, &options), &OpenOptions::default()).expect("open");
            let id = BenchmarkId::from_parameter(&param);
            bench_gets(&mut c, "get_hit", id.clone(), &snapshot, &hits, true);
            bench_gets(&mut c, "get_miss", id, &snapshot, &misses, false);
        }
    }
    c.final_summary();
}
