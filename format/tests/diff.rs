//! `diff` against a `BTreeMap` model: counts, examples and the sampled field comparison are
//! exact, whichever blocks the two files share; and blocks are skipped only when that is safe.

use proptest::prelude::*;
use snapkv_format::diff::{BlockStats, ColumnChange};
use snapkv_format::{
    diff, Compression, Dictionary, Diff, DiffOptions, Metadata, Snapshot, SnapshotWriter,
    ValueEncoding, WriterOptions,
};
use std::collections::BTreeMap;
use xxhash_rust::xxh3::xxh3_64_with_seed;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn write(model: &Model, options: &WriterOptions, metadata: &Metadata) -> Snapshot {
    let mut w = SnapshotWriter::new(Vec::new(), options.clone(), metadata.clone()).unwrap();
    for (k, v) in model {
        w.insert(k, v).unwrap();
    }
    let snapshot = Snapshot::open(w.finish().unwrap().0).unwrap();
    snapshot.verify().unwrap();
    snapshot
}

fn options(compression: Compression, block_size: u32, dictionary: Dictionary) -> WriterOptions {
    let mut o = WriterOptions::default();
    o.compression = compression;
    o.block_size = block_size;
    o.dictionary = dictionary;
    o.threads = 1;
    o
}

const ZSTD: Compression = Compression::Zstd { level: 3 };

fn json() -> Metadata {
    let mut m = Metadata::default();
    m.value_encoding = ValueEncoding::Json;
    m
}

/// What the diff must say, computed on the models.
#[derive(Debug, Default, PartialEq)]
struct Expected {
    added: Vec<(Vec<u8>, Vec<u8>)>,
    removed: Vec<(Vec<u8>, Vec<u8>)>,
    changed: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)>,
    unchanged: u64,
}

fn naive(old: &Model, new: &Model) -> Expected {
    let mut e = Expected::default();
    for (k, v) in old {
        match new.get(k) {
            None => e.removed.push((k.clone(), v.clone())),
            Some(n) if n != v => e.changed.push((k.clone(), v.clone(), n.clone())),
            Some(_) => e.unchanged += 1,
        }
    }
    for (k, v) in new {
        if !old.contains_key(k) {
            e.added.push((k.clone(), v.clone()));
        }
    }
    e
}

/// Checks counts and examples of `d` against the models.
#[track_caller]
fn check(d: &Diff, old: &Model, new: &Model, examples: usize) {
    let e = naive(old, new);
    assert_eq!(
        (d.added, d.removed, d.changed, d.unchanged),
        (
            e.added.len() as u64,
            e.removed.len() as u64,
            e.changed.len() as u64,
            e.unchanged
        )
    );
    assert_eq!(d.old_keys(), old.len() as u64);
    assert_eq!(d.new_keys(), new.len() as u64);
    let added: Vec<_> = (d.examples.added.iter())
        .map(|x| {
            (
                x.key.to_vec(),
                x.new.as_ref().unwrap().to_vec(),
                x.old.is_none(),
            )
        })
        .collect();
    let want: Vec<_> = (e.added.iter().take(examples))
        .map(|(k, v)| (k.clone(), v.clone(), true))
        .collect();
    assert_eq!(added, want);
    let removed: Vec<_> = (d.examples.removed.iter())
        .map(|x| {
            (
                x.key.to_vec(),
                x.old.as_ref().unwrap().to_vec(),
                x.new.is_none(),
            )
        })
        .collect();
    let want: Vec<_> = (e.removed.iter().take(examples))
        .map(|(k, v)| (k.clone(), v.clone(), true))
        .collect();
    assert_eq!(removed, want);
    let changed: Vec<_> = (d.examples.changed.iter())
        .map(|x| {
            let v = |b: &Option<bytes::Bytes>| b.as_ref().unwrap().to_vec();
            (x.key.to_vec(), v(&x.old), v(&x.new))
        })
        .collect();
    let want: Vec<_> = e.changed.iter().take(examples).cloned().collect();
    assert_eq!(changed, want);
}

fn with(threads: usize, skip: bool) -> DiffOptions {
    let mut o = DiffOptions::default();
    o.threads = threads;
    o.skip_identical_blocks = skip;
    o
}

