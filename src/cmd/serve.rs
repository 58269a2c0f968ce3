//! `snapkv serve`: the HTTP reader.

use anyhow::Context;
use snapkv_reader::{Config, Limits, Source};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  snapkv serve --file predictions=predictions.snapkv
  snapkv serve --store s3://bucket/snapshots --dataset predictions --cache-dir /var/cache/snapkv
  snapkv serve --store s3://bucket/snapshots --dataset predictions --ready-when opened
  curl localhost:8080/v1/datasets/predictions/keys/user:42
  curl -X POST localhost:8080/v1/datasets/predictions/mget -d '{\"keys\": [\"user:42\", \"user:43\"]}'
  curl 'localhost:8080/v1/datasets/predictions/scan?prefix=user:&limit=10'
  curl localhost:8080/v1/datasets/predictions/query -d '{\"prefix\": \"user:\", \"aggregates\": {\"n\": {\"count\": \"*\"}}}'

A request pinned to a version (header X-Snapkv-Version: V, or ?version=V) is answered by that
version if this reader holds it (the current one, the previous one, or with --preview-staged
the newest staged one), else refused with 409 version_not_held:
  curl -H 'X-Snapkv-Version: 20261130T031500Z' localhost:8080/v1/datasets/predictions/keys/user:42

Readers holding part of a sharded version (shards 0-3 and 4-7 of 8, say) forward requests for
keys they do not hold to a peer that holds them (mget fans out by shard, scans cross shards with
one cursor, each answer from one version); peers tell each other what they hold:
  snapkv serve --store s3://bucket/snapshots --dataset predictions --shards 0-3 --peers http://reader-b:8080
  snapkv serve --store s3://bucket/snapshots --dataset predictions --shard-of 1/2 --peers dns+http://snapkv-readers:8080
Without --peers (or with --no-forward) such requests are answered 421 Misdirected Request,
naming the shard and its owners.

The explorer, a read-only page over the API (datasets, lookups, scans, queries with charts,
live metrics), is at http://ADDR/ui/ (--ui false turns it off).

The API is specified in spec/openapi.yaml. SIGTERM or Ctrl-C stops accepting connections, lets
in-flight requests finish and exits 0.";

