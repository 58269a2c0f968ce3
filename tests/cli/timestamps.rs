//! Every Arrow timestamp type builds: named zones, offsets, no zone, Parquet written without
//! Arrow's schema (`isAdjustedToUTC`), and Spark's INT96. Instants come out as RFC 3339 with
//! their offset (`Z` for UTC), wall-clock times without one.

use super::util::{open, snapkv, write_parquet};
use arrow_array::types::*;
use arrow_array::{ArrayRef, PrimitiveArray, RecordBatch, StringArray};
use std::path::Path;
use std::sync::Arc;

/// 2026-11-30T12:00:00Z.
const NOON: i64 = 1_796_040_000;

fn ts<T: ArrowTimestampType>(per_second: i64, tz: Option<&str>) -> ArrayRef {
    let a = PrimitiveArray::<T>::from_iter_values([NOON * per_second]);
    Arc::new(match tz {
        Some(tz) => a.with_timezone(tz),
        None => a,
    })
}

fn batch() -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        (
            "utc",
            ts::<TimestampMicrosecondType>(1_000_000, Some("UTC")),
        ),
        (
            "stockholm",
            ts::<TimestampMillisecondType>(1_000, Some("Europe/Stockholm")),
        ),
        ("kolkata", ts::<TimestampSecondType>(1, Some("+05:30"))),
        (
            "fraction",
            Arc::new(
                PrimitiveArray::<TimestampNanosecondType>::from(vec![
                    NOON * 1_000_000_000 + 500_000_000,
                ])
                .with_timezone("UTC"),
            ),
        ),
        ("wall", ts::<TimestampNanosecondType>(1_000_000_000, None)),
    ])
    .unwrap()
}

fn build(input: &Path, key: &str, out: &Path) -> serde_json::Value {
    snapkv(
        &[
            "build",
            "-i",
            input.to_str().unwrap(),
            "--key",
            key,
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(out);
    let (k, v) = s.iter().next().unwrap().unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&v).unwrap();
    v["_key"] = String::from_utf8(k.to_vec()).unwrap().into();
    v
}

#[test]
fn zones_offsets_and_wall_clock() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.parquet");
    write_parquet(&input, &[batch()]);
    let v = build(&input, "id", &dir.path().join("t.snapkv"));
    assert_eq!(v["utc"], "2026-11-30T12:00:00Z");
    assert_eq!(v["stockholm"], "2026-11-30T13:00:00+01:00");
    assert_eq!(v["kolkata"], "2026-11-30T17:30:00+05:30");
    assert_eq!(v["fraction"], "2026-11-30T12:00:00.500Z");
    assert_eq!(v["wall"], "2026-11-30T12:00:00");
    // An instant key is the same text.
    let v = build(&input, "stockholm", &dir.path().join("k.snapkv"));
    assert_eq!(v["_key"], "2026-11-30T13:00:00+01:00");

    // The same from Arrow IPC (no Parquet in between).
    let ipc = dir.path().join("t.arrow");
    super::util::write_ipc_file(&ipc, &[batch()]);
    let v = build(&ipc, "id", &dir.path().join("i.snapkv"));
    assert_eq!(v["stockholm"], "2026-11-30T13:00:00+01:00");
}

#[test]
fn parquet_without_arrow_schema_is_adjusted_to_utc() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("spark-like.parquet");
    let b = batch();
    let file = std::fs::File::create(&input).unwrap();
    let options =
        parquet::arrow::arrow_writer::ArrowWriterOptions::new().with_skip_arrow_metadata(true);
    let mut w =
        parquet::arrow::ArrowWriter::try_new_with_options(file, b.schema(), options).unwrap();
    w.write(&b).unwrap();
    w.close().unwrap();
    let v = build(&input, "id", &dir.path().join("t.snapkv"));
    // isAdjustedToUTC: an instant, whatever zone the writer had; no zone: wall-clock.
    assert_eq!(v["utc"], "2026-11-30T12:00:00Z");
    assert_eq!(v["stockholm"], "2026-11-30T12:00:00Z");
    assert_eq!(v["wall"], "2026-11-30T12:00:00");
}

