//! The k-way merge of runs and in-memory pairs into one stream in order.

use super::*;

/// One input of a merge: a run on disk, or sorted pairs in memory.
pub(super) enum Cursor<'a> {
    Run(RunReader),
    Memory {
        arena: &'a Arena,
        entries: &'a [Entry],
        /// The index of the next entry; the current one is just before it.
        next: usize,
    },
}

impl<'a> Cursor<'a> {
    pub(super) fn memory(arena: &'a Arena, entries: &'a [Entry]) -> Cursor<'a> {
        Cursor::Memory {
            arena,
            entries,
            next: 0,
        }
    }

    /// Moves to the next pair; false at the end.
    pub(super) fn advance(&mut self) -> std::io::Result<bool> {
        match self {
            Cursor::Run(r) => r.advance(),
            Cursor::Memory {
                arena,
                entries,
                next,
            } => {
                if *next == entries.len() {
                    return Ok(false);
                }
                if *next % TOUCH == 0 {
                    touch(arena, &entries[*next..(*next + TOUCH).min(entries.len())]);
                }
                *next += 1;
                Ok(true)
            }
        }
    }

    /// The current pair: key, value and sequence number.
    pub(super) fn pair(&self) -> (&[u8], &[u8], u64) {
        match self {
            Cursor::Run(r) => (&r.buf[r.key.clone()], &r.buf[r.value.clone()], r.seq),
            Cursor::Memory {
                arena,
                entries,
                next,
            } => {
                let e = &entries[*next - 1];
                let (key, value) = arena.bytes(e);
                (key, value, e.seq)
            }
        }
    }
}

/// A k-way merge of cursors through a binary min-heap of their indices.
pub(super) struct RunMerge<'a> {
    pub(super) cursors: Vec<Cursor<'a>>,
    pub(super) heap: Vec<usize>,
    pub(super) seq_descending: bool,
    /// Whether the cursor on top was handed out last: advanced on the next call.
    pub(super) handed_out: bool,
}

impl<'a> RunMerge<'a> {
    pub(super) fn new(
        mut cursors: Vec<Cursor<'a>>,
        seq_descending: bool,
    ) -> std::io::Result<RunMerge<'a>> {
        let mut heap = Vec::with_capacity(cursors.len());
        for (i, c) in cursors.iter_mut().enumerate() {
            if c.advance()? {
                heap.push(i);
            }
        }
        let mut m = RunMerge {
            cursors,
            heap,
            seq_descending,
            handed_out: false,
        };
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        Ok(m)
    }

    pub(super) fn less(&self, a: usize, b: usize) -> bool {
        let ((ka, _, sa), (kb, _, sb)) = (self.cursors[a].pair(), self.cursors[b].pair());
        let ord = ka.cmp(kb).then_with(|| {
            if self.seq_descending {
                sb.cmp(&sa)
            } else {
                sa.cmp(&sb)
            }
        });
        ord == Ordering::Less
    }

    pub(super) fn sift_down(&mut self, mut i: usize) {
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

    /// The cursor holding the next pair in order, `None` at the end.
    pub(super) fn next(&mut self) -> std::io::Result<Option<&Cursor<'a>>> {
        if std::mem::take(&mut self.handed_out) {
            let top = self.heap[0];
            if self.cursors[top].advance()? {
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
        self.handed_out = true;
        Ok(Some(&self.cursors[top]))
    }
}