/// Serve datasets over HTTP from memory-mapped snapshots, swapping in new versions live.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Serve a local snapshot file as dataset NAME; reloaded when the path is replaced by a new
    /// file (write elsewhere, then rename over it). Repeatable.
    #[arg(long = "file", value_name = "NAME=PATH", value_parser = parse_file_source)]
    files: Vec<(String, PathBuf)>,
    /// Store to follow: s3://BUCKET/PREFIX, gs://…, az://…, file:///DIR or a local directory.
    #[arg(long, value_name = "URL", env = "SNAPKV_STORE", requires = "datasets")]
    store: Option<String>,
    /// Dataset of --store to serve (its CURRENT version); repeatable.
    #[arg(long = "dataset", value_name = "NAME", requires = "store")]
    datasets: Vec<String>,
    /// Store option KEY=VALUE, repeatable (endpoint, region, allow_http, …; AWS_*, GOOGLE_*
    /// and AZURE_* environment variables are read too).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = super::store_args::parse_option)]
    store_options: Vec<(String, String)>,
    /// Also download the newest staged version of each --dataset (`snapkv publish --stage`)
    /// and answer requests pinned to it, for a canary check before `snapkv promote`. Staged
    /// versions go to <cache-dir>/.staged/ and are never served unpinned, nor at start-up.
    #[arg(long, requires = "store")]
    preview_staged: bool,
    /// Hold only shards FIRST-LAST (or one shard, N) of sharded versions: only their files
    /// are downloaded; keys of other shards go to --peers.
    #[arg(long, value_name = "FIRST-LAST", value_parser = parse_shard_range, requires = "store", conflicts_with = "shard_of", env = "SNAPKV_SHARDS")]
    shards: Option<snapkv_format::Selection>,
    /// Hold this reader's share of the shards: ORDINAL (from 0) of REPLICAS readers, each
    /// holding a contiguous run (a StatefulSet pod's ordinal: the pod-index label).
    #[arg(long, value_name = "ORDINAL/REPLICAS", value_parser = parse_shard_of, requires = "store", env = "SNAPKV_SHARD_OF")]
    shard_of: Option<snapkv_format::Selection>,
    /// Other readers of the same datasets, comma-separated: http://host:port, or
    /// dns+http://name:port for every address of a name (a headless Service), resolved again
    /// at each refresh. They learn each other's shards from GET /v1/shards.
    #[arg(
        long,
        value_name = "URL,...",
        value_delimiter = ',',
        env = "SNAPKV_PEERS"
    )]
    peers: Vec<snapkv_reader::Peer>,
    /// Answer requests for shards held elsewhere with 421 Misdirected Request (naming the
    /// owners) instead of forwarding them.
    #[arg(long)]
    no_forward: bool,
    /// How often peers are asked which shards they hold.
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = super::parse_duration)]
    peer_refresh: Duration,
    /// Serve the explorer (a read-only page over this API: datasets, lookups, scans, queries
    /// with charts, live metrics) at /ui/.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, env = "SNAPKV_UI")]
    ui: bool,
    /// How long a peer has to answer a forwarded request.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::parse_duration)]
    forward_timeout: Duration,
    /// Where store versions are downloaded; a verified version found here is served at start,
    /// before (and without) the store answering.
    #[arg(
        long,
        value_name = "DIR",
        default_value = "snapkv-cache",
        env = "SNAPKV_CACHE_DIR"
    )]
    cache_dir: PathBuf,
    /// Bytes the cache dir should stay under (all datasets, partial downloads included),
    /// checked before each download. A reader keeps the served version, the previous one and
    /// the one it fetches; when the next version would not fit (under this limit, or on a
    /// full disk), the previous one is released first. Default: what the disk has.
    #[arg(long, value_name = "SIZE", value_parser = snapkv_builder::parse_size, env = "SNAPKV_CACHE_DIR_LIMIT")]
    cache_dir_limit: Option<u64>,
    /// Download every new version whole. By default a new version's file is assembled from
    /// the data blocks that versions in the cache dir already hold, and only the rest is read
    /// from storage (then verified as a whole download is).
    #[arg(long)]
    no_delta_sync: bool,
    /// In a delta sync, read up to this many bytes of blocks the cache has between two
    /// missing stretches rather than make another request: 0 moves the fewest bytes (keys
    /// changed at random places then take one request per changed block); 64KiB or more
    /// suits stores that bill per request or sit far away.
    #[arg(long, value_name = "SIZE", default_value = "0", value_parser = snapkv_builder::parse_size)]
    delta_sync_gap: u64,
    /// When a dataset with nothing in the cache dir is ready to serve. `downloaded`: once its
    /// version is downloaded and verified. `opened`: as soon as its footer and index
    /// sections are read (a fraction of the file): lookups then read the blocks they need
    /// from storage by range (each checked against its checksum) while the rest downloads
    /// in the background, and the version is verified as a download is once complete.
    #[arg(long, value_name = "WHEN", default_value = "downloaded", value_parser = ["downloaded", "opened"], env = "SNAPKV_READY_WHEN")]
    ready_when: String,
    /// With --ready-when opened: how long a lookup waits for a block still in storage
    /// before it is answered 503 not_local (with Retry-After).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::parse_duration)]
    lazy_timeout: Duration,
    /// Bandwidth bound of the downloads of new versions, in bytes per second (2MiB, 100MB,
    /// …); lookups waiting for blocks of a lazily opened version are not held to it.
    /// Default: none.
    #[arg(long, value_name = "SIZE", value_parser = snapkv_builder::parse_size)]
    max_download_rate: Option<u64>,
    /// Address to listen on.
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "SNAPKV_LISTEN"
    )]
    listen: SocketAddr,
    /// How often sources are checked for a new version.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::parse_duration, env = "SNAPKV_POLL_INTERVAL")]
    poll_interval: Duration,
    /// Block cache bound per dataset (decompressed blocks kept for the next lookup). With room
    /// for all of a file's decompressed blocks the cache is a table by block number: lookups
    /// take no lock and nothing is evicted.
    #[arg(long, value_name = "SIZE", default_value = "256MiB", value_parser = snapkv_builder::parse_size, env = "SNAPKV_CACHE_BYTES")]
    cache_bytes: u64,
    /// Copy each served file's index sections (FST index, filter, hash lookup) into anonymous
    /// memory, in huge pages where the system allows them: faster lookups (fewer page-table
    /// misses) for about 6 B of memory per key, shown as snapkv_index_memory_bytes. `false`
    /// reads them from the mapped file.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set, env = "SNAPKV_INDEX_IN_MEMORY")]
    index_in_memory: bool,
    /// Longest key accepted.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::default().max_key_bytes)]
    max_key_bytes: usize,
    /// Largest request body.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = snapkv_builder::parse_size)]
    max_body_bytes: u64,
    /// Most keys in one mget request.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_mget_keys)]
    max_mget_keys: usize,
    /// Largest scan page.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_scan_limit)]
    max_scan_limit: usize,
    /// Largest mget or scan answer: a bigger mget is refused (413), a scan page ends early
    /// with a cursor.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = snapkv_builder::parse_size)]
    max_response_bytes: u64,
    /// Time a new connection has to send its first request's headers, counted from connecting.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::parse_duration)]
    header_read_timeout: Duration,
    /// Time a client has to send a request body.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = super::parse_duration)]
    body_read_timeout: Duration,
    /// Close a connection on which no request started or was answered for this long
    /// (keep-alive and HTTP/2 connections between requests, clients that stop reading).
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = super::parse_duration)]
    idle_timeout: Duration,
    /// Most connections at once; further clients wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections)]
    max_connections: usize,
    /// Longest request target (path and query); longer ones get 414.
    #[arg(long, value_name = "SIZE", default_value = "8KiB", value_parser = snapkv_builder::parse_size)]
    max_uri_bytes: u64,
    /// Most bytes of request headers; more get 431.
    #[arg(long, value_name = "SIZE", default_value = "16KiB", value_parser = snapkv_builder::parse_size)]
    max_header_bytes: u64,
    /// Most requests answered at once, over all connections; more get 503 with Retry-After
    /// (/healthz, /readyz and /metrics are not counted).
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_in_flight)]
    max_in_flight: usize,
    /// Most rows one POST .../query reads (more: 422 over_budget).
    #[arg(long, value_name = "N", default_value_t = Limits::default().query.max_rows_scanned)]
    query_max_rows_scanned: u64,
    /// Most time one query takes (more: 422 over_budget).
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = super::parse_duration)]
    query_max_time: Duration,
    /// Most groups one query holds (more: 422 over_budget).
    #[arg(long, value_name = "N", default_value_t = Limits::default().query.max_groups)]
    query_max_groups: usize,
    /// Threads one grouped query over a key range reads it with, each a part of at least 16
    /// blocks (default: the machine's cores, at most 4; 1: the request's own thread only).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    query_threads: Option<u16>,
    /// How long in-flight requests may take to finish on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = super::parse_duration)]
    drain_timeout: Duration,
    /// Threads answering requests (0: one per CPU the process may use).
    #[arg(
        long,
        value_name = "N",
        default_value_t = 0,
        env = "SNAPKV_WORKER_THREADS"
    )]
    worker_threads: usize,
}