#[test]
fn spark_int96_is_utc() {
    use parquet::data_type::{ByteArray, ByteArrayType, Int96, Int96Type};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("part-00000.parquet");
    let schema = parquet::schema::parser::parse_message_type(
        "message spark_schema { required binary id (STRING); optional int96 ts; }",
    )
    .unwrap();
    let props = Arc::new(parquet::file::properties::WriterProperties::builder().build());
    let file = std::fs::File::create(&input).unwrap();
    let mut w =
        parquet::file::writer::SerializedFileWriter::new(file, Arc::new(schema), props).unwrap();
    let mut rg = w.next_row_group().unwrap();
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<ByteArrayType>()
        .write_batch(&[ByteArray::from("a")], None, None)
        .unwrap();
    col.close().unwrap();
    // Nanoseconds of the day (low, high) and the Julian day, as Spark writes them.
    let nanos_of_day = (NOON % 86_400) as u64 * 1_000_000_000;
    let julian_day = (NOON / 86_400 + 2_440_588) as u32;
    let mut v = Int96::new();
    v.set_data(nanos_of_day as u32, (nanos_of_day >> 32) as u32, julian_day);
    let mut col = rg.next_column().unwrap().unwrap();
    col.typed::<Int96Type>()
        .write_batch(&[v], Some(&[1]), None)
        .unwrap();
    col.close().unwrap();
    rg.close().unwrap();
    w.close().unwrap();
    let v = build(&input, "id", &dir.path().join("t.snapkv"));
    assert_eq!(v["ts"], "2026-11-30T12:00:00Z");
}

/// Writes the files of `written_by_pandas_pyarrow_and_spark`.
const WRITERS: &str = r#"
import os, sys
import pandas as pd, pyarrow as pa, pyarrow.feather as feather, pyarrow.parquet as pq
out = sys.argv[1]
noon = pd.Timestamp("2026-11-30 12:00:00", tz="UTC")
pd.DataFrame({
    "id": ["a"],
    "utc": [noon],
    "stockholm": [noon.tz_convert("Europe/Stockholm")],
    "wall": [noon.tz_localize(None)],
}).to_parquet(os.path.join(out, "pandas.parquet"))
t = pa.table({
    "id": ["a"],
    "stockholm": pa.array([noon.value], pa.timestamp("ns", tz="Europe/Stockholm")),
    "wall": pa.array([noon.value // 1000], pa.timestamp("us")),
})
pq.write_table(t, os.path.join(out, "pyarrow.parquet"))
feather.write_feather(t, os.path.join(out, "pyarrow.feather"))

from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]")
         .config("spark.sql.session.timeZone", "Europe/Stockholm")
         .config("spark.ui.enabled", "false").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
df = spark.sql("select 'a' as id, timestamp'2026-11-30 13:00:00' as ts, "
               "timestamp_ntz'2026-11-30 12:00:00' as wall")
df.coalesce(1).write.parquet(os.path.join(out, "spark-int96"))
spark.conf.set("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
df.coalesce(1).write.parquet(os.path.join(out, "spark-micros"))
spark.stop()
"#;

/// Files as pandas, pyarrow and a real Spark job write them (`./scripts/test` installs them
/// and sets `SNAPKV_TEST_PYTHON`).
#[test]
fn written_by_pandas_pyarrow_and_spark() {
    let python = std::env::var("SNAPKV_TEST_PYTHON").expect(
        "SNAPKV_TEST_PYTHON must name a Python with pandas, pyarrow and pyspark (and Java on \
         PATH): ./scripts/test sets it up",
    );
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(&python)
        .args(["-c", WRITERS, dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let built = |name: &str| build(&dir.path().join(name), "id", &dir.path().join("x.snapkv"));
    let v = built("pandas.parquet");
    assert_eq!(v["utc"], "2026-11-30T12:00:00Z");
    assert_eq!(v["stockholm"], "2026-11-30T13:00:00+01:00");
    assert_eq!(v["wall"], "2026-11-30T12:00:00");
    for name in ["pyarrow.parquet", "pyarrow.feather"] {
        let v = built(name);
        assert_eq!(v["stockholm"], "2026-11-30T13:00:00+01:00", "{name}");
        assert_eq!(v["wall"], "2026-11-30T12:00:00", "{name}");
    }
    for name in ["spark-int96", "spark-micros"] {
        let v = built(name);
        assert_eq!(v["ts"], "2026-11-30T12:00:00Z", "{name}");
        assert_eq!(v["wall"], "2026-11-30T12:00:00", "{name}");
    }
}
