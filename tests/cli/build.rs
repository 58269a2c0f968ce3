//! `snapkv build` on every input format, checking every key's value against the source.

use crate::util::*;
use arrow_array::builder::{
    Float64Builder, Int32Builder, ListBuilder, StringBuilder, StructBuilder,
};
use arrow_array::types::Int32Type;
use arrow_array::{
    ArrayRef, BinaryArray, Date32Array, Decimal128Array, DictionaryArray, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Fields};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

/// A Spark-like batch: nested lists and structs, decimals, timestamps and nulls. Returns the
/// batch and, per row, the key and the JSON the row's value must be (without partition columns).
fn spark_batch(ids: std::ops::Range<i64>) -> (RecordBatch, Vec<(String, Value)>) {
    let mut name = StringBuilder::new();
    let mut scores = ListBuilder::new(Float64Builder::new());
    let profile_fields = Fields::from(vec![
        Field::new("age", DataType::Int32, true),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
    ]);
    let mut profile = StructBuilder::new(
        profile_fields.clone(),
        vec![
            Box::new(Int32Builder::new()),
            Box::new(ListBuilder::new(StringBuilder::new())),
        ],
    );
    let mut expected = Vec::new();
    for i in ids.clone() {
        let mut obj = serde_json::Map::new();
        if i % 7 == 0 {
            name.append_null();
            obj.insert("name".into(), Value::Null);
        } else {
            let n = format!("user-{i} \"é\" 日本 🎉");
            name.append_value(&n);
            obj.insert("name".into(), json!(n));
        }
        if i % 5 == 0 {
            scores.append_null();
            obj.insert("scores".into(), Value::Null);
        } else {
            scores.values().append_value(i as f64 * 0.5);
            if i % 3 == 0 {
                scores.values().append_null();
            } else {
                scores.values().append_value(1.25);
            }
            scores.append(true);
            let second = if i % 3 == 0 { Value::Null } else { json!(1.25) };
            obj.insert("scores".into(), json!([i as f64 * 0.5, second]));
        }
        let age = (i % 90) as i32;
        let tags = [format!("t{}", i % 3), "x".to_owned()];
        if i % 11 == 0 {
            profile
                .field_builder::<Int32Builder>(0)
                .unwrap()
                .append_null();
            profile
                .field_builder::<ListBuilder<StringBuilder>>(1)
                .unwrap()
                .append_null();
            profile.append(false);
            obj.insert("profile".into(), Value::Null);
        } else {
            profile
                .field_builder::<Int32Builder>(0)
                .unwrap()
                .append_value(age);
            let tb = profile
                .field_builder::<ListBuilder<StringBuilder>>(1)
                .unwrap();
            for t in &tags {
                tb.values().append_value(t);
            }
            tb.append(true);
            profile.append(true);
            obj.insert("profile".into(), json!({"age": age, "tags": tags}));
        }
        obj.insert("amount".into(), json!((i * 101) as f64 / 100.0));
        obj.insert(
            "seen".into(),
            json!(format!("2023-11-14T22:13:{:02}", i % 60)),
        );
        expected.push((i.to_string(), Value::Object(obj)));
    }
    let amount = Decimal128Array::from_iter_values(ids.clone().map(|i| (i * 101) as i128))
        .with_precision_and_scale(12, 2)
        .unwrap();
    let seen = TimestampMillisecondArray::from_iter_values(
        ids.clone()
            .map(|i| 1_700_000_000_000 - 20_000 + (i % 60) * 1000),
    );
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("user_id", Arc::new(Int64Array::from_iter_values(ids))),
        ("name", Arc::new(name.finish())),
        ("scores", Arc::new(scores.finish())),
        ("profile", Arc::new(profile.finish())),
        ("amount", Arc::new(amount)),
        ("seen", Arc::new(seen)),
    ];
    (RecordBatch::try_from_iter(columns).unwrap(), expected)
}

