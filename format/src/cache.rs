//! The block cache: decompressed blocks, bounded in bytes, shared by all threads of a snapshot.
//!
//! Blocks are spread over shards by block number; each shard is a `Mutex` over a map and a CLOCK
//! queue (second chance: a hit sets a flag, eviction skips flagged blocks once). A lookup holds one
//! shard's lock for a hash probe and a reference-count increment, never while decompressing.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Mutex;

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

pub(crate) struct BlockCache {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
}

impl BlockCache {
    pub fn new(capacity: usize) -> BlockCache {
        BlockCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: capacity / SHARDS,
        }
    }

    fn shard(&self, block: u32) -> std::sync::MutexGuard<'_, Shard> {
        // A panic while holding the lock cannot leave a shard inconsistent in a way that matters
        // (at worst `used` is off): keep going with the data.
        let i = block as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached block, counted as a hit; a miss is counted by [`BlockCache::missed`] once
    /// the block is decompressed.
    pub fn get(&self, block: u32) -> Option<Bytes> {
        if self.shard_capacity == 0 {
            return None;
        }
        let mut shard = self.shard(block);
        let (bytes, referenced) = shard.map.get_mut(&block)?;
        *referenced = true;
        let bytes = bytes.clone();
        shard.hits += 1;
        Some(bytes)
    }

    /// Counts a lookup that had to decompress `block`.
    pub fn missed(&self, block: u32) {
        if self.shard_capacity > 0 {
            self.shard(block).misses += 1;
        }
    }

    /// Inserts a decompressed block, evicting others to stay within the bound. Blocks larger than
    /// a shard's share are not kept.
    pub fn insert(&self, block: u32, bytes: Bytes) {
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

    pub fn stats(&self) -> CacheStats {
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
        let cache = BlockCache::new(16 * 1000);
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
        let cache = BlockCache::new(0);
        cache.insert(1, Bytes::from_static(b"abc"));
        assert!(cache.get(1).is_none());
        assert_eq!(cache.stats().used, 0);
    }
}
