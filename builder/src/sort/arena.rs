//! The pairs' bytes: batches of pairs as their extraction threads wrote them, kept in large
//! chunks, with one [`Entry`] per pair.

use super::*;

/// The pairs of one record batch: `entries[i].seq` is the row's index in the batch, and `at`
/// points into `chunks`.
#[derive(Debug, Default)]
pub(crate) struct Pairs {
    pub(super) chunks: Vec<Vec<u8>>,
    pub(super) entries: Vec<Entry>,
}

impl Pairs {
    /// Bytes held (chunk capacity and entries).
    pub(crate) fn memory(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum::<usize>()
            + self.entries.capacity() * std::mem::size_of::<Entry>()
    }
}

/// Writes [`Pairs`]: each pair's key, then its value, straight into the chunk being filled.
#[derive(Debug, Default)]
pub(crate) struct PairWriter {
    pub(super) pairs: Pairs,
    /// The chunk being filled.
    pub(super) bytes: Vec<u8>,
    /// Bytes of the last chunk sealed, to size the next one.
    pub(super) last_chunk: usize,
    /// Where the pair being written starts in `bytes`.
    pub(super) start: usize,
}

impl PairWriter {
    /// Starts a pair; append its key, then its value, to [`PairWriter::bytes`].
    pub(crate) fn begin(&mut self) {
        if self.bytes.len() >= CHUNK {
            self.seal();
        }
        if self.bytes.capacity() == 0 {
            // Sized like the previous chunk, so that it rarely grows and is shrunk in place.
            self.bytes = Vec::with_capacity(self.last_chunk + self.last_chunk / 8 + 4096);
        }
        self.start = self.bytes.len();
    }

    /// The chunk being filled.
    pub(crate) fn bytes(&mut self) -> &mut Vec<u8> {
        &mut self.bytes
    }

    /// Forgets what was written since the last [`PairWriter::take`] (after an error).
    pub(crate) fn clear(&mut self) {
        self.pairs.chunks.clear();
        self.pairs.entries.clear();
        self.bytes.clear();
    }

    /// Ends the pair begun last: the first `key_len` bytes written are its key, the rest its
    /// value; `row` is its index in the batch.
    pub(crate) fn end(&mut self, key_len: usize, row: usize) {
        let len = self.bytes.len() - self.start;
        let key = &self.bytes[self.start..self.start + key_len];
        self.pairs.entries.push(Entry {
            prefix: key_prefix(key),
            at: ((self.pairs.chunks.len() as u64) << 32) | self.start as u64,
            key_len: key_len as u32,
            value_len: (len - key_len) as u32,
            seq: row as u64,
        });
    }

    pub(super) fn seal(&mut self) {
        if !self.bytes.is_empty() {
            let mut chunk = std::mem::take(&mut self.bytes);
            chunk.shrink_to_fit();
            self.last_chunk = chunk.len();
            self.pairs.chunks.push(chunk);
        }
    }

    /// The pairs written since the last call, with room for `rows` entries in the next batch.
    ///
    /// When they fit in one chunk, their bytes are handed out in key order (the entries stay
    /// in row order): a spill or the final merge visits the pairs in key order, so each
    /// batch's chunk is then read front to back rather than at random.
    pub(crate) fn take(&mut self, rows: usize) -> Pairs {
        if self.pairs.chunks.is_empty() {
            let bytes = &self.bytes;
            let entries = &mut self.pairs.entries;
            let key = |e: &Entry| {
                let start = (e.at & 0xffff_ffff) as usize;
                &bytes[start..start + e.key_len as usize]
            };
            let shared = super::shared_prefix(entries.iter().map(key));
            let mut order: Vec<(u64, u32)> = entries
                .iter()
                .enumerate()
                .map(|(i, e)| match shared {
                    0 => (e.prefix, i as u32),
                    _ => (key_prefix(&key(e)[shared..]), i as u32),
                })
                .collect();
            order.sort_unstable_by(|a, b| {
                a.0.cmp(&b.0)
                    .then_with(|| key(&entries[a.1 as usize]).cmp(key(&entries[b.1 as usize])))
                    .then(a.1.cmp(&b.1))
            });
            let mut chunk = Vec::with_capacity(bytes.len());
            for (_, i) in order {
                let e = &mut entries[i as usize];
                let start = (e.at & 0xffff_ffff) as usize;
                let len = (e.key_len + e.value_len) as usize;
                e.at = chunk.len() as u64;
                chunk.extend_from_slice(&bytes[start..start + len]);
            }
            self.pairs.chunks.push(chunk);
            self.bytes.clear();
        } else {
            self.seal();
        }
        let mut pairs = std::mem::take(&mut self.pairs);
        pairs.entries.shrink_to_fit();
        self.pairs.entries.reserve_exact(rows);
        pairs
    }
}

/// The bytes of the pairs held, copied from the batches into large chunks that are reused
/// from one run to the next.
///
/// Large because the allocator then maps each on its own and returns it to the system when it
/// is dropped (glibc does so above 32 MiB). Batches' own chunks, smaller, come from the
/// allocator's heaps; holding those, memory freed by a spill could stay with the process
/// while the writer's per-key memory grows during the final merge.
pub(super) struct Arena {
    pub(super) chunks: Vec<Vec<u8>>,
    /// The chunk being filled; those after it are empty.
    pub(super) current: usize,
    pub(super) chunk_size: usize,
}

impl Arena {
    pub(super) fn new(budget: usize) -> Arena {
        let chunk_size = match budget / 8 {
            n if n > 16 << 20 => n.clamp(33 << 20, 64 << 20),
            n => n.max(1 << 20),
        };
        Arena {
            chunks: Vec::new(),
            current: 0,
            chunk_size,
        }
    }

    /// Copies `bytes` in; returns where they start (chunk number in the high 32 bits, offset
    /// in the low 32 bits).
    pub(super) fn append(&mut self, bytes: &[u8]) -> u64 {
        let need = bytes.len();
        if self
            .chunks
            .get(self.current)
            .is_some_and(|c| c.capacity() - c.len() < need)
        {
            self.current += 1;
        }
        if self
            .chunks
            .get(self.current)
            .is_none_or(|c| c.capacity() < need)
        {
            let chunk = Vec::with_capacity(need.max(self.chunk_size));
            self.chunks.insert(self.current, chunk);
        }
        let chunk = &mut self.chunks[self.current];
        let at = ((self.current as u64) << 32) | chunk.len() as u64;
        chunk.extend_from_slice(bytes);
        at
    }

    /// Forgets every pair; keeps the chunks.
    pub(super) fn clear(&mut self) {
        for c in &mut self.chunks {
            c.clear();
        }
        self.current = 0;
    }

    /// Drops the chunks after the one being filled.
    pub(super) fn release_unused(&mut self) {
        self.chunks.truncate(self.current + 1);
    }

    /// Memory of the chunks.
    pub(super) fn memory(&self) -> usize {
        self.chunks.iter().map(Vec::capacity).sum()
    }

    pub(super) fn bytes(&self, e: &Entry) -> (&[u8], &[u8]) {
        let chunk = &self.chunks[(e.at >> 32) as usize];
        let start = (e.at & 0xffff_ffff) as usize;
        let mid = start + e.key_len as usize;
        (&chunk[start..mid], &chunk[mid..mid + e.value_len as usize])
    }

    pub(super) fn key(&self, e: &Entry) -> &[u8] {
        self.bytes(e).0
    }
}