/// Writes a Spark-style output directory and returns every row's key and expected value.
fn spark_dir(root: &Path) -> Vec<(String, Value)> {
    let layout = [
        (
            "country=FR/bucket=0/part-00000-c0ffee.c000.snappy.parquet",
            0..300,
        ),
        (
            "country=US/bucket=0/part-00001-c0ffee.c000.snappy.parquet",
            300..1700,
        ),
        (
            "country=US/bucket=1/part-00002-c0ffee.c000.snappy.parquet",
            1700..2000,
        ),
        (
            "country=US/bucket=1/part-00003-c0ffee.c000.snappy.parquet",
            2000..2500,
        ),
    ];
    let mut all = Vec::new();
    for (path, ids) in layout {
        let (batch, expected) = spark_batch(ids);
        write_parquet(&root.join(path), &[batch]);
        let country = path[8..10].to_owned();
        let bucket: i64 = path[18..19].parse().unwrap();
        for (k, mut v) in expected {
            let obj = v.as_object_mut().unwrap();
            obj.insert("country".into(), json!(country));
            obj.insert("bucket".into(), json!(bucket));
            all.push((k, v));
        }
    }
    // What Spark and Hadoop leave beside the data: none of it is read.
    std::fs::write(root.join("_SUCCESS"), b"").unwrap();
    std::fs::write(
        root.join(".part-00000-c0ffee.c000.snappy.parquet.crc"),
        b"junk",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("_temporary/0")).unwrap();
    std::fs::write(root.join("_temporary/0/garbage"), b"not data").unwrap();
    all
}

