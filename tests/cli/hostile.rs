//! Inputs that used to build wrong, crash or hang, each through the real binary: the build
//! refuses them with exit code 2 and a message naming the file (and line or column), leaving
//! nothing behind; what does build holds exactly the input's values.

use crate::util::*;
use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A build of `args` into `dir/out.snapkv` fails with `parts` in its message and leaves `dir`
/// as it was.
#[track_caller]
fn refused(dir: &Path, args: &[&str], parts: &[&str]) {
    let before = files_under(dir);
    let out = dir.join("out.snapkv");
    let mut all = vec!["build", "-q", "-o", out.to_str().unwrap()];
    all.extend_from_slice(args);
    snapkv(&all, None).fails_with(parts);
    assert_eq!(files_under(dir), before, "a failed build left files behind");
}

/// Builds `input` with `args` into `out`, and opens the snapshot.
#[track_caller]
fn built(out: &Path, input: &Path, args: &[&str]) -> snapkv_format::Snapshot {
    let mut all = vec![
        "build",
        "-q",
        "-i",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ];
    all.extend_from_slice(args);
    snapkv(&all, None).ok();
    open(out)
}

/// 10,005 NDJSON lines `{"k": "aN", "v": N}`, then `last`: past the lines read to infer the
/// schema.
fn ndjson_ending_with(path: &Path, last: &str) {
    let mut text = String::new();
    for i in 0..10_005 {
        text.push_str(&format!("{{\"k\":\"a{i}\",\"v\":{i}}}\n"));
    }
    text.push_str(last);
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

#[test]
fn columns_named_twice_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("dup.csv");
    std::fs::write(&csv, "k,v,v\na,1,2\n").unwrap();
    refused(
        dir.path(),
        &["-i", csv.to_str().unwrap(), "-k", "k"],
        &["dup.csv", "the column \"v\" appears more than once"],
    );
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Int64, false),
            Field::new("v", DataType::Int64, false),
        ])),
        vec![
            Arc::new(StringArray::from(vec!["a"])) as ArrayRef,
            Arc::new(Int64Array::from(vec![1])),
            Arc::new(Int64Array::from(vec![2])),
        ],
    )
    .unwrap();
    let parquet = dir.path().join("in").join("dup.parquet");
    write_parquet(&parquet, &[batch]);
    refused(
        dir.path(),
        &["-i", parquet.to_str().unwrap(), "-k", "k"],
        &["dup.parquet", "the column \"v\" appears more than once"],
    );
}

#[test]
fn an_unterminated_csv_quote_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("q.csv");
    std::fs::write(&csv, "k,v\na,1\nb,\"never closed\nc,3\nd,4\n").unwrap();
    refused(
        dir.path(),
        &["-i", csv.to_str().unwrap(), "-k", "k"],
        &[
            "q.csv",
            "the quoted field that starts on line 3 is never closed",
        ],
    );
    // Doubled quotes inside a quoted field, and a quote inside an unquoted one, are text.
    std::fs::write(&csv, "k,v\na,\"say \"\"hi\"\"\"\nb,5\"\n").unwrap();
    let s = built(&dir.path().join("ok.snapkv"), &csv, &["-k", "k"]);
    assert_eq!(json_value(&s, "a")["v"], "say \"hi\"");
    assert_eq!(json_value(&s, "b")["v"], "5\"");
}

#[test]
fn every_ndjson_line_is_checked_as_the_first_ones_are() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.ndjson");
    ndjson_ending_with(&input, r#"{"k":"b",,}"#);
    refused(
        dir.path(),
        &["-i", input.to_str().unwrap(), "-k", "k"],
        &["in.ndjson line 10006"],
    );
    // Nesting far past any value's depth overflowed the stack of a reading thread.
    let deep = format!(
        "{{\"k\":\"z\",\"v\":{}{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    ndjson_ending_with(&input, &deep);
    refused(
        dir.path(),
        &["-i", input.to_str().unwrap(), "-k", "k"],
        &["in.ndjson line 10006", "nested more than 128 levels deep"],
    );
}

#[test]
fn an_arrow_stream_cut_between_messages_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let batch = |keys: Vec<&str>, values: Vec<i64>| {
        RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
            ("v", Arc::new(Int64Array::from(values)) as ArrayRef),
        ])
        .unwrap()
    };
    let full = dir.path().join("full.arrows");
    write_ipc_stream(
        &full,
        &[batch(vec!["a", "b"], vec![1, 2]), batch(vec!["c"], vec![3])],
    );
    let s = built(
        &dir.path().join("full.snapkv"),
        &full,
        &["--format", "arrow", "-k", "k"],
    );
    assert_eq!(s.len(), 3);
    assert_eq!(json_value(&s, "c")["v"], 3);
    // Without its end-of-stream marker (the last 8 bytes), the last batch is missing and
    // nothing in the bytes says so but the marker's absence.
    let bytes = std::fs::read(&full).unwrap();
    assert_eq!(
        bytes[bytes.len() - 8..],
        [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]
    );
    let cut = dir.path().join("cut.arrows");
    std::fs::write(&cut, &bytes[..bytes.len() - 8]).unwrap();
    refused(
        dir.path(),
        &["-i", cut.to_str().unwrap(), "--format", "arrow", "-k", "k"],
        &[
            "cut.arrows",
            "the stream ends without its end-of-stream marker",
        ],
    );
}

