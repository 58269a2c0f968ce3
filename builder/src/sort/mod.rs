//! External sort of (key, value) pairs within a memory budget.
//!
//! Pairs arrive a batch at a time ([`Pairs`]): their bytes in a few large chunks written by an
//! extraction thread, which the sorter keeps as they are, and one [`Entry`] per pair. When the
//! budget is reached the entries are sorted and the pairs spilled, in order, as a run of
//! zstd-compressed frames to a temporary directory. The result is one stream in key order,
//! merged from the runs and the pairs still in memory.
//!
//! Every pair carries its input sequence number (its row's position in input order). Pairs are
//! ordered by (key, sequence) — by sequence descending when the last duplicate wins — a total
//! order, so the result is the same whether or not, and wherever, the input was cut into runs,
//! and however many threads sorted it: an in-memory build and a spilling one write identical
//! files.

use crate::error::{printable_key, Error, Result};
use crate::file_writer::FileWriter;
use crate::{Interrupt, OnDuplicate};
use snapkv_format::{pool, varint};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

mod arena;
mod dup;
mod merge;
mod order;
mod runs;

use arena::Arena;
pub(crate) use arena::{PairWriter, Pairs};
use dup::DupCheck;
use merge::{Cursor, RunMerge};
use order::{par_sort, shared_prefix, touch, visit};
use runs::{RunReader, RunWriter};

/// A pair's bytes go to a new chunk once the current one holds this much.
const CHUNK: usize = 4 << 20;
/// Memory a pair costs besides its bytes: its entry here, and what the snapshot writer keeps
/// for its key.
pub(crate) const PAIR_OVERHEAD: usize = std::mem::size_of::<Entry>() + WRITER_KEY_COST;
/// What the snapshot writer keeps per key beyond its own budget ([`crate::writer_memory`]):
/// version 1's filter hash of each key until it finishes (version 2 keeps its keys' hashes
/// within the budget, and finishes with filter and lookup sections of about 6 bytes per key).
const WRITER_KEY_COST: usize = 8;
/// zstd level of spilled runs: fast, since runs are read once.
const RUN_LEVEL: i32 = 1;
/// Memory one open run costs while merging (a frame, compressed and not, and a read buffer),
/// to size the fan-in.
const RUN_READ_COST: usize = 1 << 20;
/// Below this many entries a sort runs on one thread.
const PARALLEL_SORT_MIN: usize = 64 * 1024;
/// Pairs visited in sorted order are loaded this many at a time (see [`touch`]).
const TOUCH: usize = 32;

/// A pair: where its bytes are, and what it sorts by.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Entry {
    /// The key's first 8 bytes, big-endian, zero-padded: most comparisons end here.
    prefix: u64,
    /// Chunk number (high 32 bits) and offset in the chunk (low 32 bits) of key then value.
    at: u64,
    key_len: u32,
    value_len: u32,
    seq: u64,
}

/// Length of the common prefix of `a` and `b`.
pub(crate) fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

// Big-endian so that integer order is bytewise key order; the prefix lives only in memory.
#[allow(clippy::big_endian_bytes)]
fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

/// Receives the pairs in key order.
pub(crate) type Emit<'a> = dyn FnMut(&[u8], &[u8]) -> Result<()> + 'a;

/// A sorted run on disk.
struct Run {
    path: PathBuf,
    pairs: u64,
}

/// Where pairs came from, to name both rows of a duplicate key.
pub(crate) trait Locate {
    /// The input and row of a sequence number.
    fn locate(&self, seq: u64) -> crate::error::Location;
}

/// Accumulates pairs and hands them back in order.
pub(crate) struct Sorter {
    arena: Arena,
    entries: Vec<Entry>,
    /// Bytes of pairs plus their overhead held now.
    held: usize,
    budget: usize,
    threads: usize,
    on_duplicate: OnDuplicate,
    temp_base: PathBuf,
    temp: Option<crate::cleanup::TempDir>,
    runs: Vec<Run>,
    /// Pairs in the runs.
    spilled: u64,
    /// Run files created so far (names are never reused).
    run_files: usize,
    interrupt: Interrupt,
}

/// What a spill reports to the caller's progress display.
pub(crate) trait SpillProgress {
    /// A run of `pairs` pairs is being sorted and written.
    fn spilling(&self, run: usize, pairs: u64);
    /// The run is written.
    fn spilled(&self);
}

