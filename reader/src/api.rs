//! The HTTP API (`spec/openapi.yaml`): shared state, routing, handlers, JSON errors.

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
    /// Requests being answered, each counted until its answer is sent.
    in_flight: Arc<InFlight>,
}

impl State {
    pub fn new(
        datasets: BTreeMap<String, Arc<Dataset>>,
        limits: Limits,
        metrics: Metrics,
    ) -> State {
        State {
            in_flight: InFlight::new(limits.max_in_flight),
            datasets,
            limits,
            metrics,
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

/// A request that cannot be answered: status, machine-readable code, message.
struct Failure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

fn fail(status: StatusCode, code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        status,
        code,
        message: message.into(),
    }
}

impl Failure {
    fn into_response(self) -> Response<Body> {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
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
        if self.status == StatusCode::SERVICE_UNAVAILABLE && self.code == "overloaded" {
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
    Dataset(&'a str),
    Key(&'a str, &'a str),
    Mget(&'a str),
    Scan(&'a str),
    Unknown,
}

impl Route<'_> {
    fn label(&self) -> &'static str {
        match self {
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Metrics => "metrics",
            Route::Datasets => "datasets",
            Route::Dataset(_) => "dataset",
            Route::Key(..) => "key",
            Route::Mget(_) => "mget",
            Route::Scan(_) => "scan",
            Route::Unknown => "unknown",
        }
    }

    /// The dataset a route is about, still percent-encoded.
    fn dataset(&self) -> Option<&str> {
        match *self {
            Route::Dataset(ds) | Route::Key(ds, _) | Route::Mget(ds) | Route::Scan(ds) => Some(ds),
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
        _ => {}
    }
    let Some(rest) = path.strip_prefix("/v1/datasets/") else {
        return Route::Unknown;
    };
    match rest.split_once('/') {
        None => Route::Dataset(rest),
        Some((ds, "mget")) => Route::Mget(ds),
        Some((ds, "scan")) => Route::Scan(ds),
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
    /// Why the version the request is pinned to cannot answer it: reported after the method
    /// is checked (a 405 comes first).
    refused: Option<Failure>,
}

impl Target<'_> {
    fn loaded(&self) -> Result<&Loaded, Failure> {
        self.loaded.as_deref().ok_or_else(|| {
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
    // Health, readiness and metrics are cheap and must answer under any load: only the
    // other routes take an in-flight slot.
    let slot = if matches!(route, Route::Healthz | Route::Readyz | Route::Metrics) {
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
    if let Some(v) = version {
        response.headers_mut().insert(VERSION_HEADER, v);
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
        Route::Mget(_) => {}
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
        (Route::Key(_, key), Some(t)) => {
            let key = percent_decode(key)?;
            get_key(state, &t, &key, &req.headers)
        }
        (Route::Mget(_), Some(t)) => {
            let body = read_body(state, &req.headers, body).await?;
            mget(state, &t, &body)
        }
        (Route::Scan(_), Some(t)) => scan(state, &t, req.uri.query().unwrap_or("")),
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
    let pinned = requested_version(parts).and_then(|pin| match pin {
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
            refused: None,
        },
        Err(f) => Target {
            dataset: d,
            loaded: None,
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

fn internal(d: &Dataset, e: snapkv_format::Error) -> Failure {
    tracing::error!(dataset = %d.name, error = %e, "lookup failed");
    fail(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        format!("lookup failed: {e}"),
    )
}

fn get_key(
    state: &State,
    t: &Target<'_>,
    key: &[u8],
    headers: &HeaderMap,
) -> Result<Response<Body>, Failure> {
    check_key(state, key)?;
    let (d, l) = (t.dataset, t.loaded()?);
    let value = l.snapshot.get(key).map_err(|e| internal(d, e))?;
    let Some(value) = value else {
        d.misses.inc();
        return Err(fail(StatusCode::NOT_FOUND, "key_not_found", "no such key"));
    };
    d.hits.inc();
    let etag = format!("\"{:016x}\"", xxh3_64(&value));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    // Several `If-None-Match` lines are one list (RFC 9110, 5.3).
    let matches = headers
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
    Ok(r)
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

fn mget(state: &State, t: &Target<'_>, body: &[u8]) -> Result<Response<Body>, Failure> {
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
    let (d, l) = (t.dataset, t.loaded()?);
    let mut found = Vec::with_capacity(keys.len());
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut size = 0usize;
    for k in &keys {
        if !seen.insert(k.as_str()) {
            continue;
        }
        match l.snapshot.get(k.as_bytes()).map_err(|e| internal(d, e))? {
            Some(v) => {
                size = size.saturating_add(entry_bytes(k.as_bytes(), &v));
                if size > state.limits.max_response_bytes {
                    return Err(fail(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "response_too_large",
                        format!(
                            "the values of these keys are over the answer limit of {} bytes; \
                             ask for fewer keys at a time",
                            state.limits.max_response_bytes
                        ),
                    ));
                }
                found.push((k.as_str(), v));
            }
            None => missing.push(k.as_str()),
        }
    }
    d.hits.inc_by(found.len() as u64);
    d.misses.inc_by(missing.len() as u64);

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
    Ok(json_response(out.freeze()))
}

fn scan(state: &State, t: &Target<'_>, query: &str) -> Result<Response<Body>, Failure> {
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
            "version" => {}
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
    let (d, l) = (t.dataset, t.loaded()?);
    // The lower bound: the later of the range start (or prefix) and the cursor.
    let low: Option<&[u8]> = prefix.as_deref().or(start.as_deref());
    let lower = match (&after, low) {
        (Some(a), Some(s)) if a.as_slice() < s => Bound::Included(s),
        (Some(a), _) => Bound::Excluded(a.as_slice()),
        (None, Some(s)) => Bound::Included(s),
        (None, None) => Bound::Unbounded,
    };
    let upper = end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let mut items = Vec::with_capacity(limit.min(1024));
    let mut more = false;
    let mut size = 0usize;
    for entry in l.snapshot.range(lower, upper) {
        let (k, v) = entry.map_err(|e| internal(d, e))?;
        if let Some(p) = &prefix {
            if !k.starts_with(p) {
                break;
            }
        }
        size = size.saturating_add(entry_bytes(&k, &v));
        // A page ends at `limit` entries or at the answer size limit, whichever comes first;
        // it always holds one entry, so that a scan moves on.
        if items.len() == limit || (!items.is_empty() && size > state.limits.max_response_bytes) {
            more = true;
            break;
        }
        items.push((k, v));
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
    Ok(json_response(out.freeze()))
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
