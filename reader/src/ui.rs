//! The explorer: a read-only page over the HTTP API, served at `/ui/` from assets built into
//! the binary (no network needed). uPlot (MIT, vendored from npm in `ui/vendor/uplot/`) draws
//! the charts.

use crate::api::Body;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

/// The page may load its own scripts and styles and call this server, nothing else: no inline
/// code, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The asset at `path` (after `/ui`), with its headers; `None` when there is none.
pub(crate) fn asset(path: &str) -> Option<Response<Body>> {
    let (body, content_type): (&'static [u8], &str) = match path {
        // `/ui` goes to `/ui/`, so that the page's relative links hold.
        "" => {
            let mut r = Response::new(Body::from_static(b""));
            *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
            r.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/ui/"));
            return Some(r);
        }
        "/" | "/index.html" => (
            include_bytes!("../ui/index.html"),
            "text/html; charset=utf-8",
        ),
        "/app.js" => (
            include_bytes!("../ui/app.js"),
            "text/javascript; charset=utf-8",
        ),
        "/app.css" => (include_bytes!("../ui/app.css"), "text/css; charset=utf-8"),
        "/uPlot.iife.min.js" => (
            include_bytes!("../ui/vendor/uplot/uPlot.iife.min.js"),
            "text/javascript; charset=utf-8",
        ),
        "/uPlot.min.css" => (
            include_bytes!("../ui/vendor/uplot/uPlot.min.css"),
            "text/css; charset=utf-8",
        ),
        _ => return None,
    };
    let mut r = Response::new(Body::from_static(body));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).ok()?,
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The assets change with the binary only; a restart may bring new ones.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(r)
}
