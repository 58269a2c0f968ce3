//! The block list read from a file's tail ([`Tail::blocks`]), and how many blocks a new version
//! shares with the old one after edits: what a reader syncing by block reuses.

use snapkv_format::{Dictionary, Metadata, Snapshot, SnapshotWriter, StoredBlock, Tail, TAIL_LEN};
use std::collections::{BTreeMap, HashSet};
use xxhash_rust::xxh3::xxh3_64;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn write(model: &Model, dictionary: Dictionary) -> Vec<u8> {
    let mut o = snapkv_format::WriterOptions::default();
    o.dictionary = dictionary;
    let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
    for (k, v) in model {
        w.insert(k, v).unwrap();
    }
    w.finish().unwrap().0
}

/// ~100-byte JSON values that vary with `i` and `salt`, for 32-hex-like keys in order.
fn value(i: u64, salt: u64) -> Vec<u8> {
    format!(
        "{{\"score\":{},\"segment\":\"s{}\",\"items\":[{},{},{}],\"salt\":{salt}}}",
        xxh3_64(&i.to_le_bytes()) % 100_000,
        i % 7,
        i * 3,
        i * 5 + 1,
        i % 1000,
    )
    .into_bytes()
}

fn key(i: u64) -> Vec<u8> {
    format!("user:{:012}", i * 10).into_bytes()
}

fn model(n: u64) -> Model {
    (0..n).map(|i| (key(i), value(i, 0))).collect()
}

fn tail_of(file: &[u8]) -> Tail {
    let len = file.len() as u64;
    let end = &file[file.len() - (TAIL_LEN.min(len) as usize)..];
    Tail::parse(end, len).unwrap()
}

fn blocks_of(file: &[u8]) -> Vec<StoredBlock> {
    let tail = tail_of(file);
    let r = tail.block_table_range();
    tail.blocks(&file[r.start as usize..r.end as usize])
        .unwrap()
}

/// Blocks of `new` whose bytes `old` does not hold, as (count, bytes).
fn missing(old: &[u8], new: &[u8]) -> (usize, u64) {
    let have: HashSet<(u64, u32)> = blocks_of(old).iter().map(|b| (b.checksum, b.len)).collect();
    let miss: Vec<_> = blocks_of(new)
        .into_iter()
        .filter(|b| !have.contains(&(b.checksum, b.len)))
        .collect();
    (miss.len(), miss.iter().map(|b| u64::from(b.len)).sum())
}

#[test]
fn header_blocks_padding_and_sections_make_the_file() {
    for n in [0u64, 1, 5, 3_000] {
        let file = write(&model(n), Dictionary::Off);
        let tail = tail_of(&file);
        let r = tail.sections_range();
        let blocks = blocks_of(&file);
        assert_eq!(
            blocks.len() as u64,
            Snapshot::open(file.clone()).unwrap().block_count()
        );
        let mut rebuilt = tail.header().to_vec();
        for b in &blocks {
            let bytes = &file[b.offset as usize..b.offset as usize + b.len as usize];
            assert_eq!(xxh3_64(bytes), b.checksum);
            assert_eq!(b.offset, rebuilt.len() as u64);
            rebuilt.extend_from_slice(bytes);
        }
        rebuilt.resize(r.start as usize, 0);
        rebuilt.extend_from_slice(&file[r.start as usize..]);
        assert_eq!(rebuilt, file, "{n} keys");
    }
}

#[test]
fn a_damaged_block_table_is_an_error() {
    let file = write(&model(2_000), Dictionary::Off);
    let tail = tail_of(&file);
    let r = tail.block_table_range();
    let table = &file[r.start as usize..r.end as usize];
    assert!(tail.blocks(&table[1..]).is_err());
    assert!(tail.blocks(&[]).is_err());
    // Any byte of the table flipped: its checksum catches it. Never a panic.
    let mut bad = table.to_vec();
    for i in (0..bad.len()).step_by(5) {
        bad[i] ^= 0x55;
        assert!(tail.blocks(&bad).is_err());
        bad[i] ^= 0x55;
    }
    assert!(tail.blocks(&bad).is_ok());
}

#[test]
fn edits_change_only_the_blocks_around_them() {
    let n = 40_000;
    let old = model(n);
    let base = write(&old, snapkv_format::WriterOptions::default().dictionary);
    let dict = Snapshot::open(base.clone()).unwrap().dictionary().to_vec();
    assert!(!dict.is_empty());
    let reuse = || Dictionary::Use(dict.clone());
    let blocks = blocks_of(&base).len();
    assert!(blocks > 500, "{blocks} blocks");

    // Same entries, same dictionary: every block is shared.
    assert_eq!(missing(&base, &write(&old, reuse())), (0, 0));

    // A run of 400 new keys (1%) in one place: the blocks holding them and one or two
    // neighbours on each side.
    let mut inserted = old.clone();
    for i in 0..400 {
        inserted.insert(
            format!("user:{:012}", 200_005 + i * 2).into_bytes(),
            value(i, 9),
        );
    }
    let file = write(&inserted, reuse());
    let new_blocks = blocks_of(&file).len();
    let run_blocks = new_blocks - blocks;
    let (count, _) = missing(&base, &file);
    assert!(
        count <= run_blocks + 4,
        "{count} blocks missing for a run that takes {run_blocks}"
    );

    // 400 keys deleted in one place.
    let mut deleted = old.clone();
    for i in 10_000..10_400 {
        deleted.remove(&key(i));
    }
    let (count, _) = missing(&base, &write(&deleted, reuse()));
    assert!(count <= 4, "{count} blocks missing after a deletion");

    // 1% of values changed at random places: each changes its block, and may move the next
    // boundary, which realigns within a block or two.
    let mut changed = old.clone();
    let edits = n / 100;
    for j in 0..edits {
        let i = xxh3_64(&j.to_le_bytes()) % n;
        changed.insert(key(i), value(i, 1 + j));
    }
    let (count, _) = missing(&base, &write(&changed, reuse()));
    assert!(
        count as u64 <= 2 * edits,
        "{count} blocks missing after {edits} edits"
    );
    assert!(
        count as u64 >= edits / 2,
        "{count} blocks for {edits} edits"
    );

    // A dictionary trained again on other samples changes every compressed block.
    let (count, _) = missing(
        &base,
        &write(&changed, snapkv_format::WriterOptions::default().dictionary),
    );
    assert!(count > blocks / 2, "{count} of {blocks} blocks missing");
}

