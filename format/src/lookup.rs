//! The lookup section (format version 2): a perfect hash ([`crate::mph`]) from every key to a
//! slot, and a table of bit-packed slots, each the block of a key and the offset of its entry in
//! the block's raw bytes. A lookup reads a pilot, its partition's two slot bounds, a slot and the
//! entry: no index walk, no search in the block. See FORMAT.md, "Lookup".
//!
//! Layout: `seed u64 · buckets u64 · slots u64 · partitions u64 · block_bits u8 · offset_bits
//! u8 · shift u8 · flags u8 · reserved [u8; 4] · pilots u16 × buckets · zero padding to a
//! multiple of 8 · bases u64 × (partitions + 1) · slot table`, the table of
//! `floor(slots · w / 8) + 8` bytes with `w = block_bits + offset_bits`, slot `s` in bits
//! `s·w .. s·w + w` (least significant bit first) holding `block << offset_bits | offset`, or
//! with flag [`DIRECT`] (a file whose blocks are all stored raw) the file offset of the entry.

use crate::error::{Error, Result, Section};
use crate::layout::{u64_at, SECTION_ALIGN};
use crate::records::Records;
use crate::{filter, mph};

const HEADER_LEN: usize = 40;
/// Flag: slots hold the file offset of each entry (every block is stored raw), not its block
/// and offset in the block; a lookup then needs no block table entry.
pub(crate) const DIRECT: u8 = 1;
/// Widest slot: a slot's bits are read with one 8-byte load shifted by up to 7 bits.
const MAX_WIDTH: u32 = 56;
/// Seeds the writer tries before giving up (each failure is vanishingly rare).
const SEEDS: u64 = 16;

/// The two halves `[lo, hi]` of a key's 128-bit hash, as the lookup and filter of version 2
/// use them.
#[inline]
pub(crate) fn key_hash(key: &[u8]) -> [u64; 2] {
    let h = xxhash_rust::xxh3::xxh3_128(key);
    [h as u64, (h >> 64) as u64]
}

/// Bits needed to write `x`.
fn bits(x: u64) -> u32 {
    64 - x.leading_zeros()
}

/// Builds the section from each key's hash and location (keys in any order), on up to
/// `threads` threads: `block << 32 | offset` each, or with `direct` the file offset of each
/// entry. `None` if no seed gives a perfect hash (two keys with equal 128-bit hashes), or for
/// 2^32 keys or more. `filter` (when there is one) gets every key's low hash half, on a thread
/// beside the placement.
pub(crate) fn build(
    records: &mut Records,
    direct: bool,
    threads: usize,
    mut filter: Option<&mut filter::Builder>,
) -> Result<Option<Vec<u8>>> {
    let (block_of, offset_mask) = match direct {
        true => (64, u64::MAX),
        false => (32, 0xffff_ffff),
    };
    let (max_block, max_offset) = match direct {
        true => (0, records.max),
        false => (records.max_high, records.max_low),
    };
    let (block_bits, offset_bits) = (bits(max_block), bits(max_offset));
    let width = u64::from(block_bits + offset_bits);
    // Block numbers are u32 and offsets lie inside a block of at most MAX_BLOCK_LEN bytes.
    debug_assert!(width <= u64::from(MAX_WIDTH));
    // The layout but for the table's length follows from the key count; the table is made for
    // the most slots there can be (each partition rounds up, by one slot at most) and cut to
    // the slots there are, so that keys are written into it as they are placed.
    let n = records.len();
    let (shift, partitions) = mph::shape(n);
    let buckets = (partitions << shift) as usize;
    let pilots_end = HEADER_LEN + 2 * buckets;
    let bases_start = pilots_end + crate::layout::padding(pilots_end as u64);
    let table_start = bases_start + 8 * (partitions as usize + 1);
    let most_slots = mph::partition_slots(n) + partitions;
    let mut out = vec![0u8; table_start + (most_slots * width / 8) as usize + 8];
    let mut built = None;
    for seed in 0..SEEDS {
        let Some(mut placer) = mph::Placer::new(n, seed) else {
            return Ok(None);
        };
        let table = &mut out[table_start..];
        table.fill(0);
        if let Some(f) = filter.as_deref_mut() {
            f.clear();
        }
        let placed = records.chunks(&mut placer, seed, |placer, hashes, locations, last| {
            std::thread::scope(|scope| {
                let beside = filter
                    .as_deref_mut()
                    .map(|f| scope.spawn(move || hashes.iter().for_each(|h| f.insert(h[0]))));
                // Slots come grouped by partition: the writes stay within one partition's bytes.
                let placed = placer.place(hashes, locations, last, threads, |l, s| {
                    let packed =
                        l.checked_shr(block_of).unwrap_or(0) << offset_bits | (l & offset_mask);
                    let bit = s * width;
                    let at = (bit / 8) as usize;
                    let word = u64::from_le_bytes(table[at..at + 8].try_into().expect("8 bytes"));
                    let word = word | packed << (bit % 8);
                    table[at..at + 8].copy_from_slice(&word.to_le_bytes());
                });
                // Adding hashes to a filter does not fail: a panic there is a bug, passed on.
                if let Some(handle) = beside {
                    handle
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                }
                placed
            })
        })?;
        if placed {
            built = Some(placer.finish());
            break;
        }
    }
    let Some(built) = built else {
        return Ok(None);
    };
    let slots = built.slots();
    debug_assert!(slots <= most_slots && built.pilots.len() == buckets);
    out.truncate(table_start + (slots * width / 8) as usize + 8);
    out[0..8].copy_from_slice(&built.seed.to_le_bytes());
    out[8..16].copy_from_slice(&(buckets as u64).to_le_bytes());
    out[16..24].copy_from_slice(&slots.to_le_bytes());
    out[24..32].copy_from_slice(&partitions.to_le_bytes());
    out[32] = block_bits as u8;
    out[33] = offset_bits as u8;
    out[34] = built.shift as u8;
    out[35] = if direct { DIRECT } else { 0 };
    for (i, p) in built.pilots.iter().enumerate() {
        out[HEADER_LEN + 2 * i..HEADER_LEN + 2 * i + 2].copy_from_slice(&p.to_le_bytes());
    }
    for (i, b) in built.bases.iter().enumerate() {
        out[bases_start + 8 * i..bases_start + 8 * i + 8].copy_from_slice(&b.to_le_bytes());
    }
    Ok(Some(out))
}

