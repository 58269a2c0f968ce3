//! The HTTP API (`spec/openapi.yaml`): shared state, routing, handlers, JSON errors.

use crate::cluster::Cluster;
use crate::conn::{InFlight, InFlightGuard, RequestGuard};
use crate::registry::{Dataset, Loaded};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use std::collections::BTreeMap;
use std::ops::Bound;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

use crate::metrics::Metrics;
use crate::server::Limits;

/// What every request handler shares.
pub(crate) struct State {
    pub datasets: BTreeMap<String, Arc<Dataset>>,
    pub limits: Limits,
    pub metrics: Metrics,
    /// This reader's peers and the shards they hold.
    pub cluster: Cluster,
    /// Serve the explorer at `/ui/`.
    pub ui: bool,
    /// Requests being answered, each counted until its answer is sent.
    in_flight: Arc<InFlight>,
}

impl State {
    pub fn new(
        datasets: BTreeMap<String, Arc<Dataset>>,
        limits: Limits,
        metrics: Metrics,
        cluster: Cluster,
        ui: bool,
    ) -> State {
        State {
            ui,
            in_flight: InFlight::new(limits.max_in_flight),
            datasets,
            limits,
            metrics,
            cluster,
        }
    }
}

/// A response body: the bytes of the answer, and what its request holds until the answer is
/// sent (or dropped): its in-flight slot, and the mark of a request being answered on its
/// connection.
pub(crate) struct Body {
    inner: Full<Bytes>,
    slot: Option<InFlightGuard>,
    request: Option<RequestGuard>,
}

impl Body {
    /// A body of bytes built into the binary.
    pub fn from_static(bytes: &'static [u8]) -> Body {
        Body::new(Bytes::from_static(bytes))
    }

    fn new(bytes: Bytes) -> Body {
        Body {
            inner: Full::new(bytes),
            slot: None,
            request: None,
        }
    }

    /// Keeps `request` until this body is sent or dropped.
    pub fn hold(&mut self, request: RequestGuard) {
        self.request = Some(request);
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

const VERSION_HEADER: &str = "x-snapkv-version";
const JSON: HeaderValue = HeaderValue::from_static("application/json");

/// A request that cannot be answered: status, machine-readable code, message, and fields
/// that say more (the shard and its owners of a 421).
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: serde_json::Map<String, serde_json::Value>,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
        details: serde_json::Map::new(),
    }
}

impl Failure {
    /// Adds a field to the error object.
    fn with(mut self, name: &str, value: impl Into<serde_json::Value>) -> Failure {
        self.details.insert(name.to_owned(), value.into());
        self
    }

    fn into_response(self) -> Response<Body> {
        let mut error = serde_json::json!({"code": self.code, "message": self.message});
        error
            .as_object_mut()
            .expect("an object")
            .extend(self.details);
        let body = serde_json::json!({ "error": error });
        let mut r = Response::new(Body::new(Bytes::from(body.to_string())));
        *r.status_mut() = self.status;
        r.headers_mut().insert(header::CONTENT_TYPE, JSON);
        if self.status == StatusCode::METHOD_NOT_ALLOWED {
            let allow = if self.code == "use_post" {
                "POST"
            } else {
                "GET, HEAD"
            };
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE
            && matches!(self.code, "overloaded" | SHARD_UNAVAILABLE | NOT_LOCAL)
        {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

fn json_response(value: Bytes) -> Response<Body> {
    let mut r = Response::new(Body::new(value));
    r.headers_mut().insert(header::CONTENT_TYPE, JSON);
    r
}

/// Decodes `%XX` escapes strictly: a `%` not followed by two hex digits is an error. `+` is a
/// plain `+` (RFC 3986), in paths and queries alike.
fn percent_decode(s: &str) -> Result<Vec<u8>, Failure> {
    let b = s.as_bytes();
    // The crate decodes leniently (a bad escape stays as it is): check the escapes first.
    if let Some(i) = (0..b.len()).find(|&i| {
        b[i] == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    }) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_percent_encoding",
            format!("bad percent-encoding at byte {i} of {s:?}"),
        ));
    }
    Ok(percent_encoding::percent_decode(b).collect())
}

enum Route<'a> {
    Healthz,
    Readyz,
    Metrics,
    Datasets,
    Shards,
    Ui(&'a str),
    Dataset(&'a str),
    Key(&'a str, &'a str),
    Mget(&'a str),
    Query(&'a str),
    Scan(&'a str),
    History(&'a str),
    Unknown,
}

impl Route<'_> {
    fn label(&self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Datasets => "datasets",
            Route::Shards => "shards",
            Route::Ui(_) => "ui",
            Route::Dataset(_) => "dataset",
            Route::Key(..) => "key",
            Route::Mget(_) => "mget",
            Route::Query(_) => "query",
            Route::Scan(_) => "scan",
            Route::History(_) => "history",
            Route::Unknown => "unknown",
        }
    }

    /// The dataset a route is about, still percent-encoded.
    fn dataset(&self) -> Option<&str> {
        match *self {
            Route::Dataset(ds)
            | Route::Key(ds, _)
            | Route::Mget(ds)
            | Route::Query(ds)
            | Route::Scan(ds)
            | Route::History(ds) => Some(ds),
            _ => None,
        }
    }
}

fn route(path: &str) -> Route<'_> {
    match path {
        "/healthz" => return Route::Healthz,
        "/readyz" => return Route::Readyz,
        "/metrics" => return Route::Metrics,
        "/v1/datasets" | "/v1/datasets/" => return Route::Datasets,
        "/v1/shards" => return Route::Shards,
        _ => {}
    }
    if let Some(asset) = path.strip_prefix("/ui") {
        return Route::Ui(asset);
    }
    let Some(rest) = path.strip_prefix("/v1/datasets/") else {
        return Route::Unknown;
    };
    match rest.split_once('/') {
        None => Route::Dataset(rest),
        Some((ds, "mget")) => Route::Mget(ds),
        Some((ds, "query")) => Route::Query(ds),
        Some((ds, "scan")) => Route::Scan(ds),
        Some((ds, "history")) => Route::History(ds),
        Some((ds, tail)) => match tail.strip_prefix("keys/") {
            Some(key) => Route::Key(ds, key),
            None => Route::Unknown,
        },
    }
}

/// A request about one dataset: the dataset, and the version that answers the whole request
/// (taken once, at its start; `None` while nothing is loaded).
struct Target<'s> {
    dataset: &'s Dataset,
    loaded: Option<Arc<Loaded>>,
    /// For requests not pinned to a version: the previous version, which answers instead
    /// when the peers holding the shards a request needs do not hold `loaded` (readers swap
    /// versions a few seconds apart; each holds its previous one).
    fallback: Option<Arc<Loaded>>,
    /// Why the version the request is pinned to cannot answer it: reported after the method
    /// is checked (a 405 comes first).
    refused: Option<Failure>,
}

impl Target<'_> {
    fn loaded(&self) -> Result<&Arc<Loaded>, Failure> {
        self.loaded.as_ref().ok_or_else(|| {
            fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_loaded",
                format!("dataset {:?} has no snapshot loaded yet", self.dataset.name),
            )
        })
    }
}