#[test]
fn a_snapshot_that_would_not_read_back_is_not_written() {
    let dir = tempfile::tempdir().unwrap();
    // A struct 45 levels deep: its schema, in the metadata, nests past what readers parse.
    let mut values: ArrayRef = Arc::new(Int64Array::from(vec![1, 2]));
    for _ in 0..45 {
        let field = Arc::new(Field::new("s", values.data_type().clone(), true));
        values = Arc::new(StructArray::from(vec![(field, values)]));
    }
    let batch = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        ("v", values),
    ])
    .unwrap();
    let input = dir.path().join("in").join("deep.parquet");
    write_parquet(&input, &[batch]);
    // The output of an earlier build stays as it was.
    let out = dir.path().join("out.snapkv");
    std::fs::write(&out, b"the previous output").unwrap();
    refused(
        dir.path(),
        &["-i", input.to_str().unwrap(), "-k", "k"],
        &["the snapshot written for", "does not read back", "metadata"],
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the previous output");
}

/// Runs `snapkv ARGS`, failing the test if it has not exited within 20 s.
#[track_caller]
fn exits_soon(args: &[&str]) -> std::process::Output {
    let mut child = command(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("snapkv {args:?} did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn commands_refuse_paths_that_are_not_files() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let fifo = fifo.to_str().unwrap();
    let d = dir.path().to_str().unwrap();
    for (path, what) in [(fifo, "is a FIFO"), (d, "is a directory")] {
        for args in [
            vec!["inspect", path],
            vec!["verify", path],
            vec!["get", path, "k"],
            vec!["scan", path],
        ] {
            let out = exits_soon(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.contains(what) && stderr.contains("not a snapshot file"),
                "{args:?}: {stderr}"
            );
        }
    }
}

/// Damaged files (in `tests/data/hostile`) that panicked a decoder or had it allocate what
/// their bytes claimed: each is refused with a message naming it, in a directory left as it
/// was.
#[test]
fn a_snapshot_truncated_while_scanned_fails_with_a_message() {
    use std::io::{BufRead, Read};
    let dir = tempfile::tempdir().unwrap();
    // 20,000 rows of 1 KB that do not compress much: a file of megabytes, read block by block.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut text = String::from("k,v\n");
    for i in 0..20_000 {
        text.push_str(&format!("k{i:06},"));
        for _ in 0..64 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            text.push_str(&format!("{:016x}", state));
        }
        text.push('\n');
    }
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, text).unwrap();
    let snap = dir.path().join("big.snapkv");
    built(&snap, &csv, &["-k", "k"]);
    assert!(std::fs::metadata(&snap).unwrap().len() > 4 << 20);

    let mut child = command(&["scan", snap.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains("k000000"), "{first}");
    // The scan waits on the pipe, its next blocks unread: cut the file under it.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&snap)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a memory-mapped snapshot file shrank or could not be read while in use"),
        "{stderr}"
    );
}

#[test]
fn scan_prints_values_as_stored() {
    let dir = tempfile::tempdir().unwrap();
    let d = arrow_array::Decimal128Array::from(vec![12_345_678_901_234_567_890_123_456_789i128])
        .with_precision_and_scale(38, 9)
        .unwrap();
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
        ("z", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ("d", Arc::new(d) as ArrayRef),
    ])
    .unwrap();
    let input = dir.path().join("in.parquet");
    write_parquet(&input, &[batch]);
    let out = dir.path().join("out.snapkv");
    built(&out, &input, &["-k", "k"]);
    // Every digit, and the columns' order (not the alphabetical order a re-encoding gives).
    let run = snapkv(&["scan", out.to_str().unwrap()], None).ok();
    assert_eq!(
        run.stdout,
        "{\"key\":\"a\",\"value\":{\"z\":1,\"d\":12345678901234567890.123456789}}\n"
    );
}