/// The sections a delta fetch rebuilds, from blocks given in order.
fn rebuild(
    file: &[u8],
    spill: Option<&snapkv_format::Spill>,
) -> Vec<(std::ops::Range<u64>, Vec<u8>)> {
    let tail = tail_of(file);
    let slice = |r: std::ops::Range<u64>| &file[r.start as usize..r.end as usize];
    let mut r = snapkv_format::Rebuild::new(
        &tail,
        slice(tail.block_table_range()),
        slice(tail.dictionary_range()),
        slice(tail.metadata_range()),
        2,
        spill,
    )
    .unwrap();
    // In batches decoded on the rebuild's threads, as a delta fetch gives them.
    let stored: Vec<&[u8]> = blocks_of(file)
        .iter()
        .map(|b| slice(b.offset..b.offset + u64::from(b.len)))
        .collect();
    for batch in stored.chunks(37) {
        r.blocks(batch).unwrap();
    }
    r.finish().unwrap()
}

#[test]
fn rebuilt_sections_are_the_writers() {
    let spill_dir = tempfile::tempdir().unwrap();
    let spill = snapkv_format::Spill {
        dir: spill_dir.path().to_owned(),
        memory: 64 << 10,
    };
    for (n, compression, filter_bits, block_size) in [
        (
            20_000u64,
            snapkv_format::Compression::Zstd { level: 3 },
            10,
            4096,
        ),
        (20_000, snapkv_format::Compression::None, 10, 4096),
        (5_000, snapkv_format::Compression::Zstd { level: 1 }, 0, 256),
        (1, snapkv_format::Compression::Zstd { level: 3 }, 10, 4096),
        (0, snapkv_format::Compression::Zstd { level: 3 }, 10, 4096),
    ] {
        let mut o = snapkv_format::WriterOptions::default();
        o.compression = compression;
        o.filter_bits_per_key = filter_bits;
        o.block_size = block_size;
        let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
        for (k, v) in model(n) {
            w.insert(&k, &v).unwrap();
        }
        let file = w.finish().unwrap().0;
        for spill in [None, Some(&spill)] {
            let sections = rebuild(&file, spill);
            // Index, filter (empty without one) and lookup: each byte-identical.
            assert_eq!(sections.len(), 3, "{n} keys, {compression:?}");
            for (range, bytes) in sections {
                assert_eq!(&file[range.start as usize..range.end as usize], &bytes[..]);
            }
        }
    }
}

#[test]
fn a_rebuild_refuses_blocks_that_do_not_match_the_table() {
    let file = write(&model(3_000), Dictionary::Off);
    let tail = tail_of(&file);
    let slice = |r: std::ops::Range<u64>| &file[r.start as usize..r.end as usize];
    let new = || {
        snapkv_format::Rebuild::new(
            &tail,
            slice(tail.block_table_range()),
            slice(tail.dictionary_range()),
            slice(tail.metadata_range()),
            1,
            None,
        )
        .unwrap()
    };
    let blocks = blocks_of(&file);
    let mut r = new();
    let first = slice(blocks[0].offset..blocks[0].offset + u64::from(blocks[0].len));
    assert!(r.block(&first[1..]).is_err());
    let mut r = new();
    r.block(first).unwrap();
    assert!(r.finish().is_err(), "blocks missing");
    // A version 1 file is not rebuilt.
    let mut o = snapkv_format::WriterOptions::default();
    o.format_version = 1;
    let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
    w.insert(b"a", b"1").unwrap();
    let v1 = w.finish().unwrap().0;
    let t1 = tail_of(&v1);
    assert!(snapkv_format::Rebuild::new(&t1, &[], &[], &[], 1, None).is_err());
}

/// Regression (fuzzing): a block table entry claiming 2^32 - 1 entries (its checksum fixed)
/// made a rebuild reserve room for them all (100 GB) before decoding the block.
#[test]
fn a_rebuild_does_not_trust_the_entry_count_for_memory() {
    let mut file = write(&model(500), Dictionary::Off);
    let len = file.len();
    let footer = len - 192;
    let tail = tail_of(&file);
    let table = tail.block_table_range();
    let at = table.start as usize + 24;
    file[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let sum = xxh3_64(&file[table.start as usize..table.end as usize]);
    file[footer + 24 + 16..footer + 24 + 24].copy_from_slice(&sum.to_le_bytes());
    let sum = xxh3_64(&file[footer..len - 24]);
    file[len - 24..len - 16].copy_from_slice(&sum.to_le_bytes());
    // Decoded on two threads, in batches: no reservation from the claimed count.
    rebuild(&file, None);
}