/// Answers one request; never fails (errors become JSON error responses).
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let route = route(parts.uri.path());
    let label = route.label();
    let response = respond(&state, route, &parts, body).await;
    state
        .metrics
        .observe(label, response.status().as_u16(), started.elapsed());
    Ok(response)
}

/// The response to one request, with `X-Snapkv-Version` on every answer about a dataset that
/// has a version loaded, errors included.
async fn respond(
    state: &State,
    route: Route<'_>,
    parts: &http::request::Parts,
    body: Incoming,
) -> Response<Body> {
    if let Err(f) = check_head(state, parts) {
        return f.into_response();
    }
    let target = match route
        .dataset()
        .map(|ds| target(state, ds, parts))
        .transpose()
    {
        Ok(t) => t,
        Err(f) => return f.into_response(),
    };
    let version = target
        .as_ref()
        .and_then(|t| t.loaded.as_ref())
        .map(|l| l.version_header.clone());
    // Health, readiness, metrics and the shards held are cheap and must answer under any
    // load: only the other routes take an in-flight slot.
    let slot = if matches!(
        route,
        Route::Healthz | Route::Readyz | Route::Metrics | Route::Shards
    ) {
        None
    } else {
        match state.in_flight.enter() {
            Some(slot) => Some(slot),
            None => {
                let mut r = fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    format!(
                        "{} requests are being answered, the limit; retry shortly",
                        state.limits.max_in_flight
                    ),
                )
                .into_response();
                if let Some(v) = version {
                    r.headers_mut().insert(VERSION_HEADER, v);
                }
                return r;
            }
        }
    };
    let mut response = match answer(state, route, target, parts, body).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    };
    response.body_mut().slot = slot;
    // Answers from another version than the request's first (see `Target::fallback`) name it
    // themselves.
    if let Some(v) = version {
        if !response.headers().contains_key(VERSION_HEADER) {
            response.headers_mut().insert(VERSION_HEADER, v);
        }
    }
    response
}

/// Refuses request targets and header sections over the limits with a JSON error (hyper's own
/// larger limits answer with an empty body).
fn check_head(state: &State, parts: &http::request::Parts) -> Result<(), Failure> {
    let target = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > state.limits.max_uri_bytes {
        return Err(fail(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!(
                "request target of {target} bytes over the limit of {}",
                state.limits.max_uri_bytes
            ),
        ));
    }
    let headers: usize = parts
        .headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if headers > state.limits.max_header_bytes {
        return Err(fail(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "{headers} bytes of headers over the limit of {}",
                state.limits.max_header_bytes
            ),
        ));
    }
    Ok(())
}

fn read_only(method: &Method) -> Result<(), Failure> {
    if method == Method::GET || method == Method::HEAD {
        Ok(())
    } else {
        Err(fail(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{method} is not allowed here; use GET"),
        ))
    }
}

/// OpenMetrics when the scraper asks for it, else the Prometheus text format (0.0.4).
fn metrics_response(state: &State, headers: &HeaderMap) -> Response<Body> {
    let text = state.metrics.render(state.datasets.values().map(|d| &**d));
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let mut params = t.split(';').map(str::trim);
            params.next() == Some("application/openmetrics-text")
                && !params.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        });
    let (text, content_type) = if openmetrics {
        (
            text,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    } else {
        (
            crate::metrics::to_prometheus_text(&text),
            "text/plain; version=0.0.4; charset=utf-8",
        )
    };
    let mut r = Response::new(Body::new(Bytes::from(text)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    r
}

async fn answer(
    state: &State,
    route: Route<'_>,
    target: Option<Target<'_>>,
    req: &http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Failure> {
    let method = &req.method;
    match route {
        Route::Unknown => {}
        Route::Mget(_) if method != Method::POST => {
            return Err(fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "use_post",
                format!("{method} is not allowed here; use POST with {{\"keys\": [...]}}"),
            ));
        }
        Route::Query(_) if method != Method::POST => {
            return Err(fail(
                StatusCode::METHOD_NOT_ALLOWED,
                "use_post",
                format!("{method} is not allowed here; use POST with a query"),
            ));
        }
        Route::Mget(_) | Route::Query(_) => {}
        _ => read_only(method)?,
    }
    let mut target = target;
    if let Some(f) = target.as_mut().and_then(|t| t.refused.take()) {
        return Err(f);
    }
    match (route, target) {
        (Route::Healthz, _) => Ok(json_response(Bytes::from_static(b"{\"status\":\"ok\"}"))),
        (Route::Readyz, _) => {
            let waiting: Vec<&str> = state
                .datasets
                .values()
                .filter(|d| d.current.load().is_none())
                .map(|d| d.name.as_str())
                .collect();
            let body = serde_json::json!({"ready": waiting.is_empty(), "waiting": waiting});
            let mut r = json_response(Bytes::from(body.to_string()));
            if !waiting.is_empty() {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok(r)
        }
        (Route::Metrics, _) => Ok(metrics_response(state, &req.headers)),
        (Route::Datasets, _) => {
            let list: Vec<_> = state
                .datasets
                .values()
                .map(|d| {
                    let c = d.current.load_full();
                    serde_json::json!({
                        "name": d.name,
                        "version": c.as_ref().map(|c| c.version.clone()),
                        "keys": c.as_ref().map(|c| c.snapshot.len()),
                        "loaded_at": c.as_ref().map(|c| crate::time::rfc3339(c.loaded_at)),
                        "ready": c.is_some(),
                    })
                })
                .collect();
            let body = serde_json::json!({ "datasets": list });
            Ok(json_response(Bytes::from(body.to_string())))
        }
        (Route::Dataset(_), Some(t)) => Ok(json_response(Bytes::from(
            t.dataset.info(t.loaded.clone()).to_string(),
        ))),
        (Route::Ui(asset), _) if state.ui => crate::ui::asset(asset).ok_or_else(|| {
            fail(
                StatusCode::NOT_FOUND,
                "no_route",
                "no such page of the explorer; see /ui/",
            )
        }),
        (Route::Shards, _) => {
            let mut body = serde_json::to_value(crate::cluster::held(state)).unwrap_or_default();
            body["peers"] = state.cluster.peers();
            Ok(json_response(Bytes::from(body.to_string())))
        }
        (Route::Key(_, key), Some(t)) => {
            let key = percent_decode(key)?;
            check_key(state, &key)?;
            let r = get_key(state, &t, t.loaded()?, &key, req).await;
            match (r, &t.fallback) {
                (Err(f), Some(previous)) if f.code == SHARD_UNAVAILABLE => {
                    get_key(state, &t, previous, &key, req).await
                }
                (r, _) => r,
            }
        }
        (Route::Mget(_), Some(t)) => {
            let body = read_body(state, &req.headers, body).await?;
            let keys = mget_keys(state, &body)?;
            let r = mget(state, &t, t.loaded()?, &keys, req).await;
            match (r, &t.fallback) {
                (Err(f), Some(previous)) if f.code == SHARD_UNAVAILABLE => {
                    mget(state, &t, previous, &keys, req).await
                }
                (r, _) => r,
            }
        }
        (Route::Query(_), Some(t)) => {
            let body = read_body(state, &req.headers, body).await?;
            query(state, &t, &body, &req.headers).await
        }
        (Route::History(_), Some(t)) => history(t.dataset, req.uri.query().unwrap_or("")).await,
        (Route::Scan(_), Some(t)) => {
            let range = scan_range(state, req.uri.query().unwrap_or(""))?;
            let r = scan(state, &t, t.loaded()?, &range, req).await;
            match (r, &t.fallback) {
                (Err(f), Some(previous)) if f.code == SHARD_UNAVAILABLE => {
                    scan(state, &t, previous, &range, req).await
                }
                (r, _) => r,
            }
        }
        _ => Err(fail(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such endpoint; see /v1/datasets",
        )),
    }
}

/// Reads a request body within the size and time limits. A declared `Content-Length` over the
/// limit is refused before anything is read (so no `100 Continue` is sent).
async fn read_body(
    state: &State,
    headers: &HeaderMap,
    mut body: Incoming,
) -> Result<Bytes, Failure> {
    let limit = state.limits.max_body_bytes;
    let too_large = |size: String| {
        fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body of {size} over the limit of {limit} bytes"),
        )
    };
    if let Some(declared) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if declared > limit as u64 {
            // A client that did not wait for `100 Continue` is sending the body already: a
            // connection closed under it may lose the answer in a reset. A body of a few
            // times the limit is taken in and dropped, within the body timeout, first.
            let waits = headers
                .get(header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
            if !waits && declared <= (limit as u64).saturating_mul(4) {
                let drain = async { while let Some(Ok(_)) = body.frame().await {} };
                let _ = tokio::time::timeout(state.limits.body_read_timeout, drain).await;
            }
            return Err(too_large(format!("{declared} bytes")));
        }
    }
    let timeout = state.limits.body_read_timeout;
    match tokio::time::timeout(timeout, Limited::new(body, limit).collect()).await {
        Err(_) => Err(fail(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!("the request body did not arrive within {timeout:?}"),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large("more bytes".into()))
        }
        Ok(Err(e)) => Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("cannot read the body: {e}"),
        )),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// The dataset of a request and the version that answers it: the current one, or the one
/// the request is pinned to (`X-Snapkv-Version`, or `?version=`) if this reader holds it.
fn target<'s>(
    state: &'s State,
    encoded: &str,
    parts: &http::request::Parts,
) -> Result<Target<'s>, Failure> {
    let d = dataset(state, encoded)?;
    let pin = requested_version(parts);
    let fallback = match &pin {
        Ok(None) => d.previous.load_full(),
        _ => None,
    };
    let pinned = pin.and_then(|pin| match pin {
        None => Ok(d.current.load_full()),
        Some(v) => d.held(&v).map(Some).ok_or_else(|| {
            let held = d.held_versions();
            let held = if held.is_empty() {
                "none yet".to_owned()
            } else {
                held.iter()
                    .map(|(role, v)| format!("{v} ({role})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            fail(
                StatusCode::CONFLICT,
                "version_not_held",
                format!(
                    "version {v:?} of dataset {:?} is not held by this reader, which holds {held}; \
                     send the request without a version, or pin a version it holds",
                    d.name
                ),
            )
        }),
    });
    Ok(match pinned {
        Ok(loaded) => Target {
            dataset: d,
            loaded,
            fallback,
            refused: None,
        },
        Err(f) => Target {
            dataset: d,
            loaded: None,
            fallback: None,
            refused: Some(f),
        },
    })
}

/// The version a request is pinned to: its `X-Snapkv-Version` header or its `version` query
/// parameter (both: they must agree). An empty one is the same as none.
fn requested_version(parts: &http::request::Parts) -> Result<Option<String>, Failure> {
    let bad = |detail: &str| fail(StatusCode::BAD_REQUEST, "bad_version", detail.to_owned());
    let header = match parts.headers.get(VERSION_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad("X-Snapkv-Version is not visible ASCII"))?
                .trim()
                .to_owned(),
        ),
    };
    let mut query = None;
    for pair in parts.uri.query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("version=") {
            let v =
                String::from_utf8(percent_decode(v)?).map_err(|_| bad("`version` is not UTF-8"))?;
            query = Some(v);
        }
    }
    let (header, query) = (
        header.filter(|v| !v.is_empty()),
        query.filter(|v| !v.is_empty()),
    );
    match (header, query) {
        (Some(h), Some(q)) if h != q => Err(fail(
            StatusCode::CONFLICT,
            "conflicting_versions",
            format!("X-Snapkv-Version {h:?} and ?version={q:?} name different versions"),
        )),
        (h, q) => Ok(h.or(q)),
    }
}