#[test]
fn damaged_files_fail_with_a_message() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let cases: [(&str, &[&str]); 7] = [
        // A list length given the type code of an i64: the decoder reads the bytes as a list
        // header (2^31 schema elements) whatever type they claim.
        (
            "footer-field-type.parquet",
            &["the footer's metadata is damaged: field 2 of FileMetaData has type code 6"],
        ),
        (
            "decimal-precision-0.arrows",
            &[
                "the column \"price\" has a type that is not valid",
                "precision cannot be 0",
            ],
        ),
        (
            "arrow-schema-flip.parquet",
            &["the file is damaged: its decoder failed on it"],
        ),
        (
            "negative-column.parquet",
            &["the file is damaged: its decoder failed on it"],
        ),
        (
            "huge-body.arrows",
            &["says its body is 47569271064101368 bytes, more than 4488"],
        ),
        (
            "huge-metadata.arrows",
            &["says its metadata is 2147483647 bytes"],
        ),
        (
            "huge-block.arrow",
            &[
                "block 2 of the footer",
                "does not fit in the file of 5026 bytes",
            ],
        ),
    ];
    for (name, parts) in cases {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join(name);
        std::fs::copy(fixtures.join(name), &input).unwrap();
        let format = if name.ends_with(".parquet") {
            "parquet"
        } else {
            "arrow"
        };
        let mut expected = vec![name];
        expected.extend_from_slice(parts);
        refused(
            dir.path(),
            &[
                "-i",
                input.to_str().unwrap(),
                "--format",
                format,
                "-k",
                "id",
            ],
            &expected,
        );
    }
    // From a pipe the size is not known: the memory limit bounds what a message may claim.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.snapkv");
    snapkv(
        &[
            "build",
            "-q",
            "-i",
            "-",
            "--format",
            "arrow",
            "-k",
            "id",
            "--memory-limit",
            "64MiB",
            "-o",
            out.to_str().unwrap(),
        ],
        Some(b"\xff\xff\xff\xff\xff\xff\xff\x7f"),
    )
    .fails_with(&[
        "<stdin>",
        "says its metadata is 2147483647 bytes, more than 67108864",
    ]);
    assert!(files_under(dir.path()).is_empty());
}

#[test]
fn parquet_page_checksums_are_checked() {
    // Two files written with page checksums (key column `v`, values 1001..1003); in the second
    // one byte of a data page changes 1002 into 1009 and its checksum no longer matches.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("page-checksum.parquet");
    std::fs::copy(fixtures.join("page-checksum.parquet"), &good).unwrap();
    let s = built(&dir.path().join("ok.snapkv"), &good, &["-k", "v"]);
    let keys: Vec<String> = s
        .iter()
        .map(|e| String::from_utf8(e.unwrap().0.to_vec()).unwrap())
        .collect();
    assert_eq!(keys, ["1001", "1002", "1003"]);
    assert_eq!(json_value(&s, "1002")["k"], "b");

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("page-checksum-mismatch.parquet");
    std::fs::copy(fixtures.join("page-checksum-mismatch.parquet"), &bad).unwrap();
    refused(
        dir.path(),
        &["-i", bad.to_str().unwrap(), "-k", "v"],
        &[
            "page-checksum-mismatch.parquet",
            "Page CRC checksum mismatch",
        ],
    );
}