#[test]
fn spark_partitioned_parquet_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("job-output");
    let expected = spark_dir(&input);
    let out = dir.path().join("users.snapkv");
    let run = snapkv(
        &[
            "build",
            "--input",
            input.to_str().unwrap(),
            "--key",
            "user_id",
            "--output",
            out.to_str().unwrap(),
            "--version",
            "20261127T031500Z",
        ],
        None,
    )
    .ok();
    assert!(
        run.stderr.contains("2500 rows, 2500 keys"),
        "{}",
        run.stderr
    );
    let s = open(&out);
    assert_eq!(s.len(), expected.len() as u64);
    for (key, want) in &expected {
        assert_eq!(&json_value(&s, key), want, "key {key}");
    }
    // Field order follows the schema, partition columns last; nulls are explicit.
    let raw = s.get(b"1").unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&raw).unwrap(),
        r#"{"name":"user-1 \"é\" 日本 🎉","scores":[0.5,1.25],"profile":{"age":1,"tags":["t1","x"]},"amount":1.01,"seen":"2023-11-14T22:13:01","country":"FR","bucket":0}"#
    );
    let m = s.metadata();
    // The version given is recorded, no dataset name was; the build time always is.
    assert_eq!(m.dataset, None);
    assert_eq!(m.version.as_deref(), Some("20261127T031500Z"));
    let built = chrono::DateTime::parse_from_rfc3339(m.created_at.as_deref().unwrap()).unwrap();
    assert!((chrono::Utc::now() - built.to_utc()).num_seconds().abs() < 600);
    assert_eq!(m.key_columns, ["user_id"]);
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.value_encoding, snapkv_format::ValueEncoding::Json);
    let schema = m.schema.as_ref().unwrap().to_string();
    for field in ["user_id", "profile", "amount", "country", "bucket"] {
        assert!(schema.contains(&format!("\"{field}\"")), "{schema}");
    }
    assert_only(
        dir.path(),
        &[
            "job-output",
            "job-output/.part-00000-c0ffee.c000.snappy.parquet.crc",
            "job-output/_SUCCESS",
            "job-output/_temporary",
            "job-output/_temporary/0",
            "job-output/_temporary/0/garbage",
            "job-output/country=FR",
            "job-output/country=FR/bucket=0",
            "job-output/country=FR/bucket=0/part-00000-c0ffee.c000.snappy.parquet",
            "job-output/country=US",
            "job-output/country=US/bucket=0",
            "job-output/country=US/bucket=0/part-00001-c0ffee.c000.snappy.parquet",
            "job-output/country=US/bucket=1",
            "job-output/country=US/bucket=1/part-00002-c0ffee.c000.snappy.parquet",
            "job-output/country=US/bucket=1/part-00003-c0ffee.c000.snappy.parquet",
            "users.snapkv",
        ],
    );

    // Globs read the partition folders below their literal part; a composite key joins the
    // columns' text with '/'.
    let out2 = dir.path().join("by-country.snapkv");
    let pattern = format!("{}/country=*/bucket=*/*.parquet", input.display());
    snapkv(
        &[
            "build",
            "-i",
            &pattern,
            "-k",
            "country,user_id",
            "-o",
            out2.to_str().unwrap(),
            "--value-columns",
            "name,bucket",
            "--dataset",
            "people",
            "-q",
        ],
        None,
    )
    .ok();
    let s = open(&out2);
    assert_eq!(s.len(), 2500);
    assert_eq!(s.metadata().dataset.as_deref(), Some("people"));
    for (key, want) in &expected {
        let country = want["country"].as_str().unwrap();
        let got = json_value(&s, &format!("{country}/{key}"));
        assert_eq!(got, json!({"name": want["name"], "bucket": want["bucket"]}));
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

#[test]
fn csv_with_quotes_and_unicode() {
    let dir = tempfile::tempdir().unwrap();
    let names = [
        "Smith, Jane",
        "She said \"hi\"",
        "multi\nline",
        "Zoë 日本語 🎉",
        "",
    ];
    // A byte order mark, as spreadsheet exports write it.
    let mut csv = String::from("\u{feff}id,name,score,city\n");
    let mut expected = Vec::new();
    for i in 0..600u32 {
        let id = format!("{i:05}");
        let name = names[i as usize % names.len()];
        let score = if i % 4 == 0 {
            format!("{}", i / 4)
        } else {
            format!("{}", i as f64 * 0.25)
        };
        let city = if i % 9 == 0 { "" } else { "Zürich" };
        csv.push_str(&format!(
            "{},{},{},{}\n",
            id,
            csv_field(name),
            score,
            csv_field(city)
        ));
        let name_json = if name.is_empty() {
            Value::Null
        } else {
            json!(name)
        };
        let city_json = if city.is_empty() {
            Value::Null
        } else {
            json!(city)
        };
        expected.push((
            id,
            json!({"name": name_json, "score": i as f64 * 0.25, "city": city_json}),
        ));
    }
    let path = dir.path().join("people.csv");
    std::fs::write(&path, &csv).unwrap();
    let out = dir.path().join("people.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            path.to_str().unwrap(),
            "-k",
            "id",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(&out);
    assert_eq!(s.len(), 600);
    for (key, want) in &expected {
        // Keys keep their text: "00042", not 42.
        assert_eq!(&json_value(&s, key), want, "key {key}");
    }

    // The same from stdin.
    let out2 = dir.path().join("stdin.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            "-",
            "--format",
            "csv",
            "-k",
            "id",
            "-o",
            out2.to_str().unwrap(),
            "--dataset",
            "people",
        ],
        Some(csv.as_bytes()),
    )
    .ok();
    let s2 = open(&out2);
    assert_eq!(s2.len(), 600);
    for (key, want) in &expected {
        assert_eq!(&json_value(&s2, key), want, "key {key}");
    }
}

#[test]
fn ndjson_nested_values() {
    let dir = tempfile::tempdir().unwrap();
    let mut text = String::new();
    let mut expected = Vec::new();
    for i in 0..700i64 {
        let mut row = json!({
            "sku": format!("sku-{i}"),
            "price": i * 3,
            "tags": [format!("t{}", i % 4), "ü"],
            "dims": {"w": i % 10, "h": i % 7},
            "active": i % 2 == 0,
            "note": if i % 5 == 0 { Value::Null } else { json!(format!("note \"{i}\"\t")) },
        });
        if i % 13 == 0 {
            row.as_object_mut().unwrap().remove("tags");
        }
        text.push_str(&row.to_string());
        text.push('\n');
        if i % 50 == 0 {
            text.push('\n');
        }
        let mut want = row.clone();
        let obj = want.as_object_mut().unwrap();
        obj.remove("sku");
        obj.entry("tags").or_insert(Value::Null);
        expected.push((format!("sku-{i}"), want));
    }
    let path = dir.path().join("items.jsonl");
    std::fs::write(&path, &text).unwrap();
    let out = dir.path().join("items.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            path.to_str().unwrap(),
            "-k",
            "sku",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(&out);
    assert_eq!(s.len(), 700);
    for (key, want) in &expected {
        assert_eq!(&json_value(&s, key), want, "key {key}");
    }

    let out2 = dir.path().join("stdin.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            "-",
            "--format",
            "ndjson",
            "-k",
            "sku",
            "-o",
            out2.to_str().unwrap(),
        ],
        Some(text.as_bytes()),
    )
    .ok();
    assert_eq!(
        std::fs::read(&out2).unwrap().len() as u64,
        open(&out2).stats().unwrap().file_bytes
    );
    let s2 = open(&out2);
    for (key, want) in &expected {
        assert_eq!(&json_value(&s2, key), want, "key {key}");
    }
}

#[test]
fn arrow_ipc_file_raw_values_and_composite_keys() {
    let dir = tempfile::tempdir().unwrap();
    let n = 1000u32;
    let regions = ["eu", "us", "ap"];
    let payload = |i: u32| -> Vec<u8> { (0..(i % 50)).map(|j| (i * 31 + j) as u8).collect() };
    let batch = RecordBatch::try_from_iter(vec![
        (
            "region",
            Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| regions[i as usize % 3]),
            )) as ArrayRef,
        ),
        ("id", Arc::new(UInt32Array::from_iter_values(0..n))),
        (
            "payload",
            Arc::new(BinaryArray::from_iter_values((0..n).map(payload))),
        ),
    ])
    .unwrap();
    let path = dir.path().join("vectors.arrow");
    write_ipc_file(&path, &[batch.slice(0, 400), batch.slice(400, 600)]);
    let out = dir.path().join("vectors.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            path.to_str().unwrap(),
            "-k",
            "region,id",
            "--raw-value",
            "payload",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(&out);
    assert_eq!(s.len(), n as u64);
    for i in 0..n {
        let key = format!("{}/{i}", regions[i as usize % 3]);
        assert_eq!(
            s.get(key.as_bytes()).unwrap().as_deref(),
            Some(&payload(i)[..]),
            "key {key}"
        );
    }
    let m = s.metadata();
    assert_eq!(m.value_encoding, snapkv_format::ValueEncoding::Raw);
    assert_eq!(m.content_type.as_deref(), Some("application/octet-stream"));
    assert_eq!(m.key_columns, ["region", "id"]);

    // A key column can also be the raw value.
    let out2 = dir.path().join("regions.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            path.to_str().unwrap(),
            "-k",
            "region,id",
            "--raw-value",
            "region",
            "-o",
            out2.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(&out2);
    assert_eq!(s.get(b"us/1").unwrap().as_deref(), Some(&b"us"[..]));

    // The IPC file piped on stdin builds the same entries as from its path, and leaves no
    // temporary file in the output's folder.
    let out3 = dir.path().join("stdin.snapkv");
    let bytes = std::fs::read(&path).unwrap();
    snapkv(
        &[
            "build",
            "-i",
            "-",
            "--format",
            "arrow",
            "-k",
            "region,id",
            "--raw-value",
            "payload",
            "-o",
            out3.to_str().unwrap(),
        ],
        Some(&bytes),
    )
    .ok();
    let s = open(&out3);
    assert_eq!(s.len(), n as u64);
    for i in 0..n {
        let key = format!("{}/{i}", regions[i as usize % 3]);
        assert_eq!(
            s.get(key.as_bytes()).unwrap().as_deref(),
            Some(&payload(i)[..])
        );
    }
    assert_only(
        dir.path(),
        &[
            "regions.snapkv",
            "stdin.snapkv",
            "vectors.arrow",
            "vectors.snapkv",
        ],
    );
}

#[test]
fn arrow_ipc_stream_date_keys_and_dictionaries() {
    let dir = tempfile::tempdir().unwrap();
    let n = 365;
    let labels: DictionaryArray<Int32Type> =
        (0..n).map(|i| ["low", "mid", "high"][i % 3]).collect();
    let batch = RecordBatch::try_from_iter(vec![
        // 19783 days after the epoch is 2024-03-01.
        (
            "day",
            Arc::new(Date32Array::from_iter_values(19783..19783 + n as i32)) as ArrayRef,
        ),
        ("n", Arc::new(Int32Array::from_iter_values(0..n as i32))),
        ("label", Arc::new(labels)),
    ])
    .unwrap();
    let path = dir.path().join("days.arrows");
    write_ipc_stream(&path, &[batch]);
    let out = dir.path().join("days.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            path.to_str().unwrap(),
            "-k",
            "day",
            "-o",
            out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let s = open(&out);
    assert_eq!(s.len(), n as u64);
    assert_eq!(
        json_value(&s, "2024-03-01"),
        json!({"n": 0, "label": "low"})
    );
    assert_eq!(
        json_value(&s, "2024-03-02"),
        json!({"n": 1, "label": "mid"})
    );
    assert_eq!(
        json_value(&s, "2025-02-28"),
        json!({"n": 364, "label": "mid"})
    );
    let keys: Vec<_> = s.iter().map(|kv| kv.unwrap().0).collect();
    assert_eq!(keys.len(), n);
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

/// Rows with repeated keys spread over three Parquet files: row `i` has key
/// `k{(i * 7919) % 60000}`, so rows `i` and `i + 60000` share a key.
fn dup_dir(root: &Path) -> usize {
    let rows = 90_000usize;
    for (f, range) in [(0, 0..30_000), (1, 30_000..60_000), (2, 60_000..rows)] {
        let keys = StringArray::from_iter_values(
            range
                .clone()
                .map(|i| format!("k{:07}", (i * 7919) % 60_000)),
        );
        let values = StringArray::from_iter_values(range.clone().map(|i| {
            format!(
                "row {i} of the input, padded to about a hundred bytes: {:x}",
                i * 2654435761
            )
        }));
        let batch = RecordBatch::try_from_iter(vec![
            ("key", Arc::new(keys) as ArrayRef),
            ("v", Arc::new(values)),
        ])
        .unwrap();
        write_parquet(&root.join(format!("part-{f:05}.parquet")), &[batch]);
    }
    rows
}

#[test]
fn spilling_build_is_byte_identical_to_in_memory_build() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    dup_dir(&input);
    let spill = dir.path().join("spill");
    std::fs::create_dir(&spill).unwrap();
    let build = |out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "build",
            "-i",
            input.to_str().unwrap(),
            "-k",
            "key",
            "-o",
            out.to_str().unwrap(),
            "--version",
            "v1",
            "--dataset",
            "dups",
            "--json",
        ];
        args.extend_from_slice(extra);
        let run = snapkv_with(&args, None, &[("SOURCE_DATE_EPOCH", "0")]).ok();
        let summary: Value = serde_json::from_str(&run.stdout).unwrap();
        (std::fs::read(&out).unwrap(), summary)
    };
    for policy in ["last", "first"] {
        let (memory, s1) = build("memory.snapkv", &["--on-duplicate", policy]);
        assert_eq!(s1["runs_spilled"], 0);
        let (spilled, s2) = build(
            "spilled.snapkv",
            &[
                "--on-duplicate",
                policy,
                "--memory-limit",
                "4MiB",
                "--temp-dir",
                spill.to_str().unwrap(),
            ],
        );
        assert!(s2["runs_spilled"].as_u64().unwrap() >= 3, "{s2}");
        // At 4 MiB the writer keeps 512 KiB of key hashes (about 10,000 keys): the other
        // 50,000 of the 60,000 go to the temporary directory too.
        let (one_thread, _) = build(
            "one-thread.snapkv",
            &[
                "--on-duplicate",
                policy,
                "--memory-limit",
                "5MiB",
                "--threads",
                "1",
            ],
        );
        let (three_threads, _) = build(
            "three-threads.snapkv",
            &[
                "--on-duplicate",
                policy,
                "--memory-limit",
                "4MiB",
                "--threads",
                "3",
            ],
        );
        let (four_threads, _) = build(
            "four-threads.snapkv",
            &["--on-duplicate", policy, "--threads", "4"],
        );
        assert!(memory == spilled, "the spilled build differs ({policy})");
        assert!(
            memory == one_thread,
            "the single-threaded build differs ({policy})"
        );
        assert!(
            memory == three_threads,
            "the spilled three-thread build differs ({policy})"
        );
        assert!(
            memory == four_threads,
            "the four-thread build differs ({policy})"
        );
        assert_eq!(s2["rows"], 90_000);
        assert_eq!(s2["keys"], 60_000);
        assert_eq!(s2["duplicates_dropped"], 30_000);

        let s = open(&dir.path().join("spilled.snapkv"));
        for i in 0..60_000usize {
            let key = format!("k{:07}", (i * 7919) % 60_000);
            let row = if i < 30_000 && policy == "last" {
                i + 60_000
            } else {
                i
            };
            let want = format!(
                "row {row} of the input, padded to about a hundred bytes: {:x}",
                row * 2654435761
            );
            assert_eq!(json_value(&s, &key), json!({"v": want}), "{policy} {key}");
        }
        assert_only(&spill, &[]);
    }
    assert_only(
        dir.path(),
        &[
            "in",
            "in/part-00000.parquet",
            "in/part-00001.parquet",
            "in/part-00002.parquet",
            "four-threads.snapkv",
            "memory.snapkv",
            "one-thread.snapkv",
            "spill",
            "spilled.snapkv",
            "three-threads.snapkv",
        ],
    );
}

