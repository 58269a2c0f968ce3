//! The server: accept loop, connection cap, per-connection tasks with timeouts, graceful drain.

use crate::api::State;
use crate::conn::Activity;
use crate::metrics::Metrics;
use crate::registry::Dataset;
use crate::sync::Source;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// Request and connection limits. Every one has a default and a `snapkv serve` flag.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest key accepted in a request. Default: 4096 bytes (the format's limit).
    pub max_key_bytes: usize,
    /// Largest request body (mget). Default: 1 MiB.
    pub max_body_bytes: usize,
    /// Most keys in one mget. Default: 1000.
    pub max_mget_keys: usize,
    /// Largest scan page. Default: 1000.
    pub max_scan_limit: usize,
    /// Scan page size when `limit` is not given. Default: 100.
    pub default_scan_limit: usize,
    /// Largest mget or scan answer: an mget over it is refused, a scan page ends early with a
    /// cursor (a page always holds at least one entry). Default: 16 MiB.
    pub max_response_bytes: usize,
    /// Time a new connection has to send its first request's headers, counted from its start
    /// whatever it sends meanwhile. Default: 10 s.
    pub header_read_timeout: Duration,
    /// Time a client has to send a request body (408 beyond). At most `idle_timeout`.
    /// Default: 10 s.
    pub body_read_timeout: Duration,
    /// A connection on which no request started or ended for this long is closed (HTTP/2
    /// with GOAWAY): keep-alive connections between requests, and requests whose answer the
    /// client does not take. Default: 60 s.
    pub idle_timeout: Duration,
    /// Most connections served at once; more wait to be accepted. Default: 4096.
    pub max_connections: usize,
    /// Most requests answered at once over all connections (HTTP/2 multiplexes up to 64 on
    /// one connection); more are refused with 503. `/healthz`, `/readyz` and `/metrics` are
    /// not counted: they answer under any load. Default: 512.
    pub max_in_flight: usize,
    /// Longest request target (path and query). Default: 8 KiB.
    pub max_uri_bytes: usize,
    /// Most bytes of request headers (names and values). Default: 16 KiB.
    pub max_header_bytes: usize,
    /// What one `POST .../query` may read and hold (rows scanned, bytes, time, groups).
    pub query: snapkv_query::Limits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: snapkv_format::MAX_KEY_LEN,
            max_body_bytes: 1 << 20,
            max_mget_keys: 1000,
            max_scan_limit: 1000,
            default_scan_limit: 100,
            max_response_bytes: 16 << 20,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 4096,
            max_in_flight: 512,
            max_uri_bytes: 8 << 10,
            max_header_bytes: 16 << 10,
            query: snapkv_query::Limits::default(),
        }
    }
}

/// Server settings.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// The datasets and where they come from.
    pub sources: Vec<Source>,
    /// Request limits.
    pub limits: Limits,
    /// How often sources are checked for a new version. Default: 10 s.
    pub poll_interval: Duration,
    /// Block cache bound per dataset, in bytes. Default: 256 MiB.
    pub cache_bytes: usize,
    /// Copy the index sections of served files into anonymous memory, in huge pages where the
    /// system allows them ([`snapkv_format::OpenOptions::index_in_memory`]): faster lookups for
    /// about 6 B of memory per key. Default: true.
    pub index_in_memory: bool,
    /// How long in-flight requests may take to finish on shutdown. Default: 30 s.
    pub drain_timeout: Duration,
    /// Also hold the newest staged version of each store dataset (the one its `STAGED`
    /// names, when newer than `CURRENT`), for requests pinned to it. It is downloaded into
    /// `<cache dir>/.staged/` and never served unpinned, nor at start-up. Default: false.
    pub preview_staged: bool,
    /// The shards of sharded versions this reader holds (a run of them, downloaded and
    /// served); keys of the other shards go to peers. Default: all.
    pub shards: Option<snapkv_format::Selection>,
    /// Other readers of the same datasets, which tell each other the shards they hold
    /// (`GET /v1/shards`). Default: none.
    pub peers: Vec<crate::Peer>,
    /// Requests for keys of shards held elsewhere are forwarded to a peer that holds them;
    /// when false (or for requests forwarded already) they are answered with
    /// `421 Misdirected Request` naming the owners. Default: true.
    pub forward: bool,
    /// How often peers are asked which shards they hold (and DNS names resolved again).
    /// Default: 2 s.
    pub peer_refresh: Duration,
    /// How long a peer has to answer a forwarded request. Default: 5 s.
    pub forward_timeout: Duration,
    /// Serve the explorer, a read-only page over this API, at `/ui/`. Default: true.
    pub ui: bool,
    /// Most bytes the cache directory of store versions may hold, partial downloads
    /// included: a new version that would not fit releases the previous version first, as a
    /// full disk does. Default: none (what the disk has).
    pub cache_dir_limit: Option<u64>,
    /// Fetch a new version by delta: copy the data blocks that versions in the cache
    /// directory already hold, and read only the rest from storage. Default: true.
    pub delta_sync: bool,
    /// In a delta fetch, reusable bytes read anyway between two missing stretches, saving a
    /// request each. Default: 0.
    pub delta_sync_gap: u64,
    /// When a store dataset that serves nothing yet is ready: `false` once its version is
    /// downloaded and verified; `true` once it is opened lazily (its footer and index
    /// sections read), its blocks then read from storage as lookups need them while the rest
    /// downloads. Default: false.
    pub ready_when_opened: bool,
    /// How long a lookup on a lazily opened version waits for a block still in storage
    /// before it is answered `503`. Default: 5 s.
    pub lazy_timeout: Duration,
    /// Bandwidth bound of downloads of store versions, in bytes per second. Default: none.
    pub max_download_rate: Option<u64>,
}

