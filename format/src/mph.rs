//! A perfect hash over a set of 128-bit key hashes, in the manner of PTHash, partitioned: keys
//! fall into buckets (about [`KEYS_PER_BUCKET`] each), consecutive buckets form partitions (up to
//! 2^[`MAX_SHIFT`] buckets each), and each partition has its own small range of slots. Each
//! bucket has a 16-bit *pilot* chosen so that its keys land on distinct, free slots of its
//! partition's range. A query reads one pilot and two partition bounds and computes one slot.
//!
//! For a key hash `(lo, hi)` (the low and high 64 bits of `XXH3_128bits(key)`):
//!
//! ```text
//! bucket    = (fmix64(hi ^ seed) · buckets) >> 64                      (128-bit product)
//! partition = bucket >> shift
//! slot      = base[partition] + (fmix64(lo ^ seed ^ (pilot[bucket] + 1) · K mod 2^64)
//!                                · (base[partition + 1] - base[partition])) >> 64
//! ```
//!
//! with `K = 0x9E3779B97F4A7C15` and `fmix64` MurmurHash3's 64-bit finalizer. Partitions are
//! placed independently (on several threads), each in memory small enough to stay in the CPU's
//! cache; within one, buckets are placed largest first (ties by bucket number), each taking the
//! smallest pilot that sends its keys to distinct free slots. The result does not depend on the
//! number of threads.
//!
//! The function is perfect on the set it was built from only: any other hash maps to some slot
//! too, so a caller compares the key it finds there.

/// Average keys per bucket: more makes the pilots fewer (2 bytes per bucket) and the build
/// slower (4 keys per bucket take about 1.5 times as long to place as 3).
pub const KEYS_PER_BUCKET: u64 = 3;
/// Slots per 97 keys of a partition: 97% of the table holds a key.
pub const SLOTS_PER_97_KEYS: u64 = 100;
/// Buckets per partition: at most `2^MAX_SHIFT` (about 49,000 keys, whose slots take 6 KiB of
/// bits while they are placed).
pub const MAX_SHIFT: u32 = 14;
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

/// The slot, within a partition of `slots` slots, of low hash half `lo` under `pilot`.
#[inline]
pub fn slot(lo: u64, seed: u64, pilot: u16, slots: u64) -> u64 {
    fastrange(
        fmix64(lo ^ seed ^ (u64::from(pilot) + 1).wrapping_mul(K)),
        slots,
    )
}

/// The shape of a function over `n < 2^32` keys: `(shift, partitions)`, with `2^shift` buckets
/// per partition: `want = max(1, ⌈n / 3⌉)` buckets, `shift = min(14, ⌈log2 want⌉)`,
/// `partitions = ⌈want / 2^shift⌉`.
pub fn shape(n: u64) -> (u32, u64) {
    let want = n.div_ceil(KEYS_PER_BUCKET).max(1);
    let shift = (64 - (want - 1).leading_zeros()).min(MAX_SHIFT);
    (shift, want.div_ceil(1 << shift))
}

/// Slots of a partition of `keys` keys: `max(1, ⌈100·keys / 97⌉)`.
pub fn partition_slots(keys: u64) -> u64 {
    (keys * SLOTS_PER_97_KEYS).div_ceil(97).max(1)
}

/// A built function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The seed.
    pub seed: u64,
    /// Buckets per partition: `2^shift`.
    pub shift: u32,
    /// One pilot per bucket, `partitions << shift` of them.
    pub pilots: Vec<u16>,
    /// The first slot of each partition, and the total number of slots last.
    pub bases: Vec<u64>,
}

impl Built {
    /// The number of slots.
    pub fn slots(&self) -> u64 {
        *self.bases.last().expect("at least one partition")
    }
}

/// A key while it is placed: its `lo`, what [`build`] hands back with its slot, its bucket in
/// its partition.
#[derive(Clone, Copy)]
struct Member {
    lo: u64,
    payload: u64,
    bucket: u32,
}

