//! The HTTP API (`spec/openapi.yaml`): routing, handlers, JSON errors.

use crate::registry::{Dataset, Loaded};
use crate::server::State;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use std::ops::Bound;
use std::sync::Arc;
use std::time::Instant;
use xxhash_rust::xxh3::xxh3_64;

pub(crate) type Body = Full<Bytes>;

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
        let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
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
        r
    }
}

fn json_response(value: Bytes, version: Option<&Loaded>) -> Response<Body> {
    let mut r = Response::new(Full::new(value));
    r.headers_mut().insert(header::CONTENT_TYPE, JSON);
    if let Some(l) = version {
        r.headers_mut()
            .insert(VERSION_HEADER, l.version_header.clone());
    }
    r
}

/// Decodes `%XX` escapes strictly: a `%` not followed by two hex digits is an error. `+` is a
/// plain `+` (RFC 3986), in paths and queries alike.
fn percent_decode(s: &str) -> Result<Vec<u8>, Failure> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                (Some(h), Some(l)) => out.push((h * 16 + l) as u8),
                _ => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "bad_percent_encoding",
                        format!("bad percent-encoding at byte {i} of {s:?}"),
                    ))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
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

/// Answers one request; never fails (errors become JSON error responses).
pub(crate) async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let (parts, body) = req.into_parts();
    let route = route(parts.uri.path());
    let label = route.label();
    let response = match answer(&state, route, &parts, body).await {
        Ok(r) => r,
        Err(f) => f.into_response(),
    };
    state
        .metrics
        .observe(label, response.status().as_u16(), started.elapsed());
    Ok(response)
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