#[test]
fn parquet_pages_cannot_claim_more_memory_than_the_limit() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("big-page.parquet");
    let big = "x".repeat(2 << 20);
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        (
            "v",
            Arc::new(StringArray::from(vec![big.as_str(), "small"])) as ArrayRef,
        ),
    ])
    .unwrap();
    write_parquet(&good, &[batch]);
    // A 2 MiB page decompresses within a quarter of a 64 MiB limit and builds exactly.
    let s = built(
        &dir.path().join("ok.snapkv"),
        &good,
        &["-k", "k", "--memory-limit", "64MiB"],
    );
    assert_eq!(json_value(&s, "a")["v"], big.as_str());

    // The first page of `v` now says it decompresses to 134,217,727 bytes: its header's
    // `uncompressed_page_size` (field 2, right after the page type) is a 4-byte varint.
    let mut bytes = std::fs::read(&good).unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&good).unwrap()).unwrap();
    let column = reader.metadata().row_group(0).column(1);
    let at = column
        .dictionary_page_offset()
        .unwrap_or(column.data_page_offset()) as usize;
    assert_eq!((bytes[at], bytes[at + 2]), (0x15, 0x15), "a page header");
    assert!(bytes[at + 3..at + 6].iter().all(|b| b & 0x80 != 0) && bytes[at + 6] < 0x80);
    bytes[at + 3..at + 7].copy_from_slice(&[0xfe, 0xff, 0xff, 0x7f]);
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("claims-128mib.parquet");
    std::fs::write(&bad, &bytes).unwrap();
    refused(
        dir.path(),
        &[
            "-i",
            bad.to_str().unwrap(),
            "-k",
            "k",
            "--memory-limit",
            "64MiB",
        ],
        &[
            "claims-128mib.parquet",
            &format!("the page at byte {at} says it decompresses to 134217727 bytes"),
            "more than a quarter of the memory limit (16777216 bytes)",
        ],
    );
}

#[test]
fn lines_longer_than_a_quarter_of_the_memory_limit_are_refused() {
    let limit = ["--memory-limit", "64MiB"];
    let long = "y".repeat(17 << 20);
    let dir = tempfile::tempdir().unwrap();
    // NDJSON: the third line, within the lines read to infer the schema.
    let ndjson = dir.path().join("in.ndjson");
    std::fs::write(
        &ndjson,
        format!("{{\"k\":\"a\",\"v\":\"1\"}}\n{{\"k\":\"b\",\"v\":\"2\"}}\n{{\"k\":\"c\",\"v\":\"{long}\"}}\n"),
    )
    .unwrap();
    let mut args = vec!["-i", ndjson.to_str().unwrap(), "-k", "k"];
    args.extend_from_slice(&limit);
    refused(
        dir.path(),
        &args,
        &[
            "in.ndjson",
            "line 3",
            "the line is longer than 16777216 bytes",
        ],
    );
    // NDJSON past the inference sample.
    let dir = tempfile::tempdir().unwrap();
    let late = dir.path().join("late.ndjson");
    ndjson_ending_with(&late, &format!("{{\"k\":\"z\",\"v\":\"{long}\"}}"));
    let mut args = vec!["-i", late.to_str().unwrap(), "-k", "k"];
    args.extend_from_slice(&limit);
    refused(
        dir.path(),
        &args,
        &["late.ndjson", "line 10006", "the line is longer than"],
    );
    // CSV: a header line, and a record whose quoted value spans many short lines.
    let dir = tempfile::tempdir().unwrap();
    let header = dir.path().join("header.csv");
    let columns: Vec<String> = (0..2_000_000).map(|i| format!("column{i}")).collect();
    std::fs::write(&header, format!("k,{}\na,1\n", columns.join(","))).unwrap();
    let mut args = vec!["-i", header.to_str().unwrap(), "-k", "k"];
    args.extend_from_slice(&limit);
    refused(
        dir.path(),
        &args,
        &["header.csv", "line 1", "the line is longer than"],
    );
    let dir = tempfile::tempdir().unwrap();
    let quoted = dir.path().join("quoted.csv");
    let lines = "0123456789abcdef\n".repeat(1 << 20);
    std::fs::write(&quoted, format!("k,v\na,1\nb,\"{lines}\"\nc,3\n")).unwrap();
    let mut args = vec!["-i", quoted.to_str().unwrap(), "-k", "k"];
    args.extend_from_slice(&limit);
    refused(
        dir.path(),
        &args,
        &[
            "quoted.csv",
            "the record that starts on line 3 is longer than 16777216 bytes",
        ],
    );
    // The same record builds exactly with room for it.
    let s = built(
        &dir.path().join("ok.snapkv"),
        &quoted,
        &["-k", "k", "--memory-limit", "128MiB"],
    );
    assert_eq!(json_value(&s, "b")["v"], lines.as_str());
    assert_eq!(json_value(&s, "c")["v"], "3");
}

