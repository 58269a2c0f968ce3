//! External sort of (key, value) pairs within a memory budget.
//!
//! Pairs accumulate in an arena; when the budget is reached they are sorted and spilled as a
//! zstd-compressed run to a temporary directory. The result is one stream in key order, merged
//! from the runs (and the in-memory pairs when nothing was spilled).
//!
//! Every pair carries its input sequence number (its row's position in input order). Pairs are
//! ordered by (key, sequence) — by sequence descending when the last duplicate wins — so the
//! result is the same whether or not, and wherever, the input was cut into runs: an in-memory
//! build and a spilling one write identical files.

use crate::error::{printable_key, Error, Result};
use crate::{Interrupt, OnDuplicate};
use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Arena chunk size; a pair larger than this gets a chunk of its own.
const CHUNK: usize = 4 << 20;
/// Memory a pair costs besides its bytes: its entry here, and the key hash the snapshot writer
/// keeps for the filter when the pairs go straight from memory to the writer.
pub(crate) const PAIR_OVERHEAD: usize = std::mem::size_of::<Entry>() + 8;
/// zstd level of spilled runs: fast, since runs are read once.
const RUN_LEVEL: i32 = 1;
/// Memory one open run costs while merging (zstd window and read buffers), to size the fan-in.
const RUN_READ_COST: usize = 1 << 20;

/// How far ahead of the merge pairs are loaded from the arena.
const LOOK_AHEAD: usize = 16;

/// A pair in the arena.
#[derive(Clone, Copy)]
struct Entry {
    /// The key's first 8 bytes, big-endian, zero-padded: most comparisons end here.
    prefix: u64,
    /// Chunk number (high 32 bits) and offset in the chunk (low 32 bits) of key then value.
    at: u64,
    key_len: u32,
    value_len: u32,
    seq: u64,
}

// Big-endian so that integer order is bytewise key order; the prefix lives only in memory.
#[allow(clippy::big_endian_bytes)]
fn key_prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

struct Arena {
    chunks: Vec<Vec<u8>>,
    /// The chunk being filled.
    current: usize,
}

impl Arena {
    fn push(&mut self, key: &[u8], value: &[u8]) -> u64 {
        let need = key.len() + value.len();
        let fits = |c: &Vec<u8>| c.capacity() - c.len() >= need;
        if self.chunks.is_empty() || !fits(&self.chunks[self.current]) {
            if !self.chunks.is_empty() {
                self.current += 1;
            }
            if self.current == self.chunks.len() || !fits(&self.chunks[self.current]) {
                self.chunks
                    .insert(self.current, Vec::with_capacity(need.max(CHUNK)));
            }
        }
        let chunk = &mut self.chunks[self.current];
        let at = ((self.current as u64) << 32) | chunk.len() as u64;
        chunk.extend_from_slice(key);
        chunk.extend_from_slice(value);
        at
    }

    fn bytes(&self, e: &Entry) -> (&[u8], &[u8]) {
        let chunk = &self.chunks[(e.at >> 32) as usize];
        let start = (e.at & 0xffff_ffff) as usize;
        let mid = start + e.key_len as usize;
        (&chunk[start..mid], &chunk[mid..mid + e.value_len as usize])
    }

    fn key(&self, e: &Entry) -> &[u8] {
        self.bytes(e).0
    }

    /// Forgets every pair; keeps the standard-size chunks for reuse.
    fn clear(&mut self) {
        self.chunks.retain(|c| c.capacity() == CHUNK);
        for c in &mut self.chunks {
            c.clear();
        }
        self.current = 0;
    }
}