fn dataset<'s>(state: &'s State, encoded: &str) -> Result<&'s Arc<Dataset>, Failure> {
    let name = percent_decode(encoded)?;
    let name = String::from_utf8_lossy(&name);
    state.datasets.get(&*name).ok_or_else(|| {
        fail(
            StatusCode::NOT_FOUND,
            "dataset_not_found",
            format!("no dataset {name:?}; see /v1/datasets"),
        )
    })
}

fn check_key(state: &State, key: &[u8]) -> Result<(), Failure> {
    if key.is_empty() {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "empty_key",
            "keys are at least one byte",
        ));
    }
    if key.len() > state.limits.max_key_bytes {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "key_too_long",
            format!(
                "key of {} bytes over the limit of {}",
                key.len(),
                state.limits.max_key_bytes
            ),
        ));
    }
    Ok(())
}

/// Runs `f`, which may wait on its thread for blocks of a version opened lazily (a scan reads
/// them as it goes): while the version is still filling in, as blocking work, so that the
/// runtime moves its other tasks to other workers meanwhile (a multi-thread runtime; on any
/// other, `f` just runs).
fn may_wait<T>(l: &Loaded, f: impl FnOnce() -> T) -> T {
    let multi = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if multi && l.filling.iter().any(|f| f.blocks_missing() > 0) {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

/// The answer when the bytes a request needs are still in storage and did not arrive in
/// time (a version opened lazily, with storage slow or unreachable): `503`, to retry.
fn not_local(d: &Dataset, e: &snapkv_format::Error) -> Failure {
    tracing::warn!(dataset = %d.name, error = %e, "a block of the lazily opened version did not arrive in time");
    fail(
        StatusCode::SERVICE_UNAVAILABLE,
        NOT_LOCAL,
        format!("{e}; retry shortly"),
    )
}

fn internal(d: &Dataset, e: snapkv_format::Error) -> Failure {
    if matches!(e, snapkv_format::Error::Unavailable { .. }) {
        return not_local(d, &e);
    }
    tracing::error!(dataset = %d.name, error = %e, "lookup failed");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("lookup failed: {e}"),
    )
}

async fn get_key(
    state: &State,
    t: &Target<'_>,
    l: &Arc<Loaded>,
    key: &[u8],
    req: &http::request::Parts,
) -> Result<Response<Body>, Failure> {
    let d = t.dataset;
    let shard = l.snapshot.shard_of(key);
    if !l.snapshot.holds(shard) {
        let mut headers = HeaderMap::new();
        for v in req.headers.get_all(header::IF_NONE_MATCH) {
            headers.append(header::IF_NONE_MATCH, v.clone());
        }
        let path = req.uri.path_and_query().map_or("/", |p| p.as_str());
        let owners = owners_of(state, d, l, shard, req)?;
        let answer = forward(
            state,
            d,
            l,
            shard,
            &owners,
            Method::GET,
            path,
            headers,
            Bytes::new(),
        )
        .await?;
        let mut r = Response::new(Body::new(answer.body));
        *r.status_mut() = answer.status;
        for name in [header::CONTENT_TYPE, header::ETAG] {
            if let Some(v) = answer.headers.get(&name) {
                r.headers_mut().insert(name, v.clone());
            }
        }
        r.headers_mut()
            .insert(VERSION_HEADER, l.version_header.clone());
        return Ok(r);
    }
    let fields = projection(l, req)?;
    l.ready_for(key).await.map_err(|e| internal(d, e))?;
    let value = l.snapshot.get(key).map_err(|e| internal(d, e))?;
    let Some(mut value) = value else {
        d.misses.inc();
        return Err(fail(StatusCode::NOT_FOUND, "key_not_found", "no such key"));
    };
    d.hits.inc();
    if let Some(p) = &fields {
        value = p.apply(key, &value);
    }
    let etag = format!("\"{:016x}\"", xxh3_64(&value));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    // Several `If-None-Match` lines are one list (RFC 9110, 5.3).
    let matches = req
        .headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(','))
        .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag);
    let mut r = if matches {
        let mut r = Response::new(Body::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Body::new(value));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, l.content_type.clone());
        r
    };
    r.headers_mut().insert(header::ETAG, etag);
    r.headers_mut()
        .insert(VERSION_HEADER, l.version_header.clone());
    Ok(r)
}