/// Builds the function over `hashes` (`[lo, hi]` per key) with `seed` on up to `threads`
/// threads, calling `place(payload[i], slot)` once for each key `i` (grouped by partition) with
/// its slot. `None` when some bucket fits under no pilot: two keys of a bucket with equal `lo`
/// (try another seed), or vanishingly rare bad luck; `place` has not been called then. Also
/// `None` for 2^32 keys or more.
pub fn build(
    hashes: &[[u64; 2]],
    payload: &[u64],
    seed: u64,
    threads: usize,
    place: impl FnMut(u64, u64),
) -> Option<Built> {
    let mut placer = Placer::new(hashes.len() as u64, seed)?;
    let all = placer.partitions();
    placer
        .place(hashes, payload, all, threads, place)
        .then(|| placer.finish())
}

/// Builds a function a run of partitions at a time, for keys that do not fit in memory at once:
/// each call to [`Placer::place`] hands over exactly the keys of the next partitions. Keys of
/// one partition may come in any order; the function is the same as [`build`]'s.
#[derive(Debug)]
pub struct Placer {
    seed: u64,
    shift: u32,
    partitions: u64,
    pilots: Vec<u16>,
    bases: Vec<u64>,
}

impl Placer {
    /// A function over `n` keys with `seed`, nothing placed yet. `None` for 2^32 keys or more.
    pub fn new(n: u64, seed: u64) -> Option<Placer> {
        u32::try_from(n).ok()?;
        let (shift, partitions) = shape(n);
        Some(Placer {
            seed,
            shift,
            partitions,
            pilots: vec![0; (partitions << shift) as usize],
            bases: vec![0],
        })
    }

    /// Number of partitions.
    pub fn partitions(&self) -> u64 {
        self.partitions
    }

    /// Number of buckets, `partitions << shift`.
    pub fn buckets(&self) -> u64 {
        self.partitions << self.shift
    }

    /// Buckets per partition: `2^shift`.
    pub fn shift(&self) -> u32 {
        self.shift
    }

    /// Partitions placed so far.
    pub fn placed(&self) -> u64 {
        self.bases.len() as u64 - 1
    }

    /// The partition of a key whose `fmix64(hi ^ seed)` is `mixed`: it grows with `mixed`.
    pub fn partition_of_mixed(&self, mixed: u64) -> u64 {
        fastrange(mixed, self.buckets()) >> self.shift
    }