#[test]
fn same_input_and_version_give_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("job");
    spark_dir(&input);
    let build = |out: &Path, extra: &[&str]| build_job(&input, out, extra);
    let a = dir.path().join("a.snapkv");
    let b = dir.path().join("b.snapkv");
    for out in [&a, &b] {
        build(
            out,
            &["--version", "20261127T031500Z", "--dataset", "users"],
        )
        .ok();
    }
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());

    // Without labels, none is recorded; the build time always is.
    let c = dir.path().join("c.snapkv");
    let run = snapkv(
        &[
            "build",
            "-i",
            input.to_str().unwrap(),
            "-k",
            "user_id",
            "-o",
            c.to_str().unwrap(),
            "--json",
        ],
        None,
    )
    .ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    let s = open(&c);
    assert_eq!(s.metadata().version, None);
    assert_eq!(s.metadata().dataset, None);
    assert_eq!(summary["version"], Value::Null);
    assert_eq!(
        s.metadata().created_at.as_deref(),
        summary["built_at"].as_str()
    );
    // A label is only a label: a timestamp-like one (even with month 13) is not the build
    // time, and any other still has one.
    for label in ["v2", "20261327T000000Z"] {
        build(&c, &["--version", label]).ok();
        let m = open(&c).metadata().clone();
        assert_eq!(m.version.as_deref(), Some(label));
        assert_eq!(m.created_at.as_deref(), Some("2026-11-27T03:15:00Z"));
    }
    // Labels follow the store's grammar: what builds, publishes.
    build(&c, &["--version", "_rc1"]).fails_with(&[
        "invalid version \"_rc1\"",
        "starting with a letter or digit",
    ]);
}