#[test]
fn wide_and_long_rows_build_in_batches_of_bounded_size() {
    let dir = tempfile::tempdir().unwrap();
    // 20,000 columns: the decoder would set aside 8 bytes per field of an 8,192-row batch.
    let csv = dir.path().join("wide.csv");
    let columns: Vec<String> = (0..20_000).map(|i| format!("c{i}")).collect();
    let mut text = format!("k,{}\n", columns.join(","));
    for r in 0..50 {
        let row: Vec<String> = (0..20_000).map(|i| (r * i % 7).to_string()).collect();
        text.push_str(&format!("r{r:02},{}\n", row.join(",")));
    }
    std::fs::write(&csv, text).unwrap();
    let s = built(
        &dir.path().join("wide.snapkv"),
        &csv,
        &[
            "-k",
            "k",
            "--value-columns",
            "c19999,c3",
            "--memory-limit",
            "32MiB",
        ],
    );
    assert_eq!(s.len(), 50);
    assert_eq!(
        json_value(&s, "r49"),
        json!({"c19999": 49 * 19999 % 7, "c3": 49 * 3 % 7})
    );
    // Rows of 1 MiB strings from Parquet and Arrow IPC (one 40 MiB page), in batches of 8 MiB
    // at this limit.
    let big: Vec<String> = (0..40)
        .map(|i| format!("{i:02}").repeat(512 << 10))
        .collect();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    let batch = RecordBatch::try_from_iter([
        ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
        ("v", Arc::new(StringArray::from(big.clone())) as ArrayRef),
    ])
    .unwrap();
    let parquet = dir.path().join("long.parquet");
    write_parquet(&parquet, std::slice::from_ref(&batch));
    let ipc = dir.path().join("long.arrow");
    write_ipc_file(&ipc, &[batch]);
    for input in [&parquet, &ipc] {
        let s = built(
            &dir.path().join("long.snapkv"),
            input,
            &["-k", "k", "--memory-limit", "256MiB"],
        );
        assert_eq!(s.len(), 40);
        assert_eq!(json_value(&s, "k39")["v"], big[39].as_str());
    }
}

#[test]
fn a_dictionary_page_cannot_claim_more_values_than_bytes() {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("dict.parquet");
    let batch = RecordBatch::try_from_iter([(
        "k",
        Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
    )])
    .unwrap();
    write_parquet(&input, &[batch]);
    let mut bytes = std::fs::read(&input).unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(&input).unwrap()).unwrap();
    let at = reader
        .metadata()
        .row_group(0)
        .column(0)
        .dictionary_page_offset()
        .expect("a dictionary page") as usize;
    // Its header's DictionaryPageHeader (field 7) starts with num_values (2, a one-byte
    // varint): make it 63.
    let field = (at..at + 16)
        .find(|&i| bytes[i] == 0x4c && bytes[i + 1] == 0x15)
        .expect("the dictionary page header");
    assert_eq!(bytes[field + 2], 0x04, "num_values 2");
    bytes[field + 2] = 0x7e;
    std::fs::write(&input, &bytes).unwrap();
    refused(
        dir.path(),
        &["-i", input.to_str().unwrap(), "-k", "k"],
        &[
            "dict.parquet",
            &format!("the dictionary page at byte {at} says it holds 63 values in"),
        ],
    );
}

/// Found by the build_parquet fuzz target: its dictionary page header set aside 236 MB for
/// values a 1 KB file cannot hold.
#[test]
fn a_fuzzed_dictionary_page_is_refused() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hostile");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("fuzz-dictionary-values.parquet");
    std::fs::copy(fixtures.join("fuzz-dictionary-values.parquet"), &input).unwrap();
    refused(
        dir.path(),
        &[
            "-i",
            input.to_str().unwrap(),
            "-k",
            "k",
            "--memory-limit",
            "16MiB",
        ],
        &[
            "fuzz-dictionary-values.parquet",
            "the page header at byte 4 is damaged",
        ],
    );
}