    /// Places partitions `placed()..last` from the hashes of exactly their keys, calling
    /// `place(payload[i], slot)` for each key (grouped by partition). False when some bucket
    /// fits under no pilot; the placer is then of no further use.
    ///
    /// # Panics
    /// If a key of `hashes` lies outside those partitions, or `last` is past the last one.
    pub fn place(
        &mut self,
        hashes: &[[u64; 2]],
        payload: &[u64],
        last: u64,
        threads: usize,
        mut place: impl FnMut(u64, u64),
    ) -> bool {
        assert!(last <= self.partitions && hashes.len() == payload.len());
        let (seed, shift, buckets) = (self.seed, self.shift, self.buckets());
        let first = self.placed() as usize;
        let count = last as usize - first;
        // Keys by partition: a counting sort.
        let mut starts = vec![0usize; count + 1];
        let bucket_of = |h: &[u64; 2]| bucket(h[1], seed, buckets);
        for h in hashes {
            starts[(bucket_of(h) >> shift) as usize - first + 1] += 1;
        }
        for p in 1..starts.len() {
            starts[p] += starts[p - 1];
        }
        let mut members = vec![
            Member {
                lo: 0,
                payload: 0,
                bucket: 0
            };
            hashes.len()
        ];
        let mut fill = starts.clone();
        let mask = (1u64 << shift) - 1;
        for (h, &pay) in hashes.iter().zip(payload) {
            let b = bucket_of(h);
            let p = (b >> shift) as usize - first;
            members[fill[p]] = Member {
                lo: h[0],
                payload: pay,
                bucket: (b & mask) as u32,
            };
            fill[p] += 1;
        }
        drop(fill);
        let base = self.bases[first];
        let mut bases = Vec::with_capacity(count + 1);
        bases.push(base);
        for p in 0..count {
            let keys = (starts[p + 1] - starts[p]) as u64;
            bases.push(bases[p] + partition_slots(keys));
        }
        // Partitions are placed on `threads` threads, each a run of consecutive partitions: its
        // members, pilots and slots are disjoint slices.
        let mut slots = vec![0u32; hashes.len()];
        let threads = threads.clamp(1, count.max(1));
        let per_thread = count.div_ceil(threads).max(1);
        let pilots = &mut self.pilots[first << shift..(last as usize) << shift];
        let ok = std::thread::scope(|scope| {
            let mut workers = Vec::new();
            let (mut members, mut pilots, mut slots) = (&members[..], pilots, &mut slots[..]);
            for from_p in (0..count).step_by(per_thread) {
                let to_p = (from_p + per_thread).min(count);
                let keys = starts[to_p] - starts[from_p];
                let (m, rest) = members.split_at(keys);
                members = rest;
                let (pi, rest) = std::mem::take(&mut pilots).split_at_mut((to_p - from_p) << shift);
                pilots = rest;
                let (sl, rest) = std::mem::take(&mut slots).split_at_mut(keys);
                slots = rest;
                let (starts, bases) = (&starts, &bases);
                let mut work = move || {
                    (from_p..to_p).all(|p| {
                        let (from, to) =
                            (starts[p] - starts[from_p], starts[p + 1] - starts[from_p]);
                        let b = (p - from_p) << shift;
                        place_partition(
                            &m[from..to],
                            &mut pi[b..b + (1 << shift)],
                            &mut sl[from..to],
                            bases[p + 1] - bases[p],
                            seed,
                        )
                    })
                };
                if to_p == count {
                    // The last run on this thread.
                    workers.push(Ok(work()));
                } else {
                    workers.push(Err(scope.spawn(work)));
                }
            }
            workers.into_iter().all(|w| match w {
                Ok(done) => done,
                Err(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            })
        });
        if !ok {
            return false;
        }
        for p in 0..count {
            for i in starts[p]..starts[p + 1] {
                place(members[i].payload, bases[p] + u64::from(slots[i]));
            }
        }
        self.bases.extend_from_slice(&bases[1..]);
        true
    }

    /// The function, once every partition is placed.
    ///
    /// # Panics
    /// If some partition is not placed.
    pub fn finish(self) -> Built {
        assert_eq!(self.placed(), self.partitions, "every partition placed");
        Built {
            seed: self.seed,
            shift: self.shift,
            pilots: self.pilots,
            bases: self.bases,
        }
    }
}

/// Places the keys of one partition (`members`, buckets numbered within the partition) on its
/// `slots_len` slots: sets the pilots of its buckets and each key's slot in the partition.
/// False when some bucket fits under no pilot.
fn place_partition(
    members: &[Member],
    pilots: &mut [u16],
    slots: &mut [u32],
    slots_len: u64,
    seed: u64,
) -> bool {
    let buckets = pilots.len();
    // Each key's `lo` and number, gathered by bucket: a bucket's keys are read together.
    let mut starts = vec![0u32; buckets + 1];
    for m in members {
        starts[m.bucket as usize + 1] += 1;
    }
    for b in 1..starts.len() {
        starts[b] += starts[b - 1];
    }
    let mut keys = vec![(0u64, 0u32); members.len()];
    let mut fill = starts.clone();
    for (i, m) in members.iter().enumerate() {
        let b = m.bucket as usize;
        keys[fill[b] as usize] = (m.lo, i as u32);
        fill[b] += 1;
    }
    // Buckets largest first, ties by number: a counting sort by size, descending.
    let size = |b: usize| (starts[b + 1] - starts[b]) as usize;
    let largest = (0..buckets).map(size).max().unwrap_or(0);
    let mut by_size = vec![0u32; largest + 2];
    for b in 0..buckets {
        by_size[largest - size(b) + 1] += 1;
    }
    for i in 1..by_size.len() {
        by_size[i] += by_size[i - 1];
    }
    let mut order = fill;
    order.truncate(buckets);
    for b in 0..buckets {
        let at = &mut by_size[largest - size(b)];
        order[*at as usize] = b as u32;
        *at += 1;
    }
    let mut taken = vec![0u64; (slots_len as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], s: u64| taken[(s / 64) as usize] >> (s % 64) & 1 == 1;
    let mut placed: Vec<u64> = Vec::new();
    for b in order {
        let bucket_keys = &keys[starts[b as usize] as usize..starts[b as usize + 1] as usize];
        if bucket_keys.is_empty() {
            break;
        }
        let Some(pilot) = (0..=u16::MAX).find(|&p| {
            placed.clear();
            for &(lo, _) in bucket_keys {
                let s = slot(lo, seed, p, slots_len);
                if is_taken(&taken, s) || placed.contains(&s) {
                    return false;
                }
                placed.push(s);
            }
            true
        }) else {
            return false;
        };
        pilots[b as usize] = pilot;
        for (&(_, k), &s) in bucket_keys.iter().zip(&placed) {
            taken[(s / 64) as usize] |= 1 << (s % 64);
            // A partition has fewer than 2^32 slots.
            slots[k as usize] = s as u32;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use xxhash_rust::xxh3::xxh3_128;

    fn split(h: u128) -> [u64; 2] {
        [h as u64, (h >> 64) as u64]
    }

    /// The slot a query computes, from the built function.
    fn query(built: &Built, h: [u64; 2]) -> u64 {
        let buckets = built.pilots.len() as u64;
        let b = bucket(h[1], built.seed, buckets);
        let p = (b >> built.shift) as usize;
        let (base, end) = (built.bases[p], built.bases[p + 1]);
        base + slot(h[0], built.seed, built.pilots[b as usize], end - base)
    }

    #[test]
    fn every_key_gets_its_own_slot_and_queries_agree() {
        for n in [0usize, 1, 2, 3, 10, 1000, 100_000, 300_000] {
            let hashes: Vec<[u64; 2]> = (0..n)
                .map(|i| split(xxh3_128(format!("key_{i}").as_bytes())))
                .collect();
            let ids: Vec<u64> = (0..n as u64).collect();
            let mut slot_of = vec![u64::MAX; n];
            let built = build(&hashes, &ids, 7, 3, |i, s| slot_of[i as usize] = s).unwrap();
            assert!(built.slots() >= n as u64);
            assert_eq!(
                built.pilots.len() as u64 >> built.shift,
                built.bases.len() as u64 - 1
            );
            let mut seen = std::collections::HashSet::new();
            for (h, &s) in hashes.iter().zip(&slot_of) {
                assert!(s < built.slots() && seen.insert(s), "n={n}");
                assert_eq!(query(&built, *h), s);
            }
            // The thread count does not change the function.
            assert_eq!(build(&hashes, &ids, 7, 1, |_, _| {}), Some(built));
        }
    }

    #[test]
    fn placing_partitions_in_runs_builds_the_same_function() {
        let n = 300_000u64;
        let hashes: Vec<[u64; 2]> = (0..n).map(|i| split(xxh3_128(&i.to_le_bytes()))).collect();
        let ids: Vec<u64> = (0..n).collect();
        let mut whole = vec![0; n as usize];
        let built = build(&hashes, &ids, 3, 2, |i, s| whole[i as usize] = s).unwrap();
        let mut placer = Placer::new(n, 3).unwrap();
        let partition = |h: &[u64; 2]| bucket(h[1], 3, placer.buckets()) >> placer.shift();
        let of: Vec<u64> = hashes.iter().map(partition).collect();
        let mut parts = vec![0; n as usize];
        // Runs of 0, 1 and 3 partitions; keys in reverse order.
        for last in [0, 1, 2, 2, 5, placer.partitions()] {
            let first = placer.placed();
            let (h, i): (Vec<[u64; 2]>, Vec<u64>) = (0..n as usize)
                .rev()
                .filter(|&k| (first..last).contains(&of[k]))
                .map(|k| (hashes[k], ids[k]))
                .unzip();
            assert!(placer.place(&h, &i, last, 2, |i, s| parts[i as usize] = s));
        }
        assert_eq!(placer.finish(), built);
        assert_eq!(parts, whole);
    }

    #[test]
    fn shapes() {
        assert_eq!(shape(0), (0, 1));
        assert_eq!(shape(3), (0, 1));
        assert_eq!(shape(4), (1, 1));
        assert_eq!(shape(3 << 14), (14, 1));
        assert_eq!(shape((3 << 14) + 1), (14, 2));
        assert_eq!(shape(10_000_000), (14, 204));
    }

    #[test]
    fn equal_hashes_cannot_be_told_apart() {
        assert_eq!(
            build(&[[5, 1], [9, 2], [5, 1]], &[0, 1, 2], 0, 1, |_, _| {}),
            None
        );
    }
}
