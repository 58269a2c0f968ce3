//! Text inputs as spreadsheets and pipelines write them: other delimiters, TSV, and gzip or
//! zstd compression told by the file name.

use super::util::{json_value, open, snapkv};
use std::io::Write;

const ROWS: &str = "id,name,price\nb,Bob,2.5\na,Ann,1.25\n";

fn check(out: &std::path::Path) {
    let s = open(out);
    assert_eq!(s.len(), 2);
    assert_eq!(
        json_value(&s, "a"),
        serde_json::json!({"name": "Ann", "price": 1.25})
    );
}

#[test]
fn semicolons_are_named_and_read_with_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("export.csv");
    // A spreadsheet in a locale with decimal commas.
    std::fs::write(&input, "id;name;price\nb;Bob;2,5\na;Ann;1,25\n").unwrap();
    let out = dir.path().join("x.snapkv");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    snapkv(&["build", "-i", i, "--key", "id", "-o", o], None).fails_with(&[
        "export.csv line 1",
        "contains ';'",
        "--delimiter ';'",
    ]);
    assert!(!out.exists());
    snapkv(
        &["build", "-i", i, "--key", "id", "--delimiter", ";", "-o", o],
        None,
    )
    .ok();
    let s = open(&out);
    assert_eq!(
        json_value(&s, "a"),
        serde_json::json!({"name": "Ann", "price": "1,25"})
    );
    // A one-column header without another delimiter in it: a later error says which
    // delimiter was used.
    std::fs::write(&input, "id\na\nb,c\n").unwrap();
    snapkv(&["build", "-i", i, "--key", "id", "-o", o], None).fails_with(&[
        "export.csv",
        "one column with the delimiter ','",
        "--delimiter",
    ]);
}

#[test]
fn tsv_by_extension_and_format() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.tsv");
    std::fs::write(&input, ROWS.replace(',', "\t")).unwrap();
    let out = dir.path().join("x.snapkv");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    snapkv(&["build", "-i", i, "--key", "id", "-o", o], None).ok();
    check(&out);
    std::fs::remove_file(&out).unwrap();
    let tsv = ROWS.replace(',', "\t");
    snapkv(
        &[
            "build", "-i", "-", "--format", "tsv", "--key", "id", "-o", o,
        ],
        Some(tsv.as_bytes()),
    )
    .ok();
    check(&out);
}

#[test]
fn gzip_and_zstd_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.snapkv");
    let o = out.to_str().unwrap();

    let gz = dir.path().join("rows.csv.gz");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(ROWS.as_bytes()).unwrap();
    std::fs::write(&gz, e.finish().unwrap()).unwrap();
    snapkv(
        &["build", "-i", gz.to_str().unwrap(), "--key", "id", "-o", o],
        None,
    )
    .ok();
    check(&out);

    let ndjson = "{\"id\":\"b\",\"name\":\"Bob\",\"price\":2.5}\n\
                  {\"id\":\"a\",\"name\":\"Ann\",\"price\":1.25}\n";
    let zst = dir.path().join("rows.ndjson.zst");
    std::fs::write(&zst, zstd::encode_all(ndjson.as_bytes(), 3).unwrap()).unwrap();
    snapkv(
        &["build", "-i", zst.to_str().unwrap(), "--key", "id", "-o", o],
        None,
    )
    .ok();
    check(&out);

    // A corrupt compressed file is a read error naming it, not a panic.
    std::fs::write(&gz, b"\x1f\x8b\x08\x00garbage").unwrap();
    snapkv(
        &["build", "-i", gz.to_str().unwrap(), "--key", "id", "-o", o],
        None,
    )
    .fails_with(&["rows.csv.gz"]);
}

#[test]
fn ndjson_fields_keep_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("rows.ndjson");
    // A field first seen on a later line comes after the others.
    std::fs::write(
        &input,
        "{\"id\":\"a\",\"zeta\":1,\"alpha\":2}\n{\"mid\":3,\"id\":\"b\",\"alpha\":4,\"zeta\":5}\n",
    )
    .unwrap();
    let out = dir.path().join("x.snapkv");
    let (i, o) = (input.to_str().unwrap(), out.to_str().unwrap());
    snapkv(&["build", "-i", i, "--key", "id", "-o", o], None).ok();
    let s = open(&out);
    assert_eq!(
        &*s.get(b"b").unwrap().unwrap(),
        br#"{"zeta":5,"alpha":4,"mid":3}"#
    );
}