/// The projection a request asks for with `?fields=a,b.c` (none without one).
fn projection(
    l: &Loaded,
    req: &http::request::Parts,
) -> Result<Option<snapkv_query::Projection>, Failure> {
    let mut names = None;
    for pair in req.uri.query().unwrap_or("").split('&') {
        if let Some(v) = pair.strip_prefix("fields=") {
            names = Some(String::from_utf8_lossy(&percent_decode(v)?).into_owned());
        }
    }
    let Some(names) = names.filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    snapkv_query::Projection::new(l.snapshot.shards()[0].metadata(), &names)
        .map(Some)
        .map_err(|e| {
            let field = match &e {
                snapkv_query::QueryError::Invalid { field, .. } => field.clone(),
                _ => None,
            };
            let f = fail(StatusCode::BAD_REQUEST, "bad_fields", e.to_string());
            match field {
                Some(name) => f.with("field", name),
                None => f,
            }
        })
}

/// The error code of a request that needs a shard no reachable peer holds in the version that
/// answers it: a 503 to retry (the peers are starting, or swapping versions).
const SHARD_UNAVAILABLE: &str = "shard_unavailable";

/// The error code of a `503` for bytes of a lazily opened version that did not arrive in
/// time.
const NOT_LOCAL: &str = "not_local";

/// Where shard `shard` of `l` is, for a request this reader cannot answer from its own
/// shards: the peers to forward to, or a 421 naming them when this reader does not forward
/// (or the request was forwarded already).
fn owners_of(
    state: &State,
    d: &Dataset,
    l: &Loaded,
    shard: usize,
    req: &http::request::Parts,
) -> Result<Vec<String>, Failure> {
    let owners = state.cluster.owners(&d.name, &l.version, shard);
    let forwarded = req.headers.contains_key(crate::cluster::FORWARDED_HEADER);
    if !state.cluster.forward || forwarded {
        let why = if forwarded {
            "a forwarded request is not forwarded again"
        } else {
            "this reader does not forward requests"
        };
        let held = l.snapshot.held();
        return Err(fail(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "shard {shard} {} of version {} of dataset {:?} is not held by this reader, \
                 which holds shards {}-{} of {}; {why}: ask {}",
                l.snapshot.describe(shard),
                l.version,
                d.name,
                held.start,
                held.end - 1,
                l.snapshot.count(),
                if owners.is_empty() {
                    "a reader that holds it".to_owned()
                } else {
                    owners.join(" or ")
                }
            ),
        )
        .with("shard", shard)
        .with("range", l.snapshot.describe(shard))
        .with("owners", owners));
    }
    if owners.is_empty() {
        return Err(fail(
            StatusCode::SERVICE_UNAVAILABLE,
            SHARD_UNAVAILABLE,
            format!(
                "no peer holds shard {shard} of version {} of dataset {:?} now; retry shortly",
                l.version, d.name
            ),
        )
        .with("shard", shard));
    }
    Ok(owners)
}

/// Sends a request about shard `shard` of `l` to one of its `owners`, pinned to `l`'s
/// version: the first owner that answers (connection failures, 421 and 503 try the next). A
/// peer that no longer holds the version, or no owner answering, is a `shard_unavailable`
/// failure; other answers of the peer are returned as they are.
#[allow(clippy::too_many_arguments)]
async fn forward(
    state: &State,
    d: &Dataset,
    l: &Loaded,
    shard: usize,
    owners: &[String],
    method: Method,
    path_and_query: &str,
    mut headers: HeaderMap,
    body: Bytes,
) -> Result<crate::cluster::PeerAnswer, Failure> {
    headers.insert(VERSION_HEADER, l.version_header.clone());
    headers.insert(
        crate::cluster::FORWARDED_HEADER,
        HeaderValue::from_static("1"),
    );
    if !body.is_empty() {
        headers.insert(header::CONTENT_TYPE, JSON);
    }
    // A peer's answer is at most its answer limit, escaped: JSON escaping and base64 grow
    // values by a bounded factor.
    let max_bytes = state.limits.max_response_bytes.saturating_mul(6) + (64 << 10);
    let mut errors = Vec::new();
    for url in owners {
        let answer = state
            .cluster
            .call(
                url,
                method.clone(),
                path_and_query,
                headers.clone(),
                body.clone(),
                max_bytes,
            )
            .await;
        match answer {
            Ok(a) if a.status == StatusCode::CONFLICT => {
                errors.push(format!("{url} no longer holds version {}", l.version));
            }
            Ok(a)
                if matches!(
                    a.status,
                    StatusCode::MISDIRECTED_REQUEST | StatusCode::SERVICE_UNAVAILABLE
                ) =>
            {
                errors.push(format!("{url} answered {}", a.status));
            }
            Ok(a) => {
                state.metrics.forwarded(&d.name, "answered");
                return Ok(a);
            }
            Err(e) => errors.push(e),
        }
    }
    state.metrics.forwarded(&d.name, "failed");
    tracing::debug!(dataset = %d.name, shard, errors = ?errors, "no peer answered");
    Err(fail(
        StatusCode::SERVICE_UNAVAILABLE,
        SHARD_UNAVAILABLE,
        format!(
            "shard {shard} of version {} of dataset {:?} is held by peers, and none answered: \
             {}; retry shortly",
            l.version,
            d.name,
            errors.join("; ")
        ),
    )
    .with("shard", shard))
}