/// A parsed lookup section. Positions are offsets into the file.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    /// Slots hold file offsets of entries ([`DIRECT`]).
    pub direct: bool,
    seed: u64,
    buckets: u64,
    shift: u32,
    offset_bits: u32,
    width: u32,
    pilots: usize,
    bases: usize,
    table: usize,
}

impl Lookup {
    /// The same section read from bytes that start at file offset `base` (a copy of the
    /// sections from there on): its positions less `base`.
    pub fn rebased(mut self, base: usize) -> Lookup {
        self.pilots -= base;
        self.bases -= base;
        self.table -= base;
        self
    }

    /// Parses and checks the section at `offset` of the file (`bytes` are its bytes) for a file
    /// of `key_count` keys.
    pub fn parse(bytes: &[u8], offset: u64, key_count: u64) -> Result<Lookup> {
        let corrupt = |at: usize, detail| Error::Corrupt {
            section: Section::Lookup,
            offset: offset + at as u64,
            detail,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(0, "lookup section shorter than its header"));
        }
        let (seed, buckets, slots) = (u64_at(bytes, 0), u64_at(bytes, 8), u64_at(bytes, 16));
        let partitions = u64_at(bytes, 24);
        let (block_bits, offset_bits) = (u32::from(bytes[32]), u32::from(bytes[33]));
        let shift = u32::from(bytes[34]);
        let flags = bytes[35];
        if flags & !DIRECT != 0 {
            return Err(corrupt(35, "unknown lookup flags"));
        }
        if bytes[36..40] != [0; 4] {
            return Err(corrupt(36, "reserved bytes are not zero"));
        }
        let direct = flags & DIRECT != 0;
        let width = block_bits + offset_bits;
        if block_bits > 32 || width > MAX_WIDTH || (direct && block_bits != 0) {
            return Err(corrupt(32, "slot wider than the format allows"));
        }
        if shift > mph::MAX_SHIFT
            || partitions == 0
            || partitions.checked_shl(shift) != Some(buckets)
            || buckets >> shift != partitions
        {
            return Err(corrupt(24, "partitions do not match the buckets"));
        }
        // At least one slot per key, and not more than twice as many (the writer makes about
        // 1.03 per key, and one at least per partition): the table's size follows.
        let most = key_count.max(partitions).saturating_mul(2).max(64);
        if slots < key_count || slots > most {
            return Err(corrupt(16, "slot count does not fit the key count"));
        }
        let too_long = || corrupt(8, "bucket or partition count does not fit the section");
        let pilots_end = buckets
            .checked_mul(2)
            .and_then(|p| p.checked_add(HEADER_LEN as u64))
            .filter(|end| *end <= bytes.len() as u64)
            .ok_or_else(too_long)?;
        let bases = pilots_end + (SECTION_ALIGN - pilots_end % SECTION_ALIGN) % SECTION_ALIGN;
        let table = partitions
            .checked_add(1)
            .and_then(|p| p.checked_mul(8))
            .and_then(|b| b.checked_add(bases))
            .filter(|end| *end <= bytes.len() as u64)
            .ok_or_else(too_long)?;
        // slots <= 2^65 and width <= 56: the product fits in u128.
        let table_len = u128::from(slots) * u128::from(width) / 8 + 8;
        if u128::from(table) + table_len != bytes.len() as u128 {
            return Err(corrupt(16, "slot table length does not match the section"));
        }
        // Partition bases: from 0, increasing (every partition has a slot), to `slots`.
        let mut previous = None;
        for p in 0..=partitions as usize {
            let base = u64_at(bytes, bases as usize + 8 * p);
            let fits = match previous {
                None => base == 0,
                Some(prev) => base > prev && base <= slots,
            };
            if !fits || (p == partitions as usize && base != slots) {
                return Err(corrupt(
                    bases as usize + 8 * p,
                    "partition bases do not rise from 0 to the slot count",
                ));
            }
            previous = Some(base);
        }
        Ok(Lookup {
            direct,
            seed,
            buckets,
            shift,
            offset_bits,
            width,
            pilots: offset as usize + HEADER_LEN,
            bases: offset as usize + bases as usize,
            table: offset as usize + table as usize,
        })
    }

    /// The `(block, offset)` the table holds for a key hash `h`. `data` is the whole file the
    /// section was parsed from (or, once [`Lookup::rebased`], the bytes from that base on). Any
    /// hash yields a location: a key not in the file yields some other key's (or, from an
    /// unused slot, block 0 at offset 0).
    #[inline]
    pub fn locate(&self, data: &[u8], h: [u64; 2]) -> (u64, usize) {
        let b = mph::bucket(h[1], self.seed, self.buckets) as usize;
        let at = self.pilots + 2 * b;
        let pilot = u16::from_le_bytes([data[at], data[at + 1]]);
        let at = self.bases + 8 * (b >> self.shift);
        let base = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let end = u64::from_le_bytes(data[at + 8..at + 16].try_into().expect("8 bytes"));
        let s = base + mph::slot(h[0], self.seed, pilot, end - base);
        // s·width < slots·width <= 8 × the section's length (checked by `parse`): no overflow.
        let bit = s * u64::from(self.width);
        let at = self.table + (bit / 8) as usize;
        let word = u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
        let packed = (word >> (bit % 8)) & ((1u64 << self.width) - 1);
        (
            packed >> self.offset_bits,
            (packed & ((1u64 << self.offset_bits) - 1)) as usize,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The section over `hashes` and `locations`, with the records in memory or, with
    /// `spill`, past that many bytes in runs on a temporary file.
    fn build(
        hashes: &[[u64; 2]],
        locations: &[u64],
        direct: bool,
        threads: usize,
        spill: Option<usize>,
    ) -> Option<Vec<u8>> {
        let dir = std::env::temp_dir();
        let mut records = Records::new(spill.map(|memory| (dir, memory)));
        for (h, l) in hashes.iter().zip(locations) {
            records.push(*h, *l).unwrap();
        }
        super::build(&mut records, direct, threads, None).unwrap()
    }

    #[test]
    fn spilled_records_build_the_same_section() {
        for n in [0usize, 1, 1000, 200_000] {
            let hashes: Vec<[u64; 2]> = (0..n).map(|i| key_hash(&i.to_le_bytes())).collect();
            let locations: Vec<u64> = (0..n as u64).map(|i| ((i / 9) << 32) | (i % 9)).collect();
            let in_memory = build(&hashes, &locations, false, 2, None).unwrap();
            // Runs and parts of about 1,260 records (200,000 keys: 159 runs): the last
            // partition of each part continues in the next.
            for memory in [64 << 10, 1 << 20] {
                let spilled = build(&hashes, &locations, false, 2, Some(memory)).unwrap();
                assert!(spilled == in_memory, "{n} keys, {memory} bytes");
            }
        }
    }

    #[test]
    fn another_seed_regroups_spilled_records() {
        // Two keys with equal low halves in one bucket under seed 0 fit under no pilot; under
        // seed 1 they are in different buckets.
        let n = 60_000usize;
        let mut hashes: Vec<[u64; 2]> = (0..n).map(|i| key_hash(&i.to_le_bytes())).collect();
        let buckets = mph::Placer::new(n as u64, 0).unwrap().buckets();
        let first = hashes[0];
        let twin = (1u64..)
            .map(|i| [first[0], mph::fmix64(i)])
            .find(|t| {
                mph::bucket(t[1], 0, buckets) == mph::bucket(first[1], 0, buckets)
                    && mph::bucket(t[1], 1, buckets) != mph::bucket(first[1], 1, buckets)
            })
            .unwrap();
        hashes[n - 1] = twin;
        let locations: Vec<u64> = (0..n as u64).map(|i| i << 32 | 7).collect();
        let in_memory = build(&hashes, &locations, false, 2, None).unwrap();
        assert_eq!(u64_at(&in_memory, 0), 1, "seed");
        let spilled = build(&hashes, &locations, false, 2, Some(64 << 10)).unwrap();
        assert!(spilled == in_memory);
        let lookup = Lookup::parse(&spilled, 0, n as u64).unwrap();
        for (h, l) in hashes.iter().zip(&locations) {
            assert_eq!(lookup.locate(&spilled, *h), (l >> 32, 7));
        }
        // Equal 128-bit hashes: no seed separates them, spilled or not.
        hashes[n - 1] = first;
        assert_eq!(build(&hashes, &locations, false, 1, None), None);
        assert_eq!(build(&hashes, &locations, false, 1, Some(64 << 10)), None);
    }

    #[test]
    fn every_location_comes_back() {
        for n in [0usize, 1, 5, 1000, 50_000] {
            let hashes: Vec<[u64; 2]> = (0..n).map(|i| key_hash(&i.to_le_bytes())).collect();
            let locations: Vec<u64> = (0..n as u64)
                .map(|i| ((i / 7) << 32) | ((i % 7) * 300))
                .collect();
            let bytes = build(&hashes, &locations, false, 2, None).unwrap();
            let mut file = vec![0u8; 16];
            file.extend_from_slice(&bytes);
            let lookup = Lookup::parse(&bytes, 16, n as u64).unwrap();
            for (h, l) in hashes.iter().zip(&locations) {
                assert_eq!(
                    lookup.locate(&file, *h),
                    (l >> 32, (l & 0xffff_ffff) as usize)
                );
            }
            // Any other hash lands somewhere inside the table.
            for i in 0..1000u64 {
                let _ = lookup.locate(&file, key_hash(&((i + 1) << 40).to_le_bytes()));
            }
            // Direct: file offsets, wider than 32 bits too.
            let offsets: Vec<u64> = (0..n as u64).map(|i| 16 + i * 5_000_000).collect();
            let bytes = build(&hashes, &offsets, true, 2, Some(16 << 10)).unwrap();
            let lookup = Lookup::parse(&bytes, 0, n as u64).unwrap();
            assert!(lookup.direct);
            for (h, &o) in hashes.iter().zip(&offsets) {
                assert_eq!(lookup.locate(&bytes, *h), (0, o as usize));
            }
        }
    }

    #[test]
    fn inconsistent_sections_are_refused() {
        let hashes: Vec<[u64; 2]> = (0..100u32).map(|i| key_hash(&i.to_le_bytes())).collect();
        let locations: Vec<u64> = (0..100u64).map(|i| i << 32 | i).collect();
        let bytes = build(&hashes, &locations, false, 1, None).unwrap();
        assert!(Lookup::parse(&bytes, 0, 100).is_ok());
        assert!(Lookup::parse(&bytes[..bytes.len() - 1], 0, 100).is_err());
        assert!(Lookup::parse(&bytes, 0, 1000).is_err());
        let buckets = u64::from_le_bytes(bytes[8..16].try_into().unwrap()) as usize;
        let bases = (HEADER_LEN + 2 * buckets).next_multiple_of(8);
        for (at, v) in [
            (32, 40u8),
            (33, 40),
            (34, 15),
            (35, 2),
            (36, 1),
            (8, 0xff),
            (16, 0xff),
            (24, 2),
            (bases, 1),
            (bases + 8, 0),
        ] {
            let mut bad = bytes.clone();
            bad[at] = v;
            assert!(Lookup::parse(&bad, 0, 100).is_err(), "byte {at}");
        }
        let mut zero = bytes.clone();
        zero[8..16].fill(0);
        assert!(Lookup::parse(&zero, 0, 100).is_err());
    }
}
