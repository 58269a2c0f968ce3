//! The golden files: a tiny snapshot in each format version, written out byte for byte, that
//! keep the writer, the reader and `spec/FORMAT.md` in step.
//!
//! - `writer_output_is_the_golden_bytes`: the writer produces exactly the annotated version 1
//!   bytes below.
//! - `spec_golden_blocks_are_the_writer_output`: the hex dumps under "Golden file" (version 2)
//!   and "Golden file, version 1" in the spec are the writer's output.
//! - `golden_files_read_back`: they open, verify and answer lookups and scans.
//! - `spec_rules_rebuild_the_golden_files`: the spec's rules (checksums, cut rule, separators,
//!   filter, perfect hash and slot table), implemented here from the spec alone, give back the
//!   same bytes.
//!
//! If the format changes on purpose, update the spec first, then these bytes; a failure prints
//! the writer's output as a hex dump.

use snapkv_format::{
    Compression, Dictionary, Metadata, Snapshot, SnapshotWriter, ValueEncoding, WriterOptions,
};
use std::fmt::Write as _;
use xxhash_rust::xxh3::{xxh3_128, xxh3_64, xxh3_64_with_seed};

const ENTRIES: [(&[u8], &[u8]); 3] = [
    (b"apple", br#"{"color":"red"}"#),
    (b"apricot", br#"{"color":"orange"}"#),
    (b"banana", br#"{"color":"yellow"}"#),
];

const BLOCK_SIZE: u32 = 64;
const FILTER_BITS_PER_KEY: u32 = 10;

fn options(version: u32, threads: usize) -> WriterOptions {
    let mut o = WriterOptions::default();
    o.compression = Compression::None;
    o.dictionary = Dictionary::Off;
    o.block_size = BLOCK_SIZE;
    o.filter_bits_per_key = FILTER_BITS_PER_KEY;
    o.threads = threads;
    o.format_version = version;
    o
}

fn metadata() -> Metadata {
    let mut m = Metadata::default();
    m.dataset = Some("fruit".into());
    m.version = Some("20261127T031500Z".into());
    m
}

fn write_golden(version: u32, threads: usize) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), options(version, threads), metadata()).unwrap();
    for (k, v) in ENTRIES {
        w.insert(k, v).unwrap();
    }
    let (bytes, summary) = w.finish().unwrap();
    assert_eq!(summary.key_count, 3);
    assert_eq!(summary.block_count, 2);
    assert_eq!(summary.raw_blocks, 2);
    assert_eq!(summary.file_bytes, bytes.len() as u64);
    bytes
}