/// `POST .../query`: the query runs on the blocking pool against the version the request
/// holds, within the server's query limits.
async fn query(
    state: &State,
    t: &Target<'_>,
    body: &[u8],
    headers: &HeaderMap,
) -> Result<Response<Body>, Failure> {
    let d = t.dataset;
    let l = Arc::clone(t.loaded()?);
    let held = l.snapshot.held();
    if held.len() != l.snapshot.count() {
        return Err(fail(
            StatusCode::MISDIRECTED_REQUEST,
            "misdirected",
            format!(
                "this reader holds shards {}-{} of the {} of version {}; queries run on readers \
                 that hold every shard",
                held.start,
                held.end - 1,
                l.snapshot.count(),
                l.version
            ),
        ));
    }
    let bad = |e: snapkv_query::QueryError| match e {
        snapkv_query::QueryError::Invalid { ref field, .. } => {
            let f = fail(StatusCode::BAD_REQUEST, "bad_query", e.to_string());
            match field {
                Some(name) => f.with("field", name.clone()),
                None => f,
            }
        }
        snapkv_query::QueryError::OverBudget { limit, .. } => fail(
            StatusCode::UNPROCESSABLE_ENTITY,
            "over_budget",
            e.to_string(),
        )
        .with("limit", limit),
        snapkv_query::QueryError::Read(e @ snapkv_format::Error::Unavailable { .. }) => {
            not_local(d, &e)
        }
        e => {
            tracing::error!(dataset = %d.name, error = %e, "query failed");
            fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("query failed: {e}"),
            )
        }
    };
    let plan = snapkv_query::Query::parse(body)
        .and_then(|q| q.plan(l.snapshot.shards()[0].metadata()))
        .map_err(bad)?;
    let limits = state.limits.query.clone();
    let loaded = Arc::clone(&l);
    let format = QueryFormat::accepted(headers);
    // The answer is encoded on the blocking pool too: an Arrow stream of many rows is work.
    let (body, content_type) = tokio::task::spawn_blocking(move || {
        let answer = snapkv_query::run(&loaded.snapshot, &plan, &limits)?;
        Ok::<_, snapkv_query::QueryError>(match format {
            QueryFormat::Arrow => (
                answer.to_arrow_ipc(Some(&loaded.version))?,
                QueryFormat::ARROW,
            ),
            QueryFormat::Ndjson => {
                let mut out = Vec::new();
                for row in &answer.rows {
                    let _ = serde_json::to_writer(&mut out, row);
                    out.push(b'\n');
                }
                (out, QueryFormat::NDJSON)
            }
            QueryFormat::Json => {
                let body = serde_json::json!({
                    "version": loaded.version,
                    "rows": answer.rows,
                    "stats": answer.stats,
                });
                (body.to_string().into_bytes(), "application/json")
            }
        })
    })
    .await
    .map_err(|e| {
        fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("query task failed: {e}"),
        )
    })?
    .map_err(bad)?;
    let mut r = Response::new(Body::new(Bytes::from(body)));
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept"));
    r.headers_mut()
        .insert(VERSION_HEADER, l.version_header.clone());
    Ok(r)
}

/// Entries a history request answers by default, and at most.
const HISTORY_DEFAULT: usize = 50;
const HISTORY_MAX: usize = 1000;
/// How long a history answer is reused: pages that refresh do not each ask the store.
const HISTORY_FRESH: std::time::Duration = std::time::Duration::from_secs(5);
/// How long the store has to answer.
const HISTORY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `GET .../history?last=N`: the newest entries of the dataset's history in its store (oldest
/// first), read through a short-lived cache; one request asks the store at a time.
async fn history(d: &Dataset, query: &str) -> Result<Response<Body>, Failure> {
    let mut last = HISTORY_DEFAULT;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        match name {
            "last" => {
                last = std::str::from_utf8(&percent_decode(value)?)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=HISTORY_MAX).contains(n))
                    .ok_or_else(|| {
                        fail(
                            StatusCode::BAD_REQUEST,
                            "bad_limit",
                            format!("`last` must be a number from 1 to {HISTORY_MAX}"),
                        )
                    })?
            }
            "version" => {}
            other => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "unknown_parameter",
                    format!("unknown parameter {other:?}; use last"),
                ))
            }
        }
    }
    let Some(store) = &d.store else {
        return Err(fail(
            StatusCode::NOT_FOUND,
            "no_history",
            format!(
                "dataset {:?} is served from {}: a history is kept by stores (snapkv publish)",
                d.name, d.source
            ),
        ));
    };
    let mut cached = d.history.lock().await;
    if let Some((at, n, body)) = &*cached {
        if *n == last && at.elapsed() < HISTORY_FRESH {
            return Ok(json_response(body.clone()));
        }
    }
    let store_error = |message: String| fail(StatusCode::BAD_GATEWAY, "store_error", message);
    let entries = tokio::time::timeout(HISTORY_TIMEOUT, store.history(&d.name, Some(last)))
        .await
        .map_err(|_| {
            store_error(format!(
                "the store {} did not answer within {} s",
                d.source,
                HISTORY_TIMEOUT.as_secs()
            ))
        })?
        .map_err(|e| {
            store_error(format!(
                "cannot read the history of {:?} from {}: {}",
                d.name,
                d.source,
                crate::sync::error_chain(&e)
            ))
        })?;
    let body = serde_json::json!({
        "dataset": d.name,
        "source": d.source,
        "entries": entries,
    });
    let body = Bytes::from(body.to_string());
    *cached = Some((Instant::now(), last, body.clone()));
    Ok(json_response(body))
}

/// How a query's answer is written, chosen by the request's `Accept`.
#[derive(Clone, Copy, PartialEq)]
enum QueryFormat {
    /// `{"version", "rows", "stats"}` (the default).
    Json,
    /// One row per line.
    Ndjson,
    /// An Arrow IPC stream.
    Arrow,
}

impl QueryFormat {
    const ARROW: &'static str = "application/vnd.apache.arrow.stream";
    const NDJSON: &'static str = "application/x-ndjson";

    /// Arrow if `Accept` names it, else NDJSON if it names that, else JSON.
    fn accepted(headers: &HeaderMap) -> QueryFormat {
        let mut format = QueryFormat::Json;
        for value in headers.get_all(header::ACCEPT) {
            let Ok(value) = value.to_str() else { continue };
            for range in value.split(',') {
                let media = range.split(';').next().unwrap_or("").trim();
                if media.eq_ignore_ascii_case(Self::ARROW) {
                    return QueryFormat::Arrow;
                }
                if media.eq_ignore_ascii_case(Self::NDJSON) && format == QueryFormat::Json {
                    format = QueryFormat::Ndjson;
                }
            }
        }
        format
    }
}

/// How values are written into JSON responses.
#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    /// Values are JSON documents, embedded as they are.
    Json,
    /// Values are UTF-8 text, embedded as JSON strings.
    Utf8,
    /// Values are arbitrary bytes, embedded as base64 strings.
    Base64,
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Json => "json",
            Encoding::Utf8 => "utf8",
            Encoding::Base64 => "base64",
        }
    }

    fn of<'v>(l: &Loaded, values: impl Iterator<Item = &'v [u8]>) -> Encoding {
        if l.json {
            Encoding::Json
        } else if values.into_iter().all(|v| std::str::from_utf8(v).is_ok()) {
            Encoding::Utf8
        } else {
            Encoding::Base64
        }
    }

    fn write(self, out: &mut BytesMut, value: &[u8]) {
        match self {
            Encoding::Json => out.put_slice(value),
            Encoding::Utf8 => write_json_str(out, std::str::from_utf8(value).unwrap_or_default()),
            Encoding::Base64 => write_json_str(out, &STANDARD.encode(value)),
        }
    }
}

