//! `snapkv diff` on snapshots built from NDJSON with a known set of changes.

use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Builds `name.snapkv` in `dir` from NDJSON lines.
fn build(dir: &Path, name: &str, lines: &[String], extra: &[&str]) -> PathBuf {
    let input = dir.join(format!("{name}.ndjson"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.join(format!("{name}.snapkv"));
    build_by_id(&input, &out, extra).ok();
    out
}

fn user(i: usize, score: usize, name: &str) -> String {
    format!("{{\"id\":\"user:{i:03}\",\"score\":{score},\"name\":\"{name}\"}}")
}

/// Old: users 0 to 99. New: users 0-4 removed, 100-109 added, the score of 10-29 and the
/// name of 25-34 changed (so 25 keys changed, 5 of them in both fields).
fn pair(dir: &Path, extra: &[&str]) -> (PathBuf, PathBuf) {
    let old: Vec<String> = (0..100).map(|i| user(i, i, &format!("n{i}"))).collect();
    let new: Vec<String> = (5..110)
        .map(|i| {
            let score = if (10..30).contains(&i) { i + 1000 } else { i };
            let name = if (25..35).contains(&i) {
                format!("renamed{i}")
            } else {
                format!("n{i}")
            };
            user(i, score, &name)
        })
        .collect();
    (
        build(dir, "old", &old, extra),
        build(dir, "new", &new, extra),
    )
}

fn diff_json(args: &[&str]) -> Value {
    let mut all = vec!["diff"];
    all.extend_from_slice(args);
    all.push("--json");
    let run = snapkv(&all, None).ok();
    serde_json::from_str(&run.stdout).unwrap()
}

#[test]
fn counts_examples_and_columns_are_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = pair(dir.path(), &[]);
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let d = diff_json(&[old, new]);
    assert_eq!(d["added"], 10);
    assert_eq!(d["removed"], 5);
    assert_eq!(d["changed"], 25);
    assert_eq!(d["unchanged"], 70);
    assert_eq!(d["changed_share"], json!(25.0 / 95.0));
    assert_eq!(d["old"]["keys"], 100);
    assert_eq!(d["new"]["keys"], 105);
    assert_eq!(d["old"]["source"], old);
    assert_eq!(d["schema"]["changed"], false);
    let keys = |kind: &str| -> Vec<String> {
        (d["examples"][kind].as_array().unwrap().iter())
            .map(|e| e["key"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        keys("added"),
        ["user:100", "user:101", "user:102", "user:103", "user:104"]
    );
    assert_eq!(
        keys("removed"),
        ["user:000", "user:001", "user:002", "user:003", "user:004"]
    );
    assert_eq!(
        keys("changed"),
        ["user:010", "user:011", "user:012", "user:013", "user:014"]
    );
    assert_eq!(
        d["examples"]["changed"][0],
        json!({"key": "user:010", "old": "{\"score\":10,\"name\":\"n10\"}",
               "new": "{\"score\":1010,\"name\":\"n10\"}"})
    );
    assert_eq!(
        d["examples"]["added"][0],
        json!({"key": "user:100", "new": "{\"score\":100,\"name\":\"n100\"}"})
    );
    assert_eq!(
        d["examples"]["removed"][0],
        json!({"key": "user:000", "old": "{\"score\":0,\"name\":\"n0\"}"})
    );
    assert_eq!(
        d["columns"],
        json!({"keys": 25, "one_in": 1, "not_objects": 0, "truncated": false, "fields": [
            {"name": "score", "changed": 20, "added": 0, "removed": 0},
            {"name": "name", "changed": 10, "added": 0, "removed": 0},
        ]})
    );
    let blocks = &d["blocks"];
    assert!(blocks["old"].as_u64().unwrap() >= 1, "{blocks}");

    // The other way round, added and removed swap.
    let r = diff_json(&[new, old]);
    assert_eq!(
        (r["added"].clone(), r["removed"].clone()),
        (json!(5), json!(10))
    );
    assert_eq!(r["changed"], 25);

    // No examples, a smaller sample: the keys whose hash starts with enough zero bits, the
    // same on every run.
    let s = diff_json(&[old, new, "--examples", "0", "--sample", "7"]);
    assert_eq!(
        s["examples"],
        json!({"added": [], "removed": [], "changed": []})
    );
    assert_eq!(s["changed"], 25);
    let c = &s["columns"];
    let (keys, one_in) = (c["keys"].as_u64().unwrap(), c["one_in"].as_u64().unwrap());
    assert!(
        (1..=7).contains(&keys) && one_in.is_power_of_two() && one_in > 1,
        "{c}"
    );
    let fields = c["fields"].as_array().unwrap();
    let changed = |i: usize| fields[i]["changed"].as_u64().unwrap();
    // Every sampled key changed in `score` (keys 10-29), `name` (25-34) or both (25-29).
    assert_eq!([&fields[0]["name"], &fields[1]["name"]], ["score", "name"]);
    assert!(
        changed(0) + changed(1) >= keys && changed(0) + changed(1) <= keys + 5,
        "{c}"
    );
    assert_eq!(
        diff_json(&[old, new, "--examples", "0", "--sample", "7"]),
        s
    );
    let off = diff_json(&[old, new, "--sample", "0"]);
    assert_eq!(off["columns"], Value::Null);
}

#[test]
fn the_text_report() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = pair(dir.path(), &["--dataset", "users", "--version", "v2"]);
    let run = snapkv(
        &[
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
            "--examples",
            "2",
        ],
        None,
    )
    .ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines[..2],
        [
            format!(
                "old           {} (dataset users, version v2, 100 keys)",
                old.display()
            ),
            format!(
                "new           {} (dataset users, version v2, 105 keys)",
                new.display()
            ),
        ]
    );
    let expected = "\
keys          10 added, 5 removed, 25 changed, 70 unchanged
changed       26.32% of the 95 keys in both
schema        unchanged
columns       25 changed keys compared (all)
  COLUMN   CHANGED    SHARE     ADDED   REMOVED
  score         20    80.0%         0         0
  name          10    40.0%         0         0
examples
  added    user:100  {\"score\":100,\"name\":\"n100\"}
  added    user:101  {\"score\":101,\"name\":\"n101\"}
  removed  user:000  {\"score\":0,\"name\":\"n0\"}
  removed  user:001  {\"score\":1,\"name\":\"n1\"}
  changed  user:010  score: 10 -> 1010
  changed  user:011  score: 11 -> 1011
";
    assert_eq!(lines[2..].join("\n") + "\n", expected, "{}", run.stdout);
}

#[test]
fn schema_changes_dropped_retyped_and_added_columns() {
    let dir = tempfile::tempdir().unwrap();
    let old: Vec<String> = (0..20)
        .map(|i| format!("{{\"id\":\"k{i:02}\",\"score\":{i},\"name\":\"n{i}\",\"gone\":\"g\"}}"))
        .collect();
    let new: Vec<String> = (0..20)
        .map(|i| {
            format!("{{\"id\":\"k{i:02}\",\"score\":\"{i}\",\"name\":\"n{i}\",\"extra\":1.5}}")
        })
        .collect();
    let (old, new) = (
        build(dir.path(), "old", &old, &[]),
        build(dir.path(), "new", &new, &[]),
    );
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let d = diff_json(&[old, new]);
    assert_eq!(
        (d["changed"].clone(), d["unchanged"].clone()),
        (json!(20), json!(0))
    );
    assert_eq!(
        d["schema"],
        json!({
            "changed": true,
            "added": [{"name": "extra", "type": "Float64", "nullable": true}],
            "removed": [{"name": "gone", "type": "Utf8", "nullable": true}],
            "retyped": [{"name": "score", "old": "Int64", "new": "Utf8"}],
            "nullability": [],
            "key_columns": null,
            "value_encoding": null,
            "incomparable": false,
        })
    );
    assert_eq!(
        d["columns"]["fields"],
        json!([
            {"name": "score", "changed": 20, "added": 0, "removed": 0},
            {"name": "name", "changed": 0, "added": 0, "removed": 0},
            {"name": "gone", "changed": 20, "added": 0, "removed": 20},
            {"name": "extra", "changed": 20, "added": 20, "removed": 0},
        ])
    );
    let run = snapkv(&["diff", old, new], None).ok();
    for line in [
        "schema        removed    gone (Utf8, nullable)",
        "              retyped    score: Int64 -> Utf8",
        "              added      extra (Float64, nullable)",
        "  changed  k00  score: 0 -> \"0\", gone: \"g\" -> (absent), extra: (absent) -> 1.5",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in\n{}", run.stdout);
    }

    // A raw value column: no column comparison; the encoding change is reported.
    let raw = build(
        dir.path(),
        "raw",
        &(0..20)
            .map(|i| format!("{{\"id\":\"k{i:02}\",\"name\":\"n{i}\"}}"))
            .collect::<Vec<_>>(),
        &["--raw-value", "name"],
    );
    let d = diff_json(&[old, raw.to_str().unwrap()]);
    assert_eq!(d["columns"], Value::Null);
    assert_eq!(
        d["schema"]["value_encoding"],
        json!({"old": "json", "new": "raw"})
    );
}

#[test]
fn help_has_examples() {
    let help = snapkv(&["diff", "--help"], None).ok().stdout;
    for part in [
        "Examples:",
        "snapkv diff yesterday.snapkv",
        "--store <URL>",
        "--dataset <NAME>",
    ] {
        assert!(help.contains(part), "{part:?} in {help}");
    }
}

#[test]
fn identical_files_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (old, _) = pair(dir.path(), &[]);
    let old = old.to_str().unwrap();
    let d = diff_json(&[old, old]);
    assert_eq!(
        [&d["added"], &d["removed"], &d["changed"], &d["unchanged"]],
        [&json!(0), &json!(0), &json!(0), &json!(100)]
    );
    // Every block is counted from the block table.
    assert_eq!(d["blocks"]["skipped"], d["blocks"]["old"]);
    assert_eq!(d["blocks"]["decoded_old"], 0);

    snapkv(&["diff", old, "/nonexistent.snapkv"], None)
        .fails_with(&["cannot open /nonexistent.snapkv"]);
    snapkv_with(
        &["diff", "v1", "v2"],
        None,
        &[("SNAPKV_STORE", "/tmp/store")],
    )
    .fails_with(&["give --dataset", "cannot open v1"]);
    snapkv(&["diff", "v1", "v2", "--dataset", "users"], None).fails_with(&["needs --store"]);
    let not = dir.path().join("not.snapkv");
    std::fs::write(&not, b"not a snapshot").unwrap();
    snapkv(&["diff", old, not.to_str().unwrap()], None).fails_with(&["not.snapkv"]);
}

#[test]
fn versions_of_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = pair(dir.path(), &[]);
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let (store, cache) = (store.to_str().unwrap(), cache.to_str().unwrap());
    for (file, version) in [(&old, "20261126T031500Z"), (&new, "20261127T031500Z")] {
        let args = [
            "publish",
            file.to_str().unwrap(),
            "--store",
            store,
            "--dataset",
            "users",
            "--version",
            version,
        ];
        snapkv(&args, None).ok();
    }
    let store_args = ["--store", store, "--dataset", "users", "--cache-dir", cache];
    let mut args = vec!["previous", "current"];
    args.extend_from_slice(&store_args);
    let d = diff_json(&args);
    assert_eq!(
        [&d["added"], &d["removed"], &d["changed"], &d["unchanged"]],
        [&json!(10), &json!(5), &json!(25), &json!(70)]
    );
    assert_eq!(d["old"]["source"], "20261126T031500Z");
    assert_eq!(d["new"]["source"], "20261127T031500Z");
    // Without --cache-dir the versions go to a temporary directory (never a reader's cache).
    let d = diff_json(&[
        "previous",
        "current",
        "--store",
        store,
        "--dataset",
        "users",
    ]);
    assert_eq!(
        [&d["added"], &d["removed"], &d["changed"], &d["unchanged"]],
        [&json!(10), &json!(5), &json!(25), &json!(70)]
    );
    // By label, the other way round, from the cache.
    let mut args = vec!["20261127T031500Z", "20261126T031500Z"];
    args.extend_from_slice(&store_args);
    let d = diff_json(&args);
    assert_eq!(
        (d["added"].clone(), d["removed"].clone()),
        (json!(5), json!(10))
    );

    let mut args = vec!["diff", "20261126T031500Z", "nope"];
    args.extend_from_slice(&store_args);
    snapkv(&args, None).fails_with(&["cannot fetch version nope of users"]);
    let mut args = vec![
        "diff",
        "previous",
        "current",
        "--store",
        store,
        "--dataset",
        "other",
    ];
    args.extend_from_slice(&["--cache-dir", cache]);
    snapkv(&args, None).fails_with(&["no dataset \"other\""]);
}
