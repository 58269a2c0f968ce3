//! The read pipeline: a reader thread opens the inputs and decodes their record batches, worker
//! threads make each batch's pairs, and the building thread receives everything — inputs
//! starting, batches' pairs, the first error — in input order, exactly as if one thread had
//! done it all. Sequence numbers, `--on-duplicate`, error rows and progress are therefore the
//! same whatever the thread count.
//!
//! Memory: the batches between the reader and the sorter (decoded, then as pairs) are counted
//! against a byte limit; the reader waits while it is reached, and one batch may always be in
//! flight.

use crate::error::Location;
use crate::error::{Error, Result};
use crate::extract::{FilePlan, Plan};
use crate::progress::{Phase, Progress, SpillReport};
use crate::read;
use crate::sort::{Locate, PairWriter, Pairs, Sorter};
use crate::source::Source;
use crate::Interrupt;
use arrow_array::RecordBatch;
use snapkv_format::pool::{self, Pool, Submitter};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

/// What the building thread receives, in input order.
pub(crate) enum Event {
    /// Input `index` (into the sources) starts.
    Input {
        index: usize,
        /// Rows in the file, when its format records them.
        rows: Option<u64>,
        /// Bytes read from it so far (read as a stream).
        consumed: Arc<AtomicU64>,
    },
    /// The pairs of the input's next batch.
    Batch {
        pairs: Pairs,
        rows: usize,
        /// `consumed` of the input when the batch was read.
        consumed: u64,
        /// Bytes counted against the in-flight limit until [`Pipeline::done_with`].
        memory: usize,
    },
    /// Every input was read.
    End,
}

enum Job {
    Pairs {
        plan: Arc<FilePlan>,
        batch: RecordBatch,
        first_row: u64,
        consumed: u64,
        memory: usize,
    },
    Pass(Result<Event>),
}

/// Bytes in flight between the reader and the sorter.
struct Gate {
    used: Mutex<usize>,
    freed: Condvar,
    limit: usize,
    stopped: AtomicBool,
}

impl Gate {
    /// Waits until `n` more bytes fit (or nothing is in flight) and counts them; false once
    /// stopped.
    fn acquire(&self, n: usize) -> bool {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        while *used > 0 && *used + n > self.limit && !self.stopped.load(Ordering::Relaxed) {
            used = self.freed.wait(used).unwrap_or_else(|e| e.into_inner());
        }
        *used += n;
        !self.stopped.load(Ordering::Relaxed)
    }

    /// Counts `add` more bytes and `sub` fewer.
    fn adjust(&self, add: usize, sub: usize) {
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        *used = (*used + add).saturating_sub(sub);
        drop(used);
        self.freed.notify_all();
    }

    fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        // Taking the lock orders the store before a waiter's next check.
        drop(self.used.lock().unwrap_or_else(|e| e.into_inner()));
        self.freed.notify_all();
    }

    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }
}

/// The running pipeline. Dropping it stops the reader and the workers (they end on their own;
/// nothing waits for them).
pub(crate) struct Pipeline {
    events: Pool<Result<Event>>,
    gate: Arc<Gate>,
    ended: bool,
}

/// What the reader thread needs.
pub(crate) struct Reader {
    pub sources: Vec<Source>,
    /// The first source, already opened (its schema made the plan).
    pub first: read::Opened,
    pub plan: Arc<Plan>,
    /// Columns read as text from CSV.
    pub settings: read::Settings,
}

impl Pipeline {
    /// Starts the reader and `threads` workers; at most `in_flight` bytes of batches wait
    /// between them and the caller.
    pub(crate) fn start(reader: Reader, threads: usize, in_flight: usize) -> Pipeline {
        let gate = Arc::new(Gate {
            used: Mutex::new(0),
            freed: Condvar::new(),
            limit: in_flight,
            stopped: AtomicBool::new(false),
        });
        let worker_gate = Arc::clone(&gate);
        let (submit, events) =
            pool::start(threads, threads, PairWriter::default, move |out, job| {
                make_pairs(job, out, &worker_gate)
            });
        let reader_gate = Arc::clone(&gate);
        std::thread::spawn(move || read_all(reader, submit, &reader_gate));
        Pipeline {
            events,
            gate,
            ended: false,
        }
    }

    /// The next event in input order; `None` after [`Event::End`].
    pub(crate) fn next(&mut self) -> Option<Result<Event>> {
        if self.ended {
            return None;
        }
        let event = self.events.recv().unwrap_or(Err(Error::Internal(
            "a reading thread stopped unexpectedly",
        )));
        if matches!(event, Ok(Event::End) | Err(_)) {
            self.ended = true;
        }
        Some(event)
    }

    /// The sorter holds a batch's pairs now: they no longer count as in flight.
    pub(crate) fn done_with(&self, memory: usize) {
        self.gate.adjust(0, memory);
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.gate.stop();
    }
}

fn make_pairs(job: Job, out: &mut PairWriter, gate: &Gate) -> Result<Event> {
    match job {
        Job::Pass(event) => event,
        Job::Pairs {
            plan,
            batch,
            first_row,
            consumed,
            memory,
        } => {
            if gate.stopped() {
                return Err(Error::Interrupted);
            }
            let rows = batch.num_rows();
            // Encoders can still panic on values a decoder let through: the build fails
            // naming the input rather than losing a worker thread.
            let made = crate::read::guarded(plan.source(), || plan.pairs(&batch, first_row, out));
            drop(batch);
            match made {
                Ok(pairs) => {
                    let pairs_memory = pairs.memory();
                    gate.adjust(pairs_memory, memory);
                    Ok(Event::Batch {
                        rows,
                        pairs,
                        consumed,
                        memory: pairs_memory,
                    })
                }
                Err(e) => {
                    gate.adjust(0, memory);
                    Err(e)
                }
            }
        }
    }
}