/// The version 1 golden file, annotated. Offsets are file offsets.
#[rustfmt::skip]
fn golden() -> Vec<u8> {
    let parts: &[&[u8]] = &[
        // ---- 0x000 header
        &[0x89, 0x53, 0x4e, 0x41, 0x50, 0x4b, 0x56, 0x0a], // header: magic "\x89SNAPKV\n"
        &[0x01, 0x00, 0x00, 0x00],                         // header: version = 1 (u32)
        &[0x00, 0x00, 0x00, 0x00],                         // header: flags = 0 (u32)

        // ---- 0x010 block 0 (raw, 49 bytes, 2 entries)
        &[0x00, 0x05, 0x0f],               // block 0 entry 0: shared=0, suffix_len=5, value_len=15
        b"apple",                          // block 0 entry 0: suffix (key "apple")
        br#"{"color":"red"}"#,             // block 0 entry 0: value
        &[0x02, 0x05, 0x12],               // block 0 entry 1: shared=2 ("ap"), suffix_len=5, value_len=18
        b"ricot",                          // block 0 entry 1: suffix (key "ap" + "ricot")
        br#"{"color":"orange"}"#,          // block 0 entry 1: value
        // cut rule 2 ends block 0 here: len 49 >= 64/2 and (h("apricot")·32)>>64 = 1 < 26 bytes

        // ---- 0x041 block 1 (raw, 27 bytes, 1 entry)
        &[0x00, 0x06, 0x12],               // block 1 entry 0: shared=0, suffix_len=6, value_len=18
        b"banana",                         // block 1 entry 0: suffix (key "banana")
        br#"{"color":"yellow"}"#,          // block 1 entry 0: value

        // ---- 0x05c padding to 8
        &[0x00; 4],                        // padding before the dictionary

        // ---- 0x060 dictionary: empty (offset 0x60, length 0)

        // ---- 0x060 block table (2 entries of 32 bytes)
        &[0x10, 0, 0, 0, 0, 0, 0, 0],                       // block table entry 0: offset = 16 (u64)
        &[0x31, 0, 0, 0],                                   // block table entry 0: stored_len = 49 (u32)
        &[0x31, 0, 0, 0],                                   // block table entry 0: raw_len = 49 (u32)
        &[0x78, 0xdc, 0x5a, 0x3c, 0x0b, 0xc0, 0xcc, 0x0b], // block table entry 0: checksum = xxh3-64 of bytes 0x010..0x041
        &[0x02, 0, 0, 0],                                   // block table entry 0: entries = 2 (u32)
        &[0x00],                                            // block table entry 0: codec = 0 (raw)
        &[0x00, 0x00, 0x00],                                // block table entry 0: reserved
        &[0x41, 0, 0, 0, 0, 0, 0, 0],                       // block table entry 1: offset = 65 (u64)
        &[0x1b, 0, 0, 0],                                   // block table entry 1: stored_len = 27 (u32)
        &[0x1b, 0, 0, 0],                                   // block table entry 1: raw_len = 27 (u32)
        &[0xe0, 0x83, 0xfd, 0x45, 0xfd, 0x26, 0xb8, 0x1b], // block table entry 1: checksum = xxh3-64 of bytes 0x041..0x05c
        &[0x01, 0, 0, 0],                                   // block table entry 1: entries = 1 (u32)
        &[0x00],                                            // block table entry 1: codec = 0 (raw)
        &[0x00, 0x00, 0x00],                                // block table entry 1: reserved

        // ---- 0x0a0 index: fst 0.4 map {"b" -> 0, "banana" -> 1}, 49 bytes.
        // Path b -a(+1)- n - a - n - a; FST addresses count from the section start.
        &[0x03, 0, 0, 0, 0, 0, 0, 0],      // index: fst version = 3 (u64)
        &[0x00, 0, 0, 0, 0, 0, 0, 0],      // index: fst type = 0 (u64)
        &[0x00, 0x10, 0x85],               // index: node @18 "a" -> final: delta 0 (empty final node), pack sizes (trans 1, out 0), state one-trans, input 'a'
        &[0xcb],                           // index: node @19 "n" -> @18: state one-trans-next, input 'n'
        &[0xc5],                           // index: node @20 "a" -> @19: state one-trans-next, input 'a'
        &[0xcb],                           // index: node @21 "n" -> @20: state one-trans-next, input 'n'
        &[0x00, 0x01, 0x01, 0x61, 0x11, 0x41], // index: node @22..27 final ("b" -> 0): final output 0, "a" output 1, delta 1 (-> @21), input 'a', pack sizes (1, 1), state any-trans final 1 transition
        &[0xda],                           // index: root node @28 "b" -> @27: state one-trans-next, input 'b'
        &[0x02, 0, 0, 0, 0, 0, 0, 0],      // index: key count = 2 (u64)
        &[0x1c, 0, 0, 0, 0, 0, 0, 0],      // index: root address = 28 (u64)
        &[0x5c, 0x04, 0x63, 0x14],         // index: fst checksum, masked CRC-32C of the 45 bytes before

        // ---- 0x0d1 padding to 8
        &[0x00; 7],                        // padding before the filter

        // ---- 0x0d8 filter, 80 bytes: bits of apple {0 27 43 240 293 297 381},
        // apricot {1 185 236 277 348 383 449}, banana {60 149 152 175 200 265 277}
        &[0x07, 0, 0, 0],                  // filter: k = 7 probes = round(10·ln 2) (u32)
        &[0x00, 0, 0, 0],                  // filter: reserved (u32)
        &[0x01, 0, 0, 0, 0, 0, 0, 0],      // filter: lines = 1 = ceil(3·10 / 512) (u64)
        &[0x03, 0x00, 0x00, 0x08, 0x00, 0x08, 0x00, 0x10], // filter line 0 bytes 0..8: bits 0 1 27 43 60
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // filter line 0 bytes 8..16: none
        &[0x00, 0x00, 0x20, 0x01, 0x00, 0x80, 0x00, 0x02], // filter line 0 bytes 16..24: bits 149 152 175 185
        &[0x00, 0x01, 0x00, 0x00, 0x00, 0x10, 0x01, 0x00], // filter line 0 bytes 24..32: bits 200 236 240
        &[0x00, 0x02, 0x20, 0x00, 0x20, 0x02, 0x00, 0x00], // filter line 0 bytes 32..40: bits 265 277 293 297
        &[0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00, 0xa0], // filter line 0 bytes 40..48: bits 348 381 383
        &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // filter line 0 bytes 48..56: none
        &[0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00], // filter line 0 bytes 56..64: bit 449

        // ---- 0x128 metadata, 189 bytes of JSON
        br#"{"dataset":"fruit","version":"20261127T031500Z","value_encoding":"raw","key_count":3,"#,
        br#""format":{"compression":"none","level":0,"block_size":64,"dictionary_bytes":0,"filter_bits_per_key":10}}"#,

        // ---- 0x1e5 padding to 8
        &[0x00; 3],                        // padding before the footer

        // ---- 0x1e8 footer, 168 bytes
        &[0x60, 0, 0, 0, 0, 0, 0, 0],                       // footer: dictionary.offset = 0x60 (u64)
        &[0x00, 0, 0, 0, 0, 0, 0, 0],                       // footer: dictionary.len = 0 (u64)
        &[0xc2, 0x94, 0xd3, 0x38, 0x05, 0x80, 0x06, 0x2d], // footer: dictionary.checksum = xxh3-64 of no bytes
        &[0x60, 0, 0, 0, 0, 0, 0, 0],                       // footer: block_table.offset = 0x60 (u64)
        &[0x40, 0, 0, 0, 0, 0, 0, 0],                       // footer: block_table.len = 64 (u64)
        &[0xf2, 0x2c, 0x6e, 0x42, 0xd3, 0x32, 0x5d, 0x8e], // footer: block_table.checksum = xxh3-64 of bytes 0x060..0x0a0
        &[0xa0, 0, 0, 0, 0, 0, 0, 0],                       // footer: index.offset = 0xa0 (u64)
        &[0x31, 0, 0, 0, 0, 0, 0, 0],                       // footer: index.len = 49 (u64)
        &[0x02, 0xe6, 0x3d, 0x3c, 0x32, 0x1e, 0x72, 0x53], // footer: index.checksum = xxh3-64 of bytes 0x0a0..0x0d1
        &[0xd8, 0, 0, 0, 0, 0, 0, 0],                       // footer: filter.offset = 0xd8 (u64)
        &[0x50, 0, 0, 0, 0, 0, 0, 0],                       // footer: filter.len = 80 (u64)
        &[0x8d, 0xe8, 0xdc, 0x88, 0x98, 0x1f, 0xf2, 0x56], // footer: filter.checksum = xxh3-64 of bytes 0x0d8..0x128
        &[0x28, 0x01, 0, 0, 0, 0, 0, 0],                    // footer: metadata.offset = 0x128 (u64)
        &[0xbd, 0, 0, 0, 0, 0, 0, 0],                       // footer: metadata.len = 189 (u64)
        &[0xbf, 0x83, 0xe1, 0xbb, 0x5f, 0xf3, 0xe0, 0x68], // footer: metadata.checksum = xxh3-64 of bytes 0x128..0x1e5
        &[0x03, 0, 0, 0, 0, 0, 0, 0],                       // footer: key_count = 3 (u64)
        &[0x02, 0, 0, 0, 0, 0, 0, 0],                       // footer: block_count = 2 (u64)
        &[0x01, 0, 0, 0],                                   // footer: version = 1 (u32)
        &[0xa8, 0, 0, 0],                                   // footer: footer_len = 168 (u32)
        &[0xd7, 0xab, 0x2d, 0x2d, 0xec, 0x81, 0x91, 0xd7], // footer: checksum = xxh3-64 of footer bytes 0..144 (0x1e8..0x278)
        &[0x11, 0xbb, 0xad, 0x9e, 0xc5, 0xac, 0xbb, 0xe9], // footer: file_checksum = xxh3-64 of file bytes 0x000..0x280
        &[0x89, 0x53, 0x4e, 0x41, 0x50, 0x4b, 0x56, 0x0a], // footer: magic "\x89SNAPKV\n"
    ];
    parts.concat()
}

