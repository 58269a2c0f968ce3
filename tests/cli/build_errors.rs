//! Every way `snapkv build` refuses an input: exit code 2, a message naming what and where, and
//! nothing left behind.

use crate::util::*;
use arrow_array::{ArrayRef, BinaryArray, Float64Array, Int64Array, RecordBatch, StringArray};
use std::path::Path;
use std::sync::Arc;

/// Runs a build of `inputs` into `dir/out.snapkv` and checks that it failed with `parts` in the
/// message, leaving `dir` as it was.
#[track_caller]
fn fails(dir: &Path, args: &[&str], stdin: Option<&[u8]>, parts: &[&str]) {
    let before = files_under(dir);
    let out = dir.join("out.snapkv");
    let mut all = vec!["build", "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    snapkv(&all, stdin).fails_with(parts);
    assert_eq!(files_under(dir), before, "a failed build left files behind");
}

fn small_parquet(path: &Path) {
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from(vec![Some("a"), Some("b"), None])) as ArrayRef,
        ),
        ("score", Arc::new(Float64Array::from(vec![1.0, 2.0, 3.0]))),
        ("n", Arc::new(Int64Array::from(vec![1, 2, 3]))),
    ])
    .unwrap();
    write_parquet(path, &[batch]);
}

#[test]
fn column_errors() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.parquet");
    small_parquet(&input);
    let i = input.to_str().unwrap();
    fails(
        dir.path(),
        &["-i", i, "-k", "user"],
        None,
        &[
            "unknown key column \"user\"",
            "t.parquet",
            "its columns: id, score, n",
        ],
    );
    fails(
        dir.path(),
        &["-i", i, "-k", "n", "--value-columns", "score,nope"],
        None,
        &["unknown value column \"nope\"", "id, score, n"],
    );
    fails(
        dir.path(),
        &["-i", i, "-k", "n", "--raw-value", "missing"],
        None,
        &["unknown raw value column \"missing\""],
    );
    fails(
        dir.path(),
        &["-i", i, "-k", "score"],
        None,
        &[
            "key column \"score\" has type Float64",
            "strings, binary, integers, dates",
        ],
    );
    fails(
        dir.path(),
        &["-i", i, "-k", "n", "--raw-value", "score"],
        None,
        &["raw value column \"score\" has type Float64"],
    );
    fails(
        dir.path(),
        &["-i", i, "-k", "id"],
        None,
        &["t.parquet row 3: key column \"id\" is null"],
    );
}

#[test]
fn key_and_value_errors() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("k.csv");
    std::fs::write(&csv, "id,v\nx,1\ny,2\nx,3\n").unwrap();
    let c = csv.to_str().unwrap();
    fails(
        dir.path(),
        &["-i", c, "-k", "id"],
        None,
        &[
            "duplicate key \"x\": in",
            "k.csv row 1 and in",
            "k.csv row 3",
            "--on-duplicate first or last",
        ],
    );

    let long = dir.path().join("long.csv");
    std::fs::write(&long, format!("id,v\nok,1\n{},2\n", "k".repeat(5000))).unwrap();
    fails(
        dir.path(),
        &["-i", long.to_str().unwrap(), "-k", "id"],
        None,
        &["long.csv row 2: key of 5000 bytes exceeds the limit of 4096 bytes"],
    );

    // An empty string key from a binary column (CSV reads empty fields as null).
    let empty = dir.path().join("empty-key.arrow");
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(BinaryArray::from_vec(vec![b"a", b""])) as ArrayRef,
        ),
        ("v", Arc::new(Int64Array::from(vec![1, 2]))),
    ])
    .unwrap();
    write_ipc_file(&empty, &[batch]);
    fails(
        dir.path(),
        &["-i", empty.to_str().unwrap(), "-k", "id"],
        None,
        &["empty-key.arrow row 2: the key is empty"],
    );

    let big = dir.path().join("big.arrow");
    let huge = vec![b'x'; (64 << 20) + 1];
    let batch = RecordBatch::try_from_iter(vec![
        (
            "id",
            Arc::new(StringArray::from(vec!["small", "huge"])) as ArrayRef,
        ),
        (
            "blob",
            Arc::new(BinaryArray::from_vec(vec![&b"ok"[..], &huge[..]])),
        ),
    ])
    .unwrap();
    write_ipc_file(&big, &[batch]);
    fails(
        dir.path(),
        &[
            "-i",
            big.to_str().unwrap(),
            "-k",
            "id",
            "--raw-value",
            "blob",
        ],
        None,
        &["big.arrow row 2: value of 67108865 bytes exceeds the limit of 67108864 bytes"],
    );
}

