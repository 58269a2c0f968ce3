//! Round trips against a `BTreeMap` model: whatever goes in comes back out, in order.

use proptest::prelude::*;
use snapkv_format::{
    Compression, Dictionary, Error, Metadata, OpenOptions, ShardError, Shards, Snapshot,
    SnapshotWriter, Spill, WriterOptions,
};
use std::collections::BTreeMap;
use std::ops::Bound;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn write(model: &Model, options: WriterOptions) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), options, Metadata::default()).unwrap();
    for (k, v) in model {
        w.insert(k, v).unwrap();
    }
    let (bytes, summary) = w.finish().unwrap();
    assert_eq!(summary.key_count, model.len() as u64);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    bytes
}

fn options(compression: u8, block_size: u32, dict: bool, threads: usize) -> WriterOptions {
    versioned(2, compression, block_size, dict, threads)
}

fn versioned(
    version: u32,
    compression: u8,
    block_size: u32,
    dict: bool,
    threads: usize,
) -> WriterOptions {
    let mut o = WriterOptions::default();
    o.format_version = version;
    o.compression = match compression {
        0 => Compression::None,
        _ => Compression::Zstd { level: 3 },
    };
    o.block_size = block_size;
    o.dictionary = if dict {
        Dictionary::Train {
            max_bytes: 1024,
            sample_bytes: 16 * 1024,
        }
    } else {
        Dictionary::Off
    };
    o.threads = threads;
    o
}

/// `k` and `i` in `digits` digits → `v` and `i`, for `i` below `n`.
fn numbered(n: u32, digits: usize) -> Model {
    (0..n)
        .map(|i| {
            (
                format!("k{i:0digits$}").into_bytes(),
                format!("v{i}").into_bytes(),
            )
        })
        .collect()
}

fn collect(it: snapkv_format::Iter) -> Vec<(Vec<u8>, Vec<u8>)> {
    it.map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, Error>>()
        .unwrap()
}

