//! The builder as a library: record batches a caller holds build through the same stages,
//! limits and errors as files do.

use arrow_array::{ArrayRef, Int64Array, RecordBatch, RecordBatchIterator, StringArray};
use snapkv_builder::{build, BatchInput, BuildOptions, Error, Input, NoProgress};
use std::sync::Arc;

fn batch(ids: &[&str], scores: &[i64]) -> RecordBatch {
    RecordBatch::try_from_iter([
        ("id", Arc::new(StringArray::from(ids.to_vec())) as ArrayRef),
        (
            "score",
            Arc::new(Int64Array::from(scores.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn input(name: &str, batches: Vec<RecordBatch>) -> Input {
    let schema = batches[0].schema();
    let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), schema);
    Input::Batches(BatchInput::new(name, Box::new(reader)))
}

#[test]
fn batches_build_like_files() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("b.snapkv");
    let inputs = vec![input(
        "job",
        vec![batch(&["b", "a"], &[2, 1]), batch(&["c"], &[3])],
    )];
    let mut options = BuildOptions::new(inputs, vec!["id".into()]);
    options.dataset = Some("scores".into());
    let summary = build(&options, &out, &NoProgress).unwrap();
    assert_eq!((summary.rows, summary.keys), (3, 3));
    let s = snapkv_format::Snapshot::open(std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(&*s.get(b"c").unwrap().unwrap(), br#"{"score":3}"#);
    assert_eq!(s.metadata().dataset.as_deref(), Some("scores"));

    // The same errors, naming the input and row.
    let inputs = vec![input("job", vec![batch(&["a", "a"], &[1, 2])])];
    let options = BuildOptions::new(inputs, vec!["id".into()]);
    let e = build(&options, &out, &NoProgress).unwrap_err();
    assert!(matches!(e, Error::DuplicateKey { .. }), "{e}");
    assert!(e.to_string().contains("job row 1"), "{e}");
}
