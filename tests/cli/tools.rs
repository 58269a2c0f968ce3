//! `snapkv get`, `scan`, `inspect` and `verify` on a built snapshot.

use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Builds a snapshot of 100 users (`user:000` to `user:099`) in `dir`.
fn users(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for i in 0..100 {
        text.push_str(&format!(
            "{{\"id\":\"user:{i:03}\",\"score\":{i},\"name\":\"n{i}\"}}\n"
        ));
    }
    std::fs::write(dir.join("users.ndjson"), text).unwrap();
    let out = dir.join("users.snapkv");
    build_users(
        dir,
        &out,
        &["--version", "20261127T031500Z", "--dataset", "users"],
    )
    .ok();
    out
}

/// `snapkv build` of the users written by [`users`] to `out`, with more arguments.
fn build_users(dir: &Path, out: &Path, more: &[&str]) -> Run {
    build_by_id(&dir.join("users.ndjson"), out, more)
}

#[test]
fn get_prints_values_and_exits_1_on_a_missing_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = users(dir.path());
    let f = f.to_str().unwrap();
    let run = snapkv(&["get", f, "user:007", "user:042"], None).ok();
    // NDJSON fields keep the order the input writes them in.
    assert_eq!(
        run.stdout,
        "{\"score\":7,\"name\":\"n7\"}\n{\"score\":42,\"name\":\"n42\"}\n"
    );
    let run = snapkv(&["get", f, "user:001", "user:999"], None);
    assert_eq!(run.code, 1);
    assert_eq!(run.stdout, "{\"score\":1,\"name\":\"n1\"}\n");
    assert!(
        run.stderr.contains("key not found: user:999"),
        "{}",
        run.stderr
    );
    let run = snapkv(&["get", "/nonexistent.snapkv", "k"], None);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("cannot open /nonexistent.snapkv"),
        "{}",
        run.stderr
    );
}

#[test]
fn scan_prints_ndjson_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    let f = users(dir.path());
    let f = f.to_str().unwrap();
    let lines = |run: Run| -> Vec<Value> {
        run.stdout
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let all = lines(snapkv(&["scan", f], None).ok());
    assert_eq!(all.len(), 100);
    assert_eq!(
        all[0],
        json!({"key": "user:000", "value": {"score": 0, "name": "n0"}})
    );
    let keys: Vec<&str> = all.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]));

    let prefix = lines(snapkv(&["scan", f, "--prefix", "user:05"], None).ok());
    assert_eq!(prefix.len(), 10);
    assert_eq!(prefix[9]["key"], "user:059");

    let range = lines(
        snapkv(
            &[
                "scan", f, "--start", "user:010", "--end", "user:020", "--limit", "4",
            ],
            None,
        )
        .ok(),
    );
    let keys: Vec<&str> = range.iter().map(|v| v["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["user:010", "user:011", "user:012", "user:013"]);

    let none = snapkv(&["scan", f, "--prefix", "nobody"], None).ok();
    assert_eq!(none.stdout, "");
}

#[test]
fn inspect_shows_metadata_and_sizes() {
    let dir = tempfile::tempdir().unwrap();
    let f = users(dir.path());
    let f = f.to_str().unwrap();
    let run = snapkv(&["inspect", f, "--json"], None).ok();
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["stats"]["keys"], 100);
    assert_eq!(v["metadata"]["dataset"], "users");
    assert_eq!(v["metadata"]["version"], "20261127T031500Z");
    assert_eq!(v["metadata"]["key_columns"], json!(["id"]));
    assert_eq!(v["metadata"]["value_encoding"], "json");
    assert_eq!(v["metadata"]["content_type"], "application/json");
    assert!(
        v["metadata"]["schema"]["fields"].is_array(),
        "{}",
        v["metadata"]
    );
    assert!(v["stats"]["compression_ratio"].as_f64().unwrap() > 0.0);
    assert_eq!(
        v["stats"]["file_bytes"].as_u64().unwrap(),
        std::fs::metadata(f).unwrap().len()
    );
    let text = snapkv(&["inspect", f], None).ok().stdout;
    for part in [
        "dataset       users",
        "keys          100",
        "key columns   id",
        "schema",
    ] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
}

