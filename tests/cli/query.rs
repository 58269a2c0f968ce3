//! `snapkv query` on a built snapshot: the answer, NDJSON rows, the query from stdin, errors.

use crate::util::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// 60 titles keyed `COUNTRY/TITLE_ID` (20 per country) with a genre and views.
fn titles(dir: &Path) -> PathBuf {
    let mut text = String::new();
    for (c, country) in ["DE", "SE", "US"].iter().enumerate() {
        for i in 0..20 {
            let id = c * 20 + i;
            let genre = ["drama", "comedy"][id % 2];
            text.push_str(&format!(
                "{{\"country\":\"{country}\",\"title_id\":{id},\"genre\":\"{genre}\",\"views\":{}}}\n",
                id * 10
            ));
        }
    }
    let input = dir.join("titles.ndjson");
    std::fs::write(&input, text).unwrap();
    let out = dir.join("titles.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            input.to_str().unwrap(),
            "-k",
            "country,title_id",
            "-o",
            out.to_str().unwrap(),
            "-q",
        ],
        None,
    )
    .ok();
    out
}

#[test]
fn query_answers_and_refuses_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let file = titles(dir.path());
    let f = file.to_str().unwrap();
    let q = r#"{"prefix": "SE/", "filter": {"views": {">": 250}}, "group_by": ["genre"],
        "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"}},
        "order_by": [{"field": "total", "desc": true}], "limit": 10}"#;
    let answer: Value = serde_json::from_str(&snapkv(&["query", f, q], None).ok().stdout).unwrap();
    // SE: ids 20..40, views > 250: ids 26..40; drama even ids, comedy odd.
    let sum = |odd: usize| {
        (26..40)
            .filter(|i| i % 2 == odd)
            .map(|i| i * 10)
            .sum::<usize>()
    };
    assert_eq!(
        answer["rows"],
        json!([{"genre": "comedy", "total": sum(1), "n": 7}, {"genre": "drama", "total": sum(0), "n": 7}])
    );
    assert_eq!(answer["stats"]["rows_scanned"], 20);
    // NDJSON rows; the query from stdin; a key column as a number.
    let rows = snapkv(
        &["query", f, "-", "--ndjson"],
        Some(br#"{"filter": {"title_id": {"in": [3, 59]}}, "fields": ["views", "country"]}"#),
    )
    .ok()
    .stdout;
    assert_eq!(
        rows,
        "{\"country\":\"DE\",\"key\":\"DE/3\",\"views\":30}\n{\"country\":\"US\",\"key\":\"US/59\",\"views\":590}\n"
    );
    snapkv(&["query", f, r#"{"filter": {"view": {">": 1}}}"#], None)
        .fails_with(&["field \"view\": no such field", "views"]);
    snapkv(&["query", f, r#"{"filter": {"genre": {">": 1}}}"#], None)
        .fails_with(&["field \"genre\": holds text, compared with 1"]);
    snapkv(&["query", f, "{not json"], None).fails_with(&["not a query"]);
    snapkv(
        &[
            "query",
            f,
            r#"{"aggregates": {"n": {"count": "*"}}}"#,
            "--max-rows-scanned",
            "5",
        ],
        None,
    )
    .fails_with(&["max_rows_scanned (5 rows)"]);
}

#[test]
fn query_writes_arrow_to_a_pipe() {
    use arrow_array::cast::AsArray;
    let dir = tempfile::tempdir().unwrap();
    let file = titles(dir.path());
    let out = command(&[
        "query",
        file.to_str().unwrap(),
        r#"{"prefix": "US/", "fields": ["views", "genre"], "limit": 3}"#,
        "--arrow",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(out.stdout), None).unwrap();
    let batch = reader.next().unwrap().unwrap();
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["key", "views", "genre"]);
    let keys: Vec<&str> = batch
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(keys, ["US/40", "US/41", "US/42"]);
    let views = batch
        .column(1)
        .as_primitive::<arrow_array::types::Int64Type>();
    assert_eq!(views.values().to_vec(), [400, 410, 420]);
    snapkv(
        &["query", file.to_str().unwrap(), "{}", "--arrow", "--ndjson"],
        None,
    )
    .fails_with(&["--ndjson", "--arrow"]);
}
