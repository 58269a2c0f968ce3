//! The server: accept loop, connection cap, per-connection tasks, sync loops, graceful drain.

use crate::metrics::Metrics;
use crate::registry::{Dataset, Loaded};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Request limits. Every one has a default and a `snapkv serve` flag.
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
    /// Time a client has to send a request's headers. Default: 10 s.
    pub header_read_timeout: Duration,
    /// Most connections served at once; more wait to be accepted. Default: 4096.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_key_bytes: snapkv_format::MAX_KEY_LEN,
            max_body_bytes: 1 << 20,
            max_mget_keys: 1000,
            max_scan_limit: 1000,
            default_scan_limit: 100,
            header_read_timeout: Duration::from_secs(10),
            max_connections: 4096,
        }
    }
}

/// Where a dataset's snapshots come from.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Source {
    /// A local snapshot file, reloaded when the path is replaced by a new file.
    File {
        /// Dataset name.
        name: String,
        /// The snapshot file.
        path: PathBuf,
    },
    /// A dataset in a store: its `CURRENT` version is fetched into `cache`, verified, and
    /// served. On start, the newest complete version already in `cache` is served at once.
    Store {
        /// Dataset name (in the store, and as served).
        name: String,
        /// The store.
        store: snapkv_store::Store,
        /// The local cache directory.
        cache: snapkv_store::Cache,
    },
}

impl Source {
    fn name(&self) -> &str {
        match self {
            Source::File { name, .. } | Source::Store { name, .. } => name,
        }
    }