#[test]
fn json_summary_and_options_reach_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("job");
    spark_dir(&input);
    let out = dir.path().join("o.snapkv");
    let run = snapkv(
        &[
            "build",
            "-i",
            input.to_str().unwrap(),
            "-k",
            "user_id",
            "-o",
            out.to_str().unwrap(),
            "--compression",
            "zstd:9",
            "--block-size",
            "16KiB",
            "--dict",
            "off",
            "--json",
            "--label",
            "team=ranking",
        ],
        None,
    )
    .ok();
    let summary: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["rows"], 2500);
    assert_eq!(summary["keys"], 2500);
    assert_eq!(summary["files"], 4);
    assert_eq!(summary["dictionary_bytes"], 0);
    assert!(summary["bytes_in"].as_u64().unwrap() > 0);
    assert_eq!(
        summary["bytes_out"].as_u64().unwrap(),
        std::fs::metadata(&out).unwrap().len()
    );
    let s = open(&out);
    let m = s.metadata();
    assert_eq!(m.format.level, 9);
    assert_eq!(m.format.block_size, 16384);
    assert_eq!(m.user.get("team").map(String::as_str), Some("ranking"));

    let out2 = dir.path().join("raw.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            input.to_str().unwrap(),
            "-k",
            "user_id",
            "-o",
            out2.to_str().unwrap(),
            "--compression",
            "none",
            "-q",
        ],
        None,
    )
    .ok();
    let s = open(&out2);
    assert_eq!(s.metadata().format.compression, "none");
    let st = s.stats().unwrap();
    assert_eq!(st.raw_blocks, st.block_count);
}

