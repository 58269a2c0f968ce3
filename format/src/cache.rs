//! The block cache: decompressed blocks, bounded in bytes, shared by all threads of a snapshot.
//!
//! A cache that can hold every compressed block of its file is a table by block number, each
//! slot filled once: a lookup reads its slot, with no lock, hash probe or eviction. A smaller one
//! spreads blocks over shards by block number; each shard is a `Mutex` over a map and a CLOCK
//! queue (second chance: a hit sets a flag, eviction skips flagged blocks once). A lookup holds one
//! shard's lock for a hash probe and a reference-count increment (or the copy of a value), never
//! while decompressing.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

const SHARDS: usize = 16;

/// Counters of a [`crate::Snapshot`]'s block cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// The configured bound, in bytes of decompressed blocks.
    pub capacity: usize,
    /// Bytes of decompressed blocks held now.
    pub used: usize,
    /// Blocks held now.
    pub blocks: usize,
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that had to decompress a block.
    pub misses: u64,
}

/// Block numbers are already well spread: a multiplicative hash is enough.
#[derive(Default)]
struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, v: u32) {
        self.0 = u64::from(v).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

#[derive(Default)]
struct Shard {
    map: HashMap<u32, (Bytes, bool), BuildHasherDefault<BlockHasher>>,
    clock: VecDeque<u32>,
    used: usize,
    hits: u64,
    misses: u64,
}

pub(crate) enum BlockCache {
    /// Room for every block: a slot per block number.
    Table(Table),
    /// Less room: shards with CLOCK eviction.
    Sharded(Sharded),
}

pub(crate) struct Table {
    slots: Box<[OnceLock<Bytes>]>,
    capacity: usize,
    used: AtomicUsize,
    blocks: AtomicUsize,
    /// Hits, counted on a stripe per thread so that threads do not write one cache line.
    hits: Box<[Stripe]>,
    misses: AtomicU64,
}

/// A counter alone on its cache line.
#[derive(Default)]
#[repr(align(128))]
struct Stripe(AtomicU64);

const STRIPES: usize = 16;

/// The hit counter stripe of the calling thread.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|s| *s)
}

pub(crate) struct Sharded {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
}

impl BlockCache {
    /// A cache of at most `capacity` bytes of decompressed blocks for a file of `blocks`
    /// blocks, of which the compressed ones (the only ones cached) decompress to `raw_bytes`.
    pub fn new(capacity: usize, blocks: u32, raw_bytes: u64) -> BlockCache {
        if capacity > 0 && raw_bytes <= capacity as u64 {
            return BlockCache::Table(Table {
                slots: (0..blocks).map(|_| OnceLock::new()).collect(),
                capacity,
                used: AtomicUsize::new(0),
                blocks: AtomicUsize::new(0),
                hits: (0..STRIPES).map(|_| Stripe::default()).collect(),
                misses: AtomicU64::new(0),
            });
        }
        BlockCache::Sharded(Sharded {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: capacity / SHARDS,
        })
    }

    /// The cached block, counted as a hit; a miss is counted by [`BlockCache::missed`] once
    /// the block is decompressed.
    pub fn get(&self, block: u32) -> Option<Bytes> {
        match self {
            BlockCache::Table(t) => t.get(block).cloned(),
            BlockCache::Sharded(s) => s.with(block, Bytes::clone),
        }
    }

    /// `f` of the cached block, counted as a hit, without taking a reference to it; in a
    /// sharded cache under its shard's lock (so `f` must be short: a copy of a value).
    pub fn with<R>(&self, block: u32, f: impl FnOnce(&Bytes) -> R) -> Option<R> {
        match self {
            BlockCache::Table(t) => t.get(block).map(f),
            BlockCache::Sharded(s) => s.with(block, f),
        }
    }

    /// Counts a lookup that had to decompress `block`.
    pub fn missed(&self, block: u32) {
        match self {
            BlockCache::Table(t) => {
                t.misses.fetch_add(1, Ordering::Relaxed);
            }
            BlockCache::Sharded(s) => {
                if s.shard_capacity > 0 {
                    s.shard(block).misses += 1;
                }
            }
        }
    }

    /// Inserts a decompressed block, evicting others to stay within the bound (a table has
    /// room for every block and evicts none). Blocks larger than a shard's share are not kept.
    pub fn insert(&self, block: u32, bytes: Bytes) {
        match self {
            BlockCache::Table(t) => {
                let size = bytes.len();
                let Some(slot) = t.slots.get(block as usize) else {
                    return;
                };
                if slot.set(bytes).is_ok() {
                    t.used.fetch_add(size, Ordering::Relaxed);
                    t.blocks.fetch_add(1, Ordering::Relaxed);
                }
            }
            BlockCache::Sharded(s) => s.insert(block, bytes),
        }
    }