/// `xxd`-style dump: offset, 16 bytes in groups of two, printable ASCII.
fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let mut hex = String::new();
        for (j, b) in chunk.iter().enumerate() {
            if j > 0 && j % 2 == 0 {
                hex.push(' ');
            }
            write!(hex, "{b:02x}").unwrap();
        }
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if (0x20..=0x7e).contains(&b) {
                    b as char
                } else {
                    '.'
                }
            })
            .collect();
        writeln!(out, "{:08x}: {hex:<39}  {ascii}", i * 16).unwrap();
    }
    out
}

fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .or_else(|| (a.len() != b.len()).then(|| a.len().min(b.len())))
}

#[test]
fn writer_output_is_the_golden_bytes() {
    let written = write_golden(1, 1);
    let expected = golden();
    if let Some(at) = first_difference(&written, &expected) {
        panic!(
            "the writer's output differs from the golden bytes at offset {at:#x} \
             (written {} bytes, golden {} bytes); written:\n{}",
            written.len(),
            expected.len(),
            hex_dump(&written)
        );
    }
    // Thread count does not change the bytes.
    assert_eq!(write_golden(1, 4), written);
    assert_eq!(write_golden(2, 4), write_golden(2, 1));
}

/// The fenced block that follows the heading `title` of the spec.
fn spec_golden_block(title: &str) -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../spec/FORMAT.md");
    let spec = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let mut lines = spec.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with('#') && l.trim_start_matches('#').trim() == title)
        .unwrap_or_else(|| panic!("a {title:?} heading in spec/FORMAT.md"));
    lines
        .by_ref()
        .find(|l| l.starts_with("```"))
        .unwrap_or_else(|| panic!("a fenced block after the {title:?} heading"));
    let mut block = String::new();
    for line in lines {
        if line.starts_with("```") {
            return block;
        }
        block.push_str(line);
        block.push('\n');
    }
    panic!("unterminated fenced block under {title:?} in spec/FORMAT.md");
}

