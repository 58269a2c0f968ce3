//! A perfect hash over a set of 128-bit key hashes, in the manner of PTHash: keys fall into
//! buckets (about [`KEYS_PER_BUCKET`] each), and each bucket has a 16-bit *pilot* chosen so that
//! its keys land on distinct, free slots of a table a little larger than the key count. A query
//! reads one pilot and computes one slot: two memory accesses, no comparison, no branch on data.
//!
//! For a key hash `(lo, hi)` (the low and high 64 bits of `XXH3_128bits(key)`):
//!
//! ```text
//! bucket = (fmix64(hi ^ seed) · buckets) >> 64                         (128-bit product)
//! slot   = (fmix64(lo ^ seed ^ (pilot[bucket] + 1) · K mod 2^64) · slots) >> 64
//! ```
//!
//! with `K = 0x9E3779B97F4A7C15` and `fmix64` MurmurHash3's 64-bit finalizer. Construction is
//! deterministic: buckets are placed largest first (ties by bucket number), each taking the
//! smallest pilot that sends its keys to distinct free slots.
//!
//! The function is perfect on the set it was built from only: any other hash maps to some slot
//! too, so a caller compares the key it finds there.

/// Average keys per bucket: more makes the pilots fewer (2 bytes per bucket) and the build
/// slower (4 keys per bucket take about 1.5 times as long to place as 3).
pub const KEYS_PER_BUCKET: u64 = 3;
/// Slots per 97 keys: 97% of the table holds a key.
pub const SLOTS_PER_97_KEYS: u64 = 100;
const K: u64 = 0x9E37_79B9_7F4A_7C15;

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
#[inline]
pub fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// `x` scaled to `0..n`: the high half of the 128-bit product.
#[inline]
pub fn fastrange(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// The bucket of high hash half `hi`.
#[inline]
pub fn bucket(hi: u64, seed: u64, buckets: u64) -> u64 {
    fastrange(fmix64(hi ^ seed), buckets)
}

/// The slot of low hash half `lo` under `pilot`.
#[inline]
pub fn slot(lo: u64, seed: u64, pilot: u16, slots: u64) -> u64 {
    fastrange(
        fmix64(lo ^ seed ^ (u64::from(pilot) + 1).wrapping_mul(K)),
        slots,
    )
}

/// The sizes a function over `n < 2^32` keys has: `(buckets, slots)` = `(max(1, ⌈n / 3⌉),
/// max(1, ⌈100·n / 97⌉))`.
pub fn sizes(n: u64) -> (u64, u64) {
    let buckets = n.div_ceil(KEYS_PER_BUCKET).max(1);
    let slots = (n * SLOTS_PER_97_KEYS).div_ceil(97).max(1);
    (buckets, slots)
}

/// A built function: its parameters and pilots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The seed.
    pub seed: u64,
    /// Slots in the table: at least the key count.
    pub slots: u64,
    /// One pilot per bucket.
    pub pilots: Vec<u16>,
}

/// Builds the function over `hashes` (`[lo, hi]` per key) with `seed`, calling `place(i, slot)`
/// once for each key `i` (in no particular order) with its slot. `None` when some bucket fits
/// under no pilot: two keys of a bucket with equal `lo` (try another seed), or vanishingly rare
/// bad luck; `place` may have been called for some keys then. Also `None` for 2^32 keys or more.
pub fn build(hashes: &[[u64; 2]], seed: u64, mut place: impl FnMut(usize, u64)) -> Option<Built> {
    // Key numbers are kept as u32 while building.
    if u32::try_from(hashes.len()).is_err() {
        return None;
    }
    let (buckets, slots) = sizes(hashes.len() as u64);
    let bucket_of = |h: &[u64; 2]| bucket(h[1], seed, buckets) as usize;
    // Keys by bucket: a counting sort.
    let mut starts = vec![0u32; buckets as usize + 1];
    for h in hashes {
        starts[bucket_of(h) + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    // Each key's `lo` and number, gathered by bucket: a bucket's keys are read together, and
    // buckets of one size are placed in increasing order, so the reads go forward.
    let mut members = vec![(0u64, 0u32); hashes.len()];
    let mut fill = starts.clone();
    for (i, h) in hashes.iter().enumerate() {
        let b = bucket_of(h);
        members[fill[b] as usize] = (h[0], i as u32);
        fill[b] += 1;
    }
    // Buckets largest first, ties by number: a counting sort by size, descending.
    let size = |b: usize| (starts[b + 1] - starts[b]) as usize;
    let largest = (0..buckets as usize).map(size).max().unwrap_or(0);
    let mut by_size = vec![0u32; largest + 2];
    for b in 0..buckets as usize {
        by_size[largest - size(b) + 1] += 1;
    }
    for i in 1..by_size.len() {
        by_size[i] += by_size[i - 1];
    }
    let mut order = fill;
    order.truncate(buckets as usize);
    for b in 0..buckets as usize {
        let at = &mut by_size[largest - size(b)];
        order[*at as usize] = b as u32;
        *at += 1;
    }
    let mut taken = vec![0u64; (slots as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], s: u64| taken[(s / 64) as usize] >> (s % 64) & 1 == 1;
    let mut pilots = vec![0u16; buckets as usize];
    let mut placed: Vec<u64> = Vec::new();
    for b in order {
        let keys = &members[starts[b as usize] as usize..starts[b as usize + 1] as usize];
        if keys.is_empty() {
            break;
        }
        let pilot = (0..=u16::MAX).find(|&p| {
            placed.clear();
            for &(lo, _) in keys {
                let s = slot(lo, seed, p, slots);
                if is_taken(&taken, s) || placed.contains(&s) {
                    return false;
                }
                placed.push(s);
            }
            true
        })?;
        pilots[b as usize] = pilot;
        for (&(_, k), &s) in keys.iter().zip(&placed) {
            taken[(s / 64) as usize] |= 1 << (s % 64);
            place(k as usize, s);
        }
    }
    Some(Built {
        seed,
        slots,
        pilots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    fn split(h: u128) -> [u64; 2] {
        [h as u64, (h >> 64) as u64]
    }

    #[test]
    fn every_key_gets_its_own_slot_and_queries_agree() {
        for n in [0usize, 1, 2, 3, 10, 1000, 100_000] {
            let hashes: Vec<[u64; 2]> = (0..n)
                .map(|i| split(xxh3_128(format!("key_{i}").as_bytes())))
                .collect();
            let mut slot_of = vec![u64::MAX; n];
            let built = build(&hashes, 7, |i, s| slot_of[i] = s).unwrap();
            assert!(built.slots >= n as u64);
            let buckets = built.pilots.len() as u64;
            let mut seen = std::collections::HashSet::new();
            for (h, &s) in hashes.iter().zip(&slot_of) {
                assert!(s < built.slots && seen.insert(s), "n={n}");
                let pilot = built.pilots[bucket(h[1], 7, buckets) as usize];
                assert_eq!(slot(h[0], 7, pilot, built.slots), s);
            }
        }
    }

    #[test]
    fn equal_low_halves_in_one_bucket_cannot_be_told_apart() {
        assert_eq!(build(&[[5, 1], [9, 2], [5, 1]], 0, |_, _| {}), None);
    }
}