fn compare(arena: &Arena, a: &Entry, b: &Entry, seq_descending: bool) -> Ordering {
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
    temp: Option<tempfile::TempDir>,
    runs: Vec<Run>,
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
    /// into a new directory under `temp_base`.
    pub(crate) fn new(
        budget: usize,
        threads: usize,
        on_duplicate: OnDuplicate,
        temp_base: PathBuf,
        interrupt: Interrupt,
    ) -> Sorter {
        Sorter {
            arena: Arena {
                chunks: Vec::new(),
                current: 0,
            },
            entries: Vec::new(),
            held: 0,
            budget,
            threads: threads.max(1),
            on_duplicate,
            temp_base,
            temp: None,
            runs: Vec::new(),
            run_files: 0,
            interrupt,
        }
    }

    fn seq_descending(&self) -> bool {
        self.on_duplicate == OnDuplicate::Last
    }

    /// Adds a pair; spills first if it would not fit in the budget.
    pub(crate) fn push(
        &mut self,
        key: &[u8],
        value: &[u8],
        seq: u64,
        locate: &dyn Locate,
        progress: &dyn SpillProgress,
    ) -> Result<()> {
        let cost = key.len() + value.len() + PAIR_OVERHEAD;
        if self.held + cost > self.budget && !self.entries.is_empty() {
            self.spill(locate, progress)?;
        }
        let at = self.arena.push(key, value);
        self.entries.push(Entry {
            prefix: key_prefix(key),
            at,
            key_len: key.len() as u32,
            value_len: value.len() as u32,
            seq,
        });
        self.held += cost;
        Ok(())
    }

    /// Runs spilled so far.
    pub(crate) fn runs(&self) -> usize {
        self.runs.len()
    }

    /// Sorts the held pairs: the entries are cut into one part per thread, each sorted on its
    /// own thread. Returns the part boundaries.
    fn sort(&mut self) -> Vec<std::ops::Range<usize>> {
        let n = self.entries.len();
        let parts = if n < 64 * 1024 { 1 } else { self.threads };
        let size = n.div_ceil(parts).max(1);
        let desc = self.seq_descending();
        let arena = &self.arena;
        std::thread::scope(|s| {
            for part in self.entries.chunks_mut(size) {
                s.spawn(move || part.sort_unstable_by(|a, b| compare(arena, a, b, desc)));
            }
        });
        (0..n)
            .step_by(size)
            .map(|start| start..(start + size).min(n))
            .collect()
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
            self.temp = Some(dir);
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

    fn new_run_path(&mut self) -> Result<PathBuf> {
        self.run_files += 1;
        let n = self.run_files;
        Ok(self.temp_dir()?.join(format!("run-{n:06}.zst")))
    }

    /// Sorts the held pairs and writes them as a run.
    fn spill(&mut self, locate: &dyn Locate, progress: &dyn SpillProgress) -> Result<()> {
        self.interrupt.check()?;
        progress.spilling(self.runs.len() + 1, self.entries.len() as u64);
        let parts = self.sort();
        let path = self.new_run_path()?;
        let file = File::create(&path).map_err(|e| self.temp_error(e))?;
        let mut out = RunWriter::new(file).map_err(|e| self.temp_error(e))?;
        let desc = self.seq_descending();
        let mut merged = MemMerge::new(&self.arena, &self.entries, parts, desc);
        let mut dups = DupCheck::new(self.on_duplicate);
        let mut pairs = 0u64;
        while let Some(e) = merged.next() {
            let (key, value) = self.arena.bytes(e);
            // With `error`, a duplicate inside one run fails now rather than at the merge.
            if self.on_duplicate == OnDuplicate::Error {
                dups.check(key, e.seq, locate)?;
            }
            out.write(key, value, e.seq)
                .map_err(|err| self.temp_error(err))?;
            pairs += 1;
            if pairs % 65536 == 0 {
                self.interrupt.check()?;
            }
        }
        out.finish().map_err(|e| self.temp_error(e))?;
        self.runs.push(Run { path, pairs });
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
        let mut each = |key: &[u8], value: &[u8], seq: u64, interrupt: &Interrupt| -> Result<()> {
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
            let parts = self.sort();
            let mut merged = MemMerge::new(&self.arena, &self.entries, parts, desc);
            while let Some(e) = merged.next() {
                let (key, value) = self.arena.bytes(e);
                each(key, value, e.seq, &self.interrupt)?;
            }
            return Ok(dups.dropped);
        }
        if !self.entries.is_empty() {
            self.spill(locate, progress)?;
        }
        // Free the arena before the merge: the writer needs the memory now.
        self.arena = Arena {
            chunks: Vec::new(),
            current: 0,
        };
        self.entries = Vec::new();
        let fan_in = (self.budget / RUN_READ_COST).clamp(2, 64);
        while self.runs.len() > fan_in {
            // Merge the first runs into one; order is by (key, seq), so which runs are merged
            // together does not change the result.
            let group: Vec<Run> = self.runs.drain(..fan_in).collect();
            let path = self.new_run_path()?;
            let file = File::create(&path).map_err(|e| self.temp_error(e))?;
            let mut out = RunWriter::new(file).map_err(|e| self.temp_error(e))?;
            let mut merge = self.open_runs(&group, desc)?;
            let mut pairs = 0;
            while let Some(i) = merge.next().map_err(|e| self.temp_error(e))? {
                let r = &merge.readers[i];
                out.write(&r.key, &r.value, r.seq)
                    .map_err(|e| self.temp_error(e))?;
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
        let runs = std::mem::take(&mut self.runs);
        let mut merge = self.open_runs(&runs, desc)?;
        while let Some(i) = merge.next().map_err(|e| self.temp_error(e))? {
            let r = &merge.readers[i];
            each(&r.key, &r.value, r.seq, &self.interrupt)?;
        }
        Ok(dups.dropped)
    }

    fn open_runs(&self, runs: &[Run], seq_descending: bool) -> Result<RunMerge> {
        let mut readers = Vec::with_capacity(runs.len());
        for run in runs {
            let file = File::open(&run.path).map_err(|e| self.temp_error(e))?;
            readers.push(RunReader::new(file, run.pairs).map_err(|e| self.temp_error(e))?);
        }
        RunMerge::new(readers, seq_descending).map_err(|e| self.temp_error(e))
    }
}

/// Detects repeated keys in a stream ordered by (key, seq) and applies the policy.
struct DupCheck {
    policy: OnDuplicate,
    last_key: Vec<u8>,
    last_seq: u64,
    started: bool,
    dropped: u64,
}

impl DupCheck {
    fn new(policy: OnDuplicate) -> DupCheck {
        DupCheck {
            policy,
            last_key: Vec::new(),
            last_seq: 0,
            started: false,
            dropped: 0,
        }
    }

    /// True if the pair is to be kept (the first of its key in stream order).
    fn check(&mut self, key: &[u8], seq: u64, locate: &dyn Locate) -> Result<bool> {
        if self.started && key == self.last_key.as_slice() {
            if self.policy == OnDuplicate::Error {
                let (a, b) = (self.last_seq.min(seq), self.last_seq.max(seq));
                return Err(Error::DuplicateKey {
                    key: printable_key(key),
                    first: locate.locate(a),
                    second: locate.locate(b),
                });
            }
            self.dropped += 1;
            return Ok(false);
        }
        self.started = true;
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.last_seq = seq;
        Ok(true)
    }
}

/// Merges the sorted parts of the in-memory entries.
struct MemMerge<'a> {
    arena: &'a Arena,
    entries: &'a [Entry],
    parts: Vec<std::ops::Range<usize>>,
    seq_descending: bool,
}

impl<'a> MemMerge<'a> {
    fn new(
        arena: &'a Arena,
        entries: &'a [Entry],
        parts: Vec<std::ops::Range<usize>>,
        seq_descending: bool,
    ) -> Self {
        MemMerge {
            arena,
            entries,
            parts,
            seq_descending,
        }
    }

    fn next(&mut self) -> Option<&'a Entry> {
        let mut best: Option<usize> = None;
        for (i, p) in self.parts.iter().enumerate() {
            if p.is_empty() {
                continue;
            }
            best = match best {
                Some(b)
                    if compare(
                        self.arena,
                        &self.entries[self.parts[b].start],
                        &self.entries[p.start],
                        self.seq_descending,
                    ) != Ordering::Greater =>
                {
                    Some(b)
                }
                _ => Some(i),
            };
        }
        let b = best?;
        let e = &self.entries[self.parts[b].start];
        self.parts[b].start += 1;
        // Sorted order visits the arena at random: load a pair a few places ahead so that its
        // cache miss overlaps with the work on this one.
        if let Some(ahead) = self.entries[self.parts[b].clone()].get(LOOK_AHEAD) {
            let (key, _) = self.arena.bytes(ahead);
            std::hint::black_box(key.first());
        }
        Some(e)
    }
}

/// Writes a run: per pair, varint key length, varint value length, varint sequence number,
/// key bytes, value bytes; all in one zstd stream.
struct RunWriter {
    out: BufWriter<zstd::stream::write::Encoder<'static, BufWriter<File>>>,
}

impl RunWriter {
    fn new(file: File) -> std::io::Result<RunWriter> {
        let encoder =
            zstd::stream::write::Encoder::new(BufWriter::with_capacity(1 << 20, file), RUN_LEVEL)?;
        Ok(RunWriter {
            out: BufWriter::with_capacity(1 << 18, encoder),
        })
    }

    fn write(&mut self, key: &[u8], value: &[u8], seq: u64) -> std::io::Result<()> {
        let mut head = [0u8; 30];
        let mut n = put_varint(&mut head, 0, key.len() as u64);
        n = put_varint(&mut head, n, value.len() as u64);
        n = put_varint(&mut head, n, seq);
        self.out.write_all(&head[..n])?;
        self.out.write_all(key)?;
        self.out.write_all(value)
    }

    fn finish(self) -> std::io::Result<()> {
        let encoder = self.out.into_inner().map_err(|e| e.into_error())?;
        encoder.finish()?.flush()
    }
}

fn put_varint(buf: &mut [u8], mut at: usize, mut v: u64) -> usize {
    while v >= 0x80 {
        buf[at] = (v as u8) | 0x80;
        v >>= 7;
        at += 1;
    }
    buf[at] = v as u8;
    at + 1
}

/// Reads a run back, one pair at a time.
struct RunReader {
    input: BufReader<zstd::stream::read::Decoder<'static, BufReader<File>>>,
    remaining: u64,
    key: Vec<u8>,
    value: Vec<u8>,
    seq: u64,
}

fn truncated() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "a temporary run file is truncated",
    )
}

