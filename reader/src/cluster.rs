//! Readers that each hold part of a sharded version: the peers, which shards each holds (each
//! reader says so at `GET /v1/shards`, polled), and the HTTP client that forwards requests for
//! shards held elsewhere.

use crate::api::State;
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Another reader of the same datasets, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Peer {
    /// One reader: `http://host:port`.
    Url(String),
    /// Every address a DNS name resolves to (a Kubernetes headless Service), resolved again
    /// at every refresh: `dns+http://name:port`.
    Dns {
        /// The name.
        host: String,
        /// The readers' port.
        port: u16,
    },
}

impl std::str::FromStr for Peer {
    type Err = String;

    /// `http://host:port` or `dns+http://name:port`.
    fn from_str(s: &str) -> Result<Peer, String> {
        let host_port = |rest: &str| -> Result<(String, u16), String> {
            let rest = rest.trim_end_matches('/');
            if rest.contains('/') || rest.contains('?') {
                return Err(format!("{s:?}: a peer is a host and port, without a path"));
            }
            let (host, port) = rest
                .rsplit_once(':')
                .ok_or_else(|| format!("{s:?}: give the port, e.g. http://reader-1:8080"))?;
            let port = port
                .parse::<u16>()
                .ok()
                .filter(|&p| p > 0)
                .ok_or_else(|| format!("{s:?}: bad port {port:?}"))?;
            if host.is_empty() {
                return Err(format!("{s:?}: no host"));
            }
            Ok((host.to_owned(), port))
        };
        if let Some(rest) = s.strip_prefix("dns+http://") {
            let (host, port) = host_port(rest)?;
            Ok(Peer::Dns { host, port })
        } else if let Some(rest) = s.strip_prefix("http://") {
            let (host, port) = host_port(rest)?;
            Ok(Peer::Url(format!("http://{host}:{port}")))
        } else if s.starts_with("https://") || s.starts_with("dns+https://") {
            Err(format!(
                "{s:?}: readers talk to each other in plain HTTP, inside the cluster; give \
                 http://host:port"
            ))
        } else {
            Err(format!(
                "{s:?}: a peer is http://host:port, or dns+http://name:port for every address \
                 of a name (a headless Service)"
            ))
        }
    }
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Url(u) => f.write_str(u),
            Peer::Dns { host, port } => write!(f, "dns+http://{host}:{port}"),
        }
    }
}

/// A version a reader holds shards of, as `GET /v1/shards` lists it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct Held {
    pub dataset: String,
    pub version: String,
    /// `current`, `previous` or `staged`.
    pub role: String,
    /// The version's shards.
    pub shards: usize,
    /// The shards held, in order.
    pub held: Vec<usize>,
}

/// The answer of `GET /v1/shards`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(crate) struct ShardsAnswer {
    /// The reader's identity, new at each start (a reader resolved from a DNS name may be
    /// this one).
    pub node: String,
    pub held: Vec<Held>,
}

/// A peer as last asked.
#[derive(Debug)]
struct PeerView {
    url: String,
    held: Vec<Held>,
}

/// The peers that answered the last refresh.
#[derive(Debug, Default)]
struct Table {
    peers: Vec<PeerView>,
}

/// What a peer answered to a forwarded request.
pub(crate) struct PeerAnswer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// This reader's peers and the shards they hold.
pub(crate) struct Cluster {
    node: String,
    /// Forward requests for shards held elsewhere (else answer 421): on, and peers given.
    pub forward: bool,
    peers: Vec<Peer>,
    table: ArcSwap<Table>,
    client: Client<HttpConnector, Full<Bytes>>,
    timeout: Duration,
    /// Spreads requests over the owners of a shard.
    turn: AtomicUsize,
}

/// The header that marks a forwarded request: its receiver answers it from its own shards or
/// with 421, never forwards it again.
pub(crate) const FORWARDED_HEADER: &str = "x-snapkv-forwarded";

/// Largest `GET /v1/shards` answer taken from a peer.
const MAX_SHARDS_ANSWER: usize = 1 << 20;

