//! An ordered parallel map: jobs are numbered as they are submitted, worker threads do them in
//! any order, and the results come back in submission order.
//!
//! Used for the pairs of record batches (a reader thread submits, the building thread receives)
//! and for the compressed frames of spilled runs (the building thread does both).

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// The receiving end: results in submission order.
///
/// The worker threads are not joined: they end when every [`Submitter`] is gone and the queue is
/// empty, or as soon as a result finds the `Pool` dropped. So dropping a `Pool` never waits for a
/// submitter that is itself stuck (a reader blocked on stdin).
pub(crate) struct Pool<O> {
    /// Results by job number; `None` when the job panicked.
    results: Receiver<(u64, Option<O>)>,
    /// The next number to hand out.
    next: u64,
    /// Results that came back before an earlier one.
    ready: BTreeMap<u64, Option<O>>,
}

/// The submitting end; it may move to another thread.
pub(crate) struct Submitter<I> {
    jobs: SyncSender<(u64, I)>,
    next: u64,
}

/// Starts `threads` workers, each with its own `state()`, doing `work(&mut state, job)`. At most
/// `queue` jobs wait for a worker; [`Submitter::submit`] blocks beyond that.
pub(crate) fn start<I, O, S>(
    threads: usize,
    queue: usize,
    state: impl Fn() -> S + Send + Sync + 'static,
    work: impl Fn(&mut S, I) -> O + Send + Sync + 'static,
) -> (Submitter<I>, Pool<O>)
where
    I: Send + 'static,
    O: Send + 'static,
{
    let (jobs, job_rx) = mpsc::sync_channel::<(u64, I)>(queue.max(1));
    let (result_tx, results) = mpsc::channel();
    let job_rx = Arc::new(Mutex::new(job_rx));
    let shared = Arc::new((state, work));
    for _ in 0..threads.max(1) {
        let job_rx = Arc::clone(&job_rx);
        let result_tx = result_tx.clone();
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || {
            let (state, work) = &*shared;
            let mut state = state();
            loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((n, input)) = job else { return };
                // A panic is reported as a missing result (the receiver then stops), not
                // left to hang a receiver that waits for job `n`.
                let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    work(&mut state, input)
                }));
                let failed = out.is_err();
                if result_tx.send((n, out.ok())).is_err() || failed {
                    return;
                }
            }
        });
    }
    (
        Submitter { jobs, next: 0 },
        Pool {
            results,
            next: 0,
            ready: BTreeMap::new(),
        },
    )
}

impl<I> Submitter<I> {
    /// Queues a job; false when the pool is gone.
    pub(crate) fn submit(&mut self, input: I) -> bool {
        let n = self.next;
        self.next += 1;
        self.jobs.send((n, input)).is_ok()
    }

    /// Jobs submitted so far.
    pub(crate) fn submitted(&self) -> u64 {
        self.next
    }
}

impl<O> Pool<O> {
    /// The next result in submission order; `None` once every submitter is gone and every
    /// result has been handed out, or when that job's worker panicked.
    pub(crate) fn next(&mut self) -> Option<O> {
        loop {
            if let Some(out) = self.ready.remove(&self.next) {
                self.next += 1;
                return out;
            }
            let (n, out) = self.results.recv().ok()?;
            self.ready.insert(n, out);
        }
    }

    /// Results handed out so far.
    pub(crate) fn received(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_order() {
        let (mut submit, mut pool) = start(
            3,
            2,
            || 0u64,
            |calls: &mut u64, n: u64| {
                *calls += 1;
                // Later jobs finish first.
                std::thread::sleep(std::time::Duration::from_micros(200 - n * 10));
                n * 2
            },
        );
        let sender = std::thread::spawn(move || {
            for n in 0..20 {
                assert!(submit.submit(n));
            }
        });
        let got: Vec<u64> = std::iter::from_fn(|| pool.next()).collect();
        sender.join().unwrap();
        assert_eq!(got, (0..20).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(pool.received(), 20);
    }
}