fn model_range(model: &Model, start: Bound<&[u8]>, end: Bound<&[u8]>) -> Vec<(Vec<u8>, Vec<u8>)> {
    let owned = |b: Bound<&[u8]>| b.map(<[u8]>::to_vec);
    if let (Bound::Included(s) | Bound::Excluded(s), Bound::Included(e) | Bound::Excluded(e)) =
        (start, end)
    {
        // BTreeMap::range panics on inverted bounds; the snapshot answers nothing.
        if s > e || (s == e && !matches!((start, end), (Bound::Included(_), Bound::Included(_)))) {
            return Vec::new();
        }
    }
    model
        .range((owned(start), owned(end)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check(model: &Model, bytes: Vec<u8>, probes: &[Vec<u8>]) {
    check_with(model, bytes, probes, &OpenOptions::default());
}

/// [`check`] of the snapshot opened with `options`.
fn check_with(model: &Model, bytes: Vec<u8>, probes: &[Vec<u8>], options: &OpenOptions) {
    let snap = Snapshot::open_with(bytes, options).unwrap();
    let copied = snap.stats().unwrap().index_memory_bytes;
    assert_eq!(
        copied > 0,
        options.index_in_memory,
        "index sections in memory: {copied} B"
    );
    snap.verify().unwrap();
    assert_eq!(snap.len(), model.len() as u64);
    // Values are appended to what `out` holds; twice, so that the second reads cached blocks.
    let mut out = b"x".to_vec();
    for _ in 0..2 {
        for (k, v) in model {
            assert_eq!(snap.get(k).unwrap().as_deref(), Some(&v[..]), "key {k:?}");
            out.truncate(1);
            assert!(snap.get_into(k, &mut out).unwrap(), "key {k:?}");
            assert_eq!((&out[..1], &out[1..]), (&b"x"[..], &v[..]), "key {k:?}");
        }
    }
    for p in probes {
        assert_eq!(
            snap.get(p).unwrap().map(|b| b.to_vec()),
            model.get(p).cloned()
        );
        out.truncate(1);
        assert_eq!(snap.get_into(p, &mut out).unwrap(), model.contains_key(p));
        assert_eq!(out[1..], model.get(p).cloned().unwrap_or_default());
        let all: Vec<_> = model_range(model, Bound::Included(p), Bound::Unbounded);
        assert_eq!(
            collect(snap.range(Bound::Included(p), Bound::Unbounded)),
            all
        );
        let pre: Vec<_> = model
            .iter()
            .filter(|(k, _)| k.starts_with(p))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(collect(snap.prefix(p)), pre, "prefix {p:?}");
    }
    for w in probes.windows(2) {
        let (a, b) = (&w[0][..], &w[1][..]);
        for (s, e) in [
            (Bound::Included(a), Bound::Excluded(b)),
            (Bound::Excluded(a), Bound::Included(b)),
            (Bound::Unbounded, Bound::Excluded(b)),
        ] {
            assert_eq!(collect(snap.range(s, e)), model_range(model, s, e));
        }
    }
    let everything: Vec<_> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(collect(snap.iter()), everything);
    // Block by block: every block has entries, and together they are every entry in order.
    let mut by_block = Vec::new();
    for b in 0..snap.block_count() {
        let entries = collect(snap.block_entries(b));
        assert!(!entries.is_empty(), "block {b} is empty");
        by_block.extend(entries);
    }
    assert_eq!(by_block, everything);
    assert!(collect(snap.block_entries(snap.block_count())).is_empty());
    assert!(collect(snap.block_entries(u64::MAX)).is_empty());
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Binary keys over a small alphabet: long shared prefixes, 0x00 and 0xff edges.
        proptest::collection::vec(
            prop_oneof![Just(0u8), Just(1), Just(0x7f), Just(0xff)],
            1..6
        ),
        proptest::collection::vec(any::<u8>(), 1..40),
        "[a-c]{1,12}".prop_map(String::into_bytes),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..64),
        4 => "[a-z\":{} ]{0,200}".prop_map(String::into_bytes),
        1 => proptest::collection::vec(any::<u8>(), 1000..5000),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn matches_the_model(
        model in proptest::collection::btree_map(key(), value(), 0..400),
        probes in proptest::collection::vec(key(), 0..20),
        compression in 0u8..2,
        block_size in prop_oneof![Just(64u32), Just(256), Just(4096)],
        dict in any::<bool>(),
        threads in 1usize..3,
        version in 1u32..3,
        index_in_memory in any::<bool>(),
        small_cache in any::<bool>(),
    ) {
        let mut probes = probes;
        probes.sort();
        let bytes = write(&model, versioned(version, compression, block_size, dict, threads));
        prop_assert_eq!(Snapshot::open(bytes.clone()).unwrap().format_version(), version);
        let mut open = OpenOptions::default();
        open.index_in_memory = index_in_memory;
        if small_cache {
            // Less than the blocks decompress to (a cache that holds them all is a table by
            // block number): shards that evict.
            open.cache_bytes = 64 << 10;
        }
        check_with(&model, bytes, &probes, &open);
    }
}

#[test]
fn empty_snapshot() {
    let model = Model::new();
    let bytes = write(&model, WriterOptions::default());
    check(&model, bytes, &[b"a".to_vec(), vec![0xff]]);
}

#[test]
fn single_key() {
    let model: Model = [(b"only".to_vec(), b"one".to_vec())].into();
    let bytes = write(&model, WriterOptions::default());
    check(
        &model,
        bytes,
        &[b"o".to_vec(), b"only".to_vec(), b"onlz".to_vec()],
    );
}

#[test]
fn huge_value_owns_a_block() {
    let big: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
    let model: Model = [
        (b"a".to_vec(), b"small".to_vec()),
        (b"b".to_vec(), big),
        (b"c".to_vec(), b"after".to_vec()),
    ]
    .into();
    let bytes = write(&model, WriterOptions::default());
    check(&model, bytes, &[b"b".to_vec(), b"bb".to_vec()]);
}

#[test]
fn many_keys_with_dictionary_and_threads() {
    let model: Model = (0..50_000u32)
        .map(|i| {
            (
                format!("user:{:08}", i.wrapping_mul(2_654_435_761) % 100_000_000).into_bytes(),
                format!("{{\"id\":{i},\"score\":{},\"country\":\"SE\"}}", i % 97).into_bytes(),
            )
        })
        .collect();
    let mut o = WriterOptions::default();
    o.threads = 2;
    let bytes = write(&model, o);
    let snap = Snapshot::open(bytes.clone()).unwrap();
    assert!(
        snap.metadata().format.dictionary_bytes > 0,
        "a dictionary was trained"
    );
    check(
        &model,
        bytes,
        &[b"user:0".to_vec(), b"user:5".to_vec(), b"zzz".to_vec()],
    );
}

#[test]
fn same_input_gives_identical_bytes() {
    let model: Model = (0..20_000u32)
        .map(|i| {
            (
                format!("k{i:06}").into_bytes(),
                format!("value {i} {}", i * 7).into_bytes(),
            )
        })
        .collect();
    let mut meta = Metadata::default();
    meta.dataset = Some("d".into());
    meta.version = Some("20261127T000000Z".into());
    let run = |threads| {
        let mut o = WriterOptions::default();
        o.threads = threads;
        let mut w = SnapshotWriter::new(Vec::new(), o, meta.clone()).unwrap();
        for (k, v) in &model {
            w.insert(k, v).unwrap();
        }
        w.finish().unwrap().0
    };
    let a = run(1);
    assert_eq!(a, run(1));
    assert_eq!(a, run(2));
    assert_eq!(a, run(4));
}

#[test]
fn spilled_key_hashes_give_identical_bytes() {
    let model = numbered(150_000, 7);
    let dir = tempfile::tempdir().unwrap();
    for compression in [0, 1] {
        let in_memory = write(&model, options(compression, 1024, false, 2));
        let mut o = options(compression, 1024, false, 2);
        // About 1,260 keys a run and a part while placing: 120 runs and parts.
        o.spill = Some(Spill {
            dir: dir.path().to_owned(),
            memory: 64 << 10,
        });
        let spilled = write(&model, o);
        assert!(spilled == in_memory, "compression {compression}");
        check(&model, spilled, &[b"k0000000".to_vec(), b"k9".to_vec()]);
    }
    // The temporary file is unnamed: nothing is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_spill_directory_that_cannot_be_written_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let mut o = WriterOptions::default();
    o.spill = Some(Spill {
        dir: missing.clone(),
        memory: 4096,
    });
    let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
    let error = (0..1000u32)
        .find_map(|i| w.insert(format!("k{i:04}").as_bytes(), b"v").err())
        .expect("a run is written within 1000 keys");
    match &error {
        Error::Spill { dir, .. } => assert_eq!(dir, &missing),
        e => panic!("{e:?}"),
    }
    assert!(error.to_string().contains("missing"), "{error}");
}

#[test]
fn writer_misuse_is_a_typed_error_and_recoverable() {
    let mut w =
        SnapshotWriter::new(Vec::new(), WriterOptions::default(), Metadata::default()).unwrap();
    w.insert(b"b", b"1").unwrap();
    match w.insert(b"a", b"2") {
        Err(Error::OutOfOrder { previous, got }) => {
            assert_eq!((previous, got), (b"b".to_vec(), b"a".to_vec()))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(w.insert(b"b", b"3"), Err(Error::DuplicateKey { key }) if key == b"b"));
    assert!(matches!(w.insert(b"", b"3"), Err(Error::EmptyKey)));
    let long = vec![b'x'; snapkv_format::MAX_KEY_LEN + 1];
    assert!(matches!(
        w.insert(&long, b"3"),
        Err(Error::KeyTooLong { .. })
    ));
    w.insert(b"c", b"3").unwrap();
    let snap = Snapshot::open(w.finish().unwrap().0).unwrap();
    snap.verify().unwrap();
    assert_eq!(snap.len(), 2);
    assert_eq!(snap.get(b"b").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn invalid_options_are_rejected() {
    let mut o = WriterOptions::default();
    o.block_size = 1;
    assert!(matches!(
        SnapshotWriter::new(Vec::new(), o, Metadata::default()),
        Err(Error::InvalidOption(_))
    ));
    let mut o = WriterOptions::default();
    o.compression = Compression::Zstd { level: 99 };
    assert!(matches!(
        SnapshotWriter::new(Vec::new(), o, Metadata::default()),
        Err(Error::InvalidOption(_))
    ));
}

#[test]
fn raw_block_values_are_slices_of_the_input() {
    let model = numbered(1000, 4);
    let mut o = WriterOptions::default();
    o.compression = Compression::None;
    let bytes = bytes::Bytes::from(write(&model, o));
    let snap = Snapshot::open(bytes.clone()).unwrap();
    let v = snap.get(b"k0500").unwrap().unwrap();
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    assert!(range.contains(&(v.as_ptr() as usize)), "value was copied");
    assert_eq!(snap.cache_stats().misses, 0, "raw blocks bypass the cache");
}

#[test]
fn cache_serves_repeated_lookups() {
    let model: Model = (0..5000u32)
        .map(|i| {
            (
                format!("k{i:05}").into_bytes(),
                format!("value number {i}").into_bytes(),
            )
        })
        .collect();
    let snap = Snapshot::open(write(&model, WriterOptions::default())).unwrap();
    for _ in 0..3 {
        assert!(snap.get(b"k02500").unwrap().is_some());
    }
    let s = snap.cache_stats();
    assert_eq!((s.hits, s.misses), (2, 1), "{s:?}");
    assert!(s.used > 0 && s.used <= s.capacity);
}

/// Range shards of a model, cut at `splits`, read as one version: the same answers as the
/// model, for lookups and every range.
fn check_shards(model: &Model, splits: &[Vec<u8>], probes: &[Vec<u8>]) {
    let mut parts: Vec<Model> = vec![Model::new(); splits.len() + 1];
    for (k, v) in model {
        let i = snapkv_format::shards::shard_of(splits, k);
        parts[i].insert(k.clone(), v.clone());
    }
    let snapshots: Vec<Snapshot> = parts
        .iter()
        .map(|p| Snapshot::open(write(p, options(1, 256, false, 1))).unwrap())
        .collect();
    let split_bytes = splits
        .iter()
        .map(|s| bytes::Bytes::from(s.clone()))
        .collect();
    let shards = Shards::new(snapshots, split_bytes).unwrap();
    assert_eq!(shards.len(), model.len() as u64);
    for (k, v) in model {
        assert_eq!(shards.get(k).unwrap().as_deref(), Some(&v[..]));
    }
    let collect_all = |it: snapkv_format::ShardsIter| -> Vec<(Vec<u8>, Vec<u8>)> {
        it.map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, Error>>()
            .unwrap()
    };
    let everything = model_range(model, Bound::Unbounded, Bound::Unbounded);
    assert_eq!(
        collect_all(shards.range(Bound::Unbounded, Bound::Unbounded)),
        everything
    );
    for p in probes {
        assert_eq!(
            shards.get(p).unwrap().map(|b| b.to_vec()),
            model.get(p).cloned()
        );
        for (s, e) in [
            (Bound::Included(&p[..]), Bound::Unbounded),
            (Bound::Excluded(&p[..]), Bound::Unbounded),
            (Bound::Unbounded, Bound::Excluded(&p[..])),
            (Bound::Unbounded, Bound::Included(&p[..])),
        ] {
            assert_eq!(
                collect_all(shards.range(s, e)),
                model_range(model, s, e),
                "{s:?} {e:?}"
            );
        }
    }
    for w in probes.windows(2) {
        let (s, e) = (Bound::Included(&w[0][..]), Bound::Excluded(&w[1][..]));
        assert_eq!(collect_all(shards.range(s, e)), model_range(model, s, e));
    }
    // Every contiguous run of the shards, held alone: the keys of the run answer, the others
    // are absent, and ranges yield the run's part of the model.
    for first in 0..parts.len() {
        for end in first + 1..=parts.len() {
            let run = Shards::subset(
                first,
                shards.shards()[first..end].to_vec(),
                shards.splits().to_vec(),
            )
            .unwrap();
            assert_eq!((run.count(), run.held()), (parts.len(), first..end));
            let in_run =
                |k: &[u8]| (first..end).contains(&snapkv_format::shards::shard_of(splits, k));
            let part: Model = model
                .iter()
                .filter(|(k, _)| in_run(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            assert_eq!(run.len(), part.len() as u64);
            for p in probes.iter().chain(model.keys()) {
                assert_eq!(
                    run.get(p).unwrap().map(|b| b.to_vec()),
                    part.get(p).cloned()
                );
            }
            for p in probes {
                for (s, e) in [
                    (Bound::Included(&p[..]), Bound::Unbounded),
                    (Bound::Unbounded, Bound::Excluded(&p[..])),
                ] {
                    assert_eq!(
                        collect_all(run.range(s, e)),
                        model_range(&part, s, e),
                        "{first}..{end} {s:?} {e:?}"
                    );
                }
            }
        }
    }
}

#[test]
fn selections_share_the_shards_out() {
    use snapkv_format::Selection;
    let share = |o, r, n| {
        Selection::OrdinalOf {
            ordinal: o,
            replicas: r,
        }
        .held(n)
    };
    // 8 shards over 2 and 3 readers: contiguous runs covering every shard once.
    assert_eq!((share(0, 2, 8), share(1, 2, 8)), (Some(0..4), Some(4..8)));
    assert_eq!(
        (share(0, 3, 8), share(1, 3, 8), share(2, 3, 8)),
        (Some(0..3), Some(3..6), Some(6..8))
    );
    // More readers than shards: each reader holds one shard, each shard has readers.
    let held: Vec<_> = (0..4).map(|o| share(o, 4, 2)).collect();
    assert_eq!(held, [Some(0..1), Some(0..1), Some(1..2), Some(1..2)]);
    // An unsharded version is one shard, which every reader holds.
    assert!((0..3).all(|o| share(o, 3, 1) == Some(0..1)));
    assert_eq!(share(2, 2, 8), None);
    for n in 1..20 {
        for r in 1..n {
            let mut covered = vec![0; n];
            for o in 0..r {
                for i in share(o, r, n).unwrap() {
                    covered[i] += 1;
                }
            }
            assert!(covered.iter().all(|&c| c == 1), "{n} over {r}: {covered:?}");
        }
    }
    let range = |first, last| Selection::Range { first, last }.held(8);
    assert_eq!(
        (range(0, 3), range(6, 11), range(8, 9)),
        (Some(0..4), Some(6..8), None)
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn shards_read_as_one_version(
        model in proptest::collection::btree_map(key(), value(), 0..300),
        splits in proptest::collection::vec(key(), 0..6),
        probes in proptest::collection::vec(key(), 0..16),
    ) {
        let (mut splits, mut probes) = (splits, probes);
        splits.sort();
        probes.sort();
        // Probes at the split keys themselves: the boundaries.
        probes.extend(splits.iter().cloned());
        probes.sort();
        check_shards(&model, &splits, &probes);
    }
}

#[test]
fn shards_that_do_not_form_a_version_are_refused() {
    let snap = |keys: &[&str]| {
        let model: Model = keys
            .iter()
            .map(|k| (k.as_bytes().to_vec(), b"v".to_vec()))
            .collect();
        Snapshot::open(write(&model, WriterOptions::default())).unwrap()
    };
    let b = |s: &str| bytes::Bytes::from(s.to_owned());
    let ok = Shards::new(
        vec![snap(&["a", "b"]), snap(&[]), snap(&["m", "z"])],
        vec![b("c"), b("c")],
    );
    assert_eq!(
        ok.unwrap().shard_of(b"c"),
        2,
        "an empty range between equal split keys"
    );
    let e = Shards::new(vec![snap(&["a", "m"]), snap(&["n"])], vec![b("k")]).unwrap_err();
    assert!(
        matches!(
            e,
            ShardError::OutOfRange {
                shard: 0,
                which: "last",
                ..
            }
        ),
        "{e}"
    );
    let e = Shards::new(vec![snap(&["a"]), snap(&["b"])], vec![b("c")]).unwrap_err();
    assert!(
        matches!(
            e,
            ShardError::OutOfRange {
                shard: 1,
                which: "first",
                ..
            }
        ),
        "{e}"
    );
    let e = Shards::new(
        vec![snap(&["a"]), snap(&[]), snap(&["z"])],
        vec![b("m"), b("c")],
    )
    .unwrap_err();
    assert_eq!(e, ShardError::Unordered { index: 1 });
    let e = Shards::new(vec![snap(&["a"])], vec![b("m")]).unwrap_err();
    assert_eq!(
        e,
        ShardError::SplitCount {
            shards: 1,
            splits: 1
        }
    );
    assert_eq!(
        Shards::new(Vec::new(), Vec::new()).unwrap_err(),
        ShardError::NoShards
    );
}

/// Absent keys reach every kind of slot, unused ones included, when no filter turns them away
/// first: each is reported absent, in both versions and with or without compression.
#[test]
fn absent_keys_without_a_filter_are_absent() {
    let model = numbered(5000, 5);
    for version in [1, 2] {
        for compression in [0, 1] {
            let mut o = versioned(version, compression, 256, false, 1);
            o.filter_bits_per_key = 0;
            let snap = Snapshot::open(write(&model, o)).unwrap();
            for i in 0..20_000u32 {
                let absent = format!("x{i}");
                assert_eq!(snap.get(absent.as_bytes()).unwrap(), None, "{absent}");
            }
            assert_eq!(snap.get(b"k00042").unwrap().as_deref(), Some(&b"v42"[..]));
        }
    }
}