/// `inspect` lists the source columns as a table, and under `--json`, with readable types
/// and roles (not Arrow's serde form with `dict_id`).
#[test]
fn inspect_lists_columns_with_types_and_roles() {
    use arrow_array::builder::{ListBuilder, StringBuilder};
    use arrow_array::{ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let mut tags = ListBuilder::new(StringBuilder::new());
    tags.values().append_value("a");
    tags.append(true);
    tags.append(true);
    let utc = DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()));
    let item = Arc::new(Field::new("item", DataType::Utf8, true));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("seen_at", utc, true),
        Field::new("tags", DataType::List(item), true),
        Field::new("note", DataType::Utf8, true),
    ]);
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["u1", "u2"])),
        Arc::new(TimestampMicrosecondArray::from(vec![1, 2]).with_timezone("+00:00")),
        Arc::new(tags.finish()),
        Arc::new(StringArray::from(vec![Some("x"), None])),
    ];
    let batch = RecordBatch::try_new(Arc::new(schema), columns).unwrap();
    let input = dir.path().join("in.arrow");
    write_ipc_file(&input, &[batch]);
    let out = dir.path().join("c.snapkv");
    let (input, out) = (input.to_str().unwrap(), out.to_str().unwrap());
    let build = ["build", "-i", input, "-k", "id", "-o", out, "-q"];
    // The key is the raw value too.
    let build_raw = [&build[..], &["--raw-value", "id"]].concat();
    snapkv(&build_raw, None).ok();

    let rows = [
        ("id", "Utf8", false, "key and value"),
        ("seen_at", "Timestamp(µs, \"+00:00\")", true, "unused"),
        ("tags", "List(Utf8)", true, "unused"),
        ("note", "Utf8", true, "unused"),
    ];
    let text = snapkv(&["inspect", out], None).ok().stdout;
    assert!(!text.contains("dict_id"), "{text}");
    // Each line with its runs of spaces as one.
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(lines.contains(&"schema 4 columns".to_owned()), "{text}");
    assert!(
        lines.contains(&"COLUMN TYPE NULLABLE ROLE".to_owned()),
        "{text}"
    );
    for (name, ty, nullable, role) in rows {
        let nullable = if nullable { "yes" } else { "no" };
        let row = format!("{name} {ty} {nullable} {role}");
        assert!(lines.contains(&row), "{row:?} in {text}");
    }
    let v: Value =
        serde_json::from_str(&snapkv(&["inspect", out, "--json"], None).ok().stdout).unwrap();
    let want: Vec<Value> = rows
        .iter()
        .map(|(name, ty, nullable, role)| {
            json!({"name": name, "type": ty, "nullable": nullable, "role": role})
        })
        .collect();
    assert_eq!(v["columns"], json!(want));
    // Everything the metadata holds stays in the JSON, the stored schema included.
    assert_eq!(v["metadata"]["schema"]["fields"][0]["dict_id"], 0);
    assert_eq!(v["metadata"]["builder"]["raw_value_column"], "id");

    // JSON values of every column but the key.
    snapkv(&build, None).ok();
    let v: Value =
        serde_json::from_str(&snapkv(&["inspect", out, "--json"], None).ok().stdout).unwrap();
    let roles: Vec<&Value> = v["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["role"])
        .collect();
    assert_eq!(roles, ["key", "value", "value", "value"]);
}

#[test]
fn verify_exit_code_is_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let f = users(dir.path());
    let run = snapkv(&["verify", f.to_str().unwrap()], None).ok();
    assert!(run.stdout.contains(": ok (100 keys"), "{}", run.stdout);

    // Flip one byte in the data blocks (just past the 16-byte header).
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[20] ^= 0x55;
    let bad = dir.path().join("bad.snapkv");
    std::fs::write(&bad, &bytes).unwrap();
    let run = snapkv(
        &["verify", f.to_str().unwrap(), bad.to_str().unwrap()],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stdout.contains("bad.snapkv: CORRUPT"), "{}", run.stdout);

    let truncated = dir.path().join("short.snapkv");
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    assert_eq!(
        snapkv(&["verify", truncated.to_str().unwrap()], None).code,
        1
    );

    let run = snapkv(
        &["verify", dir.path().join("missing").to_str().unwrap()],
        None,
    );
    assert_eq!(run.code, 2);
}

#[test]
fn help_has_examples() {
    let run = snapkv(&["build", "--help"], None).ok();
    for part in [
        "--memory-limit",
        "--on-duplicate",
        "--raw-value",
        "Examples:",
        "snapkv build",
    ] {
        assert!(run.stdout.contains(part), "{part:?} in {}", run.stdout);
    }
    let run = snapkv(&["build"], None);
    assert_eq!(run.code, 2);
}

#[test]
fn a_closed_stdout_ends_quietly_with_success() {
    let dir = tempfile::tempdir().unwrap();
    let f = users(dir.path());
    let f = f.to_str().unwrap();
    for args in [
        vec!["inspect", f],
        vec!["inspect", "--json", f],
        vec!["scan", f],
        vec!["get", f, "user:001", "user:002"],
        vec!["verify", f],
        vec!["diff", f, f],
        vec!["diff", "--json", f, f],
    ] {
        // A reader that is gone before anything is written, as `| head` is after its lines.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = command(&args)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: {stderr}");
    }
}

/// `build` writes format version 2 by default and version 1 on request (for readers not yet
/// upgraded); both answer the same, `inspect` names the version, and other versions are
/// refused.
#[test]
fn build_writes_either_format_version() {
    let dir = tempfile::tempdir().unwrap();
    let v2 = users(dir.path());
    let v1 = dir.path().join("users-v1.snapkv");
    let build =
        |version: &str, out: &Path| build_users(dir.path(), out, &["--format-version", version]);
    build("1", &v1).ok();
    for (file, version) in [(&v2, 2), (&v1, 1)] {
        let f = file.to_str().unwrap();
        let v: Value =
            serde_json::from_str(&snapkv(&["inspect", f, "--json"], None).ok().stdout).unwrap();
        assert_eq!(v["format_version"], version);
        assert_eq!(
            v["stats"]["lookup_bytes"].as_u64().unwrap() > 0,
            version == 2
        );
        let text = snapkv(&["inspect", f], None).ok().stdout;
        assert!(
            text.contains(&format!("format        version {version}")),
            "{text}"
        );
        let got = snapkv(&["get", f, "user:042"], None).ok().stdout;
        assert!(got.contains("\"score\":42"), "{got}");
        snapkv(&["verify", f], None).ok();
    }
    let bad = dir.path().join("bad.snapkv");
    build("3", &bad).fails_with(&["--format-version", "3"]);
    assert!(!bad.exists());
}