impl Sorter {
    /// A sorter holding at most `budget` bytes (pairs and overhead) in memory, spilling runs
    /// into a new directory under `temp_base`; sorting and run compression use `threads`
    /// threads.
    pub(crate) fn new(
        budget: usize,
        threads: usize,
        on_duplicate: OnDuplicate,
        temp_base: PathBuf,
        interrupt: Interrupt,
    ) -> Sorter {
        Sorter {
            arena: Arena::new(budget),
            entries: Vec::new(),
            held: 0,
            budget,
            threads: threads.max(1),
            on_duplicate,
            temp_base,
            temp: None,
            runs: Vec::new(),
            spilled: 0,
            run_files: 0,
            interrupt,
        }
    }

    fn seq_descending(&self) -> bool {
        self.on_duplicate == OnDuplicate::Last
    }

    /// Adds a batch's pairs, the first with sequence number `seq`; spills first whenever the
    /// next pair would not fit in the budget.
    pub(crate) fn push(
        &mut self,
        pairs: Pairs,
        seq: u64,
        locate: &dyn Locate,
        progress: &dyn SpillProgress,
    ) -> Result<()> {
        // Where each of the batch's chunks starts in the arena; `None` once a spill in the
        // middle of the batch has emptied the arena: the rest of its pairs are copied one by
        // one (the arena holds nothing but the pairs it counts).
        let mut bases: Option<Vec<u64>> =
            Some(pairs.chunks.iter().map(|c| self.arena.append(c)).collect());
        for (i, e) in pairs.entries.iter().enumerate() {
            let bytes = (e.key_len + e.value_len) as usize;
            if self.held + bytes + PAIR_OVERHEAD > self.budget && !self.entries.is_empty() {
                self.spill(locate, progress)?;
                bases =
                    (i == 0).then(|| pairs.chunks.iter().map(|c| self.arena.append(c)).collect());
            }
            let (chunk, offset) = ((e.at >> 32) as usize, e.at & 0xffff_ffff);
            let at = match &bases {
                Some(bases) => bases[chunk] + offset,
                None => {
                    let start = offset as usize;
                    self.arena
                        .append(&pairs.chunks[chunk][start..start + bytes])
                }
            };
            self.entries.push(Entry {
                at,
                seq: seq + e.seq,
                ..*e
            });
            self.held += bytes + PAIR_OVERHEAD;
        }
        Ok(())
    }