fn parse_shard_range(s: &str) -> Result<snapkv_format::Selection, String> {
    let number = |n: &str| {
        n.trim()
            .parse::<usize>()
            .map_err(|_| format!("expected FIRST-LAST shard numbers (0-3), or one (5), got {s:?}"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (number(a)?, number(b)?),
        None => (number(s)?, number(s)?),
    };
    if first > last {
        return Err(format!("{s:?}: the first shard is after the last"));
    }
    Ok(snapkv_format::Selection::Range { first, last })
}

fn parse_shard_of(s: &str) -> Result<snapkv_format::Selection, String> {
    let bad = || format!("expected ORDINAL/REPLICAS (0/2: the first of 2 readers), got {s:?}");
    let (o, r) = s.split_once('/').ok_or_else(bad)?;
    let (ordinal, replicas) = (
        o.trim().parse::<usize>().map_err(|_| bad())?,
        r.trim().parse::<usize>().map_err(|_| bad())?,
    );
    if replicas == 0 || ordinal >= replicas {
        return Err(format!(
            "{s:?}: the ordinal is from 0 to REPLICAS - 1 (0/2 and 1/2 for 2 readers)"
        ));
    }
    Ok(snapkv_format::Selection::OrdinalOf { ordinal, replicas })
}

fn parse_file_source(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, path)) if !name.is_empty() && !path.is_empty() => {
            Ok((name.to_owned(), PathBuf::from(path)))
        }
        _ => Err(format!("expected NAME=PATH, got {s:?}")),
    }
}

