//! An ordered parallel map: jobs are numbered as they are submitted, worker threads do them in
//! any order, and the results come back in submission order.
//!
//! The snapshot writer compresses groups of blocks with it; the builder uses it for the pairs of
//! record batches (a reader thread submits, the building thread receives) and for the
//! compressed frames of its temporary sort runs.
//!
//! - At most `queue` jobs wait for a worker: [`Submitter::submit`] blocks beyond that, so a fast
//!   submitter cannot pile up memory. Results wait unbounded until [`Pool::recv`] takes them;
//!   callers bound them by not submitting more than they intend to hold
//!   ([`Submitter::submitted`] minus [`Pool::received`]).
//! - A job that panics is reported as a missing result ([`Pool::recv`] returns `None` in its
//!   place), never as a receiver waiting forever for it.
//! - Nothing joins the worker threads: they end when every [`Submitter`] is gone and the queue is
//!   empty, or as soon as a result finds the [`Pool`] dropped. So dropping a `Pool` never waits
//!   for a submitter that is itself stuck (a reader blocked on stdin).
//!
//! Machinery shared with the builder, not part of the format's API.

use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

/// Worker threads for a `threads` setting: the number given, or one per core for 0.
pub fn threads(setting: usize) -> usize {
    match setting {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The receiving end: results in submission order.
pub struct Pool<O> {
    /// Results by job number; `None` when the job panicked.
    results: Receiver<(u64, Option<O>)>,
    /// The next number to hand out.
    next: u64,
    /// Results that came back before an earlier one.
    ready: BTreeMap<u64, Option<O>>,
}

/// The submitting end; it may move to another thread.
pub struct Submitter<I> {
    jobs: SyncSender<(u64, I)>,
    next: u64,
}

/// Starts `threads` workers (at least one), each with its own `state()`, doing
/// `work(&mut state, job)`. At most `queue` jobs (at least one) wait for a worker;
/// [`Submitter::submit`] blocks beyond that.
pub fn start<I, O, S>(
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
                // A worker that panicked has left its state behind, not the lock: the
                // receiver is still sound.
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok((n, input)) = job else { return };
                // A panic is reported as a missing result (the receiver then stops), not
                // left to hang a receiver that waits for job `n`. The worker's state may be
                // half-updated, so the worker ends.
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
    /// Queues a job, blocking while the queue is full; false when the pool is gone.
    pub fn submit(&mut self, input: I) -> bool {
        let n = self.next;
        self.next += 1;
        self.jobs.send((n, input)).is_ok()
    }

    /// Jobs submitted so far.
    pub fn submitted(&self) -> u64 {
        self.next
    }
}

impl<O> Pool<O> {
    /// The next result in submission order, waiting for it; `None` once every submitter is gone
    /// and every result has been handed out, or when that job panicked.
    pub fn recv(&mut self) -> Option<O> {
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
    pub fn received(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;

    #[test]
    fn results_come_back_in_order() {
        let (mut submit, mut pool) = start(
            3,
            2,
            || 0u64,
            |calls: &mut u64, n: u64| {
                *calls += 1;
                // Later jobs tend to finish first.
                std::thread::sleep(std::time::Duration::from_micros(200 - n * 10));
                n * 2
            },
        );
        let sender = std::thread::spawn(move || {
            for n in 0..20 {
                assert!(submit.submit(n));
            }
        });
        let got: Vec<u64> = std::iter::from_fn(|| pool.recv()).collect();
        sender.join().unwrap();
        assert_eq!(got, (0..20).map(|n| n * 2).collect::<Vec<_>>());
        assert_eq!(pool.received(), 20);
    }

    #[test]
    fn out_of_order_completion_is_reordered() {
        // Job 0 waits until job 1 is done: job 1's result necessarily arrives first.
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let release_tx = Mutex::new(release_tx);
        let (mut submit, mut pool) = start(
            2,
            2,
            || (),
            move |_: &mut (), n: u32| {
                if n == 0 {
                    release_rx.lock().unwrap().recv().unwrap();
                } else {
                    release_tx.lock().unwrap().send(()).unwrap();
                }
                n
            },
        );
        assert!(submit.submit(0));
        assert!(submit.submit(1));
        drop(submit);
        assert_eq!(pool.recv(), Some(0));
        assert_eq!(pool.recv(), Some(1));
        assert_eq!(pool.recv(), None);
    }

    #[test]
    fn a_panicking_job_is_a_missing_result() {
        let (mut submit, mut pool) = start(
            2,
            4,
            || (),
            |_: &mut (), n: u32| {
                assert_ne!(n, 1, "job 1 fails");
                n
            },
        );
        for n in 0..3 {
            assert!(submit.submit(n));
        }
        drop(submit);
        assert_eq!(pool.recv(), Some(0));
        assert_eq!(pool.recv(), None);
        assert_eq!(pool.received(), 2);
        // The other worker still does job 2.
        assert_eq!(pool.recv(), Some(2));
    }

    #[test]
    fn dropping_the_pool_does_not_wait_for_a_stuck_submitter() {
        let (mut submit, pool) = start(1, 1, || (), |_: &mut (), n: u32| n);
        let (unblock_tx, unblock_rx) = channel::<()>();
        let (done_tx, done_rx) = channel::<bool>();
        let submitter = std::thread::spawn(move || {
            // Stuck, like a reader waiting on stdin, while the pool is dropped.
            unblock_rx.recv().unwrap();
            // The worker ends on its first result that finds the pool gone; from then on
            // submitting fails rather than blocking.
            let mut accepted = 0u32;
            while submit.submit(accepted) {
                accepted += 1;
            }
            done_tx.send(true).unwrap();
        });
        drop(pool);
        unblock_tx.send(()).unwrap();
        assert_eq!(done_rx.recv(), Ok(true));
        submitter.join().unwrap();
    }
}
