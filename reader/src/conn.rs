//! What happened on a connection: when it started, how many requests came and are still being
//! answered, and when one last started or ended. The connection's task reads it to close
//! connections that send no request in time or stay without one for too long, whatever the
//! client keeps sending otherwise (bytes of a preface, HTTP/2 PINGs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub(crate) struct Activity {
    start: Instant,
    /// Milliseconds from `start` to the last request start or end.
    last_ms: AtomicU64,
    requests: AtomicU64,
}

impl Activity {
    pub fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// A request came in; its end is recorded when the returned guard is dropped (with its
    /// response body, once sent).
    pub fn request_started(self: &Arc<Self>) -> RequestGuard {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.touch();
        RequestGuard(Arc::clone(self))
    }

    /// When the connection must have shown a sign of use: the header timeout after its start
    /// while no request came, else the idle timeout after the last request started or ended.
    /// `None` when the deadline is beyond what the clock can represent.
    fn deadline(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        if self.requests.load(Ordering::Relaxed) == 0 {
            self.start.checked_add(header_timeout)
        } else {
            let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            self.start.checked_add(last)?.checked_add(idle_timeout)
        }
    }

    /// When to look again whether the connection is quiet: its deadline, but before the first
    /// request no later than `idle_timeout` from now, since a request then moves the deadline
    /// to the idle timeout after it, which may come before the header timeout.
    pub fn next_check(&self, header_timeout: Duration, idle_timeout: Duration) -> Option<Instant> {
        let deadline = self.deadline(header_timeout, idle_timeout)?;
        if self.requests() == 0 {
            Some(deadline.min(Instant::now().checked_add(idle_timeout)?))
        } else {
            Some(deadline)
        }
    }

    /// Whether the connection is past its deadline.
    pub fn is_quiet(&self, header_timeout: Duration, idle_timeout: Duration) -> bool {
        self.deadline(header_timeout, idle_timeout)
            .is_some_and(|d| d <= Instant::now())
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// Marks a request as answered when dropped.
pub(crate) struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.touch();
    }
}

/// Requests being answered over all connections, up to a bound. A counter rather than a
/// semaphore: nothing ever waits for a slot, and the count is taken on every request.
pub(crate) struct InFlight {
    count: std::sync::atomic::AtomicUsize,
    max: usize,
}

impl InFlight {
    pub fn new(max: usize) -> Arc<InFlight> {
        Arc::new(InFlight {
            count: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// A slot for one request, or `None` when `max` requests are being answered.
    pub fn enter(self: &Arc<Self>) -> Option<InFlightGuard> {
        if self.count.fetch_add(1, Ordering::AcqRel) >= self.max {
            self.count.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(InFlightGuard(Arc::clone(self)))
    }
}

/// One request's slot, given back when dropped.
pub(crate) struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
    }
}
