//! A version made of range shards: snapshots covering contiguous, non-overlapping key ranges in
//! key order, cut at split keys. Lookups go to the one shard whose range holds the key; range
//! scans go through the shards in order.
//!
//! Shard `i` of `n` holds the keys `k` with `split[i - 1] <= k < split[i]` (no lower bound for
//! the first shard, no upper bound for the last), so a key's shard is the number of split keys
//! not greater than it. Split keys are non-decreasing; equal neighbours give a shard an empty
//! range. `spec/STORE.md` ("Sharded versions") specifies the same routing for every client.

use crate::error::Result;
use crate::snapshot::{Iter, Snapshot};
use crate::CacheStats;
use bytes::Bytes;
use std::ops::Bound;

/// Why shards do not form a version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShardError {
    /// Not one split key fewer than shards.
    #[error("{shards} shards need {} split keys, not {splits}", shards.saturating_sub(1))]
    SplitCount {
        /// Shards given.
        shards: usize,
        /// Split keys given.
        splits: usize,
    },
    /// No shards at all.
    #[error("a sharded version has at least one shard")]
    NoShards,
    /// Split key `index` sorts before the one before it.
    #[error("split key {index} sorts before split key {}", index - 1)]
    Unordered {
        /// Its position.
        index: usize,
    },
    /// A shard holds a key outside its range.
    #[error("shard {shard} holds {which} key {key:?}, outside its range {range}")]
    OutOfRange {
        /// The shard.
        shard: usize,
        /// `first` or `last`.
        which: &'static str,
        /// The key (lossy text).
        key: String,
        /// The shard's range, as text.
        range: String,
    },
}

/// Which shards of a version a reader holds: a range of shard numbers, or a share of the
/// shards by the reader's ordinal among its replicas (a StatefulSet pod's ordinal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Shards `first` to `last`, both included (shards past the version's last are not there).
    Range {
        /// The first shard held.
        first: usize,
        /// The last shard held.
        last: usize,
    },
    /// Of `replicas` readers, the one numbered `ordinal` (from 0) holds the `ordinal`-th of
    /// `replicas` contiguous, near-equal runs of shards. With more replicas than shards, the
    /// runs are single shards, each held by several readers.
    OrdinalOf {
        /// This reader's number.
        ordinal: usize,
        /// How many readers share the shards.
        replicas: usize,
    },
}

impl Selection {
    /// The shards held of a version of `count` shards (an unsharded version is one shard):
    /// contiguous, so that scans stay on one reader as long as possible. `None` when the
    /// selection holds none of them (`Range` past the last shard).
    ///
    /// `OrdinalOf { ordinal: o, replicas: r }` holds shards `ceil(o*count/r)` to
    /// `ceil((o+1)*count/r) - 1`; when that is empty (more replicas than shards), shard
    /// `floor(o*count/r)`.
    pub fn held(&self, count: usize) -> Option<std::ops::Range<usize>> {
        match *self {
            Selection::Range { first, last } => {
                let end = last.saturating_add(1).min(count);
                (first < end).then_some(first..end)
            }
            Selection::OrdinalOf { ordinal, replicas } => {
                if replicas == 0 || ordinal >= replicas || count == 0 {
                    return None;
                }
                let ceil = |o: usize| (o * count).div_ceil(replicas);
                let (start, end) = (ceil(ordinal), ceil(ordinal + 1));
                if start < end {
                    Some(start..end)
                } else {
                    let only = ordinal * count / replicas;
                    Some(only..only + 1)
                }
            }
        }
    }
}

impl std::fmt::Display for Selection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selection::Range { first, last } => write!(f, "shards {first}-{last}"),
            Selection::OrdinalOf { ordinal, replicas } => {
                write!(f, "share {ordinal} of {replicas} of the shards")
            }
        }
    }
}

/// Range shards of one version, with their split keys: all of them, or a contiguous run of
/// them (a reader holding part of a version; keys of the other shards are not looked up).
#[derive(Clone)]
pub struct Shards {
    /// The shards held, in key order: shard numbers `first..first + shards.len()`.
    shards: Vec<Snapshot>,
    /// The split keys of the whole version (one fewer than its shards).
    splits: Vec<Bytes>,
    first: usize,
}

impl std::fmt::Debug for Shards {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shards")
            .field("count", &self.count())
            .field("held", &self.held())
            .field("splits", &self.splits)
            .finish()
    }
}

