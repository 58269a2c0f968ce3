//! Corrupt and truncated snapshots: every failure is a typed error, raised where it belongs
//! (`open`, a read, or `verify`), and nothing panics.
//!
//! The footer is parsed here independently of the crate, from the specified layout: the last
//! 168 bytes (version 1) or 192 bytes (version 2) hold five or six `(offset u64, len u64,
//! checksum u64)` section refs (dictionary, block table, index, filter, [lookup,] metadata),
//! then key count u64, block count u64, version u32, footer length u32, footer checksum u64
//! (over the footer bytes before it), file checksum u64 (over everything before it), and the
//! 8-byte magic. Block table entries are 32 bytes: offset u64, stored length u32, raw length
//! u32, checksum u64, entry count u32, codec u8, 3 reserved bytes. Every test runs on files of
//! both versions.
//!
//! `write_fuzz_seeds` (ignored) writes the seed corpora of the fuzz targets in `fuzz/`.

use bytes::Bytes;
use snapkv_format::{
    Compression, Dictionary, Error, Metadata, Section, Snapshot, SnapshotWriter, WriterOptions,
};
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use xxhash_rust::xxh3::xxh3_64;

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

const MAGIC: [u8; 8] = *b"\x89SNAPKV\n";
const HEADER_LEN: usize = 16;
/// The shortest file: a header and a version 1 footer.
const MIN_LEN: usize = HEADER_LEN + 168;
const REF_LEN: usize = 24;
// Footer fields after the section refs, counted back from the end of the footer.
const KEY_COUNT: usize = 48;
const BLOCK_COUNT: usize = 40;
const VERSION: usize = 32;
const FOOTER_LEN_FIELD: usize = 28;
const FOOTER_CHECKSUM: usize = 24;
const FILE_CHECKSUM: usize = 16;
const FOOTER_MAGIC: usize = 8;
const VERSIONS: [u32; 2] = [1, 2];

/// The sections of a version, in file (and footer) order.
fn sections_of(version: u32) -> Vec<Section> {
    let mut s = vec![
        Section::Dictionary,
        Section::BlockTable,
        Section::Index,
        Section::Filter,
        Section::Metadata,
    ];
    if version == 2 {
        s.insert(4, Section::Lookup);
    }
    s
}

/// The footer length of the file `b`, from its version field.
fn footer_len(b: &[u8]) -> usize {
    match u32_at(b, b.len() - VERSION) {
        1 => 168,
        _ => 192,
    }
}
const BLOCK_ENTRY_LEN: usize = 32;
const CODEC_RAW: u8 = 0;

// ---------------------------------------------------------------------------------------------
// Building snapshots.

/// splitmix64: deterministic bytes without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn json_value(i: usize) -> Vec<u8> {
    format!(
        r#"{{"id":{i},"name":"user-{i}","email":"user{i}@example.com","score":{},"active":{},"tags":["alpha","beta","gamma"]}}"#,
        (i * 37) % 1000,
        i % 2 == 0
    )
    .into_bytes()
}

/// A few thousand keys: runs of compressible JSON values, and runs of random bytes that zstd
/// cannot shrink (their blocks are stored raw).
fn realistic_model() -> Model {
    let mut rng = Rng(7);
    (0..3000usize)
        .map(|i| {
            let key = format!("{}/{i:06}", ["item", "order", "user"][i % 3]).into_bytes();
            let value = if (i / 150) % 4 == 3 {
                let n = 120 + (rng.next() % 180) as usize;
                rng.bytes(n)
            } else {
                json_value(i)
            };
            (key, value)
        })
        .collect()
}

/// A few dozen keys, every section present, compressed and raw blocks.
fn small_model() -> Model {
    let mut rng = Rng(11);
    (0..40usize)
        .map(|i| {
            let key = format!("k{i:03}").into_bytes();
            let value = if i % 4 == 3 {
                rng.bytes(48)
            } else {
                json_value(i)
            };
            (key, value)
        })
        .collect()
}

fn write(model: &Model, options: WriterOptions) -> Vec<u8> {
    let mut w = SnapshotWriter::new(Vec::new(), options, Metadata::default()).unwrap();
    for (k, v) in model {
        w.insert(k, v).unwrap();
    }
    w.finish().unwrap().0
}

fn zstd_trained(version: u32) -> WriterOptions {
    let mut o = WriterOptions::default();
    o.format_version = version;
    o.compression = Compression::Zstd { level: 3 };
    o.block_size = 1024;
    o.dictionary = Dictionary::Train {
        max_bytes: 4096,
        sample_bytes: 64 * 1024,
    };
    o.filter_bits_per_key = 10;
    o.threads = 1;
    o
}

fn uncompressed(version: u32) -> WriterOptions {
    let mut o = zstd_trained(version);
    o.compression = Compression::None;
    o
}

/// zstd with a given (raw content) dictionary and small blocks: a small file with every section.
fn small_options(version: u32) -> WriterOptions {
    let mut o = zstd_trained(version);
    o.block_size = 64;
    o.dictionary = Dictionary::Use(
        (0..4)
            .flat_map(|i| json_value(1000 + i))
            .collect::<Vec<u8>>(),
    );
    o
}