/// Every way of diffing: on one thread skipping identical blocks and decoding everything, and
/// on three threads. Returns the first.
#[track_caller]
fn diff_both(old: &Snapshot, new: &Snapshot, om: &Model, nm: &Model) -> Diff {
    let fast = diff(old, new, &with(1, true)).unwrap();
    check(&fast, om, nm, 5);
    let slow = diff(old, new, &with(1, false)).unwrap();
    check(&slow, om, nm, 5);
    let (b, s) = (fast.blocks, slow.blocks);
    assert_eq!((s.skipped, s.equal_raw), (0, 0));
    assert_eq!((s.decoded_old, s.decoded_new), (b.old_blocks, b.new_blocks));
    // Every block is either skipped with its peer, or decoded.
    assert_eq!(
        b.skipped + b.equal_raw + b.decoded_old,
        b.old_blocks,
        "{b:?}"
    );
    assert_eq!(
        b.skipped + b.equal_raw + b.decoded_new,
        b.new_blocks,
        "{b:?}"
    );
    assert_eq!(fast.columns, slow.columns);
    // In parallel: the same, but for blocks two ranges share.
    let mut parallel = diff(old, new, &with(3, true)).unwrap();
    parallel.blocks = fast.blocks;
    assert_eq!(parallel, fast);
    fast
}

/// `n` keys `k00000000`.. with ~`len`-byte values.
fn model(n: usize, len: usize) -> Model {
    (0..n)
        .map(|i| {
            let k = format!("k{:08}", i * 10).into_bytes();
            let v = format!(
                "{{\"v\":{i},\"pad\":\"{}\"}}",
                "x".repeat(len % 97 + i % 13)
            )
            .into_bytes();
            (k, v)
        })
        .collect()
}

fn key(i: usize) -> Vec<u8> {
    format!("k{:08}", i * 10).into_bytes()
}

#[test]
fn one_changed_block_is_the_only_one_read() {
    let old = model(20_000, 40);
    let mut new = old.clone();
    new.insert(key(10_000), b"{\"v\":-1}".to_vec());
    for (compression, dictionary) in [
        (ZSTD, Dictionary::Off),
        (Compression::None, Dictionary::Off),
        (
            ZSTD,
            Dictionary::Use(b"{\"v\":1,\"pad\":\"xxxxxxxxxxxxxxxxxxxxxx\"}".repeat(20)),
        ),
    ] {
        let o = options(compression, 512, dictionary);
        let (a, b) = (write(&old, &o, &json()), write(&new, &o, &json()));
        let d = diff_both(&a, &b, &old, &new);
        assert_eq!((d.changed, d.unchanged), (1, 19_999));
        let BlockStats {
            old_blocks,
            skipped,
            decoded_old,
            decoded_new,
            ..
        } = d.blocks;
        assert!(old_blocks > 100, "{:?}", d.blocks);
        // The changed block, and at most a neighbour or two until the boundaries agree again.
        assert!((1..=3).contains(&decoded_old), "{:?}", d.blocks);
        assert!((1..=3).contains(&decoded_new), "{:?}", d.blocks);
        assert!(skipped >= old_blocks - 3, "{:?}", d.blocks);
    }
}

#[test]
fn different_compression_or_dictionaries_are_decompressed_but_not_decoded() {
    let old = model(5_000, 60);
    let mut new = old.clone();
    new.remove(&key(2_500));
    let train = |max_bytes| Dictionary::Train {
        max_bytes,
        sample_bytes: 64 << 10,
    };
    let plain = options(Compression::None, 512, Dictionary::Off);
    let zstd = options(ZSTD, 512, Dictionary::Off);
    let (small, large) = (
        options(ZSTD, 512, train(1024)),
        options(ZSTD, 512, train(2048)),
    );
    for (oo, no) in [(&plain, &zstd), (&zstd, &plain), (&small, &large)] {
        let (a, b) = (write(&old, oo, &json()), write(&new, no, &json()));
        if oo == &small {
            assert_ne!(a.dictionary(), b.dictionary());
            assert!(!a.dictionary().is_empty());
        }
        let d = diff_both(&a, &b, &old, &new);
        assert_eq!(d.removed, 1);
        assert_eq!(d.blocks.skipped, 0, "{:?}", d.blocks);
        assert!(
            d.blocks.equal_raw >= d.blocks.old_blocks - 4,
            "{:?}",
            d.blocks
        );
    }
}

#[test]
fn shifted_boundaries_realign() {
    let old = model(20_000, 40);
    let mut new = old.clone();
    // A long run of new keys early on moves the boundaries of the blocks around it.
    for i in 0..300 {
        new.insert(format!("k{:08}5", 100 + i).into_bytes(), vec![b'n'; 77]);
    }
    new.remove(&key(15_000));
    let o = options(ZSTD, 512, Dictionary::Off);
    let (a, b) = (write(&old, &o, &json()), write(&new, &o, &json()));
    let d = diff_both(&a, &b, &old, &new);
    assert_eq!((d.added, d.removed), (300, 1));
    assert!(d.blocks.skipped > d.blocks.old_blocks / 2, "{:?}", d.blocks);

    // Another target block size: most boundaries differ, but where a block happens to end at
    // the same key in both files (content-defined cuts agree now and then), it is stored
    // identically and may be skipped; the counts are exact either way.
    let other = options(ZSTD, 1024, Dictionary::Off);
    let b = write(&new, &other, &json());
    let d = diff_both(&a, &b, &old, &new);
    assert!(
        d.blocks.decoded_old > d.blocks.old_blocks / 2,
        "{:?}",
        d.blocks
    );
}