/// `--shards N` cuts the sorted rows into N equal shares, whatever the key distribution: each
/// file is marked as its shard and holds a contiguous key range; a rebuild into the same
/// directory leaves only its own shard files.
#[test]
fn shards_split_the_rows_into_equal_shares() {
    let dir = tempfile::tempdir().unwrap();
    // Skewed: 90% of the keys share the prefix "a/", the rest are spread.
    let rows: String = (0..1000)
        .map(|i| {
            let key = if i % 10 == 0 {
                format!("{:03}", i / 10)
            } else {
                format!("a/{i:05}")
            };
            format!("{{\"id\":\"{key}\",\"n\":{i}}}\n")
        })
        .collect();
    let input = dir.path().join("rows.ndjson");
    std::fs::write(&input, rows).unwrap();
    let out = dir.path().join("shards");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    let run = snapkv(
        &["build", "-i", i, "--key", "id", "--shards", "4", "-o", o],
        None,
    )
    .ok();
    assert!(
        run.stderr
            .contains("4 shards: 250 to 250 keys each (largest/mean 1.000)"),
        "{}",
        run.stderr
    );
    let mut last: Option<Vec<u8>> = None;
    for s in 0..4u32 {
        let snap = open(&out.join(format!("shard-{s:05}-of-00004.snapkv")));
        assert_eq!(snap.len(), 250);
        assert_eq!(
            snap.metadata().builder["shard"],
            json!({"index": s, "count": 4})
        );
        let keys: Vec<Vec<u8>> = snap.iter().map(|e| e.unwrap().0.to_vec()).collect();
        if let Some(prev) = &last {
            assert!(keys[0] > *prev, "shard {s} overlaps the one before");
        }
        last = keys.last().cloned();
    }
    snapkv(
        &["build", "-i", i, "--key", "id", "--shards", "2", "-o", o],
        None,
    )
    .ok();
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["shard-00000-of-00002.snapkv", "shard-00001-of-00002.snapkv"]
    );
    // More shards than keys: the last ones are empty, still written.
    let few = dir.path().join("few.ndjson");
    std::fs::write(&few, "{\"id\":\"x\"}\n{\"id\":\"y\"}\n").unwrap();
    let few_out = dir.path().join("few");
    snapkv(
        &[
            "build",
            "-i",
            few.to_str().unwrap(),
            "--key",
            "id",
            "--shards",
            "3",
            "-o",
            few_out.to_str().unwrap(),
        ],
        None,
    )
    .ok();
    let counts: Vec<u64> = (0..3)
        .map(|s| open(&few_out.join(format!("shard-{s:05}-of-00003.snapkv"))).len())
        .collect();
    assert_eq!(counts, [0, 1, 1]);
    // A file as the output of --shards, and a shard out of range, are errors.
    let file = dir.path().join("file.snapkv");
    std::fs::write(&file, b"x").unwrap();
    snapkv(
        &[
            "build",
            "-i",
            i,
            "--key",
            "id",
            "--shards",
            "2",
            "-o",
            file.to_str().unwrap(),
        ],
        None,
    )
    .fails_with(&["--shards writes a directory"]);
    let run = snapkv(
        &[
            "build", "-i", i, "--key", "id", "--shard", "3/2", "-o", "x.snapkv",
        ],
        None,
    );
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("expected I/N"), "{}", run.stderr);
}