impl RunReader {
    fn new(file: File, pairs: u64) -> std::io::Result<RunReader> {
        let decoder = zstd::stream::read::Decoder::new(file)?;
        Ok(RunReader {
            input: BufReader::with_capacity(1 << 18, decoder),
            remaining: pairs,
            key: Vec::new(),
            value: Vec::new(),
            seq: 0,
        })
    }

    fn varint(&mut self) -> std::io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let buf = self.input.fill_buf()?;
            let Some(&b) = buf.first() else {
                return Err(truncated());
            };
            self.input.consume(1);
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(truncated())
    }

    /// Loads the next pair; false at the end of the run.
    fn advance(&mut self) -> std::io::Result<bool> {
        if self.remaining == 0 {
            return Ok(false);
        }
        self.remaining -= 1;
        let key_len = self.varint()? as usize;
        let value_len = self.varint()? as usize;
        self.seq = self.varint()?;
        self.key.resize(key_len, 0);
        self.input.read_exact(&mut self.key)?;
        self.value.resize(value_len, 0);
        self.input.read_exact(&mut self.value)?;
        Ok(true)
    }
}

/// A k-way merge of runs through a binary min-heap of reader indices.
struct RunMerge {
    readers: Vec<RunReader>,
    heap: Vec<usize>,
    seq_descending: bool,
    /// The reader whose pair was handed out last: advanced on the next call.
    last: Option<usize>,
}