// ---------------------------------------------------------------------------------------------
// Parsing the layout independently of the crate.

#[derive(Debug, Clone, Copy)]
struct SectionRef {
    offset: usize,
    len: usize,
}

impl SectionRef {
    fn end(&self) -> usize {
        self.offset + self.len
    }
}

#[derive(Debug, Clone, Copy)]
struct Block {
    offset: usize,
    stored_len: usize,
    checksum: u64,
    entries: usize,
    codec: u8,
}

#[derive(Debug)]
struct Layout {
    version: u32,
    /// Offset of the footer.
    footer: usize,
    /// Its length.
    footer_len: usize,
    /// The version's sections, in file order, and where each lies.
    names: Vec<Section>,
    sections: Vec<SectionRef>,
    blocks: Vec<Block>,
}

impl Layout {
    fn index_of(&self, s: Section) -> usize {
        self.names.iter().position(|x| *x == s).unwrap()
    }

    fn section(&self, s: Section) -> SectionRef {
        self.sections[self.index_of(s)]
    }

    /// File offset of a footer field counted back from the footer's end.
    fn field(&self, from_end: usize) -> usize {
        self.footer + self.footer_len - from_end
    }

    /// Keys of block `b`, by position in key order.
    fn key_range(&self, b: usize) -> std::ops::Range<usize> {
        let start: usize = self.blocks[..b].iter().map(|e| e.entries).sum();
        start..start + self.blocks[b].entries
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn parse(bytes: &[u8]) -> Layout {
    let len = bytes.len();
    let flen = footer_len(bytes);
    let footer = len - flen;
    let f = &bytes[footer..];
    let version = u32_at(bytes, len - VERSION);
    assert_eq!(u32_at(bytes, 8), version);
    assert_eq!(bytes[len - FOOTER_MAGIC..], MAGIC);
    assert_eq!(u32_at(bytes, len - FOOTER_LEN_FIELD), flen as u32);
    assert_eq!(
        u64_at(bytes, len - FOOTER_CHECKSUM),
        xxh3_64(&f[..flen - FOOTER_CHECKSUM])
    );
    assert_eq!(
        u64_at(bytes, len - FILE_CHECKSUM),
        xxh3_64(&bytes[..len - FILE_CHECKSUM])
    );
    let names = sections_of(version);
    let sections: Vec<SectionRef> = (0..names.len())
        .map(|i| {
            let r = SectionRef {
                offset: u64_at(f, i * REF_LEN) as usize,
                len: u64_at(f, i * REF_LEN + 8) as usize,
            };
            assert_eq!(
                u64_at(f, i * REF_LEN + 16),
                xxh3_64(&bytes[r.offset..r.end()])
            );
            r
        })
        .collect();
    let table = sections[1];
    let blocks: Vec<Block> = bytes[table.offset..table.end()]
        .chunks(BLOCK_ENTRY_LEN)
        .map(|e| Block {
            offset: u64_at(e, 0) as usize,
            stored_len: u32_at(e, 8) as usize,
            checksum: u64_at(e, 16),
            entries: u32_at(e, 24) as usize,
            codec: e[28],
        })
        .collect();
    assert_eq!(blocks.len() as u64, u64_at(bytes, len - BLOCK_COUNT));
    Layout {
        version,
        footer,
        footer_len: flen,
        names,
        sections,
        blocks,
    }
}

// ---------------------------------------------------------------------------------------------
// Corrupting.

fn flipped(bytes: &[u8], at: usize, mask: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] ^= mask;
    b
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// Recomputes the footer checksum and the whole-file checksum.
fn fix_footer_and_file(b: &mut [u8]) {
    let footer = b.len() - footer_len(b);
    let at = b.len() - FOOTER_CHECKSUM;
    let sum = xxh3_64(&b[footer..at]);
    put_u64(b, at, sum);
    fix_file(b);
}

/// Recomputes the whole-file checksum.
fn fix_file(b: &mut [u8]) {
    let at = b.len() - FILE_CHECKSUM;
    let sum = xxh3_64(&b[..at]);
    put_u64(b, at, sum);
}

/// Recomputes the checksum of a section (and then the footer and file checksums).
fn fix_section(b: &mut [u8], layout: &Layout, section: Section) {
    let i = layout.index_of(section);
    let r = layout.sections[i];
    let sum = xxh3_64(&b[r.offset..r.end()]);
    put_u64(b, layout.footer + i * REF_LEN + 16, sum);
    fix_footer_and_file(b);
}

fn open_err(bytes: impl Into<Bytes>) -> Error {
    match Snapshot::open(bytes) {
        Ok(_) => panic!("a corrupt snapshot opened"),
        Err(e) => e,
    }
}

fn open_ok(bytes: Vec<u8>) -> Snapshot {
    Snapshot::open(bytes).unwrap_or_else(|e| panic!("expected to open, got {e:?}"))
}

fn assert_checksum(e: &Error, want: Section) {
    assert!(
        matches!(e, Error::Checksum { section, .. } if *section == want),
        "expected a {want} checksum error, got {e:?}"
    );
}

fn assert_corrupt(e: &Error, want: Section, want_offset: usize) {
    assert!(
        matches!(e, Error::Corrupt { section, offset, .. }
            if *section == want && *offset == want_offset as u64),
        "expected corrupt {want} at {want_offset}, got {e:?}"
    );
}

/// Runs every read operation, bounded, and returns the first error met by a full scan.
fn exercise(snapshot: &Snapshot, model: &Model) -> Option<Error> {
    let mut probes: Vec<&[u8]> = model.keys().map(Vec::as_slice).collect();
    probes.extend([&b"a"[..], b"k", b"zzz", &[0xff], &[0]]);
    for k in &probes {
        let _ = snapshot.get(k);
    }
    for w in probes.windows(2).step_by(5) {
        let _ = snapshot
            .range(Bound::Included(w[0]), Bound::Excluded(w[1]))
            .take(model.len() + 1)
            .count();
        let _ = snapshot.prefix(&w[0][..1]).take(model.len() + 1).count();
    }
    let _ = snapshot.stats();
    snapshot.iter().take(model.len() + 1).find_map(Result::err)
}

// ---------------------------------------------------------------------------------------------
// The files under test.

struct Fixture {
    model: Model,
    bytes: Vec<u8>,
    layout: Layout,
}

impl Fixture {
    fn new(model: Model, options: WriterOptions) -> Fixture {
        let bytes = write(&model, options);
        let layout = parse(&bytes);
        let snapshot = open_ok(bytes.clone());
        snapshot.verify().unwrap();
        Fixture {
            model,
            bytes,
            layout,
        }
    }

    fn key(&self, i: usize) -> &[u8] {
        self.model.keys().nth(i).unwrap()
    }

    fn value(&self, i: usize) -> &[u8] {
        self.model.values().nth(i).unwrap()
    }

    /// The first block stored raw (`raw`) or compressed.
    fn block_where(&self, raw: bool) -> usize {
        self.layout
            .blocks
            .iter()
            .position(|b| (b.codec == CODEC_RAW) == raw)
            .unwrap()
    }
}

fn full(version: u32) -> Fixture {
    let f = Fixture::new(realistic_model(), zstd_trained(version));
    // Every section is there, and both kinds of block.
    for (i, s) in f.layout.sections.iter().enumerate() {
        assert!(s.len > 0, "section {} is empty", f.layout.names[i]);
    }
    let raw = f
        .layout
        .blocks
        .iter()
        .filter(|b| b.codec == CODEC_RAW)
        .count();
    assert!(
        raw > 0 && raw < f.layout.blocks.len(),
        "{raw} raw blocks of {}",
        f.layout.blocks.len()
    );
    f
}

fn plain(version: u32) -> Fixture {
    let f = Fixture::new(realistic_model(), uncompressed(version));
    assert_eq!(f.layout.section(Section::Dictionary).len, 0);
    assert!(f.layout.blocks.iter().all(|b| b.codec == CODEC_RAW));
    f
}

fn small(version: u32) -> Fixture {
    let f = Fixture::new(small_model(), small_options(version));
    for (i, s) in f.layout.sections.iter().enumerate() {
        assert!(s.len > 0, "section {} is empty", f.layout.names[i]);
    }
    let raw = f
        .layout
        .blocks
        .iter()
        .filter(|b| b.codec == CODEC_RAW)
        .count();
    assert!(raw > 0 && raw < f.layout.blocks.len());
    f
}

// ---------------------------------------------------------------------------------------------
// Truncation.

fn check_truncations(f: &Fixture) {
    let len = f.bytes.len();
    let mut cuts: BTreeSet<usize> = (0..=MIN_LEN + 1).collect();
    cuts.extend((0..len).step_by(97));
    cuts.extend(len.saturating_sub(200)..len);
    for s in &f.layout.sections {
        cuts.extend([s.offset - 1, s.offset, s.offset + 1, s.end(), s.end() + 1]);
    }
    for b in &f.layout.blocks {
        cuts.extend([b.offset, b.offset + b.stored_len]);
    }
    cuts.extend([f.layout.footer, f.layout.field(FILE_CHECKSUM)]);
    let all = Bytes::from(f.bytes.clone());
    for n in cuts.into_iter().filter(|n| *n < len) {
        let e = open_err(all.slice(..n));
        if n < MIN_LEN {
            assert!(
                matches!(e, Error::TooShort { len, min } if len == n as u64 && min == MIN_LEN as u64),
                "cut at {n}: {e:?}"
            );
        } else {
            assert!(
                matches!(e, Error::MissingFooter { len } if len == n as u64),
                "cut at {n}: {e:?}"
            );
        }
    }
    // The full file opens.
    open_ok(f.bytes.clone());
}

/// The body is cut short but the footer is kept: sections now run into (or past) the footer.
fn check_truncated_body(f: &Fixture) {
    let footer = &f.bytes[f.layout.footer..];
    let mut cuts: BTreeSet<usize> = BTreeSet::new();
    for s in &f.layout.sections {
        cuts.extend([s.offset, s.end()]);
    }
    for b in f.layout.blocks.iter().step_by(10) {
        cuts.insert(b.offset);
    }
    for cut in cuts.into_iter().filter(|c| *c <= f.layout.footer) {
        let mut bytes = f.bytes[..cut].to_vec();
        bytes.extend_from_slice(footer);
        match f.layout.sections.iter().position(|s| s.end() > cut) {
            Some(i) => assert_corrupt(&open_err(bytes), Section::Footer, cut + i * REF_LEN),
            None => {
                // Only padding (if anything) was cut: the sections are intact, the file is not.
                let snapshot = open_ok(bytes);
                if cut < f.layout.footer {
                    assert_checksum(&snapshot.verify().unwrap_err(), Section::File);
                }
            }
        }
    }
}

#[test]
fn truncated_full_file() {
    for v in VERSIONS {
        let f = full(v);
        check_truncations(&f);
        check_truncated_body(&f);
    }
}

#[test]
fn truncated_uncompressed_file() {
    for v in VERSIONS {
        let f = plain(v);
        check_truncations(&f);
        check_truncated_body(&f);
    }
}

#[test]
fn truncated_small_file_at_every_length() {
    for v in VERSIONS {
        truncated_small_file(v);
    }
}

fn truncated_small_file(version: u32) {
    let f = small(version);
    let all = Bytes::from(f.bytes.clone());
    for n in 0..f.bytes.len() {
        let e = open_err(all.slice(..n));
        if n < MIN_LEN {
            assert!(matches!(e, Error::TooShort { .. }), "cut at {n}: {e:?}");
        } else {
            assert!(
                matches!(e, Error::MissingFooter { .. }),
                "cut at {n}: {e:?}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bit flips, section by section.

#[test]
fn header_flips() {
    for v in VERSIONS {
        header_flips_of(v);
    }
}

fn header_flips_of(version: u32) {
    let f = full(version);
    for at in 0..8 {
        assert!(matches!(
            open_err(flipped(&f.bytes, at, 0x01)),
            Error::BadMagic
        ));
    }
    for (at, mask) in [(8, 0x01), (8, 0x80), (11, 0x40)] {
        let got = version ^ (u32::from(mask) << (8 * (at - 8)));
        let e = open_err(flipped(&f.bytes, at, mask));
        assert!(
            matches!(e, Error::UnsupportedVersion { supported: 2, got: g } if g == got),
            "{e:?}"
        );
    }
    for at in 12..16 {
        assert_corrupt(&open_err(flipped(&f.bytes, at, 0x04)), Section::Header, 12);
    }
    // A known version that is not the footer's.
    let other = if version == 1 { 2 } else { 1 };
    let e = open_err(flipped(&f.bytes, 8, (version ^ other) as u8));
    assert_corrupt(&e, Section::Footer, f.layout.field(VERSION));
}

#[test]
fn section_flips_fail_their_checksum_at_open() {
    for f in VERSIONS.into_iter().flat_map(|v| [full(v), plain(v)]) {
        for (i, s) in f.layout.sections.iter().enumerate() {
            if s.len == 0 {
                continue;
            }
            for at in [s.offset, s.offset + s.len / 2, s.end() - 1] {
                for mask in [0x01, 0x80] {
                    assert_checksum(&open_err(flipped(&f.bytes, at, mask)), f.layout.names[i]);
                }
            }
        }
    }
}

#[test]
fn compressed_block_flip_fails_reads_of_that_block_and_verify() {
    for v in VERSIONS {
        compressed_block_flip(v);
    }
}

fn compressed_block_flip(version: u32) {
    let f = full(version);
    let b = f.block_where(false);
    let block = f.layout.blocks[b];
    let bytes = flipped(&f.bytes, block.offset + block.stored_len / 2, 0x10);
    // Blocks are checked on first read, not at open.
    let snapshot = open_ok(bytes.clone());
    let in_block = f.layout.key_range(b);
    for (i, (k, v)) in f.model.iter().enumerate() {
        match snapshot.get(k) {
            Err(Error::BlockChecksum {
                block: got,
                expected,
                ..
            }) => {
                assert!(in_block.contains(&i), "key {i} failed outside block {b}");
                assert_eq!((got as usize, expected), (b, block.checksum));
            }
            Ok(value) => {
                assert!(!in_block.contains(&i), "key {i} of block {b} was read");
                assert_eq!(value.as_deref(), Some(&v[..]));
            }
            Err(e) => panic!("key {i}: {e:?}"),
        }
    }
    // A scan yields every entry before the block, then the error, then ends.
    let mut it = snapshot.iter();
    assert_eq!(it.by_ref().take(in_block.start).count(), in_block.start);
    let e = it.next().unwrap().unwrap_err();
    assert!(matches!(e, Error::BlockChecksum { block, .. } if block as usize == b));
    assert!(it.next().is_none());
    assert_checksum(&snapshot.verify().unwrap_err(), Section::File);

    // With the whole-file checksum patched, verify finds the block.
    let mut bytes = bytes;
    fix_file(&mut bytes);
    let e = open_ok(bytes).verify().unwrap_err();
    assert!(
        matches!(e, Error::BlockChecksum { block, .. } if block as usize == b),
        "{e:?}"
    );
}

/// Raw blocks are served zero-copy without a per-read checksum: a flipped value byte reads back
/// flipped, and only `verify` notices.
fn check_raw_block_flip(f: &Fixture) {
    let b = f.block_where(true);
    let block = f.layout.blocks[b];
    let last = f.layout.key_range(b).end - 1;
    // The last byte of a raw block is the last byte of its last value.
    let bytes = flipped(&f.bytes, block.offset + block.stored_len - 1, 0x01);
    let snapshot = open_ok(bytes.clone());
    let mut want = f.value(last).to_vec();
    *want.last_mut().unwrap() ^= 0x01;
    assert_eq!(
        snapshot.get(f.key(last)).unwrap().as_deref(),
        Some(&want[..])
    );
    assert!(exercise(&snapshot, &f.model).is_none());
    assert_checksum(&snapshot.verify().unwrap_err(), Section::File);
    let mut bytes = bytes;
    fix_file(&mut bytes);
    let e = open_ok(bytes).verify().unwrap_err();
    assert!(
        matches!(e, Error::BlockChecksum { block, .. } if block as usize == b),
        "{e:?}"
    );

    // A flip in an entry header is structural: reads of the block fail with a typed error.
    // A version 2 lookup reads that one entry, whose key no longer matches: a miss or an error,
    // never another value.
    let first = f.layout.key_range(b).start;
    let bytes = flipped(&f.bytes, block.offset, 0x01);
    let snapshot = open_ok(bytes);
    match snapshot.get(f.key(first)) {
        Err(Error::CorruptBlock { block, .. }) if block as usize == b => {}
        Ok(None) if f.layout.version == 2 => {}
        other => panic!("{other:?}"),
    }
    let e = exercise(&snapshot, &f.model).unwrap();
    assert!(
        matches!(e, Error::CorruptBlock { block, .. } if block as usize == b),
        "{e:?}"
    );
    assert_checksum(&snapshot.verify().unwrap_err(), Section::File);
}

#[test]
fn raw_block_flip_is_caught_by_verify_only() {
    for v in VERSIONS {
        check_raw_block_flip(&full(v));
        check_raw_block_flip(&plain(v));
    }
}

#[test]
fn padding_flip_is_caught_by_verify_only() {
    for v in VERSIONS {
        padding_flip(v);
    }
}

fn padding_flip(version: u32) {
    let f = full(version);
    // Padding between the metadata and the footer, or between the blocks and the dictionary.
    let meta = f.layout.section(Section::Metadata);
    let last = f.layout.blocks.last().unwrap();
    let gaps = [
        meta.end()..f.layout.footer,
        last.offset + last.stored_len..f.layout.section(Section::Dictionary).offset,
    ];
    for at in gaps.into_iter().flatten() {
        let snapshot = open_ok(flipped(&f.bytes, at, 0x01));
        assert_checksum(&snapshot.verify().unwrap_err(), Section::File);
    }
}

#[test]
fn footer_flips() {
    for f in VERSIONS.into_iter().flat_map(|v| [full(v), plain(v)]) {
        let footer = f.layout.footer;
        let l = &f.layout;
        let len = f.bytes.len() as u64;
        // Section refs, key count, block count: the footer checksum fails.
        let refs = l.sections.len() * REF_LEN;
        for field in (0..refs)
            .step_by(8)
            .map(|at| footer + at)
            .chain([l.field(KEY_COUNT), l.field(BLOCK_COUNT)])
        {
            for mask in [0x01, 0x80] {
                let e = open_err(flipped(&f.bytes, field, mask));
                assert_checksum(&e, Section::Footer);
                let e = open_err(flipped(&f.bytes, field + 7, mask));
                assert_checksum(&e, Section::Footer);
            }
        }
        let e = open_err(flipped(&f.bytes, l.field(VERSION), 0x04));
        assert!(
            matches!(
                e,
                Error::UnsupportedVersion { supported: 2, got } if got == l.version ^ 4
            ),
            "{e:?}"
        );
        let e = open_err(flipped(&f.bytes, l.field(FOOTER_LEN_FIELD) + 1, 0x01));
        assert_corrupt(&e, Section::Footer, l.field(FOOTER_LEN_FIELD));
        for at in l.field(FOOTER_CHECKSUM)..l.field(FILE_CHECKSUM) {
            let e = open_err(flipped(&f.bytes, at, 0x20));
            assert_checksum(&e, Section::Footer);
        }
        for at in l.field(FILE_CHECKSUM)..l.field(FOOTER_MAGIC) {
            let snapshot = open_ok(flipped(&f.bytes, at, 0x20));
            assert_checksum(&snapshot.verify().unwrap_err(), Section::File);
        }
        for at in l.field(FOOTER_MAGIC)..f.bytes.len() {
            let e = open_err(flipped(&f.bytes, at, 0x01));
            assert!(matches!(e, Error::MissingFooter { len: l } if l == len));
        }
    }
}

/// Footer fields changed with the footer checksum recomputed (a writer bug, or a forgery): the
/// structural checks behind the checksum.
#[test]
fn footer_fields_behind_the_checksum() {
    for f in VERSIONS.into_iter().flat_map(|v| [full(v), plain(v)]) {
        let footer = f.layout.footer;
        for (i, section) in f.layout.names.iter().copied().enumerate() {
            // Offset or length far out of the file; an unaligned offset.
            for (field, at, mask) in [(0, 7, 0x80), (8, 7, 0x80), (0, 0, 0x01)] {
                let mut bytes = flipped(&f.bytes, footer + i * REF_LEN + field + at, mask);
                fix_footer_and_file(&mut bytes);
                assert_corrupt(&open_err(bytes), Section::Footer, footer + i * REF_LEN);
            }
            // A stored checksum that does not match its section.
            let mut bytes = flipped(&f.bytes, footer + i * REF_LEN + 16, 0x01);
            fix_footer_and_file(&mut bytes);
            assert_checksum(&open_err(bytes), section);
        }
        // Sections out of order: the index placed before the block table.
        let mut bytes = f.bytes.clone();
        let table = f.layout.section(Section::BlockTable);
        put_u64(&mut bytes, footer + 2 * REF_LEN, table.offset as u64);
        fix_footer_and_file(&mut bytes);
        assert_corrupt(&open_err(bytes), Section::Footer, footer + 2 * REF_LEN);

        let block_count = f.layout.field(BLOCK_COUNT);
        let mut bytes = flipped(&f.bytes, block_count, 0x01);
        fix_footer_and_file(&mut bytes);
        assert_corrupt(&open_err(bytes), Section::Footer, block_count);

        // The key count is only checked against the blocks by verify (version 1); in version
        // 2 the lookup's size follows from it, so a count far off fails at open.
        let key_count = f.layout.field(KEY_COUNT);
        let mut bytes = flipped(&f.bytes, key_count, 0x01);
        fix_footer_and_file(&mut bytes);
        let snapshot = open_ok(bytes);
        assert_eq!(snapshot.len(), f.model.len() as u64 ^ 1);
        let e = snapshot.verify().unwrap_err();
        if f.layout.version == 1 {
            assert_corrupt(&e, Section::Footer, key_count);
        } else {
            // A key hashes to another slot than it was given by the lookup.
            assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
        }
        let mut bytes = flipped(&f.bytes, key_count + 6, 0x01);
        fix_footer_and_file(&mut bytes);
        if f.layout.version == 2 {
            let lookup = f.layout.section(Section::Lookup);
            assert_corrupt(&open_err(bytes), Section::Lookup, lookup.offset + 16);
        }
    }
}

/// Sections changed with their checksums recomputed: the structural checks behind them.
#[test]
fn sections_behind_their_checksums() {
    for v in VERSIONS {
        sections_behind_checksums(v);
    }
}

fn sections_behind_checksums(version: u32) {
    let f = full(version);
    let l = &f.layout;

    // Index: the FST's version word (its first byte) out of range.
    let index = l.section(Section::Index);
    let mut bytes = flipped(&f.bytes, index.offset, 0x40);
    fix_section(&mut bytes, l, Section::Index);
    assert_corrupt(&open_err(bytes), Section::Index, index.offset);

    // Filter: probe count, reserved word, line count.
    let filter = l.section(Section::Filter);
    for (at, detail_offset) in [(0, 0), (4, 0), (8, 8)] {
        let mut bytes = flipped(&f.bytes, filter.offset + at, 0x10);
        fix_section(&mut bytes, l, Section::Filter);
        assert_corrupt(
            &open_err(bytes),
            Section::Filter,
            filter.offset + detail_offset,
        );
    }

    // Metadata: not JSON, or not the expected object.
    let meta = l.section(Section::Metadata);
    for at in [meta.offset, meta.end() - 1] {
        let mut bytes = flipped(&f.bytes, at, 0x01);
        fix_section(&mut bytes, l, Section::Metadata);
        assert_corrupt(&open_err(bytes), Section::Metadata, meta.offset);
    }

    // Dictionary: a trained dictionary starts with zstd's dictionary magic; a broken header
    // makes zstd reject it (or load it as raw content, which blocks then fail to decode with).
    let dict = l.section(Section::Dictionary);
    assert_eq!(
        f.bytes[dict.offset..dict.offset + 4],
        [0x37, 0xa4, 0x30, 0xec]
    );
    let mut bytes = flipped(&f.bytes, dict.offset + 8, 0xff);
    fix_section(&mut bytes, l, Section::Dictionary);
    match Snapshot::open(bytes) {
        Err(e) => assert_corrupt(&e, Section::Dictionary, dict.offset),
        Ok(snapshot) => {
            let _ = exercise(&snapshot, &f.model);
            assert!(snapshot.verify().is_err());
        }
    }

    // Block table: an unknown codec, reserved bytes, a block outside the data region. Entries
    // are decoded when used, so this surfaces at reads (and stats, verify), not at open.
    let table = l.section(Section::BlockTable);
    let b = 3;
    let entry = table.offset + b * BLOCK_ENTRY_LEN;
    let key = f.key(l.key_range(b).start);
    for (at, mask, field) in [(28, 0x08, 28), (29, 0x01, 29), (7, 0x01, 0)] {
        let mut bytes = flipped(&f.bytes, entry + at, mask);
        fix_section(&mut bytes, l, Section::BlockTable);
        let snapshot = open_ok(bytes);
        let e = snapshot.get(key).unwrap_err();
        assert_corrupt(&e, Section::BlockTable, entry + field);
        assert!(snapshot.stats().is_err());
        let e = exercise(&snapshot, &f.model).unwrap();
        assert_corrupt(&e, Section::BlockTable, entry + field);
        assert_corrupt(
            &snapshot.verify().unwrap_err(),
            Section::BlockTable,
            entry + field,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every bit of a small file.

#[test]
fn every_bit_flip_of_a_small_file_is_caught() {
    for v in VERSIONS {
        every_bit_flip(v);
    }
}

fn every_bit_flip(version: u32) {
    let f = small(version);
    let mut at_open = 0;
    for at in 0..f.bytes.len() {
        for bit in 0..8 {
            let bytes = flipped(&f.bytes, at, 1 << bit);
            match Snapshot::open(bytes) {
                Err(_) => at_open += 1,
                Ok(snapshot) => {
                    let _ = exercise(&snapshot, &f.model);
                    assert!(
                        snapshot.verify().is_err(),
                        "flip of bit {bit} at {at} passed verify"
                    );
                }
            }
        }
    }
    // Most flips land in checksummed sections or the footer.
    assert!(at_open > 0);
}

// ---------------------------------------------------------------------------------------------
// Malformed FST indexes behind forged checksums (found by fuzz/snapshot_fixed_checksums).
//
// The `fst` crate (0.4.7) trusts its bytes: `Fst::new` barely checks them, and walking a malformed
// FST panics (slice indexing, `assert!`s, subtraction overflow in `unpack_delta`) or, in builds
// without overflow checks, follows a wrapped-around transition address into a cycle. Section
// checksums stop accidental corruption only; these files forge them.

/// Lays out a snapshot around an index section: no blocks, no dictionary, no filter, metadata
/// `{}`, every checksum right.
fn snapshot_with_index(index: &[u8]) -> Vec<u8> {
    let mut f = MAGIC.to_vec();
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    let index_at = f.len();
    f.extend_from_slice(index);
    f.resize(f.len().next_multiple_of(8), 0);
    let meta_at = f.len();
    f.extend_from_slice(b"{}");
    f.resize(f.len().next_multiple_of(8), 0);
    let footer_at = f.len();
    let refs: [(usize, &[u8]); 5] = [
        (index_at, b""),
        (index_at, b""),
        (index_at, index),
        (meta_at, b""),
        (meta_at, b"{}"),
    ];
    for (offset, bytes) in refs {
        f.extend_from_slice(&(offset as u64).to_le_bytes());
        f.extend_from_slice(&(bytes.len() as u64).to_le_bytes());
        f.extend_from_slice(&xxh3_64(bytes).to_le_bytes());
    }
    f.extend_from_slice(&0u64.to_le_bytes()); // keys
    f.extend_from_slice(&0u64.to_le_bytes()); // blocks
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&168u32.to_le_bytes());
    f.resize(footer_at + 168, 0);
    f[footer_at + 168 - FOOTER_MAGIC..].copy_from_slice(&MAGIC);
    fix_footer_and_file(&mut f);
    f
}

/// Fuzz crash: one byte of the small file's index changed (a transition's packed address),
/// checksums forged. `fst` panics with "attempt to subtract with overflow" in `unpack_delta`
/// when the index is walked: `open` must reject it first.
#[test]
fn forged_index_with_a_bad_transition_address() {
    let f = small(1);
    let index = f.layout.section(Section::Index);
    assert_eq!(f.bytes[index.offset + 58], 0, "the small file changed");
    let mut bytes = f.bytes.clone();
    bytes[index.offset + 58] = 47;
    fix_section(&mut bytes, &f.layout, Section::Index);
    match Snapshot::open(bytes) {
        Err(e) => assert!(
            matches!(
                e,
                Error::Corrupt {
                    section: Section::Index,
                    ..
                }
            ),
            "{e:?}"
        ),
        Ok(snapshot) => {
            let _ = exercise(&snapshot, &f.model);
            assert!(snapshot.verify().is_err());
        }
    }
}

/// A 47-byte FST whose root's only transition (8-byte delta) wraps around to the root itself.
/// `fst` would panic on it (with overflow checks) or walk it forever (without): `open` must
/// reject it before `fst` sees it.
#[test]
fn crafted_cyclic_index() {
    let mut fst = Vec::new();
    fst.extend_from_slice(&3u64.to_le_bytes()); // fst format version
    fst.extend_from_slice(&0u64.to_le_bytes()); // fst type
    let end = fst.len() as u64;
    let root = end + 10;
    fst.extend_from_slice(&end.wrapping_sub(root).to_le_bytes()); // target = end - delta = root
    fst.extend_from_slice(&[0x80, b'a', 0b1000_0000]); // 8-byte delta, no output; input; OneTrans
    fst.extend_from_slice(&0u64.to_le_bytes()); // key count
    fst.extend_from_slice(&root.to_le_bytes()); // root address
    fst.extend_from_slice(&0u32.to_le_bytes()); // fst's own checksum (fst does not check it)
    let e = open_err(snapshot_with_index(&fst));
    assert!(
        matches!(
            e,
            Error::Corrupt {
                section: Section::Index,
                ..
            }
        ),
        "{e:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Fuzzing seeds.

fn fuzz_seeds(v: u32) -> Vec<(&'static str, Vec<u8>)> {
    let mut trained = zstd_trained(v);
    trained.block_size = 256;
    trained.dictionary = Dictionary::Train {
        max_bytes: 256,
        sample_bytes: 4096,
    };
    let json: Model = (0..120)
        .map(|i| (format!("j{i:04}").into_bytes(), json_value(i)))
        .collect();
    let mut no_filter = small_options(v);
    no_filter.filter_bits_per_key = 0;
    let mut no_dict = zstd_trained(v);
    no_dict.block_size = 128;
    no_dict.dictionary = Dictionary::Off;
    let mut raw = uncompressed(v);
    raw.block_size = 64;
    vec![
        ("small", write(&small_model(), small_options(v))),
        ("small-raw", write(&small_model(), raw)),
        ("small-no-filter", write(&small_model(), no_filter)),
        ("small-zstd", write(&small_model(), no_dict)),
        ("json-trained", write(&json, trained)),
        ("empty", write(&Model::new(), zstd_trained(v))),
        (
            "one",
            write(
                &Model::from([(b"a".to_vec(), b"1".to_vec())]),
                small_options(v),
            ),
        ),
    ]
}

/// Writes valid snapshots as seeds for the fuzz targets:
/// `cargo test -p snapkv-format --test corruption -- --ignored write_fuzz_seeds`.
#[test]
#[ignore = "writes the fuzz seed corpora (fuzz/seed.sh)"]
fn write_fuzz_seeds() {
    let mut seeds = Vec::new();
    for v in VERSIONS {
        let suffix = if v == 1 { "-v1" } else { "" };
        for (name, bytes) in fuzz_seeds(v) {
            seeds.push((format!("{name}{suffix}"), bytes));
        }
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus");
    for target in ["snapshot_bytes", "snapshot_fixed_checksums", "tail_blocks"] {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            open_ok(bytes.clone()).verify().unwrap();
            std::fs::write(dir.join(format!("seed-{name}.snap")), bytes).unwrap();
        }
    }
    // block_list: mode, list length, the file, its list (stored, and uncompressed for the
    // mode that compresses it).
    let dir = root.join("block_list");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in &seeds {
        let len = bytes.len() as u64;
        let tail = snapkv_format::Tail::parse(
            &bytes[(len - snapkv_format::TAIL_LEN.min(len)) as usize..],
            len,
        )
        .unwrap();
        let r = tail.block_table_range();
        let list = tail
            .block_list(&bytes[r.start as usize..r.end as usize])
            .unwrap();
        let raw = zstd::bulk::decompress(&list, 1 << 24).unwrap();
        for (mode, list) in [(0u8, list), (1, raw)] {
            let Ok(n) = u16::try_from(list.len()) else {
                continue;
            };
            let seed = [&[mode][..], &n.to_le_bytes(), bytes, &list].concat();
            std::fs::write(dir.join(format!("seed-{name}-{mode}.bin")), seed).unwrap();
        }
    }
}

/// Verification runs blocks on several threads and still reports the first damaged block in
/// block order, whatever the number of threads.
#[test]
fn verify_reports_the_first_damaged_block_on_any_number_of_threads() {
    let mut o = uncompressed(snapkv_format::FORMAT_VERSION);
    o.block_size = 256;
    let bytes = write(&realistic_model(), o);
    let layout = parse(&bytes);
    let n = layout.blocks.len();
    assert!(n > 2000, "{n} blocks");
    // Block n/2 and a later one damaged, the file's checksum patched so the blocks are reached.
    let (early, late) = (n / 2, n - 3);
    let mut damaged = bytes.clone();
    for b in [early, late] {
        let block = layout.blocks[b];
        damaged[block.offset + block.stored_len / 2] ^= 0x10;
    }
    fix_file(&mut damaged);
    let snapshot = open_ok(damaged);
    for threads in [1, 2, 3, 8] {
        let e = snapshot.verify_on(threads).unwrap_err();
        assert!(
            matches!(e, Error::BlockChecksum { block, .. } if block as usize == early),
            "{threads} threads: {e:?}"
        );
    }
    let intact = open_ok(bytes);
    for threads in [1, 2, 8] {
        intact.verify_on(threads).unwrap();
    }
}