fn write_json_str(out: &mut BytesMut, s: &str) {
    // Serializing a string into a buffer cannot fail.
    let _ = serde_json::to_writer((&mut *out).writer(), s);
}

/// Writes `"key":` or `"key_base64":` fields for a key.
fn write_key_field(out: &mut BytesMut, key: &[u8]) {
    match std::str::from_utf8(key) {
        Ok(k) => {
            out.put_slice(b"\"key\":");
            write_json_str(out, k);
        }
        Err(_) => {
            out.put_slice(b"\"key_base64\":");
            write_json_str(out, &STANDARD.encode(key));
        }
    }
}

/// The body of an mget: `{"keys": [...]}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MgetRequest {
    /// Strings and integers, each the key [`key_text`] makes of it.
    keys: Vec<serde_json::Value>,
}

/// The key that item `i` of an mget's `keys` names: a string is the key's text, and an integer
/// JSON number its decimal text (`7` is the key `7`): the key encoding of integer key columns
/// (spec/BUILD.md), so that `[7]` finds what `GET .../keys/7` finds. Anything else is a 400.
///
/// Integers are taken for every dataset, whatever its key columns: a key is only its bytes,
/// the decimal text names the same key whichever column type made it, and the schema in the
/// metadata is optional (files from other writers have none).
fn key_text(i: usize, item: serde_json::Value) -> Result<String, Failure> {
    use serde_json::Value;
    let what = match item {
        Value::String(s) => return Ok(s),
        // A fraction or an exponent (`7.0`, `7e0`) makes a float: not the key's text.
        Value::Number(n) if n.is_i64() || n.is_u64() => return Ok(n.to_string()),
        Value::Number(n) => format!("{n}, not an integer"),
        Value::Bool(b) => format!("{b}"),
        Value::Null => "null".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    };
    Err(fail(
        StatusCode::BAD_REQUEST,
        "bad_json",
        format!("keys[{i}] is {what}; keys are strings, or integers (7 is the key \"7\")"),
    ))
}

/// Starts the JSON body of an mget or scan answer: `{"version":…,"encoding":…,"FIELD":`, in a
/// buffer with room for `entries` at `per_entry` bytes of punctuation each. Returns the buffer
/// and the encoding every value of `entries` is written in.
fn start_body<K: AsRef<[u8]>>(
    l: &Loaded,
    field: &str,
    entries: &[(K, Bytes)],
    per_entry: usize,
) -> (BytesMut, Encoding) {
    let encoding = Encoding::of(l, entries.iter().map(|(_, v)| &v[..]));
    let payload: usize = entries
        .iter()
        .map(|(k, v)| k.as_ref().len() + v.len() + per_entry)
        .sum();
    let mut out = BytesMut::with_capacity(64 + payload);
    out.put_slice(b"{\"version\":");
    write_json_str(&mut out, &l.version);
    out.put_slice(b",\"encoding\":\"");
    out.put_slice(encoding.name().as_bytes());
    out.put_slice(b"\",");
    write_json_str(&mut out, field);
    out.put_u8(b':');
    (out, encoding)
}

/// Bytes an entry counts against `max_response_bytes`: its key and value as stored (JSON
/// escaping or base64 may make the answer larger, by a bounded factor).
fn entry_bytes(key: &[u8], value: &[u8]) -> usize {
    key.len() + value.len()
}

/// The keys of an mget's body, checked, without repeats, in the order given.
fn mget_keys(state: &State, body: &[u8]) -> Result<Vec<String>, Failure> {
    let req: MgetRequest = serde_json::from_slice(body).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("expected {{\"keys\": [\"...\", 7, ...]}}: {e}"),
        )
    })?;
    if req.keys.len() > state.limits.max_mget_keys {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "too_many_keys",
            format!(
                "{} keys over the limit of {} per request",
                req.keys.len(),
                state.limits.max_mget_keys
            ),
        ));
    }
    let keys = (req.keys.into_iter().enumerate())
        .map(|(i, item)| key_text(i, item))
        .collect::<Result<Vec<String>, Failure>>()?;
    for k in &keys {
        check_key(state, k.as_bytes())?;
    }
    let mut seen = std::collections::HashSet::new();
    Ok(keys
        .into_iter()
        .filter(|k| seen.insert(k.clone()))
        .collect())
}

/// A peer's mget answer.
#[derive(serde::Deserialize)]
struct PeerMget<'a> {
    version: String,
    encoding: String,
    #[serde(borrow)]
    values: std::collections::HashMap<String, &'a serde_json::value::RawValue>,
}

/// A value of a peer's JSON answer, as the bytes stored.
fn peer_value(encoding: &str, raw: &serde_json::value::RawValue) -> Result<Bytes, String> {
    match encoding {
        "json" => Ok(Bytes::copy_from_slice(raw.get().as_bytes())),
        "utf8" | "base64" => {
            let text: String = serde_json::from_str(raw.get()).map_err(|e| e.to_string())?;
            if encoding == "utf8" {
                Ok(Bytes::from(text))
            } else {
                STANDARD
                    .decode(text)
                    .map(Bytes::from)
                    .map_err(|e| e.to_string())
            }
        }
        other => Err(format!("unknown encoding {other:?}")),
    }
}

/// A peer's answer that this reader cannot use: a 502.
fn bad_peer(d: &Dataset, what: String) -> Failure {
    tracing::warn!(dataset = %d.name, error = %what, "a peer's answer is not usable");
    fail(StatusCode::BAD_GATEWAY, "bad_peer_answer", what)
}

/// A peer's successful JSON answer to a request pinned to `l`'s version: its error passed on,
/// and an answer that does not parse or comes from another version refused.
fn peer_json<'a, T: serde::Deserialize<'a>>(
    d: &Dataset,
    l: &Loaded,
    answer: &'a crate::cluster::PeerAnswer,
    what: &str,
    version: impl Fn(&T) -> &str,
) -> Result<T, Failure> {
    if answer.status != StatusCode::OK {
        return Err(peer_error(answer));
    }
    let parsed: T = serde_json::from_slice(&answer.body)
        .map_err(|e| bad_peer(d, format!("a peer's {what} answer: {e}")))?;
    if version(&parsed) != l.version {
        return Err(bad_peer(
            d,
            format!(
                "a peer answered from version {:?}, not {:?}",
                version(&parsed),
                l.version
            ),
        ));
    }
    Ok(parsed)
}

/// A peer's error answer, passed on: its status and JSON error body.
fn peer_error(answer: &crate::cluster::PeerAnswer) -> Failure {
    #[derive(serde::Deserialize)]
    struct Error {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    let message = serde_json::from_slice::<Error>(&answer.body)
        .map(|e| e.error.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&answer.body).into_owned());
    fail(
        answer.status,
        "peer_error",
        format!("a peer answered: {message}"),
    )
}