#[test]
fn identical_files_are_counted_from_the_block_table() {
    let m = model(3_000, 30);
    let o = options(ZSTD, 256, Dictionary::Off);
    let (a, b) = (write(&m, &o, &json()), write(&m, &o, &json()));
    let d = diff_both(&a, &b, &m, &m);
    assert!(d.is_empty());
    assert_eq!(d.blocks.skipped, d.blocks.old_blocks);
    assert_eq!((d.blocks.decoded_old, d.blocks.decoded_new), (0, 0));
    assert_eq!(d.changed_share(), 0.0);
}

#[test]
fn empty_snapshots() {
    let empty = Model::new();
    let m = model(10, 10);
    let o = WriterOptions::default();
    let (e, f) = (write(&empty, &o, &json()), write(&m, &o, &json()));
    let d = diff_both(&e, &f, &empty, &m);
    assert_eq!((d.added, d.removed), (10, 0));
    let d = diff_both(&f, &e, &m, &empty);
    assert_eq!((d.added, d.removed), (0, 10));
    let d = diff_both(&e, &e, &empty, &empty);
    assert!(d.is_empty());
}

#[test]
fn columns_count_fields_of_changed_json_values() {
    let old: Model = (0..100)
        .map(|i| {
            let v = format!("{{\"a\":{i},\"b\":\"x\",\"c\":[{i}]}}");
            (format!("k{i:03}").into_bytes(), v.into_bytes())
        })
        .collect();
    let mut new = old.clone();
    for i in 0..100 {
        let k = format!("k{i:03}").into_bytes();
        let v = match i % 4 {
            0 => continue,
            // `a` changes; key order and spacing of the others does not matter.
            1 => format!("{{\"c\": [{i}], \"b\":\"x\", \"a\":{}}}", i + 1),
            // `b` is dropped, `d` is new.
            2 => format!("{{\"a\":{i},\"c\":[{i}],\"d\":true}}"),
            // Not an object.
            _ => "[1]".to_string(),
        };
        new.insert(k, v.into_bytes());
    }
    let (a, b) = (
        write(&old, &WriterOptions::default(), &json()),
        write(&new, &WriterOptions::default(), &json()),
    );
    let d = diff_both(&a, &b, &old, &new);
    assert_eq!(d.changed, 75);
    let s = d.columns.clone().unwrap();
    assert_eq!(
        (s.keys, s.one_in, s.not_objects, s.objects()),
        (75, 1, 25, 50)
    );
    let col = |name: &str, changed, added, removed| {
        let mut c = ColumnChange::default();
        c.name = name.into();
        c.changed = changed;
        c.added = added;
        c.removed = removed;
        c
    };
    assert_eq!(
        s.columns,
        [
            col("a", 25, 0, 0),
            col("b", 25, 0, 25),
            col("c", 0, 0, 0),
            col("d", 25, 25, 0)
        ]
    );
    assert!(!s.truncated);

    // A bound of 10: the changed keys whose hash starts with enough zero bits.
    // The seed is the ASCII bytes "snapkvsa" (spec/FORMAT.md, "Diff").
    let level = |k: &[u8]| xxh3_64_with_seed(k, 0x736e_6170_6b76_7361).leading_zeros();
    for threads in [1, 3] {
        let mut o = with(threads, true);
        o.sample = 10;
        o.max_columns = 2;
        let s = diff(&a, &b, &o).unwrap().columns.unwrap();
        assert!(s.one_in.is_power_of_two() && s.one_in > 1);
        let l = s.one_in.trailing_zeros();
        let changed: Vec<usize> = (1..100).filter(|i| i % 4 != 0).collect();
        let sampled: Vec<usize> = (changed.iter().copied())
            .filter(|i| level(format!("k{i:03}").as_bytes()) >= l)
            .collect();
        let fewer = (changed.iter())
            .filter(|i| level(format!("k{i:03}").as_bytes()) + 1 >= l)
            .count();
        assert!(sampled.len() <= 10 && fewer > 10, "{sampled:?} {fewer}");
        assert_eq!(s.keys, sampled.len() as u64);
        let kinds = |k: usize| sampled.iter().filter(|i| *i % 4 == k).count() as u64;
        assert_eq!(s.not_objects, kinds(3));
        // Two columns at most: the first met, `a` and `b` (every old value has them).
        assert!(kinds(1) + kinds(2) > 0, "{sampled:?}");
        assert_eq!(
            s.columns,
            [col("a", kinds(1), 0, 0), col("b", kinds(2), 0, kinds(2))]
        );
        assert!(s.truncated);
    }

    // Raw values are not compared by field.
    let raw = Metadata::default();
    let (a, b) = (
        write(&old, &WriterOptions::default(), &raw),
        write(&new, &WriterOptions::default(), &raw),
    );
    assert_eq!(diff(&a, &b, &DiffOptions::default()).unwrap().columns, None);
}