#[test]
fn malformed_text_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("ragged.csv");
    std::fs::write(&csv, "id,v\na,1\nb,2,extra\n").unwrap();
    fails(
        dir.path(),
        &["-i", csv.to_str().unwrap(), "-k", "id"],
        None,
        &["ragged.csv", "line 3"],
    );

    let latin1 = dir.path().join("latin1.csv");
    std::fs::write(&latin1, b"id,name\na,ok\nb,Z\xfcrich\n").unwrap();
    fails(
        dir.path(),
        &["-i", latin1.to_str().unwrap(), "-k", "id"],
        None,
        &["latin1.csv", "not valid UTF-8", "line 3"],
    );

    let json = dir.path().join("bad.ndjson");
    std::fs::write(
        &json,
        "{\"id\":\"a\",\"v\":1}\n\n{\"id\":\"b\",\"v\":2\n{\"id\":\"c\"}\n",
    )
    .unwrap();
    fails(
        dir.path(),
        &["-i", json.to_str().unwrap(), "-k", "id"],
        None,
        &["bad.ndjson line 3"],
    );

    // Past the rows the schema is inferred from, a malformed line is still named.
    let mut text = String::new();
    for i in 0..12_000 {
        text.push_str(&format!("{{\"id\":\"k{i}\",\"v\":{i}}}\n"));
    }
    text.push_str("{\"id\":\"x\",\"v\":}\n");
    let late = dir.path().join("late.jsonl");
    std::fs::write(&late, &text).unwrap();
    fails(
        dir.path(),
        &["-i", late.to_str().unwrap(), "-k", "id"],
        None,
        &["late.jsonl line 12001"],
    );

    let typed = dir.path().join("typed.jsonl");
    let mut text = String::new();
    for i in 0..10_050 {
        text.push_str(&format!("{{\"id\":\"k{i}\",\"v\":{i}}}\n"));
    }
    text.push_str("{\"id\":\"x\",\"v\":{\"nested\":true}}\n");
    std::fs::write(&typed, &text).unwrap();
    fails(
        dir.path(),
        &["-i", typed.to_str().unwrap(), "-k", "id"],
        None,
        &["typed.jsonl line 10051"],
    );

    let bad_utf8 = dir.path().join("bytes.ndjson");
    std::fs::write(&bad_utf8, b"{\"id\":\"a\"}\n{\"id\":\"\xff\"}\n").unwrap();
    fails(
        dir.path(),
        &["-i", bad_utf8.to_str().unwrap(), "-k", "id"],
        None,
        &["bytes.ndjson", "line 2", "not valid UTF-8"],
    );

    fails(
        dir.path(),
        &["-i", "-", "--format", "ndjson", "-k", "id"],
        Some(b"{\"id\":\"a\"}\n[1,2]\n"),
        &["<stdin> line 2: not a JSON object"],
    );
}

#[test]
fn unreadable_and_empty_inputs() {
    let dir = tempfile::tempdir().unwrap();
    fails(
        dir.path(),
        &["-i", "/nonexistent/data.parquet", "-k", "id"],
        None,
        &["no input matches \"/nonexistent/data.parquet\""],
    );
    let pattern = format!("{}/*.parquet", dir.path().display());
    fails(
        dir.path(),
        &["-i", &pattern, "-k", "id"],
        None,
        &["no input matches"],
    );

    let not_parquet = dir.path().join("fake.parquet");
    std::fs::write(&not_parquet, b"this is not parquet at all").unwrap();
    fails(
        dir.path(),
        &["-i", not_parquet.to_str().unwrap(), "-k", "id"],
        None,
        &["fake.parquet: "],
    );

    let empty = dir.path().join("empty.csv");
    std::fs::write(&empty, b"").unwrap();
    fails(
        dir.path(),
        &["-i", empty.to_str().unwrap(), "-k", "id"],
        None,
        &["empty.csv is empty (0 bytes)"],
    );

    let header_only = dir.path().join("header.csv");
    std::fs::write(&header_only, b"id,v\n").unwrap();
    fails(
        dir.path(),
        &["-i", header_only.to_str().unwrap(), "-k", "id"],
        None,
        &["the input has no rows"],
    );

    let unknown = dir.path().join("data.bin");
    std::fs::write(&unknown, b"\x00\x01\x02\x03").unwrap();
    fails(
        dir.path(),
        &["-i", unknown.to_str().unwrap(), "-k", "id"],
        None,
        &["cannot tell the format of", "data.bin", "--format"],
    );

    let only_markers = dir.path().join("job");
    std::fs::create_dir(&only_markers).unwrap();
    std::fs::write(only_markers.join("_SUCCESS"), b"").unwrap();
    fails(
        dir.path(),
        &["-i", only_markers.to_str().unwrap(), "-k", "id"],
        None,
        &["contains no data files"],
    );

    fails(
        dir.path(),
        &["-i", "-", "-k", "id"],
        Some(b"id\na\n"),
        &["stdin (-) needs --format"],
    );
}

