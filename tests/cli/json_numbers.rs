//! Numbers in JSON values: exact by default, strings on request for JavaScript clients, and
//! NaN/infinities (which JSON lacks) written as null and counted.

use super::util::{open, snapkv, write_parquet};
use arrow_array::{
    ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray, UInt64Array,
};
use std::sync::Arc;

fn input(dir: &std::path::Path) -> std::path::PathBuf {
    let batch = RecordBatch::try_from_iter([
        (
            "id",
            Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
        ),
        (
            "big",
            Arc::new(Int64Array::from(vec![9_007_199_254_740_993, 7])),
        ),
        ("huge", Arc::new(UInt64Array::from(vec![u64::MAX, 1]))),
        (
            "price",
            Arc::new(
                Decimal128Array::from(vec![1230, 5])
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
        ),
        (
            "score",
            Arc::new(Float64Array::from(vec![f64::NAN, f64::INFINITY])),
        ),
    ])
    .unwrap();
    let path = dir.join("n.parquet");
    write_parquet(&path, &[batch]);
    path
}

fn raw(out: &std::path::Path, key: &str) -> String {
    let s = open(out);
    String::from_utf8(s.get(key.as_bytes()).unwrap().unwrap().to_vec()).unwrap()
}

#[test]
fn exact_numbers_bigint_strings_and_non_finite_counts() {
    let dir = tempfile::tempdir().unwrap();
    let i = input(dir.path());
    let out = dir.path().join("n.snapkv");
    let (i, o) = (i.to_str().unwrap(), out.to_str().unwrap());
    let run = snapkv(&["build", "-i", i, "--key", "id", "-o", o, "--json"], None).ok();
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["non_finite_floats"], 2);
    assert_eq!(
        raw(&out, "a"),
        r#"{"big":9007199254740993,"huge":18446744073709551615,"price":12.30,"score":null}"#
    );
    assert_eq!(
        raw(&out, "b"),
        r#"{"big":7,"huge":1,"price":0.05,"score":null}"#
    );
    let run = snapkv(&["build", "-i", i, "--key", "id", "-o", o], None).ok();
    assert!(
        run.stderr
            .contains("2 NaN or infinite floats written as null"),
        "{}",
        run.stderr
    );

    let bigint = |mode: &str| {
        snapkv(
            &[
                "build",
                "-i",
                i,
                "--key",
                "id",
                "-o",
                o,
                "--json-bigint",
                mode,
            ],
            None,
        )
    };
    bigint("string").ok();
    assert_eq!(
        raw(&out, "a"),
        r#"{"big":"9007199254740993","huge":"18446744073709551615","price":"12.30","score":null}"#
    );
    // Integers JavaScript holds exactly stay numbers.
    assert_eq!(
        raw(&out, "b"),
        r#"{"big":7,"huge":1,"price":"0.05","score":null}"#
    );
    bigint("text").fails_with(&["number or string"]);
}
