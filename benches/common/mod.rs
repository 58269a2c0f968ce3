//! Seeded data sets shared by the `format` (criterion) and `table` benchmarks.
//!
//! Three workloads:
//! - `sparkey`: Sparkey's own benchmark, keys `key_N` and values `value_N` for `N` in `0..n`,
//!   inserted in sorted byte order (`key_0`, `key_1`, `key_10`, `key_100`, ...).
//! - `realistic`: keys of 32 random lowercase hex characters (UUID-like), values JSON objects of
//!   about 100 bytes (numbers, short strings, a country code, a date), all from a fixed seed.
//! - `prefixed`: keys sharing a long prefix, `user:` and ten digits (even numbers), values as
//!   `realistic`'s.
//!
//! Keys and values live in flat buffers ([`Column`]) so that neither generation nor iteration
//! costs an allocation per entry, and lookup keys are laid out in lookup order so the timed loops
//! read them sequentially.

#![allow(dead_code)] // each bench uses a different part of this module

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use std::io::Write;

/// Default number of entries when `SNAPKV_BENCH_ENTRIES` is not set.
pub const DEFAULT_ENTRIES: usize = 1_000_000;

/// Entries to generate: `SNAPKV_BENCH_ENTRIES` (underscores allowed), else [`DEFAULT_ENTRIES`].
pub fn entries_from_env() -> usize {
    env_usize("SNAPKV_BENCH_ENTRIES").unwrap_or(DEFAULT_ENTRIES)
}

/// An environment variable as a count (`10_000_000` and `10000000` both work).
pub fn env_usize(name: &str) -> Option<usize> {
    let v = std::env::var(name).ok()?;
    match v.replace('_', "").trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={v:?} is not a count"),
    }
}

/// Byte strings stored back to back.
#[derive(Default)]
pub struct Column {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Column {
    pub fn with_capacity(items: usize, bytes: usize) -> Column {
        Column {
            bytes: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(items),
        }
    }

    pub fn push(&mut self, item: &[u8]) {
        self.bytes.extend_from_slice(item);
        self.ends.push(self.bytes.len());
    }

    /// Appends whatever `f` writes as one item.
    pub fn push_with(&mut self, f: impl FnOnce(&mut Vec<u8>)) {
        f(&mut self.bytes);
        self.ends.push(self.bytes.len());
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total bytes of all items.
    pub fn total_bytes(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    pub fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    /// Longest item.
    pub fn max_len(&self) -> usize {
        self.iter().map(<[u8]>::len).max().unwrap_or(0)
    }
}

/// The benchmark workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// (a) Sparkey's benchmark: `key_N` → `value_N`.
    Sparkey,
    /// (b) UUID-like hex keys → ~100-byte JSON values.
    Realistic,
    /// (c) Keys sharing a long prefix (`user:0000123456`) → the same JSON values.
    Prefixed,
}

impl Workload {
    pub const ALL: [Workload; 3] = [Workload::Sparkey, Workload::Realistic, Workload::Prefixed];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Sparkey => "sparkey",
            Workload::Realistic => "realistic",
            Workload::Prefixed => "prefixed",
        }
    }

    /// The label used in tables.
    pub fn label(self) -> &'static str {
        match self {
            Workload::Sparkey => "(a) key_N/value_N",
            Workload::Realistic => "(b) hex32/JSON~100B",
            Workload::Prefixed => "(c) user:N/JSON~100B",
        }
    }
}

/// Keys in strictly increasing byte order with their values.
pub struct Dataset {
    pub workload: Workload,
    pub keys: Column,
    pub values: Column,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys plus values, in bytes.
    pub fn payload_bytes(&self) -> usize {
        self.keys.total_bytes() + self.values.total_bytes()
    }

    /// `count` keys to look up, as lookup order: a seeded shuffle of all keys, repeated (each
    /// round reshuffled) when `count` is more than the key count.
    pub fn hit_keys(&self, count: usize, seed: u64) -> (Column, Vec<u32>) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut order: Vec<u32> = (0..self.len() as u32).collect();
        let mut out = Column::with_capacity(count, count * (self.keys.max_len().min(64)));
        let mut idx = Vec::with_capacity(count);
        while idx.len() < count {
            order.shuffle(&mut rng);
            for &i in order.iter().take(count - idx.len()) {
                out.push(self.keys.get(i as usize));
                idx.push(i);
            }
        }
        (out, idx)
    }

    /// `count` keys that are not in the data set, in random order. For `sparkey`, `key_M` with
    /// `n <= M < 10n` (they fall between stored keys in byte order); for `realistic`, fresh
    /// random hex keys from another seed; for `prefixed`, odd numbers (the stored ones are even).
    pub fn miss_keys(&self, count: usize, seed: u64) -> Column {
        let mut rng = SmallRng::seed_from_u64(seed);
        let n = self.len() as u64;
        let mut out = Column::with_capacity(count, count * 32);
        for _ in 0..count {
            match self.workload {
                Workload::Sparkey => {
                    let m = rng.random_range(n..n.max(1) * 10);
                    out.push_with(|b| write!(b, "key_{m}").expect("Vec write"));
                }
                Workload::Realistic => {
                    let v: u128 = rng.random();
                    out.push_with(|b| write!(b, "{v:032x}").expect("Vec write"));
                }
                // Odd numbers: the stored ones are even.
                Workload::Prefixed => {
                    let v = rng.random_range(0..PREFIXED_SPACE / 2) * 2 + 1;
                    out.push_with(|b| write!(b, "user:{v:010}").expect("Vec write"));
                }
            }
        }
        out
    }
}