    /// Runs spilled so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    fn sort(&mut self) {
        let desc = self.seq_descending();
        // Entries cache their key's first 8 bytes; when every key shares more, they cache the
        // 8 after the shared ones instead (the order is the same).
        let shared = shared_prefix(self.entries.iter().map(|e| self.arena.key(e)));
        if shared > 0 {
            for e in &mut self.entries {
                e.prefix = key_prefix(&self.arena.key(e)[shared..]);
            }
        }
        par_sort(&mut self.entries, &self.arena, desc, self.threads);
    }

    fn temp_dir(&mut self) -> Result<&Path> {
        if self.temp.is_none() {
            let dir = tempfile::Builder::new()
                .prefix(".snapkv-build-")
                .tempdir_in(&self.temp_base)
                .map_err(|source| Error::Temp {
                    dir: self.temp_base.clone(),
                    source,
                })?;
            self.temp = Some(crate::cleanup::TempDir::new(dir));
        }
        Ok(self.temp.as_ref().expect("created above").path())
    }

    fn temp_error(&self, source: std::io::Error) -> Error {
        Error::Temp {
            dir: self
                .temp
                .as_ref()
                .map_or_else(|| self.temp_base.clone(), |t| t.path().to_owned()),
            source,
        }
    }

    /// Creates the next run file.
    fn new_run(&mut self) -> Result<(PathBuf, RunWriter)> {
        self.run_files += 1;
        let n = self.run_files;
        let path = self.temp_dir()?.join(format!("run-{n:06}.zst"));
        let file = File::create(&path).map_err(|e| self.temp_error(e))?;
        // Frames small enough that those in flight stay a small part of the budget.
        let frame = (self.budget / 64).clamp(64 << 10, 1 << 20);
        let writer = RunWriter::new(file, self.threads, frame).map_err(|e| self.temp_error(e))?;
        Ok((path, writer))
    }

    /// Sorts the held pairs and writes them as a run, and forgets them.
    fn spill(&mut self, locate: &dyn Locate, progress: &dyn SpillProgress) -> Result<()> {
        self.interrupt.check()?;
        progress.spilling(self.runs.len() + 1, self.entries.len() as u64);
        self.sort();
        let (path, mut out) = self.new_run()?;
        let mut dups = DupCheck::new(self.on_duplicate);
        let mut pairs = 0u64;
        for (key, value, seq) in visit(&self.arena, &self.entries) {
            // With `error`, a duplicate inside one run fails now rather than at the merge.
            if self.on_duplicate == OnDuplicate::Error {
                dups.check(key, seq, locate)?;
            }
            out.write(key, value, seq)
                .map_err(|err| self.temp_error(err))?;
            pairs += 1;
            if pairs % 65536 == 0 {
                self.interrupt.check()?;
            }
        }
        out.finish().map_err(|e| self.temp_error(e))?;
        self.runs.push(Run { path, pairs });
        self.spilled += pairs;
        self.entries.clear();
        self.arena.clear();
        self.held = 0;
        progress.spilled();
        Ok(())
    }

    /// Ends input and calls `emit` with every pair in key order, duplicates resolved.
    /// Returns the number of duplicates dropped.
    pub(crate) fn finish(
        mut self,
        locate: &dyn Locate,
        progress: &dyn SpillProgress,
        emit: &mut Emit<'_>,
    ) -> Result<u64> {
        let desc = self.seq_descending();
        let mut dups = DupCheck::new(self.on_duplicate);
        let mut emitted = 0u64;
        let interrupt = self.interrupt.clone();
        let mut each = |key: &[u8], value: &[u8], seq: u64| -> Result<()> {
            if dups.check(key, seq, locate)? {
                emit(key, value)?;
            }
            emitted += 1;
            if emitted % 65536 == 0 {
                interrupt.check()?;
            }
            Ok(())
        };
        if self.runs.is_empty() {
            self.sort();
            for (key, value, seq) in visit(&self.arena, &self.entries) {
                each(key, value, seq)?;
            }
            return Ok(dups.dropped);
        }
        let fan_in = (self.budget / RUN_READ_COST).clamp(2, 64);
        // The last pairs stay in memory for the final merge when they fit beside what the
        // merge needs: the run readers, and the writer's per-key cost of every pair.
        self.arena.release_unused();
        self.entries.shrink_to_fit();
        let memory = self.arena.memory() + self.entries.len() * std::mem::size_of::<Entry>();
        let readers = (self.runs.len() + 1).min(fan_in) * RUN_READ_COST;
        let writer = usize::try_from(self.spilled + self.entries.len() as u64)
            .unwrap_or(usize::MAX)
            .saturating_mul(WRITER_KEY_COST);
        let keep = !self.entries.is_empty()
            && memory.saturating_add(readers).saturating_add(writer) <= self.budget;
        if keep {
            self.sort();
        } else {
            if !self.entries.is_empty() {
                self.spill(locate, progress)?;
            }
            // Free the arena before the merge: the writer needs the memory now.
            self.arena = Arena::new(0);
            self.entries = Vec::new();
        }
        let in_memory = usize::from(keep);
        while self.runs.len() + in_memory > fan_in {
            // Merge the first runs into one; order is by (key, seq), so which runs are merged
            // together does not change the result.
            let group: Vec<Run> = self.runs.drain(..fan_in.min(self.runs.len())).collect();
            let (path, mut out) = self.new_run()?;
            let mut merge = self.open_runs(&group, None, desc)?;
            let mut pairs = 0;
            while let Some(c) = merge.next().map_err(|e| self.temp_error(e))? {
                let (key, value, seq) = c.pair();
                out.write(key, value, seq).map_err(|e| self.temp_error(e))?;
                pairs += 1;
                if pairs % 65536 == 0 {
                    self.interrupt.check()?;
                }
            }
            out.finish().map_err(|e| self.temp_error(e))?;
            for r in &group {
                let _ = std::fs::remove_file(&r.path);
            }
            self.runs.push(Run { path, pairs });
        }
        let memory = keep.then(|| Cursor::memory(&self.arena, &self.entries));
        let mut merge = self.open_runs(&self.runs, memory, desc)?;
        while let Some(c) = merge.next().map_err(|e| self.temp_error(e))? {
            let (key, value, seq) = c.pair();
            each(key, value, seq)?;
        }
        Ok(dups.dropped)
    }

    fn open_runs<'a>(
        &self,
        runs: &[Run],
        memory: Option<Cursor<'a>>,
        seq_descending: bool,
    ) -> Result<RunMerge<'a>> {
        let mut cursors = Vec::with_capacity(runs.len() + 1);
        for run in runs {
            let file = File::open(&run.path).map_err(|e| self.temp_error(e))?;
            let reader = RunReader::new(file, run.pairs).map_err(|e| self.temp_error(e))?;
            cursors.push(Cursor::Run(reader));
        }
        cursors.extend(memory);
        RunMerge::new(cursors, seq_descending).map_err(|e| self.temp_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::runs::FRAME_HEAD;
    use super::*;
    use crate::error::Location;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Sequence number `n` is row `n + 1` of one input.
    struct Rows;

    impl Locate for Rows {
        fn locate(&self, seq: u64) -> Location {
            Location {
                input: "in".into(),
                row: seq + 1,
            }
        }
    }

    struct Quiet;

    impl SpillProgress for Quiet {
        fn spilling(&self, _: usize, _: u64) {}
        fn spilled(&self) {}
    }

    type Pair = (Vec<u8>, Vec<u8>);

    /// Sorts `rows` pushed in batches of `batch` rows; returns what came out (or the error)
    /// and how many runs were spilled.
    fn sort(
        rows: &[Pair],
        batch: usize,
        budget: usize,
        threads: usize,
        policy: OnDuplicate,
    ) -> (Result<Vec<Pair>>, usize) {
        let dir = tempfile::tempdir().unwrap();
        let mut sorter = Sorter::new(
            budget,
            threads,
            policy,
            dir.path().to_owned(),
            Interrupt::default(),
        );
        let mut writer = PairWriter::default();
        let mut seq = 0;
        let mut out = Vec::new();
        let mut pushed = Ok(());
        for chunk in rows.chunks(batch) {
            for (i, (k, v)) in chunk.iter().enumerate() {
                writer.begin();
                writer.bytes().extend_from_slice(k);
                writer.bytes().extend_from_slice(v);
                writer.end(k.len(), i);
            }
            pushed = sorter.push(writer.take(batch), seq, &Rows, &Quiet);
            if pushed.is_err() {
                break;
            }
            seq += chunk.len() as u64;
        }
        let runs = sorter.runs();
        let result = pushed.and_then(|()| {
            sorter.finish(&Rows, &Quiet, &mut |k, v| {
                out.push((k.to_vec(), v.to_vec()));
                Ok(())
            })
        });
        // The spill directory is gone, with or without an error.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        (result.map(|_| out), runs)
    }

    /// What a sort must give: every key once, its first or last row's value.
    fn model(rows: &[Pair], policy: OnDuplicate) -> Vec<Pair> {
        let mut m = BTreeMap::new();
        for (k, v) in rows {
            if policy == OnDuplicate::Last || !m.contains_key(k) {
                m.insert(k.clone(), v.clone());
            }
        }
        m.into_iter().collect()
    }

    fn pairs() -> impl Strategy<Value = Vec<Pair>> {
        // Few distinct bytes: many duplicates and shared prefixes, keys both shorter and
        // longer than the 8-byte prefix.
        let key = prop::collection::vec(prop::sample::select(vec![0u8, b'a', b'b', 0xff]), 1..12);
        let value = prop::collection::vec(any::<u8>(), 0..40);
        prop::collection::vec((key, value), 1..300)
    }

    proptest! {
        #[test]
        fn sorts_like_a_map(
            rows in pairs(),
            batch in 1usize..60,
            budget in prop::sample::select(vec![300usize, 2000, 10_000, 1 << 20]),
            threads in 1usize..4,
            last in any::<bool>(),
            shared in prop::sample::select(vec![0usize, 3, 9]),
        ) {
            let policy = if last { OnDuplicate::Last } else { OnDuplicate::First };
            // Every key may start with the same bytes, more than the 8 an entry caches.
            let rows: Vec<Pair> = rows
                .into_iter()
                .map(|(k, v)| ([&b"user:0000"[..shared], &k].concat(), v))
                .collect();
            let (got, _) = sort(&rows, batch, budget, threads, policy);
            prop_assert_eq!(got.unwrap(), model(&rows, policy));
        }

        #[test]
        fn duplicates_name_two_rows_of_the_key(
            rows in pairs(),
            batch in 1usize..60,
            budget in prop::sample::select(vec![300usize, 2000, 1 << 20]),
            threads in 1usize..4,
        ) {
            let (got, _) = sort(&rows, batch, budget, threads, OnDuplicate::Error);
            let keys: Vec<&Vec<u8>> = rows.iter().map(|(k, _)| k).collect();
            match got {
                Ok(out) => {
                    prop_assert_eq!(out.len(), rows.len(), "a duplicate went unnoticed");
                }
                Err(Error::DuplicateKey { key, first, second }) => {
                    let (a, b) = (first.row as usize - 1, second.row as usize - 1);
                    prop_assert!(a < b);
                    prop_assert_eq!(keys[a], keys[b]);
                    prop_assert_eq!(printable_key(keys[a]), key);
                }
                Err(e) => prop_assert!(false, "unexpected error {e}"),
            }
        }
    }

    /// The run format, byte by byte: frames of whole pairs, each pair three varints (key
    /// length, value length, sequence number) then key and value.
    #[test]
    fn run_files_hold_pairs_in_frames() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        let value = vec![7u8; 200];
        // With 64-byte frames, each of these pairs ends a frame.
        let mut first = vec![0x01, 0xc8, 0x01, 0x00, b'a'];
        first.extend_from_slice(&value);
        let mut second = vec![0x02, 0x00];
        second.extend_from_slice(&[0xff; 9]);
        second.extend_from_slice(&[0x01, b'b', b'b']);
        for threads in [1, 3] {
            let mut w = RunWriter::new(File::create(&path).unwrap(), threads, 64).unwrap();
            w.write(b"a", &value, 0).unwrap();
            w.write(b"bb", b"", u64::MAX).unwrap();
            w.finish().unwrap();

            let bytes = std::fs::read(&path).unwrap();
            let mut frames = Vec::new();
            let mut at = 0;
            while at < bytes.len() {
                let stored = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
                let raw = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
                let frame = &bytes[at + FRAME_HEAD..at + FRAME_HEAD + stored];
                frames.push(zstd::bulk::decompress(frame, raw).unwrap());
                at += FRAME_HEAD + stored;
            }
            assert_eq!(frames, [first.clone(), second.clone()], "{threads} threads");

            let mut r = RunReader::new(File::open(&path).unwrap(), 2).unwrap();
            assert!(r.advance().unwrap());
            assert_eq!(
                (&r.buf[r.key.clone()], &r.buf[r.value.clone()], r.seq),
                (&b"a"[..], &value[..], 0)
            );
            assert!(r.advance().unwrap());
            assert_eq!(
                (&r.buf[r.key.clone()], &r.buf[r.value.clone()], r.seq),
                (&b"bb"[..], &b""[..], u64::MAX)
            );
            assert!(!r.advance().unwrap());
        }
    }

    /// A pair header that is cut short, longer than 10 bytes or above 64 bits is a corrupt
    /// run, not a panic or a wrapped number.
    #[test]
    fn bad_pair_headers_are_corrupt_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run");
        // Bit 64 set: a decoder that drops it would read a key length of 0.
        let mut too_big = vec![0x80; 9];
        too_big.push(0x02);
        let too_long = vec![0x80; 11];
        for head in [too_big, too_long, vec![0x80]] {
            let mut raw = head.clone();
            raw.extend_from_slice(&[0, 0]);
            let frame = zstd::bulk::compress(&raw, RUN_LEVEL).unwrap();
            let mut bytes = (frame.len() as u32).to_le_bytes().to_vec();
            bytes.extend_from_slice(&(raw.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&frame);
            std::fs::write(&path, &bytes).unwrap();
            let mut r = RunReader::new(File::open(&path).unwrap(), 1).unwrap();
            let e = r.advance().unwrap_err();
            assert_eq!(
                e.kind(),
                std::io::ErrorKind::InvalidData,
                "{head:02x?}: {e}"
            );
            assert!(
                e.to_string().contains("temporary run file is corrupt"),
                "{e}"
            );
        }
    }

    /// Enough pairs for the threaded sort, and runs of several frames merged in rounds.
    #[test]
    fn large_sorts_agree_across_budgets_and_threads() {
        let rows: Vec<Pair> = (0..150_000u64)
            .map(|i| {
                let k = (i * 2_654_435_761) % 100_000;
                (
                    format!("key:{k:08}").into_bytes(),
                    format!("value of row {i}").into_bytes(),
                )
            })
            .collect();
        let want = model(&rows, OnDuplicate::Last);
        for (budget, threads) in [(64 << 20, 1), (64 << 20, 3), (1 << 20, 2), (3 << 20, 1)] {
            let (got, runs) = sort(&rows, 8192, budget, threads, OnDuplicate::Last);
            assert!(got.unwrap() == want, "budget {budget}, {threads} threads");
            assert_eq!(runs > 0, budget < 64 << 20);
        }
    }
}
