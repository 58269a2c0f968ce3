//! Prometheus metrics: request counters and latency histograms per route and status, lookups,
//! and per dataset gauges refreshed at scrape time.

use crate::registry::Dataset;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RouteStatus {
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Lookup {
    pub dataset: String,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Ds {
    pub dataset: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DsRole {
    pub dataset: String,
    /// `served`, `store_current` or `staged`.
    pub role: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DsVersion {
    pub dataset: String,
    pub version: String,
}

type FGauge = Gauge<f64, AtomicU64>;

fn latency_histogram() -> Histogram {
    // 25 µs to about 1.6 s.
    Histogram::new(exponential_buckets(25e-6, 2.0, 17))
}

pub(crate) struct Metrics {
    registry: Registry,
    pub requests: Family<RouteStatus, Counter>,
    pub latency: Family<RouteStatus, Histogram, fn() -> Histogram>,
    pub lookups: Family<Lookup, Counter>,
    info: Family<DsVersion, Gauge>,
    keys: Family<Ds, Gauge>,
    build_age: Family<Ds, FGauge>,
    loaded_at: Family<Ds, FGauge>,
    sync_ok: Family<Ds, Gauge>,
    sync_at: Family<Ds, FGauge>,
    sync_success_at: Family<Ds, FGauge>,
    sync_failures: Family<Ds, Gauge>,
    mapped: Family<Ds, Gauge>,
    cache_ratio: Family<Ds, FGauge>,
    cache_bytes: Family<Ds, Gauge>,
    index_memory: Family<Ds, Gauge>,
    version_age: Family<DsRole, FGauge>,
    behind: Family<Ds, FGauge>,
    forwards: Family<Lookup, Counter>,
    sync_downloaded: Family<Ds, Counter>,
    sync_reused: Family<Ds, Counter>,
    sync_rebuilt: Family<Ds, Counter>,
}

/// The counters of one dataset, resolved once rather than per request or per sync.
pub(crate) struct DatasetCounters {
    /// Key lookups that found a value.
    pub hits: Counter,
    /// Key lookups that found nothing.
    pub misses: Counter,
    /// Bytes the dataset's syncs read from storage.
    pub sync_downloaded: Counter,
    /// Bytes the dataset's syncs copied from versions in the cache (delta fetches).
    pub sync_reused: Counter,
    /// Bytes of index sections the dataset's syncs rebuilt from blocks (delta fetches).
    pub sync_rebuilt: Counter,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("snapkv");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            lookups: Family::default(),
            info: Family::default(),
            keys: Family::default(),
            build_age: Family::default(),
            loaded_at: Family::default(),
            sync_ok: Family::default(),
            sync_at: Family::default(),
            sync_success_at: Family::default(),
            sync_failures: Family::default(),
            mapped: Family::default(),
            cache_ratio: Family::default(),
            cache_bytes: Family::default(),
            index_memory: Family::default(),
            version_age: Family::default(),
            behind: Family::default(),
            forwards: Family::default(),
            sync_downloaded: Family::default(),
            sync_reused: Family::default(),
            sync_rebuilt: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "http_requests",
            "HTTP requests by route and status",
            m.requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by route and status",
            m.latency.clone(),
        );
        r.register(
            "lookups",
            "Key lookups by dataset and result (hit or miss)",
            m.lookups.clone(),
        );
        r.register(
            "snapshot_info",
            "The version each dataset serves (value 1)",
            m.info.clone(),
        );
        r.register(
            "snapshot_keys",
            "Keys in the served snapshot",
            m.keys.clone(),
        );
        r.register(
            "snapshot_build_age_seconds",
            "Seconds since the served snapshot was built",
            m.build_age.clone(),
        );
        r.register(
            "snapshot_loaded_timestamp_seconds",
            "When the served snapshot was loaded",
            m.loaded_at.clone(),
        );
        r.register(
            "sync_last_success",
            "Whether the last sync attempt succeeded (1) or failed (0)",
            m.sync_ok.clone(),
        );
        r.register(
            "sync_last_attempt_timestamp_seconds",
            "When the last sync attempt ended",
            m.sync_at.clone(),
        );
        r.register(
            "sync_last_success_timestamp_seconds",
            "When a sync attempt last succeeded (the version it found was served, or already \
             was); absent until one has",
            m.sync_success_at.clone(),
        );
        r.register(
            "sync_failures",
            "Failed sync attempts since start",
            m.sync_failures.clone(),
        );
        r.register(
            "mapped_bytes",
            "Bytes of snapshot files mapped (current and previous version)",
            m.mapped.clone(),
        );
        r.register(
            "block_cache_hit_ratio",
            "Block cache hits / lookups of the served snapshot",
            m.cache_ratio.clone(),
        );
        r.register(
            "block_cache_bytes",
            "Decompressed bytes held by the block cache",
            m.cache_bytes.clone(),
        );
        r.register(
            "index_memory_bytes",
            "Anonymous memory holding a copy of the served files' index sections \
             (--index-in-memory)",
            m.index_memory.clone(),
        );
        r.register(
            "version_age_seconds",
            "Seconds since a version was published (role served: the version this reader \
             serves; store_current: the one the store's CURRENT names; staged: the staged one \
             newer than CURRENT, with --preview-staged)",
            m.version_age.clone(),
        );
        r.register(
            "sync_behind_seconds",
            "Seconds since the store's CURRENT named a version this reader does not serve yet \
             (0 when it serves it)",
            m.behind.clone(),
        );
        r.register(
            "forwarded_requests",
            "Requests sent to a peer holding the shard asked for, by dataset and result \
             (answered, or failed: no owner answered)",
            m.forwards.clone(),
        );
        r.register(
            "sync_bytes_downloaded",
            "Bytes read from storage to fetch versions (whole files, and the ranges of delta \
             fetches)",
            m.sync_downloaded.clone(),
        );
        r.register(
            "sync_bytes_reused",
            "Bytes of fetched versions copied from versions already in the cache (delta \
             fetches)",
            m.sync_reused.clone(),
        );
        r.register(
            "sync_bytes_rebuilt",
            "Bytes of fetched versions' index, filter and lookup sections rebuilt from their \
             blocks rather than read (delta fetches)",
            m.sync_rebuilt.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a request forwarded to a peer for `dataset`: `answered` or `failed`.
    pub fn forwarded(&self, dataset: &str, result: &'static str) {
        self.forwards
            .get_or_create(&Lookup {
                dataset: dataset.to_owned(),
                result,
            })
            .inc();
    }

    /// The counters of `dataset`.
    pub fn dataset_counters(&self, dataset: &str) -> DatasetCounters {
        let lookups = |result| {
            self.lookups
                .get_or_create(&Lookup {
                    dataset: dataset.to_owned(),
                    result,
                })
                .clone()
        };
        let ds = Ds {
            dataset: dataset.to_owned(),
        };
        DatasetCounters {
            hits: lookups("hit"),
            misses: lookups("miss"),
            sync_downloaded: self.sync_downloaded.get_or_create(&ds).clone(),
            sync_reused: self.sync_reused.get_or_create(&ds).clone(),
            sync_rebuilt: self.sync_rebuilt.get_or_create(&ds).clone(),
        }
    }

    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        let labels = RouteStatus { route, status };
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Prometheus text exposition, with the dataset gauges refreshed first.
    pub fn render<'a>(&self, datasets: impl Iterator<Item = &'a Dataset>) -> String {
        let secs = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64())
        };
        let now = SystemTime::now();
        let since = |t: SystemTime| now.duration_since(t).unwrap_or_default().as_secs_f64();
        self.info.clear();
        // Series that come and go (a staged version is promoted) are set afresh each time.
        self.version_age.clear();
        for d in datasets {
            let ds = Ds {
                dataset: d.name.clone(),
            };
            let age = |role| {
                self.version_age.get_or_create(&DsRole {
                    dataset: d.name.clone(),
                    role,
                })
            };
            let upstream = d.upstream();
            let served = d.current.load_full();
            if let Some((version, published, seen)) = &upstream.current {
                age("store_current").set(since(*published));
                let behind = match &served {
                    Some(c) if c.version == *version => 0.0,
                    _ => since(*seen),
                };
                self.behind.get_or_create(&ds).set(behind);
            }
            if let Some((_, staged_at)) = &upstream.staged {
                age("staged").set(since(*staged_at));
            }
            if let Some(c) = &served {
                age("served").set(since(c.published_at));
            }
            let status = d.status();
            self.sync_ok.get_or_create(&ds).set(i64::from(
                status.last_attempt.is_some() && status.last_error.is_none(),
            ));
            if let Some(t) = status.last_attempt {
                self.sync_at.get_or_create(&ds).set(secs(t));
            }
            if let Some(t) = status.last_success {
                self.sync_success_at.get_or_create(&ds).set(secs(t));
            }
            self.sync_failures
                .get_or_create(&ds)
                .set(status.failures as i64);
            let previous_bytes = d.previous.load().as_ref().map_or(0, |p| p.file_bytes);
            let Some(c) = d.current.load_full() else {
                self.mapped.get_or_create(&ds).set(previous_bytes as i64);
                continue;
            };
            self.info
                .get_or_create(&DsVersion {
                    dataset: d.name.clone(),
                    version: c.version.clone(),
                })
                .set(1);
            self.keys.get_or_create(&ds).set(c.snapshot.len() as i64);
            self.mapped
                .get_or_create(&ds)
                .set((c.file_bytes + previous_bytes) as i64);
            self.loaded_at.get_or_create(&ds).set(secs(c.loaded_at));
            let age = SystemTime::now()
                .duration_since(c.built_at)
                .unwrap_or_default();
            self.build_age.get_or_create(&ds).set(age.as_secs_f64());
            let cache = c.snapshot.cache_stats();
            let lookups = cache.hits + cache.misses;
            if lookups > 0 {
                self.cache_ratio
                    .get_or_create(&ds)
                    .set(cache.hits as f64 / lookups as f64);
            }
            self.cache_bytes.get_or_create(&ds).set(cache.used as i64);
            self.index_memory
                .get_or_create(&ds)
                .set(c.snapshot.index_memory_bytes() as i64);
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The Prometheus text format (0.0.4) of an OpenMetrics exposition: no `# EOF` line, and a
/// counter's `# HELP`/`# TYPE` lines name its `_total` samples, as 0.0.4 parsers expect.
pub(crate) fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let comment = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match comment {
            Some((p, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                if counters.contains(name) {
                    out.push_str(&format!("{p}{name}_total {tail}"));
                } else {
                    out.push_str(line);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counter_samples() {
        let om = "# HELP snapkv_lookups Key lookups.\n# TYPE snapkv_lookups counter\n\
                  snapkv_lookups_total{result=\"hit\"} 3\n# HELP snapkv_keys Keys.\n\
                  # TYPE snapkv_keys gauge\nsnapkv_keys 7\n# EOF\n";
        assert_eq!(
            to_prometheus_text(om),
            "# HELP snapkv_lookups_total Key lookups.\n# TYPE snapkv_lookups_total counter\n\
             snapkv_lookups_total{result=\"hit\"} 3\n# HELP snapkv_keys Keys.\n\
             # TYPE snapkv_keys gauge\nsnapkv_keys 7\n"
        );
    }
}