impl Config {
    /// A configuration serving `sources` with default settings.
    pub fn new(sources: Vec<Source>) -> Config {
        Config {
            sources,
            limits: Limits::default(),
            poll_interval: Duration::from_secs(10),
            cache_bytes: 256 << 20,
            index_in_memory: true,
            drain_timeout: Duration::from_secs(30),
            preview_staged: false,
            shards: None,
            peers: Vec::new(),
            forward: true,
            peer_refresh: Duration::from_secs(2),
            forward_timeout: Duration::from_secs(5),
            ui: true,
            cache_dir_limit: None,
            delta_sync: true,
            delta_sync_gap: 0,
            ready_when_opened: false,
            lazy_timeout: Duration::from_secs(5),
            max_download_rate: None,
        }
    }
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Two sources name the same dataset.
    #[error("dataset {0:?} is configured twice")]
    DuplicateDataset(String),
    /// No dataset to serve.
    #[error("nothing to serve: give at least one source")]
    NoSources,
    /// A limit is out of range.
    #[error("bad limit: {0}")]
    BadLimit(String),
    /// Accepting connections failed.
    #[error("cannot accept connections")]
    Io(#[from] std::io::Error),
}

/// How long a connection closed for idleness may take to finish what it was writing.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Serves the HTTP API on `listener` until `shutdown` completes, then stops accepting, lets
/// in-flight requests finish (up to the drain timeout) and returns.
///
/// Datasets load in the background: `/readyz` answers 503 until each has a version, and a
/// dataset whose source fails keeps serving the version it has.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    if config.sources.is_empty() {
        return Err(ServeError::NoSources);
    }
    let limits = config.limits.clone();
    check_limits(&limits, &config)?;
    let metrics = Metrics::new();
    let mut datasets = BTreeMap::new();
    for source in &config.sources {
        let name = source.name().to_owned();
        let counters = metrics.dataset_counters(&name);
        let store = match source {
            Source::Store { store, .. } => Some(store.clone()),
            _ => None,
        };
        let d = Arc::new(Dataset::new(
            name.clone(),
            source.describe(),
            store,
            counters,
        ));
        if datasets.insert(name.clone(), d).is_some() {
            return Err(ServeError::DuplicateDataset(name));
        }
    }
    let cluster = crate::cluster::Cluster::new(&config);
    let state = Arc::new(State::new(
        datasets,
        limits.clone(),
        metrics,
        cluster,
        config.ui,
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut syncs = Vec::new();
    let how = crate::sync::Follow {
        interval: config.poll_interval,
        open: {
            let mut open = snapkv_format::OpenOptions::default();
            open.cache_bytes = config.cache_bytes;
            open.index_in_memory = config.index_in_memory;
            open
        },
        preview_staged: config.preview_staged,
        shards: config.shards,
        cache_limit: config.cache_dir_limit,
        delta: config.delta_sync,
        delta_gap: config.delta_sync_gap,
        lazy: config.ready_when_opened.then_some(config.lazy_timeout),
        max_download_rate: config.max_download_rate,
    };
    for source in config.sources.clone() {
        let d = Arc::clone(&state.datasets[source.name()]);
        syncs.push(tokio::spawn(crate::sync::follow(
            source,
            d,
            how.clone(),
            stop_rx.clone(),
        )));
    }
    if !config.peers.is_empty() {
        syncs.push(tokio::spawn(crate::cluster::follow_peers(
            Arc::clone(&state),
            config.peer_refresh,
            stop_rx.clone(),
        )));
    }

    let builder = Arc::new(http_builder(&limits));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => permit.expect("never closed"),
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Typically out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tokio::spawn(serve_connection(
            stream,
            permit,
            Arc::clone(&state),
            Arc::clone(&builder),
            stop_rx.clone(),
            config.drain_timeout,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let open = limits.max_connections - connections.available_permits();
    tracing::info!(connections = open, "draining");
    // Every connection task holds a permit until it ends, and ends by the drain timeout.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let drained = tokio::time::timeout(
        config.drain_timeout + IDLE_CLOSE_GRACE,
        connections.acquire_many(all),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("drain timeout: closed the remaining connections");
    }
    for s in syncs {
        s.abort();
    }
    Ok(())
}

/// The longest timeout accepted: far beyond any sensible setting, and far from the limits of
/// the clock's arithmetic.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

fn check_limits(limits: &Limits, config: &Config) -> Result<(), ServeError> {
    let drain_timeout = config.drain_timeout;
    let bad = |m: String| Err(ServeError::BadLimit(m));
    let max_connections = usize::try_from(u32::MAX)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS);
    if !(1..=max_connections).contains(&limits.max_connections) {
        return bad(format!("max connections must be 1 to {max_connections}"));
    }
    if limits.max_in_flight == 0 {
        return bad("max in-flight must be at least 1".into());
    }
    for (name, t) in [
        ("peer refresh", config.peer_refresh),
        ("forward timeout", config.forward_timeout),
        ("header read timeout", limits.header_read_timeout),
        ("body read timeout", limits.body_read_timeout),
        ("idle timeout", limits.idle_timeout),
        ("drain timeout", drain_timeout),
    ] {
        if t.is_zero() || t > MAX_TIMEOUT {
            return bad(format!("{name} must be more than 0 and at most 7 days"));
        }
    }
    if limits.body_read_timeout > limits.idle_timeout {
        return bad(format!(
            "the body read timeout ({:?}) must not exceed the idle timeout ({:?}), which would \
             close the connection first",
            limits.body_read_timeout, limits.idle_timeout
        ));
    }
    Ok(())
}

fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        // The connection task bounds the wait for a request (from the connection's start,
        // then the idle timeout); hyper's own timer would restart between keep-alive requests.
        .header_read_timeout(None)
        .keep_alive(true)
        // A client may shut down its sending side once its request is out and still read
        // the answer.
        .half_close(true);
    // HTTP/2 counts 32 bytes per field on top of names and values: leave room for the
    // server's own check of the header size to answer first, with a JSON error.
    let header_list = u32::try_from(limits.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(64)
        .max_header_list_size(header_list.max(16 << 10));
    builder
}

/// Serves one connection until it ends, the server shuts down (graceful, then closed at the
/// drain timeout) or the client goes quiet: no request within the header timeout of
/// connecting, or no request started or answered for the idle timeout. What else the client
/// sends (a byte at a time, HTTP/2 PINGs) does not keep a connection open.
async fn serve_connection(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    mut stop: watch::Receiver<bool>,
    drain_timeout: Duration,
) {
    let _permit = permit;
    let _ = stream.set_nodelay(true);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(stream);
    let service = {
        let (state, activity) = (Arc::clone(&state), Arc::clone(&activity));
        hyper::service::service_fn(move |req| {
            let request = activity.request_started();
            let state = Arc::clone(&state);
            async move {
                let mut response = crate::api::handle(state, req).await?;
                response.body_mut().hold(request);
                Ok::<_, std::convert::Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    let limits = &state.limits;
    let (header_timeout, idle_timeout) = (limits.header_read_timeout, limits.idle_timeout);
    // Set once the connection was asked to close: then it has until this instant.
    let mut closing_by: Option<Instant> = None;
    loop {
        let deadline = closing_by.or_else(|| activity.next_check(header_timeout, idle_timeout));
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.changed(), if closing_by.is_none() => {
                // The server is shutting down (or gone): finish what is in flight, then close.
                conn.as_mut().graceful_shutdown();
                closing_by = Instant::now().checked_add(drain_timeout);
            }
            () = sleep_until(deadline) => {
                if closing_by.is_some() {
                    tracing::debug!("connection closed: it did not finish in time");
                    return;
                }
                // A request may have moved the deadline while this timer slept.
                if activity.is_quiet(header_timeout, idle_timeout) {
                    tracing::debug!(requests = activity.requests(), "closing a quiet connection");
                    conn.as_mut().graceful_shutdown();
                    closing_by = Instant::now().checked_add(IDLE_CLOSE_GRACE);
                }
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