#[test]
fn values_are_never_converted_into_other_values() {
    let dir = tempfile::tempdir().unwrap();
    // NDJSON: a decimal in a column the first 10,000 lines make integers.
    let input = dir.path().join("in.ndjson");
    ndjson_ending_with(&input, r#"{"k":"z","v":1.5}"#);
    refused(
        dir.path(),
        &["-i", input.to_str().unwrap(), "-k", "k"],
        &[
            "in.ndjson line 10006",
            "field \"v\" holds 1.5, in a column of integers",
        ],
    );
    std::fs::remove_file(&input).unwrap();

    // A directory whose files give a column different types: a value that would change is
    // refused, naming its file and row; values that convert exactly are kept.
    let part = |name: &str, keys: Vec<&str>, values: ArrayRef| {
        let batch = RecordBatch::try_from_iter(vec![
            ("k", Arc::new(StringArray::from(keys)) as ArrayRef),
            ("v", values),
        ])
        .unwrap();
        write_parquet(&dir.path().join("job").join(name), &[batch]);
    };
    part("1.parquet", vec!["a"], Arc::new(Int64Array::from(vec![1])));
    part(
        "2.parquet",
        vec!["b", "c"],
        Arc::new(arrow_array::Float64Array::from(vec![2.0, 1.7])),
    );
    let job = dir.path().join("job");
    refused(
        dir.path(),
        &["-i", job.to_str().unwrap(), "-k", "k"],
        &[
            "2.parquet row 2",
            "column \"v\" holds 1.7 (Float64), which would become 1 as Int64",
            "1.parquet",
        ],
    );
    part(
        "2.parquet",
        vec!["b", "c"],
        Arc::new(arrow_array::Int32Array::from(vec![Some(2), None])),
    );
    part(
        "3.parquet",
        vec!["d"],
        Arc::new(arrow_array::Float64Array::from(vec![4.0])),
    );
    let s = built(&dir.path().join("ok.snapkv"), &job, &["-k", "k"]);
    let values: Vec<serde_json::Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| json_value(&s, k)["v"].clone())
        .collect();
    assert_eq!(values, [json!(1), json!(2), json!(null), json!(4)]);
}

#[test]
fn dates_without_text_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let batch = RecordBatch::try_from_iter(vec![
        (
            "k",
            Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef,
        ),
        (
            "d",
            Arc::new(arrow_array::Date32Array::from(vec![0, i32::MAX, 1])),
        ),
    ])
    .unwrap();
    let input = dir.path().join("in").join("dates.parquet");
    write_parquet(&input, &[batch]);
    // As a value and as a key: the text would have been an error message.
    for key in ["k", "d"] {
        refused(
            dir.path(),
            &["-i", input.to_str().unwrap(), "-k", key],
            &[
                "dates.parquet row 2",
                "column \"d\" holds 2147483647 as Date32, outside the dates and times",
            ],
        );
    }
    // Dates at both ends of the range that has text build.
    let batch = RecordBatch::try_from_iter(vec![
        ("k", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
        (
            "d",
            Arc::new(arrow_array::Date32Array::from(vec![
                -95_000_000,
                95_000_000,
            ])),
        ),
    ])
    .unwrap();
    write_parquet(&input, &[batch]);
    let s = built(&dir.path().join("ok.snapkv"), &input, &["-k", "k"]);
    let day = |n: i64| {
        let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        (epoch + chrono::TimeDelta::days(n))
            .format("%Y-%m-%d")
            .to_string()
    };
    assert_eq!(json_value(&s, "a")["d"], day(-95_000_000));
    assert_eq!(json_value(&s, "b")["d"], day(95_000_000));
}

#[test]
fn composite_keys_cannot_collide() {
    let dir = tempfile::tempdir().unwrap();
    // ("x/y", "z") and ("x", "y/z") would both be the key x/y/z.
    let csv = dir.path().join("in.csv");
    std::fs::write(&csv, "a,b,v\nx,y/z,1\nx/y,z,2\n").unwrap();
    refused(
        dir.path(),
        &[
            "-i",
            csv.to_str().unwrap(),
            "-k",
            "a,b",
            "--on-duplicate",
            "last",
        ],
        &[
            "in.csv row 2",
            "key column \"a\" holds \"x/y\", which contains `/`; only the last key column may",
        ],
    );
    // The last column may hold `/`: the key splits back at its first `/`.
    std::fs::write(&csv, "a,b,v\nx,y/z,1\nw,z,2\n").unwrap();
    let s = built(&dir.path().join("ok.snapkv"), &csv, &["-k", "a,b"]);
    assert_eq!(json_value(&s, "x/y/z")["v"], 1);
    assert_eq!(json_value(&s, "w/z")["v"], 2);
}

#[test]
fn a_csv_file_may_end_without_a_line_break() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text, value) in [
        ("two.csv", "k,v\na,1\nb,2", json!({"v": 2})),
        ("one.csv", "k\na\nbcd", json!({})),
        ("quoted.csv", "k,v\na,1\nb,\"x\ny\"", json!({"v": "x\ny"})),
    ] {
        let input = dir.path().join(name);
        std::fs::write(&input, text).unwrap();
        let s = built(
            &dir.path().join(format!("{name}.snapkv")),
            &input,
            &["-k", "k"],
        );
        assert_eq!(s.len(), 2, "{name}");
        let last = if name == "one.csv" { "bcd" } else { "b" };
        assert_eq!(json_value(&s, last), value, "{name}");
    }
}
