//! Build throughput: `snapkv build` from Parquet, with and without a tight memory limit, against
//! `zstd -3 -T0` over the same rows as NDJSON.
//!
//! Generates `SNAPKV_BUILD_ROWS` rows (default 10M; seeded) of a 32-hex-character key and
//! columns whose JSON value is about 100 bytes, as Snappy Parquet files (Spark-style: several
//! `part-*.parquet`) and as NDJSON, into `SNAPKV_BENCH_DIR` (default: a temporary directory).
//! Each command runs under `/usr/bin/time -v` for its wall time and peak RSS.
//!
//! ```text
//! cargo bench --bench build                      # 10M rows
//! SNAPKV_BUILD_ROWS=1000000 cargo bench --bench build
//! SNAPKV_BUILD_TIGHT=128MiB cargo bench --bench build
//! ```

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

const SEED: u64 = 0x5eed_b111d;
const FILES: usize = 8;
const SEGMENTS: [&str; 6] = ["new", "casual", "regular", "loyal", "lapsed", "vip"];
const COUNTRIES: [&str; 8] = ["US", "DE", "FR", "JP", "BR", "IN", "GB", "CA"];

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| {
            v.replace('_', "")
                .parse()
                .unwrap_or_else(|_| panic!("{name}={v:?} is not a count"))
        })
        .unwrap_or(default)
}

/// One file's rows: key (32 hex chars), score, rank, segment, country, model, updated.
fn batch(rng: &mut SmallRng, rows: usize) -> RecordBatch {
    let mut keys = Vec::with_capacity(rows);
    let mut score = Vec::with_capacity(rows);
    let mut rank = Vec::with_capacity(rows);
    let mut segment = Vec::with_capacity(rows);
    let mut country = Vec::with_capacity(rows);
    let mut model = Vec::with_capacity(rows);
    let mut updated = Vec::with_capacity(rows);
    for _ in 0..rows {
        keys.push(format!(
            "{:016x}{:016x}",
            rng.random::<u64>(),
            rng.random::<u64>()
        ));
        score.push((rng.random::<f64>() * 1e6).round() / 1e6);
        rank.push(rng.random_range(1..1_000_000i64));
        segment.push(SEGMENTS[rng.random_range(0..SEGMENTS.len())]);
        country.push(COUNTRIES[rng.random_range(0..COUNTRIES.len())]);
        model.push(format!("ranker-v{}", rng.random_range(1..4)));
        updated.push(format!(
            "2026-11-{:02}T{:02}:{:02}:00Z",
            rng.random_range(1..28),
            rng.random_range(0..24),
            rng.random_range(0..60)
        ));
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("key", Arc::new(StringArray::from(keys))),
        ("score", Arc::new(Float64Array::from(score))),
        ("rank", Arc::new(Int64Array::from(rank))),
        ("segment", Arc::new(StringArray::from(segment))),
        ("country", Arc::new(StringArray::from(country))),
        ("model", Arc::new(StringArray::from(model))),
        ("updated", Arc::new(StringArray::from(updated))),
    ];
    RecordBatch::try_from_iter(columns).expect("valid batch")
}

/// Writes the Parquet directory and the NDJSON file (one object per row, key included).
fn generate(dir: &Path, rows: usize) -> (PathBuf, PathBuf) {
    let parquet_dir = dir.join("parquet");
    let ndjson = dir.join("rows.ndjson");
    let marker = dir.join(format!("generated-{rows}-{SEED:x}"));
    if marker.exists() {
        return (parquet_dir, ndjson);
    }
    let _ = std::fs::remove_dir_all(&parquet_dir);
    std::fs::create_dir_all(&parquet_dir).expect("create the data directory");
    let mut rng = SmallRng::seed_from_u64(SEED);
    let mut json = arrow_json::LineDelimitedWriter::new(std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&ndjson).expect("create the NDJSON file"),
    ));
    let per_file = rows.div_ceil(FILES);
    let mut left = rows;
    for f in 0..FILES {
        let file_rows = per_file.min(left);
        left -= file_rows;
        let path = parquet_dir.join(format!("part-{f:05}-b3c4.c000.snappy.parquet"));
        let props = parquet::file::properties::WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let file = std::fs::File::create(&path).expect("create a Parquet file");
        let mut writer = None;
        let mut done = 0;
        while done < file_rows {
            let n = (file_rows - done).min(65_536);
            let b = batch(&mut rng, n);
            writer
                .get_or_insert_with(|| {
                    parquet::arrow::ArrowWriter::try_new(
                        file.try_clone().expect("clone"),
                        b.schema(),
                        Some(props.clone()),
                    )
                    .expect("Parquet writer")
                })
                .write(&b)
                .expect("write Parquet");
            json.write(&b).expect("write NDJSON");
            done += n;
        }
        if let Some(w) = writer {
            w.close().expect("finish Parquet");
        }
    }
    json.finish().expect("finish NDJSON");
    json.into_inner().flush().expect("flush NDJSON");
    std::fs::write(&marker, b"").expect("marker");
    (parquet_dir, ndjson)
}