    fn describe(&self) -> String {
        match self {
            Source::File { path, .. } => format!("file:{}", path.display()),
            Source::Store { store, .. } => store.url().to_owned(),
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
    /// How long in-flight requests may take to finish on shutdown. Default: 30 s.
    pub drain_timeout: Duration,
}

impl Config {
    /// A configuration serving `sources` with default settings.
    pub fn new(sources: Vec<Source>) -> Config {
        Config {
            sources,
            limits: Limits::default(),
            poll_interval: Duration::from_secs(10),
            cache_bytes: 256 << 20,
            drain_timeout: Duration::from_secs(30),
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
    /// Accepting connections failed.
    #[error("cannot accept connections")]
    Io(#[from] std::io::Error),
}

pub(crate) struct State {
    pub datasets: BTreeMap<String, Arc<Dataset>>,
    pub limits: Limits,
    pub metrics: Metrics,
}

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
    let metrics = Metrics::new();
    let mut datasets = BTreeMap::new();
    for source in &config.sources {
        let name = source.name().to_owned();
        let d = Arc::new(Dataset::new(name.clone(), source.describe(), &metrics));
        if datasets.insert(name.clone(), d).is_some() {
            return Err(ServeError::DuplicateDataset(name));
        }
    }
    let state = Arc::new(State {
        datasets,
        limits: config.limits.clone(),
        metrics,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut syncs = Vec::new();
    for source in config.sources.clone() {
        let d = Arc::clone(&state.datasets[source.name()]);
        let stop = stop_rx.clone();
        let (interval, cache) = (config.poll_interval, config.cache_bytes);
        syncs.push(tokio::spawn(async move {
            match source {
                Source::File { path, .. } => watch_file(d, path, interval, cache, stop).await,
                Source::Store {
                    store, cache: dir, ..
                } => watch_store(d, store, dir, interval, cache, stop).await,
            }
        }));
    }

    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.limits.header_read_timeout)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(config.limits.max_connections));
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
        let _ = stream.set_nodelay(true);
        let state = Arc::clone(&state);
        let service =
            hyper::service::service_fn(move |req| crate::http::handle(Arc::clone(&state), req));
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    tracing::info!(connections = graceful.count(), "draining");
    if tokio::time::timeout(config.drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing the remaining connections");
    }
    for s in syncs {
        s.abort();
    }
    Ok(())
}

/// What identifies the file at a path: a replaced file has a new inode, size or mtime.
fn file_identity(path: &std::path::Path) -> std::io::Result<(u64, u64, u64, SystemTime)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino(), m.len(), m.modified()?))
}

/// Loads the file at `path` and reloads it whenever the path points at a different file.
async fn watch_file(
    d: Arc<Dataset>,
    path: PathBuf,
    interval: Duration,
    cache_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let mut last = None;
    loop {
        let p = path.clone();
        let id = tokio::task::spawn_blocking(move || file_identity(&p)).await;
        match id {
            Ok(Ok(id)) if Some(id) != last => {
                last = Some(id);
                let p = path.clone();
                // A version label for files without one in their metadata: their mtime.
                let fallback = format!(
                    "mtime-{}",
                    id.3.duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs()
                );
                let loaded = tokio::task::spawn_blocking(move || {
                    Loaded::open(&p, cache_bytes, &fallback, None, false)
                })
                .await;
                match loaded {
                    Ok(Ok(l)) => {
                        d.swap(l);
                        d.record(Ok(()));
                    }
                    Ok(Err(e)) => d.record(Err(error_chain(&e))),
                    Err(e) => d.record(Err(format!("loading task failed: {e}"))),
                }
            }
            Ok(Ok(_)) => d.record(Ok(())),
            Ok(Err(e)) => d.record(Err(format!("cannot read {}: {e}", path.display()))),
            Err(e) => d.record(Err(format!("task failed: {e}"))),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Opens a cached version off the async workers; it was verified when it was fetched.
async fn load_cached(
    cached: snapkv_store::CachedVersion,
    cache: &snapkv_store::Cache,
    cache_bytes: usize,
) -> Result<Loaded, String> {
    let [file] = cached.manifest.files.as_slice() else {
        return Err(format!(
            "version {} has {} files; a served version has exactly one snapshot file",
            cached.version,
            cached.manifest.files.len()
        ));
    };
    let path = cached.path(&file.name);
    let release = crate::registry::CachedRelease {
        cache: cache.clone(),
        dataset: cached.dataset.clone(),
        version: cached.version.clone(),
    };
    let version = cached.version.clone();
    tokio::task::spawn_blocking(move || {
        Loaded::open(&path, cache_bytes, &version, Some(release), true)
    })
    .await
    .map_err(|e| format!("loading task failed: {e}"))?
    .map_err(|e| error_chain(&e))
}

/// Serves the newest complete version in the cache at once (no storage needed), then follows
/// `CURRENT` in the store: each new version is fetched, verified, opened, warmed and swapped in.
/// Whatever fails, the dataset keeps serving what it has and tries again at the next poll.
async fn watch_store(
    d: Arc<Dataset>,
    store: snapkv_store::Store,
    cache: snapkv_store::Cache,
    interval: Duration,
    cache_bytes: usize,
    mut stop: watch::Receiver<bool>,
) {
    let name = d.name.clone();
    let listed = {
        let (c, n) = (cache.clone(), name.clone());
        tokio::task::spawn_blocking(move || c.versions(&n)).await
    };
    // The store's version names (the cache entries), not the labels inside the files.
    let mut served: Option<String> = None;
    if let Ok(Ok(mut versions)) = listed {
        versions.sort_by(|a, b| a.version.cmp(&b.version));
        // Versions beyond the newest two are left over from an earlier run.
        let keep = versions.len().saturating_sub(2);
        for old in versions.drain(..keep) {
            let _ = cache.remove(&old.dataset, &old.version);
        }
        if let Some(newest) = versions.pop() {
            let version = newest.version.clone();
            match load_cached(newest, &cache, cache_bytes).await {
                Ok(l) => {
                    tracing::info!(dataset = %name, %version, "serving the cached version");
                    d.swap(l);
                    served = Some(version);
                }
                Err(e) => d.record(Err(e)),
            }
        }
    }
    let mut tag: Option<snapkv_store::Tag> = None;
    loop {
        let result = match store.poll_current(&name, tag.as_ref()).await {
            Ok(snapkv_store::Poll::Unchanged) => Ok(()),
            Ok(snapkv_store::Poll::Missing) => Err(format!(
                "nothing published for dataset {name:?} in {}",
                store.url()
            )),
            Ok(snapkv_store::Poll::Changed(current)) => {
                let version = current.pointer.version.clone();
                if served.as_deref() == Some(version.as_str()) {
                    tag = Some(current.tag);
                    Ok(())
                } else {
                    let mut options = snapkv_store::FetchOptions::default();
                    // Verify downloads through the mapping, not by reading them into memory.
                    options.open = Arc::new(|p| Ok(crate::open_snapshot(p, &Default::default())?));
                    match store.fetch(&name, &version, &cache, &options).await {
                        Ok(cached) => load_cached(cached, &cache, cache_bytes).await.map(|l| {
                            d.swap(l);
                            served = Some(version);
                            tag = Some(current.tag);
                        }),
                        Err(e) => Err(error_chain(&e)),
                    }
                }
            }
            Err(e) => Err(error_chain(&e)),
        };
        d.record(result);
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

/// `error: cause: cause`, for logs and the dataset info.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}