impl RunMerge {
    fn new(mut readers: Vec<RunReader>, seq_descending: bool) -> std::io::Result<RunMerge> {
        let mut heap = Vec::with_capacity(readers.len());
        for (i, r) in readers.iter_mut().enumerate() {
            if r.advance()? {
                heap.push(i);
            }
        }
        let mut m = RunMerge {
            readers,
            heap,
            seq_descending,
            last: None,
        };
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        Ok(m)
    }

    fn less(&self, a: usize, b: usize) -> bool {
        let (ra, rb) = (&self.readers[a], &self.readers[b]);
        let ord = ra.key.cmp(&rb.key).then_with(|| {
            if self.seq_descending {
                rb.seq.cmp(&ra.seq)
            } else {
                ra.seq.cmp(&rb.seq)
            }
        });
        ord == Ordering::Less
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let (l, r) = (2 * i + 1, 2 * i + 2);
            let mut m = i;
            if l < n && self.less(self.heap[l], self.heap[m]) {
                m = l;
            }
            if r < n && self.less(self.heap[r], self.heap[m]) {
                m = r;
            }
            if m == i {
                return;
            }
            self.heap.swap(i, m);
            i = m;
        }
    }

    /// The index of the reader holding the next pair in order, `None` at the end.
    fn next(&mut self) -> std::io::Result<Option<usize>> {
        if self.last.take().is_some() {
            let top = self.heap[0];
            if self.readers[top].advance()? {
                self.sift_down(0);
            } else {
                let last = self.heap.len() - 1;
                self.heap.swap(0, last);
                self.heap.pop();
                if !self.heap.is_empty() {
                    self.sift_down(0);
                }
            }
        }
        let Some(&top) = self.heap.first() else {
            return Ok(None);
        };
        self.last = Some(top);
        Ok(Some(top))
    }
}