/// Generates a workload's data set of `n` entries from a fixed seed.
pub fn generate(workload: Workload, n: usize) -> Dataset {
    match workload {
        Workload::Sparkey => sparkey(n),
        Workload::Realistic => realistic(n, 0x5eed_0000_0000_0001),
        Workload::Prefixed => prefixed(n, 0x5eed_0000_0000_0002),
    }
}

/// The numbers of workload (c)'s keys: ten decimal digits.
const PREFIXED_SPACE: u64 = 10_000_000_000;

fn prefixed(n: usize, seed: u64) -> Dataset {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut raw: Vec<u64> = Vec::with_capacity(n);
    while raw.len() < n {
        raw.extend((raw.len()..n).map(|_| rng.random_range(0..PREFIXED_SPACE / 2) * 2));
        raw.sort_unstable();
        raw.dedup();
    }
    let mut keys = Column::with_capacity(n, n * 15);
    for k in &raw {
        // Zero-padded to the same width: sorts like the numbers.
        keys.push_with(|b| write!(b, "user:{k:010}").expect("Vec write"));
    }
    Dataset {
        workload: Workload::Prefixed,
        keys,
        values: json_values(n, &mut rng),
    }
}

fn sparkey(n: usize) -> Dataset {
    // Sort the numbers by their decimal text: that is the byte order of `key_N`.
    let mut order: Vec<u64> = (0..n as u64).collect();
    order.sort_unstable_by(|a, b| {
        let (mut x, mut y) = ([0u8; 20], [0u8; 20]);
        decimal(*a, &mut x).cmp(decimal(*b, &mut y))
    });
    let mut keys = Column::with_capacity(n, n * 11);
    let mut values = Column::with_capacity(n, n * 13);
    for i in order {
        keys.push_with(|b| write!(b, "key_{i}").expect("Vec write"));
        values.push_with(|b| write!(b, "value_{i}").expect("Vec write"));
    }
    Dataset {
        workload: Workload::Sparkey,
        keys,
        values,
    }
}

/// `v` in decimal, written at the end of `buf`.
fn decimal(mut v: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

const FIRST: [&str; 24] = [
    "olivia", "liam", "emma", "noah", "amelia", "oliver", "sophia", "elijah", "mia", "lucas",
    "ava", "mateo", "chloe", "hiro", "yuki", "aarav", "priya", "lena", "jonas", "ines", "tomas",
    "zara", "omar", "sofia",
];
const LAST: [&str; 20] = [
    "smith", "garcia", "muller", "rossi", "tanaka", "kim", "silva", "nguyen", "novak", "jensen",
    "dubois", "kowalski", "ivanova", "haddad", "okafor", "patel", "lopez", "berg", "costa", "sato",
];
/// Country codes, the first ones more frequent (picked with a skewed distribution).
const COUNTRIES: [&str; 24] = [
    "US", "DE", "GB", "FR", "BR", "IN", "JP", "NL", "ES", "IT", "CA", "SE", "PL", "MX", "AU", "KR",
    "TR", "NG", "ZA", "AR", "NO", "DK", "FI", "PT",
];

fn realistic(n: usize, seed: u64) -> Dataset {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut raw: Vec<u128> = Vec::with_capacity(n);
    while raw.len() < n {
        raw.extend((raw.len()..n).map(|_| rng.random::<u128>()));
        raw.sort_unstable();
        raw.dedup();
    }
    let mut keys = Column::with_capacity(n, n * 32);
    for k in &raw {
        // Lowercase hex with leading zeros sorts like the numbers.
        keys.push_with(|b| write!(b, "{k:032x}").expect("Vec write"));
    }
    drop(raw);
    Dataset {
        workload: Workload::Realistic,
        keys,
        values: json_values(n, &mut rng),
    }
}

/// `n` JSON objects of ~100 bytes (a user record) from `rng`.
fn json_values(n: usize, rng: &mut SmallRng) -> Column {
    let mut values = Column::with_capacity(n, n * 112);
    for _ in 0..n {
        let id: u32 = rng.random_range(1..50_000_000);
        let first = FIRST[rng.random_range(0..FIRST.len())];
        let last = LAST[rng.random_range(0..LAST.len())];
        // Skewed: min of two uniform draws favours the first codes.
        let c = rng
            .random_range(0..COUNTRIES.len())
            .min(rng.random_range(0..COUNTRIES.len()));
        let country = COUNTRIES[c];
        let (year, month, day) = (
            rng.random_range(2012..2026),
            rng.random_range(1..13),
            rng.random_range(1..29),
        );
        let score = rng.random_range(0..100_000u32);
        let active = rng.random_bool(0.7);
        values.push_with(|b| {
            write!(
                b,
                "{{\"id\":{id},\"user\":\"{first}.{last}\",\"country\":\"{country}\",\
                 \"since\":\"{year}-{month:02}-{day:02}\",\"score\":{}.{:02},\
                 \"active\":{active}}}",
                score / 100,
                score % 100
            )
            .expect("Vec write")
        });
    }
    values
}

/// CPU time of the whole process, all threads (joined ones included), in seconds (Linux:
/// `/proc/self/stat`, USER_HZ 100); NaN where it cannot be read.
pub fn process_cpu_secs() -> f64 {
    let ticks = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name: state is the first, utime the 12th, stime the 13th.
            let rest = &s[s.rfind(')')? + 1..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        });
    ticks.map_or(f64::NAN, |t| t as f64 / 100.0)
}

/// The 1, 5 and 15 minute load averages, or `?`.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}