impl Shards {
    /// One snapshot as a version of one shard.
    pub fn single(snapshot: Snapshot) -> Shards {
        Shards {
            shards: vec![snapshot],
            splits: Vec::new(),
            first: 0,
        }
    }

    /// Shards in key order with the `shards.len() - 1` split keys between them. Checks that
    /// the split keys are in order and that each shard's first and last keys lie in its
    /// range (reading the first and the last block of each shard).
    pub fn new(
        shards: Vec<Snapshot>,
        splits: Vec<Bytes>,
    ) -> std::result::Result<Shards, ShardError> {
        if !shards.is_empty() && splits.len() + 1 != shards.len() {
            return Err(ShardError::SplitCount {
                shards: shards.len(),
                splits: splits.len(),
            });
        }
        Shards::subset(0, shards, splits)
    }

    /// Shards `first..first + shards.len()` of a version cut at `splits` (all its split
    /// keys), checked as [`Shards::new`] checks a whole version.
    pub fn subset(
        first: usize,
        shards: Vec<Snapshot>,
        splits: Vec<Bytes>,
    ) -> std::result::Result<Shards, ShardError> {
        if shards.is_empty() {
            return Err(ShardError::NoShards);
        }
        if first + shards.len() > splits.len() + 1 {
            return Err(ShardError::SplitCount {
                shards: first + shards.len(),
                splits: splits.len(),
            });
        }
        if let Some(index) = (1..splits.len()).find(|&i| splits[i] < splits[i - 1]) {
            return Err(ShardError::Unordered { index });
        }
        let s = Shards {
            shards,
            splits,
            first,
        };
        for (i, shard) in s.held().zip(&s.shards) {
            let (Some(first), Some(last)) = (first_key(shard), last_key(shard)) else {
                continue;
            };
            for (which, key) in [("first", first), ("last", last)] {
                if s.shard_of(&key) != i {
                    return Err(ShardError::OutOfRange {
                        shard: i,
                        which,
                        key: String::from_utf8_lossy(&key).into_owned(),
                        range: s.describe(i),
                    });
                }
            }
        }
        Ok(s)
    }

    /// How many shards the version has (held or not).
    pub fn count(&self) -> usize {
        self.splits.len() + 1
    }

    /// The numbers of the shards held.
    pub fn held(&self) -> std::ops::Range<usize> {
        self.first..self.first + self.shards.len()
    }

    /// True when shard `i` is held.
    pub fn holds(&self, i: usize) -> bool {
        self.held().contains(&i)
    }

    /// Shard `i`, when it is held.
    pub fn shard(&self, i: usize) -> Option<&Snapshot> {
        i.checked_sub(self.first).and_then(|j| self.shards.get(j))
    }

    /// The key range of shard `i`: its lowest key (`None`: no lower bound) and the first key
    /// past it (`None`: no upper bound).
    pub fn bounds(&self, i: usize) -> (Option<&Bytes>, Option<&Bytes>) {
        (
            i.checked_sub(1).and_then(|j| self.splits.get(j)),
            self.splits.get(i),
        )
    }

    /// The shard whose range holds `key`.
    pub fn shard_of(&self, key: &[u8]) -> usize {
        shard_of(&self.splits, key)
    }

    /// `[low, high)` of shard `i`, as text (`-inf`/`+inf` at the ends).
    pub fn describe(&self, i: usize) -> String {
        let text = |k: &Bytes| format!("{:?}", String::from_utf8_lossy(k));
        let low = i
            .checked_sub(1)
            .and_then(|j| self.splits.get(j))
            .map_or("-inf".to_owned(), text);
        let high = self.splits.get(i).map_or("+inf".to_owned(), text);
        format!("[{low}, {high})")
    }

    /// The shards held, in key order.
    pub fn shards(&self) -> &[Snapshot] {
        &self.shards
    }

    /// The split keys.
    pub fn splits(&self) -> &[Bytes] {
        &self.splits
    }