impl Cluster {
    pub fn new(config: &crate::Config) -> Cluster {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.forward_timeout));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        // Unique enough to tell this process from its peers: time, pid and an address.
        let seed = format!(
            "{:?}{}{:p}",
            std::time::SystemTime::now(),
            std::process::id(),
            &client
        );
        Cluster {
            node: format!("{:016x}", xxhash_rust::xxh3::xxh3_64(seed.as_bytes())),
            // Without peers there is nowhere to forward to.
            forward: config.forward && !config.peers.is_empty(),
            peers: config.peers.clone(),
            table: ArcSwap::from_pointee(Table::default()),
            client,
            timeout: config.forward_timeout,
            turn: AtomicUsize::new(0),
        }
    }

    /// This reader's identity.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The peers (base URLs) holding shard `shard` of `version` of `dataset`, starting at a
    /// different one each call.
    pub fn owners(&self, dataset: &str, version: &str, shard: usize) -> Vec<String> {
        let table = self.table.load();
        let mut owners: Vec<String> = table
            .peers
            .iter()
            .filter(|p| {
                p.held.iter().any(|h| {
                    h.dataset == dataset && h.version == version && h.held.contains(&shard)
                })
            })
            .map(|p| p.url.clone())
            .collect();
        if owners.len() > 1 {
            let turn = self.turn.fetch_add(1, Ordering::Relaxed) % owners.len();
            owners.rotate_left(turn);
        }
        owners
    }

    /// The peers that answered the last refresh, with what they hold.
    pub fn peers(&self) -> serde_json::Value {
        let table = self.table.load();
        table
            .peers
            .iter()
            .map(|p| serde_json::json!({"url": p.url, "held": p.held}))
            .collect()
    }

    /// Sends a request to the peer at `url` (`http://host:port`) and reads its answer, within
    /// the forward timeout and at most `max_bytes` of body.
    pub async fn call(
        &self,
        url: &str,
        method: Method,
        path_and_query: &str,
        headers: HeaderMap,
        body: Bytes,
        max_bytes: usize,
    ) -> Result<PeerAnswer, String> {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("{url}{path_and_query}"))
            .body(Full::new(body))
            .map_err(|e| format!("bad request to {url}: {e}"))?;
        *req.headers_mut() = headers;
        let call = async {
            let response = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("{url}: {}", crate::sync::error_chain(&e)))?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, max_bytes)
                .collect()
                .await
                .map_err(|e| format!("{url}: reading the answer: {e}"))?
                .to_bytes();
            Ok(PeerAnswer {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| format!("{url}: no answer within {:?}", self.timeout))?
    }

    /// The base URLs of the configured peers, DNS names resolved (a name that does not
    /// resolve now is left out until it does).
    async fn resolve(&self) -> Vec<String> {
        let mut urls = Vec::new();
        for p in &self.peers {
            match p {
                Peer::Url(u) => urls.push(u.clone()),
                Peer::Dns { host, port } => {
                    match tokio::net::lookup_host((host.as_str(), *port)).await {
                        Ok(addrs) => urls.extend(addrs.map(|a| format!("http://{a}"))),
                        Err(e) => {
                            tracing::debug!(peer = %p, error = %e, "cannot resolve a peer name")
                        }
                    }
                }
            }
        }
        urls.sort();
        urls.dedup();
        urls
    }

    /// Asks every peer what it holds and replaces the table with the answers.
    async fn refresh(&self) {
        let urls = self.resolve().await;
        let asks = urls.iter().map(|url| async move {
            let answer = self
                .call(
                    url,
                    Method::GET,
                    "/v1/shards",
                    HeaderMap::new(),
                    Bytes::new(),
                    MAX_SHARDS_ANSWER,
                )
                .await
                .and_then(|a| {
                    if a.status != StatusCode::OK {
                        return Err(format!("{url}: /v1/shards answered {}", a.status));
                    }
                    serde_json::from_slice::<ShardsAnswer>(&a.body)
                        .map_err(|e| format!("{url}: bad /v1/shards answer: {e}"))
                });
            (url.clone(), answer)
        });
        let answers = futures_util::future::join_all(asks).await;
        let mut peers = Vec::new();
        for (url, answer) in answers {
            match answer {
                Ok(a) if a.node == self.node => {}
                Ok(a) => peers.push(PeerView { url, held: a.held }),
                Err(e) => tracing::debug!(error = %e, "a peer did not say what it holds"),
            }
        }
        let before: Vec<String> = self
            .table
            .load()
            .peers
            .iter()
            .map(|p| p.url.clone())
            .collect();
        let after: Vec<String> = peers.iter().map(|p| p.url.clone()).collect();
        if before != after {
            tracing::info!(peers = ?after, "peers changed");
        }
        self.table.store(Arc::new(Table { peers }));
    }
}

/// What this reader holds, for `GET /v1/shards`.
pub(crate) fn held(state: &State) -> ShardsAnswer {
    let mut held = Vec::new();
    for d in state.datasets.values() {
        for (role, slot) in [
            ("current", &d.current),
            ("previous", &d.previous),
            ("staged", &d.staged),
        ] {
            if let Some(l) = slot.load().as_ref() {
                held.push(Held {
                    dataset: d.name.clone(),
                    version: l.version.clone(),
                    role: role.to_owned(),
                    shards: l.snapshot.count(),
                    held: l.snapshot.held().collect(),
                });
            }
        }
    }
    ShardsAnswer {
        node: state.cluster.node().to_owned(),
        held,
    }
}

/// Asks the peers what they hold every `interval` (at once first) until `stop` changes.
pub(crate) async fn follow_peers(
    state: Arc<State>,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        state.cluster.refresh().await;
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_parse() {
        assert_eq!(
            "http://reader-1:8080/".parse::<Peer>(),
            Ok(Peer::Url("http://reader-1:8080".into()))
        );
        assert_eq!(
            "dns+http://snapkv-readers.default.svc:8080".parse::<Peer>(),
            Ok(Peer::Dns {
                host: "snapkv-readers.default.svc".into(),
                port: 8080
            })
        );
        for (bad, why) in [
            ("reader-1:8080", "a peer is http://host:port"),
            ("http://reader-1", "give the port"),
            ("http://reader-1:0", "bad port"),
            ("http://reader-1:8080/v1", "without a path"),
            ("https://reader-1:8443", "plain HTTP"),
            ("http://:8080", "no host"),
        ] {
            let e = bad.parse::<Peer>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