#[test]
fn partition_errors() {
    let dir = tempfile::tempdir().unwrap();
    let job = dir.path().join("job");
    small_parquet(&job.join("day=1/part-0.parquet"));
    small_parquet(&job.join("part-1.parquet"));
    fails(
        dir.path(),
        &["-i", job.to_str().unwrap(), "-k", "n"],
        None,
        &["inconsistent partition folders"],
    );
    let job2 = dir.path().join("job2");
    small_parquet(&job2.join("n=1/part-0.parquet"));
    fails(
        dir.path(),
        &["-i", job2.to_str().unwrap(), "-k", "score"],
        None,
        &["column \"n\" is both a partition folder"],
    );
}

#[test]
fn output_not_writable() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("t.csv");
    std::fs::write(&input, "id,v\na,1\n").unwrap();
    let i = input.to_str().unwrap();
    let missing = dir.path().join("no/such/dir/out.snapkv");
    snapkv(
        &[
            "build",
            "-i",
            i,
            "-k",
            "id",
            "-o",
            missing.to_str().unwrap(),
        ],
        None,
    )
    .fails_with(&["cannot write the output", "no/such/dir/out.snapkv"]);
    snapkv(
        &[
            "build",
            "-i",
            i,
            "-k",
            "id",
            "-o",
            dir.path().to_str().unwrap(),
        ],
        None,
    )
    .fails_with(&["cannot write the output", "directory"]);
    snapkv(
        &[
            "build",
            "-i",
            i,
            "-k",
            "id",
            "-o",
            dir.path().join("x.snapkv").to_str().unwrap(),
            "--memory-limit",
            "1MiB",
        ],
        None,
    )
    .fails_with(&["memory limit"]);
    assert_only(dir.path(), &["t.csv"]);
}

#[test]
fn a_failed_build_keeps_the_previous_output_and_its_temp_files_go() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.csv");
    let mut text = String::from("id,v\n");
    for i in 0..40_000 {
        text.push_str(&format!("key{i:06},{}\n", "x".repeat(100)));
    }
    std::fs::write(&good, &text).unwrap();
    // The same rows and then a duplicate: found only when the spilled runs are merged.
    let bad = dir.path().join("bad.csv");
    text.push_str("key000007,again\n");
    std::fs::write(&bad, &text).unwrap();
    let out = dir.path().join("out.snapkv");
    let o = out.to_str().unwrap();
    snapkv(
        &["build", "-i", good.to_str().unwrap(), "-k", "id", "-o", o],
        None,
    )
    .ok();
    let before = std::fs::read(&out).unwrap();
    snapkv(
        &[
            "build",
            "-i",
            bad.to_str().unwrap(),
            "-k",
            "id",
            "-o",
            o,
            "--memory-limit",
            "4MiB",
        ],
        None,
    )
    .fails_with(&[
        "duplicate key \"key000007\"",
        "bad.csv row 8 and in",
        "bad.csv row 40001",
    ]);
    assert!(std::fs::read(&out).unwrap() == before);
    assert_only(dir.path(), &["bad.csv", "good.csv", "out.snapkv"]);
}