    /// The value of `key`, from its shard; `None` also when its shard is not held (see
    /// [`Shards::holds`]).
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        match self.shard(self.shard_of(key)) {
            Some(s) => s.get(key),
            None => Ok(None),
        }
    }

    /// Keys in the shards held.
    pub fn len(&self) -> u64 {
        self.shards.iter().map(Snapshot::len).sum()
    }

    /// True when no shard held has a key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The block caches of the shards held, added up.
    pub fn cache_stats(&self) -> CacheStats {
        self.shards
            .iter()
            .map(Snapshot::cache_stats)
            .fold(CacheStats::default(), |mut total, s| {
                total.capacity += s.capacity;
                total.used += s.used;
                total.blocks += s.blocks;
                total.hits += s.hits;
                total.misses += s.misses;
                total
            })
    }

    /// Anonymous memory holding copies of the shards' index sections
    /// ([`Snapshot::index_memory_bytes`]).
    pub fn index_memory_bytes(&self) -> u64 {
        self.shards.iter().map(Snapshot::index_memory_bytes).sum()
    }

    /// Up to `parts - 1` keys cutting the entries within `(start, end)` of the held shards into
    /// runs of about as many blocks each (at least `min_blocks`), in increasing order, inside
    /// the bounds (see [`Snapshot::split_range`]).
    pub fn split_range(
        &self,
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
        parts: usize,
        min_blocks: u64,
    ) -> Result<Vec<Bytes>> {
        let mut keys = Vec::new();
        for s in &self.shards {
            keys.extend(s.split_range(start, end, parts, min_blocks)?);
        }
        if keys.len() < parts {
            keys.sort();
            keys.dedup();
            return Ok(keys);
        }
        // Several shards: every shard's cuts, thinned to `parts - 1` evenly.
        keys.sort();
        keys.dedup();
        let n = keys.len();
        Ok((1..parts).map(|i| keys[i * n / parts].clone()).collect())
    }

    /// Entries with keys in `(start, end)`, in key order, through every held shard whose
    /// range meets the bounds (the keys of shards not held are left out).
    pub fn range(&self, start: Bound<&[u8]>, end: Bound<&[u8]>) -> ShardsIter {
        let held = self.held();
        let first = match start {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => self.shard_of(k),
        };
        let last = match end {
            Bound::Unbounded => held.end - 1,
            Bound::Included(k) | Bound::Excluded(k) => self.shard_of(k),
        };
        // Positions in `shards`; an empty run (`next > last`) yields nothing.
        let next = first.max(held.start) - held.start;
        let last = last.min(held.end - 1).checked_sub(held.start);
        ShardsIter {
            shards: self.shards.clone(),
            next,
            last: last.unwrap_or(0),
            done: last.is_none(),
            start: start.map(<[u8]>::to_vec),
            end: end.map(<[u8]>::to_vec),
            current: None,
        }
    }
}

/// The shard of `key` among shards cut at `splits` (sorted): how many split keys are not
/// greater than it.
pub fn shard_of(splits: &[impl AsRef<[u8]>], key: &[u8]) -> usize {
    splits.partition_point(|s| s.as_ref() <= key)
}

/// The first key of a snapshot, if any.
pub fn first_key(s: &Snapshot) -> Option<Bytes> {
    s.iter().next().and_then(|e| e.ok()).map(|(k, _)| k)
}

/// The last key of a snapshot, if any: the last entry of its last block.
pub fn last_key(s: &Snapshot) -> Option<Bytes> {
    let blocks = s.block_count();
    let last = blocks.checked_sub(1)?;
    s.block_entries(last)
        .filter_map(|e| e.ok())
        .last()
        .map(|(k, _)| k)
}

/// The entries of a key range across shards, in key order. After an error it ends.
pub struct ShardsIter {
    shards: Vec<Snapshot>,
    /// The next shard to open.
    next: usize,
    /// The last shard to read.
    last: usize,
    /// Nothing (more) to read.
    done: bool,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    current: Option<Iter>,
}

impl Iterator for ShardsIter {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(it) = &mut self.current {
                if let Some(item) = it.next() {
                    if item.is_err() {
                        self.done = true;
                    }
                    return Some(item);
                }
                self.current = None;
            }
            if self.done || self.next > self.last || self.next >= self.shards.len() {
                return None;
            }
            let shard = &self.shards[self.next];
            self.next += 1;
            self.current = Some(shard.range(
                self.start.as_ref().map(Vec::as_slice),
                self.end.as_ref().map(Vec::as_slice),
            ));
        }
    }
}

impl std::iter::FusedIterator for ShardsIter {}