async fn mget(
    state: &State,
    t: &Target<'_>,
    l: &Arc<Loaded>,
    keys: &[String],
    req: &http::request::Parts,
) -> Result<Response<Body>, Failure> {
    let d = t.dataset;
    let fields = projection(l, req)?;
    // Keys of shards held elsewhere, by shard; their owners are known before anything is
    // sent, so that a misdirected request is refused whole.
    let mut remote: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for k in keys {
        let shard = l.snapshot.shard_of(k.as_bytes());
        if !l.snapshot.holds(shard) {
            remote.entry(shard).or_default().push(k);
        }
    }
    let mut owners = Vec::with_capacity(remote.len());
    for &shard in remote.keys() {
        owners.push(owners_of(state, d, l, shard, req)?);
    }
    let asks = remote.iter().zip(&owners).map(|((&shard, ks), owners)| {
        let body = serde_json::json!({ "keys": ks }).to_string();
        forward(
            state,
            d,
            l,
            shard,
            owners,
            Method::POST,
            req.uri.path(),
            HeaderMap::new(),
            Bytes::from(body),
        )
    });
    let answers = futures_util::future::join_all(asks).await;
    let asked: std::collections::HashMap<&str, &str> =
        remote.values().flatten().map(|&k| (k, k)).collect();
    let mut values: std::collections::HashMap<&str, Bytes> = std::collections::HashMap::new();
    let mut size = 0usize;
    let too_large = || {
        fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            "response_too_large",
            format!(
                "the values of these keys are over the answer limit of {} bytes; ask for \
                 fewer keys at a time",
                state.limits.max_response_bytes
            ),
        )
    };
    for answer in answers {
        let answer = answer?;
        let a: PeerMget<'_> = peer_json(d, l, &answer, "mget", |a: &PeerMget<'_>| &a.version)?;
        for (k, raw) in a.values {
            let Some(&k) = asked.get(k.as_str()) else {
                return Err(bad_peer(
                    d,
                    format!("a peer answered a key not asked: {k:?}"),
                ));
            };
            let v = peer_value(&a.encoding, raw).map_err(|e| bad_peer(d, e))?;
            size = size.saturating_add(entry_bytes(k.as_bytes(), &v));
            if size > state.limits.max_response_bytes {
                return Err(too_large());
            }
            values.insert(k, v);
        }
    }
    if !l.filling.is_empty() {
        // A lazily opened version: the blocks of the keys held here arrive together.
        let waits = keys
            .iter()
            .filter(|k| l.snapshot.holds(l.snapshot.shard_of(k.as_bytes())))
            .map(|k| l.ready_for(k.as_bytes()));
        for r in futures_util::future::join_all(waits).await {
            r.map_err(|e| internal(d, e))?;
        }
    }
    let mut found = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    let mut hits = 0;
    for k in keys {
        let shard = l.snapshot.shard_of(k.as_bytes());
        let value = if l.snapshot.holds(shard) {
            let v = l.snapshot.get(k.as_bytes()).map_err(|e| internal(d, e))?;
            if let Some(v) = &v {
                hits += 1;
                size = size.saturating_add(entry_bytes(k.as_bytes(), v));
                if size > state.limits.max_response_bytes {
                    return Err(too_large());
                }
            }
            v
        } else {
            values.remove(k.as_str())
        };
        match value {
            Some(v) => found.push((k.as_str(), v)),
            None => missing.push(k.as_str()),
        }
    }
    if let Some(p) = &fields {
        for (k, v) in &mut found {
            *v = p.apply(k.as_bytes(), v);
        }
    }
    // Keys of other shards are counted by the readers that looked them up.
    let local = keys.len() - remote.values().map(Vec::len).sum::<usize>();
    d.hits.inc_by(hits);
    d.misses.inc_by((local as u64).saturating_sub(hits));

    let (mut out, encoding) = start_body(l, "values", &found, 8);
    out.put_u8(b'{');
    for (i, (k, v)) in found.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        write_json_str(&mut out, k);
        out.put_u8(b':');
        encoding.write(&mut out, v);
    }
    out.put_slice(b"},\"missing\":");
    let _ = serde_json::to_writer((&mut out).writer(), &missing);
    out.put_u8(b'}');
    let mut r = json_response(out.freeze());
    r.headers_mut()
        .insert(VERSION_HEADER, l.version_header.clone());
    Ok(r)
}

/// What a scan asks for: keys from `lower` to `upper` (a prefix is the range of the keys that
/// start with it), at most `limit` of them.
struct ScanRange {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    limit: usize,
}

fn scan_range(state: &State, query: &str) -> Result<ScanRange, Failure> {
    let mut prefix = None;
    let mut start = None;
    let mut end = None;
    let mut after = None;
    let mut limit = state.limits.default_scan_limit;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        // An empty range parameter (a form's blank field) is the same as none.
        if value.is_empty() && matches!(name, "prefix" | "start" | "end" | "after") {
            continue;
        }
        match name {
            "prefix" => prefix = Some(value),
            "start" => start = Some(value),
            "end" => end = Some(value),
            "after" => {
                after = Some(URL_SAFE_NO_PAD.decode(&value).map_err(|_| {
                    fail(StatusCode::BAD_REQUEST, "bad_cursor", "`after` is not a cursor from a previous page")
                })?)
            }
            // The version a request is pinned to, taken by `requested_version`.
            "version" | "fields" => {}
            "limit" => {
                limit = std::str::from_utf8(&value)
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .filter(|n| (1..=state.limits.max_scan_limit).contains(n))
                    .ok_or_else(|| {
                        fail(
                            StatusCode::BAD_REQUEST,
                            "bad_limit",
                            format!("`limit` must be a number from 1 to {}", state.limits.max_scan_limit),
                        )
                    })?
            }
            other => {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "unknown_parameter",
                    format!("unknown parameter {other:?}; use prefix, or start and end, with limit and after"),
                ))
            }
        }
    }
    if prefix.is_some() && (start.is_some() || end.is_some()) {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "bad_range",
            "use either `prefix` or `start`/`end`, not both",
        ));
    }
    // The lower bound: the later of the range start (or prefix) and the cursor.
    let low = prefix.clone().or(start);
    let lower = match (after, low) {
        (Some(a), Some(s)) if a < s => Bound::Included(s),
        (Some(a), _) => Bound::Excluded(a),
        (None, Some(s)) => Bound::Included(s),
        (None, None) => Bound::Unbounded,
    };
    let upper = match (prefix, end) {
        (Some(p), _) => {
            snapkv_format::prefix_successor(&p).map_or(Bound::Unbounded, Bound::Excluded)
        }
        (None, Some(e)) => Bound::Excluded(e),
        (None, None) => Bound::Unbounded,
    };
    Ok(ScanRange {
        lower,
        upper,
        limit,
    })
}

/// A peer's scan answer.
#[derive(serde::Deserialize)]
struct PeerScan<'a> {
    version: String,
    encoding: String,
    #[serde(borrow)]
    items: Vec<PeerItem<'a>>,
    next: Option<String>,
}

#[derive(serde::Deserialize)]
struct PeerItem<'a> {
    key: Option<String>,
    key_base64: Option<String>,
    #[serde(borrow)]
    value: &'a serde_json::value::RawValue,
}

