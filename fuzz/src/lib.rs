//! Shared code of the fuzz targets: the operations run on a snapshot that opened, the
//! checksum patching of `snapshot_fixed_checksums`, and the build harness ([`inputs`]).

pub mod inputs;

use snapkv_format::Snapshot;
use std::ops::Bound;
use xxhash_rust::xxh3::xxh3_64;

/// Footer layout (see `format/src/layout.rs`): six (format version 2) or five (version 1)
/// `(offset, len, checksum)` refs, key count, block count, version, footer length, footer
/// checksum, file checksum, magic. The fields from the key count on lie at the same distance
/// from the end in both: the version at `len - 32`.
pub const FOOTER_LEN: usize = 192;
const FOOTER_LEN_V1: usize = 168;
const HEADER_LEN: usize = 16;
const REF_LEN: usize = 24;
/// Footer checksum and file checksum, counted back from the end of the file.
const FOOTER_CHECKSUM_FROM_END: usize = 24;
const FILE_CHECKSUM_FROM_END: usize = 16;
const VERSION_FROM_END: usize = 32;
const BLOCK_ENTRY_LEN: usize = 32;
/// Index of the block table among the footer's section refs.
const BLOCK_TABLE: usize = 1;

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A section's byte range, if its footer ref lies inside `[0, limit)`.
fn section(data: &[u8], footer: usize, i: usize, limit: usize) -> Option<(usize, usize)> {
    let off = usize::try_from(u64_at(data, footer + i * REF_LEN)).ok()?;
    let len = usize::try_from(u64_at(data, footer + i * REF_LEN + 8)).ok()?;
    let end = off.checked_add(len)?;
    (end <= limit).then_some((off, end))
}

/// Rewrites every checksum of a would-be snapshot so that it matches the bytes: each data block's
/// (in the block table), each section's, the footer's and the whole file's. Structure is left
/// alone: whatever is inconsistent stays so, for the reader to find past the checksums.
pub fn fix_checksums(data: &mut [u8]) {
    if data.len() < HEADER_LEN + FOOTER_LEN_V1 {
        return;
    }
    // The footer of the version the file claims (a version 2 footer if it claims another).
    let (footer_len, sections) = match u32_at(data, data.len() - VERSION_FROM_END) {
        1 => (FOOTER_LEN_V1, 5),
        _ => (FOOTER_LEN, 6),
    };
    if data.len() < HEADER_LEN + footer_len {
        return;
    }
    let footer = data.len() - footer_len;
    if let Some((start, end)) = section(data, footer, BLOCK_TABLE, footer) {
        let mut at = start;
        while at + BLOCK_ENTRY_LEN <= end {
            let off = usize::try_from(u64_at(data, at)).ok();
            let len = u32_at(data, at + 8) as usize;
            if let Some(block) = off.and_then(|o| Some(o..o.checked_add(len)?)) {
                if block.end <= footer {
                    let sum = xxh3_64(&data[block]);
                    put_u64(data, at + 16, sum);
                }
            }
            at += BLOCK_ENTRY_LEN;
        }
    }
    for i in 0..sections {
        if let Some((start, end)) = section(data, footer, i, footer) {
            let sum = xxh3_64(&data[start..end]);
            put_u64(data, footer + i * REF_LEN + 16, sum);
        }
    }
    let at = data.len() - FOOTER_CHECKSUM_FROM_END;
    let sum = xxh3_64(&data[footer..at]);
    put_u64(data, at, sum);
    let covered = data.len() - FILE_CHECKSUM_FROM_END;
    let sum = xxh3_64(&data[..covered]);
    put_u64(data, covered, sum);
}

/// Keys to probe, taken from the input so the fuzzer can steer them.
fn input_keys(data: &[u8]) -> Vec<Vec<u8>> {
    let mut keys = vec![b"a".to_vec(), vec![0], vec![0xff; 3]];
    for &(at, len) in &[
        (0usize, 8usize),
        (16, 4),
        (data.len() / 2, 6),
        (data.len() / 3, 1),
    ] {
        if let Some(k) = data.get(at..(at + len).min(data.len())) {
            if !k.is_empty() {
                keys.push(k.to_vec());
            }
        }
    }
    keys
}

/// Reader options for an input: the index sections copied into memory for inputs whose last
/// byte is odd, so that both ways of reading them are fuzzed.
pub fn open_options(data: &[u8]) -> snapkv_format::OpenOptions {
    let mut options = snapkv_format::OpenOptions::default();
    options.index_in_memory = data.last().is_some_and(|b| b & 1 == 1);
    options
}

/// Runs every read operation on a snapshot that opened. Work is bounded: scans stop after a
/// fixed number of entries.
pub fn exercise(snapshot: &Snapshot, data: &[u8]) {
    const SCAN: usize = 4096;
    let _ = snapshot.len();
    let _ = snapshot.metadata();
    let _ = snapshot.stats();
    // Keys that are in the file (if blocks decode), to reach the hit path past the filter.
    let mut keys: Vec<Vec<u8>> = snapshot
        .iter()
        .take(SCAN)
        .filter_map(Result::ok)
        .map(|(k, _)| k.to_vec())
        .step_by(7)
        .take(16)
        .collect();
    keys.extend(input_keys(data));
    for k in &keys {
        // The copying read answers as the shared one does: the same value, or an error.
        let mut out = Vec::new();
        match (snapshot.get(k), snapshot.get_into(k, &mut out)) {
            (Ok(Some(v)), Ok(true)) => assert_eq!(v[..], out[..], "get_into copied another value"),
            (Ok(None), Ok(false)) | (Err(_), Err(_)) => {}
            (got, copied) => panic!("get gave {got:?}, get_into {copied:?}"),
        }
        let _ = snapshot.prefix(&k[..k.len().min(2)]).take(SCAN).count();
    }
    for w in keys.windows(2) {
        let (a, b) = (&w[0][..], &w[1][..]);
        let _ = snapshot
            .range(Bound::Included(a), Bound::Excluded(b))
            .take(SCAN)
            .count();
        let _ = snapshot
            .range(Bound::Excluded(b), Bound::Unbounded)
            .take(64)
            .count();
    }
    // A diff with itself decodes every block (no skipping), on one thread and on ranges cut
    // at its separators.
    for threads in [1, 3] {
        let mut options = snapkv_format::DiffOptions::default();
        options.threads = threads;
        options.skip_identical_blocks = false;
        let _ = snapkv_format::diff(snapshot, snapshot, &options);
    }
    let _ = snapshot.verify();
}