#[test]
fn the_first_error_in_input_order_is_reported_whatever_the_threads() {
    let dir = tempfile::tempdir().unwrap();
    // Many batches: a null key in a late one, then a malformed second input that the reader
    // reaches while the first input's batches are still being made into pairs.
    let mut text = String::from("id,v\n");
    for i in 1..=30_000 {
        let id = if i == 20_000 {
            String::new()
        } else {
            format!("k{i:06}")
        };
        text.push_str(&format!("{id},{}\n", "x".repeat(50)));
    }
    std::fs::write(dir.path().join("a.csv"), &text).unwrap();
    std::fs::write(dir.path().join("b.csv"), "id,v\nz,1\nz,2,3\n").unwrap();
    let (a, b) = (dir.path().join("a.csv"), dir.path().join("b.csv"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    for threads in ["1", "2", "4"] {
        let args = ["-i", a, "-i", b, "-k", "id", "--threads", threads];
        fails(
            dir.path(),
            &args,
            None,
            &["a.csv row 20000: key column \"id\" is null"],
        );
        let args = ["-i", b, "-i", a, "-k", "id", "--threads", threads];
        fails(dir.path(), &args, None, &["b.csv"]);
    }
}

#[test]
fn ctrl_c_removes_temporary_files() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (child, mut stdin) = csv_from_pipe(dir.path(), &["--memory-limit", "4MiB"]);
    stdin.write_all(b"id,v\n").unwrap();
    let mut i = 0u64;
    // Feed rows until the build has spilled a run.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let mut chunk = String::new();
        for _ in 0..10_000 {
            chunk.push_str(&format!("k{i:09},{}\n", "v".repeat(100)));
            i += 1;
        }
        stdin.write_all(chunk.as_bytes()).unwrap();
        let spilled = files_under(dir.path())
            .iter()
            .any(|f| f.contains(".snapkv-build-") && f.contains("run-"));
        if spilled {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no run was spilled");
    }
    signal(&child, "-INT");
    // The build notices the interrupt at its next batch: give it one.
    let _ = stdin.write_all(b"k999999999,last\n");
    drop(stdin);
    stopped_and_cleaned_up(child, dir.path());
}

/// Waits for `child`, a build, to exit 130 saying it was interrupted, with nothing left in
/// `dir`.
fn stopped_and_cleaned_up(child: std::process::Child, dir: &Path) {
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert_only(dir, &[]);
}

/// Starts a build of `dir/out.snapkv` reading CSV from a pipe, with `extra` arguments.
fn csv_from_pipe(dir: &Path, extra: &[&str]) -> (std::process::Child, std::process::ChildStdin) {
    let out = dir.join("out.snapkv");
    let mut args = vec![
        "build",
        "-i",
        "-",
        "--format",
        "csv",
        "-k",
        "id",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(extra);
    let mut child = command(&args)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdin = child.stdin.take().unwrap();
    (child, stdin)
}

/// Starts a build reading CSV from a pipe, and waits until it has created its temporary
/// output: it is then inferring the schema from the rows it is given.
fn build_from_pipe(dir: &Path) -> (std::process::Child, std::process::ChildStdin) {
    use std::io::Write;
    let (child, mut stdin) = csv_from_pipe(dir, &[]);
    stdin.write_all(b"id,v\nk1,1\n").unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while files_under(dir).is_empty() {
        assert!(std::time::Instant::now() < deadline, "no temporary output");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    (child, stdin)
}

/// Sends `child` the signal `flag` (`-INT`, `-TERM`).
fn signal(child: &std::process::Child, flag: &str) {
    let status = std::process::Command::new("kill")
        .args([flag, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn sigterm_while_the_schema_is_inferred_stops_the_build() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, mut stdin) = build_from_pipe(dir.path());
    signal(&child, "-TERM");
    // The build is still sampling rows (fewer than it infers from): it stops at its next
    // read, so keep giving it rows until it has exited.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the build went on");
        let _ = stdin.write_all(b"k2,2\n");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(stdin);
    stopped_and_cleaned_up(child, dir.path());
}

#[test]
fn a_second_sigterm_exits_at_once_and_still_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, stdin) = build_from_pipe(dir.path());
    // Blocked reading the pipe, the build cannot notice the first signal: the second one
    // ends it.
    signal(&child, "-TERM");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "the build went on");
        signal(&child, "-TERM");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(child.wait().unwrap().code(), Some(130));
    drop(stdin);
    assert_only(dir.path(), &[]);
}