async fn answer(
    state: &State,
    route: Route<'_>,
    req: &http::request::Parts,
    body: Incoming,
) -> Result<Response<Body>, Failure> {
    let method = &req.method;
    match route {
        Route::Healthz => {
            read_only(method)?;
            Ok(json_response(
                Bytes::from_static(b"{\"status\":\"ok\"}"),
                None,
            ))
        }
        Route::Readyz => {
            read_only(method)?;
            let waiting: Vec<&str> = state
                .datasets
                .values()
                .filter(|d| d.current.load().is_none())
                .map(|d| d.name.as_str())
                .collect();
            let body = serde_json::json!({"ready": waiting.is_empty(), "waiting": waiting});
            let mut r = json_response(Bytes::from(body.to_string()), None);
            if !waiting.is_empty() {
                *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            }
            Ok(r)
        }
        Route::Metrics => {
            read_only(method)?;
            let text = state.metrics.render(state.datasets.values().map(|d| &**d));
            let mut r = Response::new(Full::new(Bytes::from(text)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(r)
        }
        Route::Datasets => {
            read_only(method)?;
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
            Ok(json_response(Bytes::from(body.to_string()), None))
        }
        Route::Dataset(ds) => {
            read_only(method)?;
            let d = dataset(state, ds)?;
            let current = d.current.load_full();
            Ok(json_response(
                Bytes::from(d.info().to_string()),
                current.as_deref(),
            ))
        }
        Route::Key(ds, key) => {
            read_only(method)?;
            let d = dataset(state, ds)?;
            let key = percent_decode(key)?;
            get_key(state, d, &key, req.headers.get(header::IF_NONE_MATCH))
        }
        Route::Mget(ds) => {
            if method != Method::POST {
                return Err(fail(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "use_post",
                    format!("{method} is not allowed here; use POST with {{\"keys\": [...]}}"),
                ));
            }
            let d = dataset(state, ds)?;
            let limit = state.limits.max_body_bytes;
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        fail(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "body_too_large",
                            format!("request body over the limit of {limit} bytes"),
                        )
                    } else {
                        fail(
                            StatusCode::BAD_REQUEST,
                            "bad_body",
                            format!("cannot read the body: {e}"),
                        )
                    }
                })?
                .to_bytes();
            mget(state, d, &body)
        }
        Route::Scan(ds) => {
            read_only(method)?;
            let d = dataset(state, ds)?;
            scan(state, d, req.uri.query().unwrap_or(""))
        }
        Route::Unknown => Err(fail(
            StatusCode::NOT_FOUND,
            "no_route",
            "no such endpoint; see /v1/datasets",
        )),
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

fn loaded(d: &Dataset) -> Result<Arc<Loaded>, Failure> {
    d.current.load_full().ok_or_else(|| {
        fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_loaded",
            format!("dataset {:?} has no snapshot loaded yet", d.name),
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
    d: &Dataset,
    key: &[u8],
    if_none_match: Option<&HeaderValue>,
) -> Result<Response<Body>, Failure> {
    check_key(state, key)?;
    let l = loaded(d)?;
    let value = l.snapshot.get(key).map_err(|e| internal(d, e))?;
    let Some(value) = value else {
        d.misses.inc();
        let mut r = fail(StatusCode::NOT_FOUND, "key_not_found", "no such key").into_response();
        r.headers_mut()
            .insert(VERSION_HEADER, l.version_header.clone());
        return Ok(r);
    };
    d.hits.inc();
    let etag = format!("\"{:016x}\"", xxh3_64(&value));
    let etag = HeaderValue::from_str(&etag).expect("hex is a valid header value");
    let matches = if_none_match
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| {
            h.split(',')
                .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == etag)
        });
    let mut r = if matches {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(Full::new(value));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, l.content_type.clone());
        r
    };
    r.headers_mut().insert(header::ETAG, etag);
    r.headers_mut()
        .insert(VERSION_HEADER, l.version_header.clone());
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MgetRequest {
    keys: Vec<String>,
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

fn mget(state: &State, d: &Dataset, body: &[u8]) -> Result<Response<Body>, Failure> {
    let req: MgetRequest = serde_json::from_slice(body).map_err(|e| {
        fail(
            StatusCode::BAD_REQUEST,
            "bad_json",
            format!("expected {{\"keys\": [\"...\"]}}: {e}"),
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
    for k in &req.keys {
        check_key(state, k.as_bytes())?;
    }
    // One version answers the whole request.
    let l = loaded(d)?;
    let mut found = Vec::with_capacity(req.keys.len());
    let mut missing = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for k in &req.keys {
        if !seen.insert(k.as_str()) {
            continue;
        }
        match l.snapshot.get(k.as_bytes()).map_err(|e| internal(d, e))? {
            Some(v) => found.push((k.as_str(), v)),
            None => missing.push(k.as_str()),
        }
    }
    d.hits.inc_by(found.len() as u64);
    d.misses.inc_by(missing.len() as u64);

    let (mut out, encoding) = start_body(&l, "values", &found, 8);
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
    Ok(json_response(out.freeze(), Some(&l)))
}

fn scan(state: &State, d: &Dataset, query: &str) -> Result<Response<Body>, Failure> {
    let mut prefix = None;
    let mut start = None;
    let mut end = None;
    let mut after = None;
    let mut limit = state.limits.default_scan_limit;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match name {
            "prefix" => prefix = Some(value),
            "start" => start = Some(value),
            "end" => end = Some(value),
            "after" => {
                after = Some(URL_SAFE_NO_PAD.decode(&value).map_err(|_| {
                    fail(StatusCode::BAD_REQUEST, "bad_cursor", "`after` is not a cursor from a previous page")
                })?)
            }
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
    let l = loaded(d)?;
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
    for entry in l.snapshot.range(lower, upper) {
        let (k, v) = entry.map_err(|e| internal(d, e))?;
        if let Some(p) = &prefix {
            if !k.starts_with(p) {
                break;
            }
        }
        if items.len() == limit {
            more = true;
            break;
        }
        items.push((k, v));
    }
    let (mut out, encoding) = start_body(&l, "items", &items, 24);
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
    Ok(json_response(out.freeze(), Some(&l)))
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