/// The reader thread: every input in order, then [`Event::End`]; stops at the first error,
/// which goes down the pipeline in its place.
fn read_all(reader: Reader, mut submit: Submitter<Job>, gate: &Gate) {
    let Reader {
        sources,
        first,
        plan,
        settings,
    } = reader;
    let mut first = Some(first);
    for (index, source) in sources.iter().enumerate() {
        let opened = match first.take() {
            Some(o) => Ok(o),
            None => read::open(source, &settings),
        };
        match opened.and_then(|o| read_input(index, source, o, &plan, &mut submit, gate)) {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                submit.submit(Job::Pass(Err(e)));
                return;
            }
        }
    }
    submit.submit(Job::Pass(Ok(Event::End)));
}

/// Submits one input's batches; false when the pipeline stopped.
fn read_input(
    index: usize,
    source: &Source,
    opened: read::Opened,
    plan: &Arc<Plan>,
    submit: &mut Submitter<Job>,
    gate: &Gate,
) -> Result<bool> {
    let file_plan = Arc::new(FilePlan::new(plan, source, &opened.schema)?);
    let rows = opened.rows;
    let consumed = Arc::clone(&opened.consumed);
    let mut batches = read::guarded(source, || {
        opened.batches(source, file_plan.projection.clone())
    })?;
    let start = Event::Input {
        index,
        rows,
        consumed: Arc::clone(&consumed),
    };
    if !submit.submit(Job::Pass(Ok(start))) {
        return Ok(false);
    }
    let mut row = 0u64;
    while let Some(batch) = read::guarded(source, || batches.next_batch())? {
        let memory = batch.get_array_memory_size();
        if !gate.acquire(memory) {
            return Ok(false);
        }
        let n = batch.num_rows() as u64;
        let job = Job::Pairs {
            plan: Arc::clone(&file_plan),
            batch,
            first_row: row,
            consumed: consumed.load(Ordering::Relaxed),
            memory,
        };
        if !submit.submit(job) {
            return Ok(false);
        }
        row += n;
    }
    Ok(true)
}

/// Sequence numbers to (input, row): the first sequence number of each input.
pub(crate) struct Inputs {
    starts: Vec<(u64, String)>,
}

impl Locate for Inputs {
    fn locate(&self, seq: u64) -> Location {
        let i = self
            .starts
            .partition_point(|(s, _)| *s <= seq)
            .saturating_sub(1);
        let (start, name) = &self.starts[i];
        Location {
            input: name.clone(),
            row: seq - start + 1,
        }
    }
}

/// What reading the inputs did.
pub(crate) struct ReadAll {
    /// Rows read.
    pub rows: u64,
    /// Bytes read (file sizes, or bytes consumed from streams).
    pub bytes: u64,
    /// Where each row came from.
    pub inputs: Inputs,
}

/// The read stage: every input through the pipeline, each batch's pairs into `sorter` in input
/// order, with progress.
#[allow(clippy::too_many_arguments)]
pub(crate) fn read_inputs(
    sources: &[Source],
    first: read::Opened,
    plan: &Arc<Plan>,
    settings: &read::Settings,
    sorter: &mut Sorter,
    threads: usize,
    in_flight: usize,
    progress: &dyn Progress,
    interrupt: &Interrupt,
) -> Result<ReadAll> {
    let total_bytes: Option<u64> = sources.iter().map(|s| s.size).sum();
    progress.start(Phase::Read, total_bytes);
    let mut inputs = Inputs { starts: Vec::new() };
    let mut seq = 0u64;
    let mut bytes_done = 0u64;
    let spill_report = SpillReport { progress };
    let mut pipeline = Pipeline::start(
        Reader {
            sources: sources.to_vec(),
            first,
            plan: Arc::clone(plan),
            settings: settings.clone(),
        },
        threads,
        in_flight,
    );
    // The input being read: its source, rows (when known), bytes consumed, rows so far.
    let mut current: Option<(&Source, Option<u64>, Arc<AtomicU64>)> = None;
    let mut row = 0u64;
    let input_bytes = |current: &Option<(&Source, Option<u64>, Arc<AtomicU64>)>| {
        current.as_ref().map_or(0, |(source, _, consumed)| {
            source
                .size
                .unwrap_or_else(|| consumed.load(Ordering::Relaxed))
        })
    };
    while let Some(event) = pipeline.next() {
        interrupt.check()?;
        match event? {
            Event::Input {
                index,
                rows,
                consumed,
            } => {
                bytes_done += input_bytes(&current);
                let source = &sources[index];
                inputs.starts.push((seq, source.name.clone()));
                current = Some((source, rows, consumed));
                row = 0;
            }
            Event::Batch {
                pairs,
                rows,
                consumed,
                memory,
            } => {
                sorter.push(pairs, seq, &inputs, &spill_report)?;
                pipeline.done_with(memory);
                row += rows as u64;
                seq += rows as u64;
                let Some((source, file_rows, _)) = &current else {
                    continue;
                };
                let in_file = match (file_rows, source.size) {
                    (Some(n), Some(size)) if *n > 0 => size * row / n,
                    _ => consumed,
                };
                progress.update(
                    Phase::Read,
                    bytes_done + in_file,
                    &format!("{seq} rows from {}", source.name),
                );
            }
            Event::End => bytes_done += input_bytes(&current),
        }
    }
    drop(pipeline);
    progress.finish(Phase::Read);
    Ok(ReadAll {
        rows: seq,
        bytes: bytes_done,
        inputs,
    })
}