    pub fn stats(&self) -> CacheStats {
        match self {
            BlockCache::Table(t) => CacheStats {
                capacity: t.capacity,
                used: t.used.load(Ordering::Relaxed),
                blocks: t.blocks.load(Ordering::Relaxed),
                hits: t.hits.iter().map(|h| h.0.load(Ordering::Relaxed)).sum(),
                misses: t.misses.load(Ordering::Relaxed),
            },
            BlockCache::Sharded(s) => s.stats(),
        }
    }
}

impl Table {
    fn get(&self, block: u32) -> Option<&Bytes> {
        let b = self.slots.get(block as usize)?.get()?;
        self.hits[stripe()].0.fetch_add(1, Ordering::Relaxed);
        Some(b)
    }
}

impl Sharded {
    fn shard(&self, block: u32) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a shard inconsistent in a way that matters
        // (at worst `used` is off): keep going with the data.
        let i = block as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with<R>(&self, block: u32, f: impl FnOnce(&Bytes) -> R) -> Option<R> {
        if self.shard_capacity == 0 {
            return None;
        }
        let mut shard = self.shard(block);
        let (bytes, referenced) = shard.map.get_mut(&block)?;
        *referenced = true;
        let r = f(bytes);
        shard.hits += 1;
        Some(r)
    }

    fn insert(&self, block: u32, bytes: Bytes) {
        let size = bytes.len();
        if size > self.shard_capacity {
            return;
        }
        let mut shard = self.shard(block);
        if shard.map.contains_key(&block) {
            return;
        }
        while shard.used + size > self.shard_capacity {
            let Some(victim) = shard.clock.pop_front() else {
                break;
            };
            let Some(entry) = shard.map.get_mut(&victim) else {
                continue;
            };
            if entry.1 {
                entry.1 = false;
                shard.clock.push_back(victim);
            } else if let Some((old, _)) = shard.map.remove(&victim) {
                shard.used -= old.len();
            }
        }
        shard.used += size;
        shard.map.insert(block, (bytes, false));
        shard.clock.push_back(block);
    }

    fn stats(&self) -> CacheStats {
        let mut s = CacheStats {
            capacity: self.shard_capacity * SHARDS,
            ..CacheStats::default()
        };
        for i in 0..SHARDS {
            let shard = self.shard(i as u32);
            s.used += shard.used;
            s.blocks += shard.map.len();
            s.hits += shard.hits;
            s.misses += shard.misses;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_capacity_and_keeps_hot_blocks() {
        // Room for less than the blocks decompress to: shards.
        let cache = BlockCache::new(16 * 1000, 200 * SHARDS as u32, 1 << 30);
        assert!(matches!(cache, BlockCache::Sharded(_)));
        // Block 0 is hot: read between every insertion into its shard.
        cache.insert(0, Bytes::from(vec![0u8; 400]));
        for b in 1..200u32 {
            assert!(cache.get(0).is_some(), "hot block evicted at {b}");
            cache.insert(b * SHARDS as u32, Bytes::from(vec![0u8; 300]));
            let s = cache.stats();
            assert!(s.used <= s.capacity, "{s:?}");
        }
        assert!(cache.get(0).is_some());
        assert!(cache.stats().hits >= 200);
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let cache = BlockCache::new(0, 4, 0);
        cache.insert(1, Bytes::from_static(b"abc"));
        assert!(cache.get(1).is_none());
        assert_eq!(cache.stats().used, 0);
    }

    #[test]
    fn room_for_every_block_is_a_table_filled_once() {
        let cache = BlockCache::new(1000, 3, 900);
        assert!(matches!(cache, BlockCache::Table(_)));
        assert!(cache.get(1).is_none());
        cache.missed(1);
        cache.insert(1, Bytes::from_static(b"first"));
        cache.insert(1, Bytes::from_static(b"second"));
        // Out of range: neither kept nor found.
        cache.insert(3, Bytes::from_static(b"x"));
        assert!(cache.get(3).is_none());
        assert_eq!(cache.get(1).as_deref(), Some(&b"first"[..]));
        assert_eq!(cache.with(1, |b| b.len()), Some(5));
        let s = cache.stats();
        assert_eq!(
            (s.capacity, s.used, s.blocks, s.hits, s.misses),
            (1000, 5, 1, 2, 1)
        );
        // Hits from other threads count too.
        std::thread::scope(|t| {
            for _ in 0..4 {
                t.spawn(|| assert!(cache.get(1).is_some()));
            }
        });
        assert_eq!(cache.stats().hits, 6);
    }
}
