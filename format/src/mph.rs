//! A perfect hash over a set of 64-bit key hashes, in the manner of PTHash: keys fall into
//! buckets (about [`KEYS_PER_BUCKET`] each), and each bucket has a 16-bit *pilot* chosen so that
//! its keys land on distinct, free slots of a table a little larger than the key count. A query
//! reads one pilot and computes one slot: two memory accesses, no comparison, no branch on data.
//!
//! Layout of a built function, as a reader takes it: `seed u64 · buckets u64 · slots u64 ·
//! pilots (u16 LE) × buckets`. The slot of hash `h` is
//!
//! ```text
//! bucket = (h · buckets) >> 64                     (128-bit product)
//! slot   = (fmix64(h ^ (pilot[bucket] + 1) · K) · slots) >> 64
//! ```
//!
//! with `K = 0x9E3779B97F4A7C15` and `fmix64` MurmurHash3's 64-bit finalizer. Construction is
//! deterministic: buckets are placed largest first (ties by bucket number), each taking the
//! smallest pilot that fits.
//!
//! The function is perfect on the set it was built from only: any other hash maps to some slot
//! too, so a caller compares the key it finds there.

/// Average keys per bucket: more makes the pilots smaller (bytes per key) and the build slower.
pub const KEYS_PER_BUCKET: f64 = 4.0;
/// Keys per slot: the fraction of the table that holds a key.
pub const LOAD: f64 = 0.97;
const K: u64 = 0x9E37_79B9_7F4A_7C15;
/// Bytes before the pilots.
pub const HEADER_LEN: usize = 24;

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
#[inline]
fn fmix64(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

#[inline]
fn fastrange(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

#[inline]
fn slot(h: u64, pilot: u16, slots: u64) -> u64 {
    fastrange(fmix64(h ^ (u64::from(pilot) + 1).wrapping_mul(K)), slots)
}

/// A built function: its parameters and pilots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The seed the key hashes were made with (stored for the reader; not used here).
    pub seed: u64,
    /// Slots in the table: at least the key count.
    pub slots: u64,
    /// One pilot per bucket.
    pub pilots: Vec<u16>,
    /// For each input hash, in input order, its slot.
    pub slot_of: Vec<u64>,
}

impl Built {
    /// The function's bytes (see the module documentation).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 2 * self.pilots.len());
        out.extend_from_slice(&self.seed.to_le_bytes());
        out.extend_from_slice(&(self.pilots.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.slots.to_le_bytes());
        for p in &self.pilots {
            out.extend_from_slice(&p.to_le_bytes());
        }
        out
    }
}

/// Builds the function over `hashes` (made with `seed`). `None` when two hashes are equal (no
/// function can tell them apart: hash the keys with another seed), a bucket fits under no
/// pilot (vanishingly rare at this load), or there are 2^32 hashes or more.
pub fn build(hashes: &[u64], seed: u64) -> Option<Built> {
    // Key numbers are kept as u32 while building.
    if u32::try_from(hashes.len()).is_err() {
        return None;
    }
    let n = hashes.len() as u64;
    let buckets = ((n as f64 / KEYS_PER_BUCKET).ceil() as u64).max(1);
    let slots = ((n as f64 / LOAD).ceil() as u64).max(n).max(1);
    // Keys by bucket: a counting sort.
    let mut starts = vec![0u32; buckets as usize + 1];
    for &h in hashes {
        starts[fastrange(h, buckets) as usize + 1] += 1;
    }
    for i in 1..starts.len() {
        starts[i] += starts[i - 1];
    }
    let mut members = vec![0u32; hashes.len()];
    let mut fill = starts.clone();
    for (i, &h) in hashes.iter().enumerate() {
        let b = fastrange(h, buckets) as usize;
        members[fill[b] as usize] = i as u32;
        fill[b] += 1;
    }
    drop(fill);
    let mut order: Vec<u32> = (0..buckets as u32).collect();
    order.sort_by_key(|&b| {
        let size = starts[b as usize + 1] - starts[b as usize];
        (std::cmp::Reverse(size), b)
    });
    let mut taken = vec![0u64; (slots as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], s: u64| taken[(s / 64) as usize] >> (s % 64) & 1 == 1;
    let mut pilots = vec![0u16; buckets as usize];
    let mut slot_of = vec![0u64; hashes.len()];
    let mut placed: Vec<u64> = Vec::new();
    for b in order {
        let keys = &members[starts[b as usize] as usize..starts[b as usize + 1] as usize];
        if keys.is_empty() {
            break;
        }
        let pilot = (0..=u16::MAX).find(|&p| {
            placed.clear();
            for &k in keys {
                let s = slot(hashes[k as usize], p, slots);
                if is_taken(&taken, s) || placed.contains(&s) {
                    return false;
                }
                placed.push(s);
            }
            true
        })?;
        pilots[b as usize] = pilot;
        for (&k, &s) in keys.iter().zip(&placed) {
            taken[(s / 64) as usize] |= 1 << (s % 64);
            slot_of[k as usize] = s;
        }
    }
    Some(Built {
        seed,
        slots,
        pilots,
        slot_of,
    })
}

/// A function read from its bytes.
#[derive(Debug, Clone, Copy)]
pub struct Mph<'a> {
    /// The seed the key hashes are made with.
    pub seed: u64,
    /// Slots in the table.
    pub slots: u64,
    pilots: &'a [u8],
}

impl<'a> Mph<'a> {
    /// Reads a function from `bytes` (`None`: too short, or sizes that do not match).
    pub fn parse(bytes: &'a [u8]) -> Option<Mph<'a>> {
        let word = |i: usize| -> Option<u64> {
            Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
        };
        let (seed, buckets, slots) = (word(0)?, word(8)?, word(16)?);
        let pilots = bytes.get(HEADER_LEN..)?;
        if buckets == 0 || pilots.len() as u64 != buckets.checked_mul(2)? || slots == 0 {
            return None;
        }
        Some(Mph {
            seed,
            slots,
            pilots,
        })
    }

    /// The slot of hash `h` (below `slots`, which comes from the bytes parsed: a reader checks
    /// it against the table it indexes).
    #[inline]
    pub fn slot(&self, h: u64) -> u64 {
        let buckets = (self.pilots.len() / 2) as u64;
        let b = fastrange(h, buckets) as usize * 2;
        let pilot = u16::from_le_bytes([self.pilots[b], self.pilots[b + 1]]);
        slot(h, pilot, self.slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_64_with_seed;

    #[test]
    fn every_key_gets_its_own_slot_and_the_reader_agrees() {
        for n in [0usize, 1, 2, 3, 10, 1000, 100_000] {
            let hashes: Vec<u64> = (0..n)
                .map(|i| xxh3_64_with_seed(format!("key_{i}").as_bytes(), 7))
                .collect();
            let built = build(&hashes, 7).unwrap();
            assert!(built.slots >= n as u64);
            let mut seen = std::collections::HashSet::new();
            for &s in &built.slot_of {
                assert!(s < built.slots && seen.insert(s), "n={n}");
            }
            let bytes = built.to_bytes();
            let mph = Mph::parse(&bytes).unwrap();
            assert_eq!(mph.seed, 7);
            for (h, s) in hashes.iter().zip(&built.slot_of) {
                assert_eq!(mph.slot(*h), *s);
            }
        }
    }

    #[test]
    fn equal_hashes_cannot_be_told_apart() {
        assert_eq!(build(&[5, 9, 5], 0), None);
    }

    #[test]
    fn bad_bytes_are_refused() {
        let bytes = build(&[1, 2, 3], 0).unwrap().to_bytes();
        assert!(Mph::parse(&bytes[..bytes.len() - 1]).is_none());
        assert!(Mph::parse(&bytes[..10]).is_none());
        let mut zero = bytes.clone();
        zero[16..24].fill(0);
        assert!(Mph::parse(&zero).is_none());
    }
}
