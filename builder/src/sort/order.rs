//! The order of pairs, and sorting entries by it on several threads.

use super::*;

pub(super) fn compare(arena: &Arena, a: &Entry, b: &Entry, seq_descending: bool) -> Ordering {
    a.prefix
        .cmp(&b.prefix)
        .then_with(|| arena.key(a).cmp(arena.key(b)))
        .then_with(|| {
            if seq_descending {
                b.seq.cmp(&a.seq)
            } else {
                a.seq.cmp(&b.seq)
            }
        })
}

/// How many leading bytes every key shares (0 as soon as two keys differ in their first byte).
/// Keys like `user:0000123456` share more than the 8 bytes an entry caches; comparing the
/// bytes after the shared ones orders them the same, and mostly without reading the keys.
pub(super) fn shared_prefix<'a>(mut keys: impl Iterator<Item = &'a [u8]>) -> usize {
    let Some(first) = keys.next() else {
        return 0;
    };
    let mut shared = first.len();
    for key in keys {
        shared = shared.min(crate::sort::common_prefix(first, key));
        if shared == 0 {
            break;
        }
    }
    shared
}

/// Sorts `entries` in place on up to `threads` threads: the slice is split at its median
/// (`select_nth_unstable`) and each side sorted on its own thread, recursively. The order is
/// total, so the result does not depend on the thread count.
pub(super) fn par_sort(entries: &mut [Entry], arena: &Arena, seq_descending: bool, threads: usize) {
    let cmp = |a: &Entry, b: &Entry| compare(arena, a, b, seq_descending);
    if threads <= 1 || entries.len() < PARALLEL_SORT_MIN {
        entries.sort_unstable_by(cmp);
        return;
    }
    let left_threads = threads / 2;
    let mid = entries.len() * left_threads / threads;
    entries.select_nth_unstable_by(mid, cmp);
    let (left, right) = entries.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| par_sort(left, arena, seq_descending, left_threads));
        par_sort(right, arena, seq_descending, threads - left_threads);
    });
}

/// Loads the bytes of `entries` into the cache together. Sorted order visits the arena at
/// random: one pair at a time, each cache miss would wait for the one before; these loads do
/// not depend on each other, so their misses overlap.
pub(super) fn touch(arena: &Arena, entries: &[Entry]) {
    let mut sum = 0u8;
    for e in entries {
        let (key, value) = arena.bytes(e);
        // One byte per cache line of the key and the start of the value; the hardware
        // prefetcher follows longer values.
        let lines = (key.len() + value.len()).min(256);
        let chunk = &arena.chunks[(e.at >> 32) as usize];
        let start = (e.at & 0xffff_ffff) as usize;
        for at in (start..start + lines).step_by(64) {
            sum ^= chunk[at];
        }
    }
    std::hint::black_box(sum);
}

/// Visits sorted entries with their bytes, loading them [`TOUCH`] at a time.
pub(super) fn visit<'a>(
    arena: &'a Arena,
    entries: &'a [Entry],
) -> impl Iterator<Item = (&'a [u8], &'a [u8], u64)> + 'a {
    entries.iter().enumerate().map(move |(i, e)| {
        if i % TOUCH == 0 {
            touch(arena, &entries[i..(i + TOUCH).min(entries.len())]);
        }
        let (key, value) = arena.bytes(e);
        (key, value, e.seq)
    })
}