#[test]
fn spec_golden_blocks_are_the_writer_output() {
    for (version, title) in [(2, "Golden file"), (1, "Golden file, version 1")] {
        let dump = hex_dump(&write_golden(version, 1));
        let in_spec = spec_golden_block(title);
        assert!(
            in_spec == dump,
            "the {title:?} block of spec/FORMAT.md differs from the writer's output; \
             the writer's output is:\n{dump}"
        );
    }
}

#[test]
fn golden_files_read_back() {
    read_back(golden(), 1, 656);
    let v2 = write_golden(2, 1);
    let len = v2.len() as u64;
    read_back(v2, 2, len);
}

fn read_back(file: Vec<u8>, version: u32, len: u64) {
    let snapshot = Snapshot::open(file).unwrap();
    assert_eq!(snapshot.format_version(), version);
    snapshot.verify().unwrap();
    assert_eq!(snapshot.len(), 3);

    for (k, v) in ENTRIES {
        assert_eq!(snapshot.get(k).unwrap().as_deref(), Some(v), "get {k:?}");
    }
    for absent in [
        &b"a"[..],
        b"ap",
        b"apples",
        b"apricots",
        b"b",
        b"banan",
        b"cherry",
        b"",
    ] {
        assert_eq!(snapshot.get(absent).unwrap(), None, "get {absent:?}");
    }

    let keys = |it: snapkv_format::Iter| -> Vec<Vec<u8>> {
        it.map(|kv| kv.map(|(k, _)| k.to_vec()))
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(
        keys(snapshot.prefix(b"ap")),
        [b"apple".to_vec(), b"apricot".to_vec()]
    );
    assert_eq!(keys(snapshot.prefix(b"apr")), [b"apricot".to_vec()]);
    assert_eq!(keys(snapshot.prefix(b"b")), [b"banana".to_vec()]);
    assert_eq!(keys(snapshot.prefix(b"c")), Vec::<Vec<u8>>::new());
    assert_eq!(keys(snapshot.prefix(b"")).len(), 3);
    let all: Vec<(Vec<u8>, Vec<u8>)> = snapshot
        .iter()
        .map(|kv| kv.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<Result<_, _>>()
        .unwrap();
    let expected: Vec<(Vec<u8>, Vec<u8>)> = ENTRIES
        .iter()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    assert_eq!(all, expected);

    let m = snapshot.metadata();
    assert_eq!(m.dataset.as_deref(), Some("fruit"));
    assert_eq!(m.version.as_deref(), Some("20261127T031500Z"));
    assert_eq!(m.created_at, None);
    assert_eq!(m.value_encoding, ValueEncoding::Raw);
    assert_eq!(m.key_count, 3);
    assert_eq!(m.format.compression, "none");
    assert_eq!(m.format.level, 0);
    assert_eq!(m.format.block_size, BLOCK_SIZE);
    assert_eq!(m.format.dictionary_bytes, 0);
    assert_eq!(m.format.filter_bits_per_key, FILTER_BITS_PER_KEY);

    let stats = snapshot.stats().unwrap();
    assert_eq!(
        (stats.file_bytes, stats.block_count, stats.raw_blocks),
        (len, 2, 2)
    );
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn lcp(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A block being cut by the spec's rules.
#[derive(Default)]
struct Block {
    raw: Vec<u8>,
    entries: u32,
    first: Vec<u8>,
    last: Vec<u8>,
}

/// MurmurHash3's 64-bit finalizer, as the spec's perfect hash uses it.
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

fn fastrange(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// The lookup section of the "Lookup" part of the spec, from each key's `(lo, hi)` hash and its
/// `(block, offset)` (with `direct`: `(0, file offset of the entry)`).
fn spec_lookup(hashes: &[(u64, u64)], locations: &[(u64, u64)], direct: bool) -> Vec<u8> {
    let n = hashes.len() as u64;
    let want = n.div_ceil(3).max(1);
    let shift = (0..=14u32).find(|s| 1u64 << s >= want).unwrap_or(14);
    let partitions = want.div_ceil(1 << shift);
    let buckets = partitions << shift;
    let bits = |x: u64| 64 - x.leading_zeros();
    let block_bits = bits(locations.iter().map(|l| l.0).max().unwrap_or(0));
    let offset_bits = bits(locations.iter().map(|l| l.1).max().unwrap_or(0));
    let w = u64::from(block_bits + offset_bits);
    let k = 0x9E37_79B9_7F4A_7C15u64;
    'seeds: for seed in 0..16u64 {
        let bucket = |hi: u64| fastrange(fmix64(hi ^ seed), buckets);
        let slot =
            |lo: u64, p: u64, n: u64| fastrange(fmix64(lo ^ seed ^ (p + 1).wrapping_mul(k)), n);
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); buckets as usize];
        for (i, h) in hashes.iter().enumerate() {
            members[bucket(h.1) as usize].push(i);
        }
        let mut bases = vec![0u64];
        for p in 0..partitions as usize {
            let keys: usize = (p << shift..(p + 1) << shift)
                .map(|b| members[b].len())
                .sum();
            let slots = (100 * keys as u64).div_ceil(97).max(1);
            bases.push(bases[p] + slots);
        }
        let slots = bases[partitions as usize];
        let mut taken = vec![false; slots as usize];
        let mut pilots = vec![0u16; buckets as usize];
        let mut slot_of = vec![0u64; hashes.len()];
        for p in 0..partitions as usize {
            let (base, len) = (bases[p], bases[p + 1] - bases[p]);
            // Buckets by size, largest first, ties by bucket number.
            let mut order: Vec<usize> = (p << shift..(p + 1) << shift).collect();
            order.sort_by_key(|&b| (std::cmp::Reverse(members[b].len()), b));
            for b in order {
                let fits = |q: u64| {
                    let s: Vec<u64> = members[b]
                        .iter()
                        .map(|&i| base + slot(hashes[i].0, q, len))
                        .collect();
                    let distinct: std::collections::BTreeSet<u64> = s.iter().copied().collect();
                    (distinct.len() == s.len() && s.iter().all(|&x| !taken[x as usize]))
                        .then_some(s)
                };
                let Some((q, s)) = (0..=u64::from(u16::MAX)).find_map(|q| Some((q, fits(q)?)))
                else {
                    continue 'seeds;
                };
                pilots[b] = q as u16;
                for (&i, &x) in members[b].iter().zip(&s) {
                    taken[x as usize] = true;
                    slot_of[i] = x;
                }
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&seed.to_le_bytes());
        out.extend_from_slice(&buckets.to_le_bytes());
        out.extend_from_slice(&slots.to_le_bytes());
        out.extend_from_slice(&partitions.to_le_bytes());
        out.extend_from_slice(&[
            block_bits as u8,
            offset_bits as u8,
            shift as u8,
            u8::from(direct),
            0,
            0,
            0,
            0,
        ]);
        for p in pilots {
            out.extend_from_slice(&p.to_le_bytes());
        }
        out.resize(out.len().next_multiple_of(8), 0);
        for b in &bases {
            out.extend_from_slice(&b.to_le_bytes());
        }
        let table_at = out.len();
        out.resize(table_at + (slots * w / 8) as usize + 8, 0);
        for (i, &(block, offset)) in locations.iter().enumerate() {
            let value = block << offset_bits | offset;
            for bit in 0..w {
                if value >> bit & 1 == 1 {
                    let at = slot_of[i] * w + bit;
                    out[table_at + (at / 8) as usize] |= 1 << (at % 8);
                }
            }
        }
        return out;
    }
    panic!("no seed gives a perfect hash");
}

/// Rebuilds a golden file from the rules of `spec/FORMAT.md` alone (no snapkv code), except the
/// FST bytes, which the spec defines as those of fst 0.4's `MapBuilder`.
fn spec_rules_rebuild(version: u32) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let pad = |out: &mut Vec<u8>| out.resize(out.len().next_multiple_of(8), 0);

    // Header.
    out.extend_from_slice(b"\x89SNAPKV\n");
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());

    // Entries, cut into blocks by rules 1-3 (the "Block boundaries" section).
    let t = BLOCK_SIZE as usize;
    let half = t / 2;
    let vlen = |n: usize| (usize::BITS - n.leading_zeros()).div_ceil(7).max(1) as usize;
    let shared_field = usize::from(version == 1);
    let mut blocks: Vec<Block> = Vec::new();
    let mut cur = Block::default();
    let mut locations = Vec::new();
    for (key, value) in ENTRIES {
        let bound = shared_field + vlen(key.len()) + vlen(value.len()) + key.len() + value.len();
        if cur.entries > 0 && cur.raw.len() + bound > 2 * t {
            blocks.push(std::mem::take(&mut cur)); // rule 1
        }
        if cur.entries == 0 {
            cur.first = key.to_vec();
            cur.last.clear();
        }
        let before = cur.raw.len();
        // Uncompressed: every block is raw, and the lookup holds each entry's file offset.
        let written: usize = blocks.iter().map(|b| b.raw.len()).sum();
        locations.push((0, (16 + written + before) as u64));
        let shared = if version == 1 {
            let shared = lcp(&cur.last, key);
            put_varint(&mut cur.raw, shared as u64);
            shared
        } else {
            0
        };
        put_varint(&mut cur.raw, (key.len() - shared) as u64);
        put_varint(&mut cur.raw, value.len() as u64);
        cur.raw.extend_from_slice(&key[shared..]);
        cur.raw.extend_from_slice(value);
        let e = cur.raw.len() - before;
        cur.entries += 1;
        cur.last = key.to_vec();
        let h = xxh3_64_with_seed(key, 0x736E_6170_6B76_6375);
        if cur.raw.len() >= half && (u128::from(h) * half as u128) >> 64 < e as u128 {
            blocks.push(std::mem::take(&mut cur)); // rule 2
        }
    }
    if cur.entries > 0 {
        blocks.push(cur); // rule 3
    }
    assert_eq!(blocks.len(), 2);

    let mut table = Vec::new();
    for block in &blocks {
        let len = block.raw.len() as u32;
        table.extend_from_slice(&(out.len() as u64).to_le_bytes());
        table.extend_from_slice(&len.to_le_bytes()); // stored_len
        table.extend_from_slice(&len.to_le_bytes()); // raw_len
        table.extend_from_slice(&xxh3_64(&block.raw).to_le_bytes());
        table.extend_from_slice(&block.entries.to_le_bytes());
        table.extend_from_slice(&[0, 0, 0, 0]); // codec 0, reserved
        out.extend_from_slice(&block.raw);
    }

    // Separators: sep(last, next first) between blocks, the last key for the last block.
    let sep = |l: &[u8], f: &[u8]| {
        let p = lcp(l, f);
        if p < l.len() && f.len() > p + 1 {
            f[..=p].to_vec()
        } else {
            l.to_vec()
        }
    };
    let mut index = fst::MapBuilder::memory();
    for (i, block) in blocks.iter().enumerate() {
        let s = match blocks.get(i + 1) {
            Some(next) => sep(&block.last, &next.first),
            None => block.last.clone(),
        };
        index.insert(&s, i as u64).unwrap();
    }
    let index = index.into_inner().unwrap();
    let separators: Vec<(Vec<u8>, u64)> = fst::Map::new(index.clone())
        .unwrap()
        .stream()
        .into_str_vec()
        .unwrap()
        .into_iter()
        .map(|(k, v)| (k.into_bytes(), v))
        .collect();
    assert_eq!(separators, [(b"b".to_vec(), 0), (b"banana".to_vec(), 1)]);

    // Key hashes: version 1 filters on xxh3-64; version 2 takes xxh3-128's halves.
    let hashes: Vec<(u64, u64)> = ENTRIES
        .iter()
        .map(|(key, _)| {
            if version == 1 {
                (xxh3_64(key), 0)
            } else {
                let h = xxh3_128(key);
                (h as u64, (h >> 64) as u64)
            }
        })
        .collect();

    // Filter.
    let n = ENTRIES.len() as u64;
    let b = FILTER_BITS_PER_KEY;
    let lines = (n * u64::from(b)).div_ceil(512).max(1);
    let k = ((f64::from(b) * std::f64::consts::LN_2).round() as u32).clamp(1, 7);
    let mut filter = vec![0u8; 16 + 64 * lines as usize];
    filter[0..4].copy_from_slice(&k.to_le_bytes());
    filter[8..16].copy_from_slice(&lines.to_le_bytes());
    for &(h, _) in &hashes {
        let line = ((u128::from(h) * u128::from(lines)) >> 64) as usize;
        let mut g = h.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for _ in 0..k {
            let bit = (g & 511) as usize;
            filter[16 + 64 * line + bit / 8] |= 1 << (bit % 8);
            g >>= 9;
        }
    }

    let meta = format!(
        r#"{{"dataset":"fruit","version":"20261127T031500Z","value_encoding":"raw","key_count":3,"format":{{"compression":"none","level":0,"block_size":{BLOCK_SIZE},"dictionary_bytes":0,"filter_bits_per_key":{b}}}}}"#
    );

    // Sections, each 8-aligned, then the footer.
    let lookup = spec_lookup(&hashes, &locations, true);
    let mut sections: Vec<&[u8]> = vec![&[], &table, &index, &filter];
    if version == 2 {
        sections.push(&lookup);
    }
    sections.push(meta.as_bytes());
    let mut footer = Vec::new();
    for section in &sections {
        pad(&mut out);
        footer.extend_from_slice(&(out.len() as u64).to_le_bytes());
        footer.extend_from_slice(&(section.len() as u64).to_le_bytes());
        footer.extend_from_slice(&xxh3_64(section).to_le_bytes());
        out.extend_from_slice(section);
    }
    pad(&mut out);
    let footer_len = 24 * sections.len() as u32 + 48;
    footer.extend_from_slice(&n.to_le_bytes());
    footer.extend_from_slice(&(blocks.len() as u64).to_le_bytes());
    footer.extend_from_slice(&version.to_le_bytes());
    footer.extend_from_slice(&footer_len.to_le_bytes());
    let footer_checksum = xxh3_64(&footer);
    footer.extend_from_slice(&footer_checksum.to_le_bytes());
    out.extend_from_slice(&footer);
    let file_checksum = xxh3_64(&out);
    out.extend_from_slice(&file_checksum.to_le_bytes());
    out.extend_from_slice(b"\x89SNAPKV\n");
    out
}

#[test]
fn spec_rules_rebuild_the_golden_files() {
    for (version, file) in [(1, golden()), (2, write_golden(2, 1))] {
        let out = spec_rules_rebuild(version);
        assert_eq!(first_difference(&out, &file), None, "{}", hex_dump(&out));

        // And the checksums in the file cover what the spec says, read back at the spec's
        // offsets.
        let sections = if version == 1 { 5 } else { 6 };
        let flen = 24 * sections + 48;
        let f = file.len() - flen;
        let tail = flen - 48;
        assert_eq!(
            u64_at(&file, f + tail + 24),
            xxh3_64(&file[f..f + tail + 24])
        );
        assert_eq!(
            u64_at(&file, f + tail + 32),
            xxh3_64(&file[..file.len() - 16])
        );
        assert_eq!(u32_at(&file, f + tail + 16), version);
        assert_eq!(u32_at(&file, f + tail + 20), flen as u32);
        for s in 0..sections {
            let (offset, len) = (u64_at(&file, f + 24 * s), u64_at(&file, f + 24 * s + 8));
            let range = offset as usize..(offset + len) as usize;
            assert_eq!(offset % 8, 0);
            assert_eq!(u64_at(&file, f + 24 * s + 16), xxh3_64(&file[range]));
        }
    }
}
