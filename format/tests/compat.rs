//! Files of format version 1 stay readable: `tests/data/v1-*.snapkv` were written by the
//! version 1 writer (before version 2 existed) from the entries below, with 1 KiB blocks, one
//! with zstd and a trained dictionary, one uncompressed. They open, verify, answer lookups and
//! scans, and diff against the same entries written as version 2 as unchanged.

use snapkv_format::{diff, DiffOptions, Metadata, Snapshot, SnapshotWriter, WriterOptions};
use std::ops::Bound;

/// The entries the fixtures hold: `user:` and ten digits (multiples of 7919) → JSON.
fn entries() -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut v: Vec<(Vec<u8>, Vec<u8>)> = (0..3000u32)
        .map(|i| {
            let k = format!("user:{:010}", u64::from(i) * 7919);
            let val = format!(
                "{{\"id\":{i},\"score\":{},\"tag\":\"t{}\"}}",
                i % 97,
                i % 13
            );
            (k.into_bytes(), val.into_bytes())
        })
        .collect();
    v.sort();
    v
}

fn fixture(name: &str) -> Snapshot {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    Snapshot::open(std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn version_1_files_read_as_before() {
    let want = entries();
    for name in ["v1-zstd-dict.snapkv", "v1-none.snapkv"] {
        let snap = fixture(name);
        assert_eq!(snap.format_version(), 1, "{name}");
        snap.verify().unwrap();
        assert_eq!(snap.len(), want.len() as u64);
        assert_eq!(snap.metadata().dataset.as_deref(), Some("fixture"));
        for (k, v) in &want {
            assert_eq!(snap.get(k).unwrap().as_deref(), Some(&v[..]), "{name}");
        }
        for miss in [&b"user:0000000001"[..], b"user:", b"zzz", b"a"] {
            assert_eq!(snap.get(miss).unwrap(), None);
        }
        let all: Vec<(Vec<u8>, Vec<u8>)> = snap
            .iter()
            .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(all, want);
        let from = &want[1234].0;
        let n = snap
            .range(Bound::Excluded(&from[..]), Bound::Unbounded)
            .count();
        assert_eq!(n, want.len() - 1235);
        let prefix = b"user:00001";
        let n = want.iter().filter(|(k, _)| k.starts_with(prefix)).count();
        assert!(n > 1);
        assert_eq!(snap.prefix(prefix).count(), n);

        // The same entries as version 2: nothing changed.
        let mut w =
            SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default()).unwrap();
        for (k, v) in &want {
            w.insert(k, v).unwrap();
        }
        let v2 = Snapshot::open(w.finish().unwrap().0).unwrap();
        assert_eq!(v2.format_version(), 2);
        for (old, new) in [(&snap, &v2), (&v2, &snap)] {
            let d = diff(old, new, &DiffOptions::default()).unwrap();
            assert_eq!(
                (d.added, d.removed, d.changed, d.unchanged),
                (0, 0, 0, want.len() as u64),
                "{name}"
            );
        }
    }
}

#[test]
fn the_writer_still_writes_version_1() {
    let mut o = WriterOptions::default();
    o.format_version = 1;
    o.block_size = 1024;
    o.dictionary = snapkv_format::Dictionary::Train {
        max_bytes: 4096,
        sample_bytes: 32 << 10,
    };
    let mut m = Metadata::default();
    m.dataset = Some("fixture".into());
    m.version = Some("20261201T000000Z".into());
    m.value_encoding = snapkv_format::ValueEncoding::Json;
    let mut w = SnapshotWriter::new(Vec::new(), o, m).unwrap();
    for (k, v) in entries() {
        w.insert(&k, &v).unwrap();
    }
    let bytes = w.finish().unwrap().0;
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-zstd-dict.snapkv");
    assert!(
        bytes == std::fs::read(path).unwrap(),
        "format version 1 output changed"
    );
    let mut o = WriterOptions::default();
    o.format_version = 3;
    assert!(SnapshotWriter::new(Vec::new(), o, Metadata::default()).is_err());
}
