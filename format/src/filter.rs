//! A blocked Bloom filter over all keys: a miss usually costs one cache line, no index walk and no
//! block. Layout: `k u32 · reserved u32 · lines u64 · lines × 64-byte lines` (see FORMAT.md).

use crate::error::{Error, Result, Section};
use crate::layout::{u32_at, u64_at};

const LINE_BYTES: usize = 64;
const LINE_BITS: u64 = 512;
const HEADER_LEN: usize = 16;
/// Spreads the key hash for the in-line bit positions (independent of the line choice).
const MIX: u64 = 0x9E37_79B9_7F4A_7C15;
/// At most 7 probes: each takes 9 bits of the mixed hash.
pub(crate) const MAX_PROBES: u32 = 7;

#[inline]
fn probes(hash: u64, lines: u64) -> (usize, u64) {
    let line = ((u128::from(hash) * u128::from(lines)) >> 64) as usize;
    (line, hash.wrapping_mul(MIX))
}

/// Builds the filter from key hashes (of each key: xxh3-64 in version 1, the low half of
/// xxh3-128 in version 2).
pub(crate) fn build(hashes: impl ExactSizeIterator<Item = u64>, bits_per_key: u32) -> Vec<u8> {
    let Some(mut filter) = Builder::new(hashes.len() as u64, bits_per_key) else {
        return Vec::new();
    };
    hashes.for_each(|h| filter.insert(h));
    filter.finish()
}

/// A filter being built, sized for its number of keys.
#[derive(Debug)]
pub(crate) struct Builder {
    out: Vec<u8>,
    k: u32,
    lines: u64,
}

impl Builder {
    /// A filter for `keys` keys at `bits_per_key`; `None` (no filter) when either is 0.
    pub fn new(keys: u64, bits_per_key: u32) -> Option<Builder> {
        if bits_per_key == 0 || keys == 0 {
            return None;
        }
        let bits = keys * u64::from(bits_per_key);
        let lines = bits.div_ceil(LINE_BITS).max(1);
        // k = bits_per_key · ln 2, rounded, within 1..=7.
        let k =
            ((bits_per_key as f64 * std::f64::consts::LN_2).round() as u32).clamp(1, MAX_PROBES);
        let mut out = vec![0u8; HEADER_LEN + lines as usize * LINE_BYTES];
        out[0..4].copy_from_slice(&k.to_le_bytes());
        out[8..16].copy_from_slice(&lines.to_le_bytes());
        Some(Builder { out, k, lines })
    }

    /// Adds a key's hash.
    pub fn insert(&mut self, hash: u64) {
        let (line, mut g) = probes(hash, self.lines);
        let base = HEADER_LEN + line * LINE_BYTES;
        for _ in 0..self.k {
            let bit = (g & (LINE_BITS - 1)) as usize;
            self.out[base + bit / 8] |= 1 << (bit % 8);
            g >>= 9;
        }
    }

    /// Forgets every key added.
    pub fn clear(&mut self) {
        self.out[HEADER_LEN..].fill(0);
    }

    /// The filter section.
    pub fn finish(self) -> Vec<u8> {
        self.out
    }
}

/// A parsed filter over a section's bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Filter {
    k: u32,
    lines: u64,
}

impl Filter {
    /// Parses the filter section (`None` when the section is empty: no filter).
    pub fn parse(bytes: &[u8], offset: u64) -> Result<Option<Filter>> {
        if bytes.is_empty() {
            return Ok(None);
        }
        let corrupt = |at: u64, detail| Error::Corrupt {
            section: Section::Filter,
            offset: offset + at,
            detail,
        };
        if bytes.len() < HEADER_LEN {
            return Err(corrupt(0, "filter shorter than its header"));
        }
        let k = u32_at(bytes, 0);
        let lines = u64_at(bytes, 8);
        if !(1..=MAX_PROBES).contains(&k) || u32_at(bytes, 4) != 0 {
            return Err(corrupt(0, "bad filter probe count"));
        }
        let body = (bytes.len() - HEADER_LEN) as u64;
        if lines == 0 || lines.checked_mul(LINE_BYTES as u64) != Some(body) {
            return Err(corrupt(8, "filter line count does not match its length"));
        }
        Ok(Some(Filter { k, lines }))
    }

    /// False when the key of filter hash `hash` is certainly absent. `bytes` is the section
    /// parsed by [`Filter::parse`].
    #[inline]
    pub fn may_contain(&self, bytes: &[u8], hash: u64) -> bool {
        let (line, mut g) = probes(hash, self.lines);
        let base = HEADER_LEN + line * LINE_BYTES;
        let line = &bytes[base..base + LINE_BYTES];
        for _ in 0..self.k {
            let bit = (g & (LINE_BITS - 1)) as usize;
            if line[bit / 8] & (1 << (bit % 8)) == 0 {
                return false;
            }
            g >>= 9;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let keys: Vec<Vec<u8>> = (0..20_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .collect();
        let hashes: Vec<u64> = keys.iter().map(|k| xxh3_64(k)).collect();
        let bytes = build(hashes.into_iter(), 10);
        let f = Filter::parse(&bytes, 0).unwrap().unwrap();
        assert!(keys.iter().all(|k| f.may_contain(&bytes, xxh3_64(k))));
        let fp = (0..20_000u32)
            .filter(|i| f.may_contain(&bytes, xxh3_64(format!("x{i}").as_bytes())))
            .count();
        // 10 bits per key, 7 probes in 512-bit lines: about 1% false positives.
        assert!(fp < 400, "{fp} false positives in 20000");
    }

    #[test]
    fn rejects_inconsistent_lengths() {
        let bytes = build([1, 2, 3].into_iter(), 10);
        assert!(Filter::parse(&bytes[..bytes.len() - 1], 0).is_err());
        let mut bad = bytes.clone();
        bad[0] = 9;
        assert!(Filter::parse(&bad, 0).is_err());
    }
}
