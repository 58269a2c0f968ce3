//! The lookup section (format version 2): a perfect hash ([`crate::mph`]) from every key to a
//! slot, and a table of bit-packed slots, each the block of a key and the offset of its entry in
//! the block's raw bytes. A lookup reads a pilot, a slot and the entry: no index walk, no search
//! in the block. See FORMAT.md, "Lookup".
//!
//! Layout: `seed u64 · buckets u64 · slots u64 · block_bits u8 · offset_bits u8 · reserved
//! [u8; 6] · pilots u16 × buckets · zero padding to a multiple of 8 · slot table`, the table
//! `floor(slots · w / 8) + 8` bytes with `w = block_bits + offset_bits`, slot `s` in bits
//! `s·w .. s·w + w` (least significant bit first) holding `block << offset_bits | offset`.

use crate::error::{Error, Result, Section};
use crate::layout::{u64_at, SECTION_ALIGN};
use crate::mph;

const HEADER_LEN: usize = 32;
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

/// Builds the section from each key's hash and location (`block << 32 | offset`, keys in any
/// order). `None` if no seed gives a perfect hash (two keys with equal 128-bit hashes), or for
/// 2^32 keys or more.
pub(crate) fn build(hashes: &[[u64; 2]], locations: &[u64]) -> Option<Vec<u8>> {
    // The perfect hash numbers keys with u32.
    u32::try_from(hashes.len()).ok()?;
    let max_block = locations.iter().map(|l| l >> 32).max().unwrap_or(0);
    let max_offset = locations.iter().map(|l| l & 0xffff_ffff).max().unwrap_or(0);
    let (block_bits, offset_bits) = (bits(max_block), bits(max_offset));
    let width = u64::from(block_bits + offset_bits);
    // Block numbers are u32 and offsets lie inside a block of at most MAX_BLOCK_LEN bytes.
    debug_assert!(width <= u64::from(MAX_WIDTH));
    let (buckets, slots) = mph::sizes(hashes.len() as u64);
    let pilots_end = HEADER_LEN + 2 * buckets as usize;
    let table_start = pilots_end + crate::layout::padding(pilots_end as u64);
    let table_len = (slots * width / 8) as usize + 8;
    let mut out = vec![0u8; table_start + table_len];
    for seed in 0..SEEDS {
        let table = &mut out[table_start..];
        table.fill(0);
        let built = mph::build(hashes, seed, |i, s| {
            let l = locations[i];
            let packed = (l >> 32) << offset_bits | (l & 0xffff_ffff);
            let bit = s * width;
            let at = (bit / 8) as usize;
            let word = u64::from_le_bytes(table[at..at + 8].try_into().expect("8 bytes"));
            let word = word | packed << (bit % 8);
            table[at..at + 8].copy_from_slice(&word.to_le_bytes());
        });
        let Some(built) = built else { continue };
        out[0..8].copy_from_slice(&seed.to_le_bytes());
        out[8..16].copy_from_slice(&buckets.to_le_bytes());
        out[16..24].copy_from_slice(&built.slots.to_le_bytes());
        out[24] = block_bits as u8;
        out[25] = offset_bits as u8;
        for (i, p) in built.pilots.iter().enumerate() {
            out[HEADER_LEN + 2 * i..HEADER_LEN + 2 * i + 2].copy_from_slice(&p.to_le_bytes());
        }
        return Some(out);
    }
    None
}

/// A parsed lookup section. Positions are offsets into the file.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    seed: u64,
    buckets: u64,
    slots: u64,
    offset_bits: u32,
    width: u32,
    pilots: usize,
    table: usize,
}

impl Lookup {
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
        let (block_bits, offset_bits) = (u32::from(bytes[24]), u32::from(bytes[25]));
        if bytes[26..32] != [0; 6] {
            return Err(corrupt(26, "reserved bytes are not zero"));
        }
        let width = block_bits + offset_bits;
        if block_bits > 32 || width > MAX_WIDTH {
            return Err(corrupt(24, "slot wider than the format allows"));
        }
        // At least one slot per key, and not more than twice as many (the writer makes about
        // 1.03 per key): the table's size follows from the key count.
        if slots == 0 || slots < key_count || slots > key_count.saturating_mul(2).max(64) {
            return Err(corrupt(16, "slot count does not fit the key count"));
        }
        let pilots_end = buckets
            .checked_mul(2)
            .and_then(|p| p.checked_add(HEADER_LEN as u64))
            .filter(|_| buckets > 0)
            .filter(|end| *end <= bytes.len() as u64)
            .ok_or_else(|| corrupt(8, "bucket count does not fit the section"))?;
        let table = pilots_end + (SECTION_ALIGN - pilots_end % SECTION_ALIGN) % SECTION_ALIGN;
        // slots <= 2^65 and width <= 56: the product fits in u128.
        let table_len = u128::from(slots) * u128::from(width) / 8 + 8;
        if u128::from(table) + table_len != bytes.len() as u128 {
            return Err(corrupt(16, "slot table length does not match the section"));
        }
        Ok(Lookup {
            seed,
            buckets,
            slots,
            offset_bits,
            width,
            pilots: offset as usize + HEADER_LEN,
            table: offset as usize + table as usize,
        })
    }

    /// The `(block, offset)` the table holds for a key hash `h`. `data` is the whole file the
    /// section was parsed from. Any hash yields a location: a key not in the file yields some
    /// other key's (or, from an unused slot, block 0 at offset 0).
    #[inline]
    pub fn locate(&self, data: &[u8], h: [u64; 2]) -> (u64, usize) {
        let b = mph::bucket(h[1], self.seed, self.buckets) as usize;
        let at = self.pilots + 2 * b;
        let pilot = u16::from_le_bytes([data[at], data[at + 1]]);
        let s = mph::slot(h[0], self.seed, pilot, self.slots);
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

    #[test]
    fn every_location_comes_back() {
        for n in [0usize, 1, 5, 1000, 50_000] {
            let hashes: Vec<[u64; 2]> = (0..n).map(|i| key_hash(&i.to_le_bytes())).collect();
            let locations: Vec<u64> = (0..n as u64)
                .map(|i| ((i / 7) << 32) | ((i % 7) * 300))
                .collect();
            let bytes = build(&hashes, &locations).unwrap();
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
        }
    }

    #[test]
    fn inconsistent_sections_are_refused() {
        let hashes: Vec<[u64; 2]> = (0..100u32).map(|i| key_hash(&i.to_le_bytes())).collect();
        let locations: Vec<u64> = (0..100u64).map(|i| i << 32 | i).collect();
        let bytes = build(&hashes, &locations).unwrap();
        assert!(Lookup::parse(&bytes, 0, 100).is_ok());
        assert!(Lookup::parse(&bytes[..bytes.len() - 1], 0, 100).is_err());
        assert!(Lookup::parse(&bytes, 0, 1000).is_err());
        for (at, v) in [(24, 40u8), (25, 40), (26, 1), (8, 0xff), (16, 0xff)] {
            let mut bad = bytes.clone();
            bad[at] = v;
            assert!(Lookup::parse(&bad, 0, 100).is_err(), "byte {at}");
        }
        let mut zero = bytes.clone();
        zero[8..16].fill(0);
        assert!(Lookup::parse(&zero, 0, 100).is_err());
    }
}