/// A model and the changes to make of it: (index to change, kind, new value).
fn edits() -> impl Strategy<Value = (Model, Vec<(usize, u8, Vec<u8>)>)> {
    let entry = (
        proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 1..8),
        proptest::collection::vec(any::<u8>(), 0..80),
    );
    (
        proptest::collection::btree_map(entry.0, entry.1, 0..400),
        proptest::collection::vec(
            (
                any::<usize>(),
                0u8..3,
                proptest::collection::vec(any::<u8>(), 0..80),
            ),
            0..40,
        ),
    )
}

fn apply(old: &Model, edits: &[(usize, u8, Vec<u8>)]) -> Model {
    let mut new = old.clone();
    for (i, kind, v) in edits {
        let keys: Vec<_> = new.keys().cloned().collect();
        match (kind, keys.is_empty()) {
            (0, false) => {
                new.remove(&keys[i % keys.len()]);
            }
            (1, false) => {
                new.insert(keys[i % keys.len()].clone(), v.clone());
            }
            _ => {
                // A new key next to an existing one (or anywhere in an empty map).
                let mut k = keys.get(i % keys.len().max(1)).cloned().unwrap_or_default();
                k.push((*i % 251) as u8);
                new.insert(k, v.clone());
            }
        }
    }
    new
}

fn writer_options() -> impl Strategy<Value = WriterOptions> {
    (0u8..4, prop_oneof![Just(64u32), Just(128), Just(4096)]).prop_map(|(c, block_size)| {
        let (compression, dictionary) = match c {
            0 => (Compression::None, Dictionary::Off),
            1 => (ZSTD, Dictionary::Off),
            2 => (
                ZSTD,
                Dictionary::Train {
                    max_bytes: 256,
                    sample_bytes: 4096,
                },
            ),
            _ => (
                ZSTD,
                Dictionary::Use(b"ab\x00\x01shared dictionary".repeat(8)),
            ),
        };
        options(compression, block_size, dictionary)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Same writer options on both sides: blocks the edits did not touch are skipped.
    #[test]
    fn same_options_agree_with_the_model(
        (old, edits) in edits(),
        o in writer_options(),
        examples in 0usize..4,
    ) {
        let new = apply(&old, &edits);
        let (a, b) = (write(&old, &o, &json()), write(&new, &o, &json()));
        let d = diff_both(&a, &b, &old, &new);
        if old == new {
            prop_assert_eq!(d.blocks.skipped, d.blocks.old_blocks);
        }
        let mut opts = DiffOptions::default();
        opts.examples = examples;
        check(&diff(&a, &b, &opts).unwrap(), &old, &new, examples);
    }

    /// Different writer options: nothing lines up, or only raw bytes do.
    #[test]
    fn any_options_agree_with_the_model(
        (old, edits) in edits(),
        oo in writer_options(),
        no in writer_options(),
    ) {
        let new = apply(&old, &edits);
        let (a, b) = (write(&old, &oo, &Metadata::default()), write(&new, &no, &Metadata::default()));
        diff_both(&a, &b, &old, &new);
        diff_both(&b, &a, &new, &old);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Garbled raw blocks (which are not checksummed when read) give an error or some answer,
    /// never a panic or a hang, on one thread or several.
    #[test]
    fn garbled_blocks_never_panic(
        (old, edits) in edits(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..20),
        threads in 1usize..4,
    ) {
        let new = apply(&old, &edits);
        let o = options(Compression::None, 64, Dictionary::Off);
        let good = write(&old, &o, &json());
        let mut bytes = {
            let mut w = SnapshotWriter::new(Vec::new(), o.clone(), json()).unwrap();
            for (k, v) in &new {
                w.insert(k, v).unwrap();
            }
            w.finish().unwrap().0
        };
        // The data region: after the 16-byte header, before the dictionary (here: the block
        // table), whose offset is the footer's first field.
        let footer = bytes.len() - 168;
        let data_end = u64::from_le_bytes(bytes[footer..footer + 8].try_into().unwrap()) as usize;
        if data_end > 16 {
            for (at, x) in flips {
                bytes[16 + at % (data_end - 16)] ^= x | 1;
            }
        }
        let bad = Snapshot::open(bytes).unwrap();
        for (a, b) in [(&good, &bad), (&bad, &good), (&bad, &bad)] {
            let _ = diff(a, b, &with(threads, true));
        }
    }
}