pub fn run(args: Args, log_format: super::LogFormat) -> anyhow::Result<ExitCode> {
    let mut sources: Vec<Source> = args
        .files
        .into_iter()
        .map(|(name, path)| Source::File { name, path })
        .collect();
    if let Some(url) = &args.store {
        let store = snapkv_store::Store::open(url, &args.store_options)
            .with_context(|| format!("cannot open store {url}"))?;
        let cache = snapkv_store::Cache::new(&args.cache_dir);
        for name in &args.datasets {
            sources.push(Source::Store {
                name: name.clone(),
                store: store.clone(),
                cache: cache.clone(),
            });
        }
    }
    if sources.is_empty() {
        anyhow::bail!(
            "nothing to serve: give --file NAME=PATH, or --store URL --dataset NAME (see --help)"
        );
    }
    let mut config = Config::new(sources);
    config.poll_interval = args.poll_interval;
    config.cache_bytes = args.cache_bytes as usize;
    config.index_in_memory = args.index_in_memory;
    config.drain_timeout = args.drain_timeout;
    config.preview_staged = args.preview_staged;
    config.shards = args.shards.or(args.shard_of);
    config.peers = args.peers;
    config.forward = !args.no_forward;
    config.peer_refresh = args.peer_refresh;
    config.forward_timeout = args.forward_timeout;
    config.ui = args.ui;
    config.cache_dir_limit = args.cache_dir_limit;
    config.delta_sync = !args.no_delta_sync;
    config.delta_sync_gap = args.delta_sync_gap;
    config.ready_when_opened = args.ready_when == "opened";
    config.lazy_timeout = args.lazy_timeout;
    config.max_download_rate = args.max_download_rate;
    let limits = &mut config.limits;
    limits.max_key_bytes = args.max_key_bytes;
    limits.max_body_bytes = args.max_body_bytes as usize;
    limits.max_mget_keys = args.max_mget_keys;
    limits.max_scan_limit = args.max_scan_limit;
    limits.default_scan_limit = limits.default_scan_limit.min(args.max_scan_limit);
    limits.max_response_bytes = usize::try_from(args.max_response_bytes).unwrap_or(usize::MAX);
    limits.header_read_timeout = args.header_read_timeout;
    limits.body_read_timeout = args.body_read_timeout;
    limits.idle_timeout = args.idle_timeout;
    limits.max_connections = args.max_connections;
    limits.max_in_flight = args.max_in_flight;
    limits.max_uri_bytes = usize::try_from(args.max_uri_bytes).unwrap_or(usize::MAX);
    limits.max_header_bytes = usize::try_from(args.max_header_bytes).unwrap_or(usize::MAX);
    limits.query.max_rows_scanned = args.query_max_rows_scanned;
    limits.query.max_time = args.query_max_time;
    limits.query.max_groups = args.query_max_groups;
    if let Some(n) = args.query_threads {
        limits.query.threads = usize::from(n);
    }

    super::return_freed_memory();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if args.worker_threads > 0 {
        runtime.worker_threads(args.worker_threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Tests and scripts read this line to find the port when listening on port 0.
        super::print_listening(log_format, addr)?;
        tracing::info!(%addr, "listening");
        snapkv_reader::run(listener, config, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Completes on SIGTERM or Ctrl-C (SIGINT).
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
    }
}