/// Wall seconds and peak RSS (bytes) of a command run under `/usr/bin/time -v`.
fn timed(cmd: &[&str]) -> (f64, u64, String) {
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .arg("-v")
        .args(cmd)
        .output()
        .expect("run /usr/bin/time (apt-get install -y time)");
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{cmd:?} failed:\n{stderr}");
    let rss_kb: u64 = stderr
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    (
        secs,
        rss_kb * 1024,
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").metadata().expect("metadata").len())
        .sum()
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing and must stay quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rows = env_count("SNAPKV_BUILD_ROWS", 10_000_000);
    let tight = std::env::var("SNAPKV_BUILD_TIGHT").unwrap_or_else(|_| "256MiB".into());
    let tmp;
    let dir = match std::env::var_os("SNAPKV_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir().expect("temporary directory");
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&dir).expect("bench directory");
    let started = Instant::now();
    let (parquet, ndjson) = generate(&dir, rows);
    let parquet_bytes = dir_bytes(&parquet);
    let ndjson_bytes = std::fs::metadata(&ndjson).expect("NDJSON").len();
    println!(
        "data: {rows} rows; Parquet {:.1} MB in {FILES} files; NDJSON {:.1} MB ({:.0} bytes/row); \
         generated in {:.1}s",
        parquet_bytes as f64 / 1e6,
        ndjson_bytes as f64 / 1e6,
        ndjson_bytes as f64 / rows as f64,
        started.elapsed().as_secs_f64()
    );
    let exe = env!("CARGO_BIN_EXE_snapkv");
    let out = dir.join("bench.snapkv");
    let (p, o) = (
        parquet.to_str().expect("utf-8"),
        out.to_str().expect("utf-8"),
    );
    let mb = |b: u64, s: f64| b as f64 / 1e6 / s;
    println!(
        "{:<34} {:>8} {:>11} {:>11} {:>10} {:>10}",
        "run", "seconds", "rows/s", "MB/s(json)", "peak RSS", "out MB"
    );
    let report = |name: &str, secs: f64, rss: u64, out_bytes: u64| {
        println!(
            "{name:<34} {secs:>8.2} {:>11.0} {:>11.1} {:>8.0}MB {:>10.1}",
            rows as f64 / secs,
            mb(ndjson_bytes, secs),
            rss as f64 / 1e6,
            out_bytes as f64 / 1e6
        );
    };
    let mut seconds = Vec::new();
    for (name, limit) in [
        ("snapkv build (1GiB default)", "1GiB"),
        ("snapkv build --memory-limit", tight.as_str()),
    ] {
        let (secs, rss, stdout) = timed(&[
            exe,
            "build",
            "-i",
            p,
            "-k",
            "key",
            "-o",
            o,
            "--version",
            "bench",
            "--json",
            "--memory-limit",
            limit,
        ]);
        let summary: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
        let label = if limit == "1GiB" {
            name.to_owned()
        } else {
            format!("{name} {limit}")
        };
        report(
            &label,
            secs,
            rss,
            summary["bytes_out"].as_u64().unwrap_or(0),
        );
        println!(
            "  runs spilled {}, limit {:.0} MB, peak RSS / limit = {:.2}",
            summary["runs_spilled"],
            snapkv_builder::parse_size(limit).unwrap_or(0) as f64 / 1e6,
            rss as f64 / snapkv_builder::parse_size(limit).unwrap_or(1) as f64
        );
        seconds.push(secs);
    }
    let zst = dir.join("rows.ndjson.zst");
    let (secs, rss, _) = timed(&[
        "zstd",
        "-3",
        "-T0",
        "-q",
        "-f",
        ndjson.to_str().expect("utf-8"),
        "-o",
        zst.to_str().expect("utf-8"),
    ]);
    let zst_bytes = std::fs::metadata(&zst).expect("zstd output").len();
    report("zstd -3 -T0 (NDJSON)", secs, rss, zst_bytes);
    println!(
        "snapkv build / zstd time: {:.2} (default limit), {:.2} (tight limit)",
        seconds[0] / secs,
        seconds[1] / secs
    );
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&zst);
}