#[test]
fn dictionary_from_a_file_or_the_current_version_in_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("job");
    spark_dir(&input);
    let build = |out: &Path, extra: &[&str]| {
        build_job(&input, out, &[&["--dataset", "users"], extra].concat())
    };
    let first = dir.path().join("first.snapkv");
    build(&first, &["--version", "v1"]).ok();
    let dict = open(&first).dictionary().to_vec();
    assert!(!dict.is_empty());
    let store = dir.path().join("store");
    let (f, st) = (first.to_str().unwrap(), store.to_str().unwrap());
    snapkv(&["publish", f, "--store", st, "--dataset", "users"], None).ok();
    // From the file and from the store's current version: the same dictionary, the same file.
    let (a, b) = (dir.path().join("a.snapkv"), dir.path().join("b.snapkv"));
    build(&a, &["--version", "v2", "--dictionary-from", f]).ok();
    build(&b, &["--version", "v2", "--dictionary-from-store", st]).ok();
    assert_eq!(open(&a).dictionary(), &dict[..]);
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    // A store without the dataset, or not made yet: a dictionary is trained, as without the
    // flag.
    let c = dir.path().join("c.snapkv");
    let from_store = ["--dictionary-from-store", st];
    let other = [&["--dataset", "other"], &from_store[..]].concat();
    build_job(&input, &c, &other).ok();
    assert!(!open(&c).dictionary().is_empty());
    let new_store = dir.path().join("new-store");
    build(
        &c,
        &["--dictionary-from-store", new_store.to_str().unwrap()],
    )
    .ok();
    assert!(!open(&c).dictionary().is_empty());
    build(&c, &["--dictionary-from", "missing.snapkv"])
        .fails_with(&["cannot take the dictionary of missing.snapkv"]);
    let parquet = input.join("country=FR/bucket=0/part-00000-c0ffee.c000.snappy.parquet");
    build(&c, &["--dictionary-from", parquet.to_str().unwrap()])
        .fails_with(&["cannot take the dictionary of"]);
    build(&c, &["--compression", "none", "--dictionary-from", f])
        .fails_with(&["needs compression"]);
    build_job(&input, &c, &from_store).fails_with(&["--dataset"]);
}

/// `snapkv build` of the job directory `input` keyed by `user_id` into `out` with `extra`
/// flags, at a fixed build time.
fn build_job(input: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "build",
        "-i",
        input.to_str().unwrap(),
        "-k",
        "user_id",
        "-o",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    snapkv_with(&args, None, &[("SOURCE_DATE_EPOCH", "1795749300")])
}