/// A page of a scan: entries in key order through the shards, this reader's own and its
/// peers' (each asked for the part of the range in the shards it holds, pinned to the same
/// version), up to the limit or the answer size limit; `next` is the cursor after the last
/// entry when there may be more.
async fn scan(
    state: &State,
    t: &Target<'_>,
    l: &Arc<Loaded>,
    range: &ScanRange,
    req: &http::request::Parts,
) -> Result<Response<Body>, Failure> {
    let d = t.dataset;
    let limit = range.limit;
    let mut items: Vec<(Bytes, Bytes)> = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    let mut size = 0usize;
    let mut low = range.lower.clone();
    'shards: loop {
        let shard = match &low {
            Bound::Unbounded => 0,
            Bound::Included(k) | Bound::Excluded(k) => l.snapshot.shard_of(k),
        };
        let (_, high) = l.snapshot.bounds(shard);
        let high = high.cloned();
        // This shard's part of the range ends at the earlier of the range's end and the
        // shard's.
        let (seg_upper, last) = match (&range.upper, &high) {
            (Bound::Excluded(u), Some(h)) if u.as_slice() <= h.as_ref() => {
                (Bound::Excluded(u.clone()), true)
            }
            (_, Some(h)) => (Bound::Excluded(h.to_vec()), false),
            (u, None) => (u.clone(), true),
        };
        let empty = match (&low, &seg_upper) {
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
            _ => false,
        };
        if !empty {
            if let Some(snapshot) = l.snapshot.shard(shard) {
                let full = may_wait(l, || -> Result<bool, Failure> {
                    for entry in snapshot.range(
                        low.as_ref().map(Vec::as_slice),
                        seg_upper.as_ref().map(Vec::as_slice),
                    ) {
                        let (k, v) = entry.map_err(|e| internal(d, e))?;
                        size = size.saturating_add(entry_bytes(&k, &v));
                        // A page ends at `limit` entries or at the answer size limit,
                        // whichever comes first; it always holds one entry, so that a scan
                        // moves on.
                        if items.len() == limit
                            || (!items.is_empty() && size > state.limits.max_response_bytes)
                        {
                            return Ok(true);
                        }
                        items.push((k, v));
                    }
                    Ok(false)
                })?;
                if full {
                    more = true;
                    break 'shards;
                }
            } else {
                let owners = match owners_of(state, d, l, shard, req) {
                    // Without forwarding, a page ends where the shards held end; the next
                    // page starts in a shard held elsewhere, and is refused naming its owners.
                    Err(f) if f.status == StatusCode::MISDIRECTED_REQUEST && !items.is_empty() => {
                        more = true;
                        break 'shards;
                    }
                    r => r?,
                };
                // One more than the page has room for tells whether there are more.
                let ask = (limit - items.len() + 1).min(state.limits.max_scan_limit);
                let enc = |k: &[u8]| {
                    percent_encoding::percent_encode(k, percent_encoding::NON_ALPHANUMERIC)
                        .to_string()
                };
                let mut query = format!("{}?limit={ask}", req.uri.path());
                match &low {
                    Bound::Included(k) => query.push_str(&format!("&start={}", enc(k))),
                    Bound::Excluded(k) => {
                        query.push_str(&format!("&after={}", URL_SAFE_NO_PAD.encode(k)))
                    }
                    Bound::Unbounded => {}
                }
                if let Bound::Excluded(u) = &seg_upper {
                    query.push_str(&format!("&end={}", enc(u)));
                }
                let answer = forward(
                    state,
                    d,
                    l,
                    shard,
                    &owners,
                    Method::GET,
                    &query,
                    HeaderMap::new(),
                    Bytes::new(),
                )
                .await?;
                let page: PeerScan<'_> =
                    peer_json(d, l, &answer, "scan", |p: &PeerScan<'_>| &p.version)?;
                for item in &page.items {
                    let k = match (&item.key, &item.key_base64) {
                        (Some(k), None) => Bytes::from(k.clone()),
                        (None, Some(b)) => STANDARD
                            .decode(b)
                            .map(Bytes::from)
                            .map_err(|e| bad_peer(d, format!("a peer's key: {e}")))?,
                        _ => return Err(bad_peer(d, "a peer's scan item has no key".into())),
                    };
                    let v = peer_value(&page.encoding, item.value).map_err(|e| bad_peer(d, e))?;
                    size = size.saturating_add(entry_bytes(&k, &v));
                    if items.len() == limit
                        || (!items.is_empty() && size > state.limits.max_response_bytes)
                    {
                        more = true;
                        break 'shards;
                    }
                    items.push((k, v));
                }
                if page.next.is_some() {
                    // The peer's page ended early (its answer limit): this one ends with it.
                    more = true;
                    break 'shards;
                }
            }
        }
        match high {
            Some(h) if !last => low = Bound::Included(h.to_vec()),
            _ => break,
        }
    }
    if let Some(p) = projection(l, req)? {
        for (k, v) in &mut items {
            *v = p.apply(k, v);
        }
    }
    let (mut out, encoding) = start_body(l, "items", &items, 24);
    out.put_u8(b'[');
    for (i, (k, v)) in items.iter().enumerate() {
        if i > 0 {
            out.put_u8(b',');
        }
        out.put_u8(b'{');
        write_key_field(&mut out, k);
        out.put_slice(b",\"value\":");
        encoding.write(&mut out, v);
        out.put_u8(b'}');
    }
    out.put_slice(b"],\"next\":");
    match items.last().filter(|_| more) {
        Some((k, _)) => write_json_str(&mut out, &URL_SAFE_NO_PAD.encode(k)),
        None => out.put_slice(b"null"),
    }
    out.put_u8(b'}');
    let mut r = json_response(out.freeze());
    r.headers_mut()
        .insert(VERSION_HEADER, l.version_header.clone());
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding_is_strict() {
        assert_eq!(percent_decode("a%2Fb+c").ok(), Some(b"a/b+c".to_vec()));
        assert_eq!(percent_decode("%00%ff").ok(), Some(vec![0, 255]));
        for bad in ["%", "%4", "%zz", "a%g0"] {
            assert!(percent_decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn mget_keys_are_strings_or_integers() {
        let key = |i, v: &str| key_text(i, serde_json::from_str(v).unwrap());
        assert_eq!(key(0, "\"7\"").ok().as_deref(), Some("7"));
        assert_eq!(key(0, "7").ok().as_deref(), Some("7"));
        assert_eq!(key(0, "-42").ok().as_deref(), Some("-42"));
        let max = u64::MAX.to_string();
        assert_eq!(key(0, &max).ok(), Some(max));
        for (bad, what) in [
            ("7.0", "keys[3] is 7.0, not an integer"),
            ("1e3", "keys[3] is 1000.0, not an integer"),
            ("true", "keys[3] is true"),
            ("null", "keys[3] is null"),
            ("[7]", "keys[3] is an array"),
            ("{}", "keys[3] is an object"),
        ] {
            let f = key(3, bad).err().unwrap();
            assert_eq!(f.status, StatusCode::BAD_REQUEST);
            assert!(f.message.starts_with(what), "{bad}: {}", f.message);
        }
    }

    #[test]
    fn routes() {
        assert!(matches!(
            route("/v1/datasets/d/keys/a/b"),
            Route::Key("d", "a/b")
        ));
        assert!(matches!(route("/v1/datasets/d/keys/"), Route::Key("d", "")));
        assert!(matches!(route("/v1/datasets/d"), Route::Dataset("d")));
        assert!(matches!(route("/v1/datasets/d/mget"), Route::Mget("d")));
        assert!(matches!(route("/v1/datasets/d/other"), Route::Unknown));
        assert!(matches!(route("/nope"), Route::Unknown));
    }
}
