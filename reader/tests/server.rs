//! The server in-process (`run` on 127.0.0.1:0) against real sockets: connection and request
//! limits, the contract details of the API, and what sync failures leave visible.

use snapkv_format::{Metadata, SnapshotWriter, ValueEncoding, WriterOptions};
use snapkv_reader::{Config, Limits, Source};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// A snapshot of `rows` for dataset `dataset` labelled `version`.
fn write_snapshot(
    path: &Path,
    dataset: &str,
    version: &str,
    rows: &[(Vec<u8>, Vec<u8>)],
    json: bool,
) {
    let mut meta = Metadata::default();
    meta.dataset = Some(dataset.into());
    meta.version = Some(version.into());
    if json {
        meta.value_encoding = ValueEncoding::Json;
    }
    let tmp = path.with_extension("tmp");
    let file = std::io::BufWriter::new(std::fs::File::create(&tmp).unwrap());
    let mut w = SnapshotWriter::new(file, WriterOptions::default(), meta).unwrap();
    for (k, v) in rows {
        w.insert(k, v).unwrap();
    }
    w.finish().unwrap();
    // Files are replaced by renaming over the name, never rewritten in place.
    std::fs::rename(tmp, path).unwrap();
}

fn json_rows(n: usize, version: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("k{i:04}").into_bytes(),
                format!("{{\"i\":{i},\"v\":\"{version}\"}}").into_bytes(),
            )
        })
        .collect()
}

/// A server running in this process until dropped.
struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: Config) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            snapkv_reader::run(listener, config, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Running {
            addr,
            stop: Some(tx),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

fn file_config(name: &str, path: &Path) -> Config {
    let mut config = Config::new(vec![Source::File {
        name: name.into(),
        path: path.to_owned(),
    }]);
    config.poll_interval = Duration::from_millis(50);
    config
}

/// Polls `check` until it gives a value, for at most 20 s.
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn info(c: &reqwest::Client, s: &Running, ds: &str) -> serde_json::Value {
    c.get(s.url(&format!("/v1/datasets/{ds}")))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn wait_ready(s: &Running) {
    let c = client();
    eventually("ready", || {
        let c = c.clone();
        let url = s.url("/readyz");
        async move {
            let r = c.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
}

/// Sends raw bytes on a new connection and reads until the server closes it (at most 20 s).
async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("the server never closed the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads one HTTP/1.1 answer (head and `Content-Length` body) from `s`, at most 10 s.
async fn read_answer(s: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse::<usize>().unwrap());
                if got.len() >= end + 4 + length {
                    return;
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed mid-answer: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("no whole answer");
    String::from_utf8_lossy(&got).into_owned()
}

/// HTTP/2 with prior knowledge: the preface and an empty SETTINGS frame.
fn h2_preface() -> Vec<u8> {
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    bytes
}

/// An HTTP/2 PING frame.
const H2_PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];

/// The frame types in `bytes`, a server's HTTP/2 frames.
fn h2_frame_types(bytes: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut at = 0;
    while at + 9 <= bytes.len() {
        // HTTP/2 frame lengths are 24-bit big-endian.
        let len = (usize::from(bytes[at]) << 16)
            | (usize::from(bytes[at + 1]) << 8)
            | usize::from(bytes[at + 2]);
        types.push(bytes[at + 3]);
        at += 9 + len;
    }
    types
}

/// Reads until the server closes the connection (at most 10 s): what it sent.
async fn read_until_closed(s: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .unwrap_or_else(|_| panic!("{what} stayed open"))
        .ok();
    got
}

/// A served JSON dataset `d` of 100 keys, with `limits`.
async fn serve_json(dir: &Path, limits: Limits) -> (Running, PathBuf) {
    let path = dir.join("d.snapkv");
    write_snapshot(&path, "d", "v1", &json_rows(100, "v1"), true);
    let mut config = file_config("d", &path);
    config.limits = limits;
    let s = Running::start(config).await;
    wait_ready(&s).await;
    (s, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_cannot_lock_out_health_checks() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_connections = 8;
    limits.header_read_timeout = Duration::from_millis(300);
    let (s, _) = serve_json(dir.path(), limits).await;
    // More silent clients than connection slots: some send nothing, some half an HTTP/2
    // preface, some half a request line.
    let mut silent = Vec::new();
    for i in 0..24 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        match i % 3 {
            0 => {}
            1 => c.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap(),
            _ => c.write_all(b"GET /healthz HT").await.unwrap(),
        }
        silent.push(c);
    }
    // And some that keep talking without ever asking: a byte of a request line at a time, or
    // HTTP/2 PINGs. They hold their slots no longer than the silent ones.
    let mut talkers = Vec::new();
    for i in 0..8 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        if i % 2 == 1 {
            c.write_all(&h2_preface()).await.unwrap();
        }
        talkers.push(tokio::spawn(async move {
            for _ in 0..400 {
                let sent = if i % 2 == 0 {
                    c.write_all(b"G").await
                } else {
                    c.write_all(&H2_PING).await
                };
                if sent.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            false
        }));
    }
    // The slots free up as the silent ones time out: a health check gets through.
    let c = client();
    let started = Instant::now();
    eventually("/healthz through silent connections", || {
        let c = c.clone();
        let url = s.url("/healthz");
        async move {
            let r = tokio::time::timeout(Duration::from_secs(2), c.get(url).send())
                .await
                .ok()?
                .ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(15));
    // And every one of them was closed by the server.
    for mut c in silent {
        read_until_closed(&mut c, "a silent connection").await;
    }
    for t in talkers {
        assert!(
            t.await.unwrap(),
            "a talking connection that never asked stayed open"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.idle_timeout = Duration::from_millis(300);
    limits.body_read_timeout = Duration::from_millis(300);
    limits.header_read_timeout = Duration::from_secs(30);
    let (s, _) = serve_json(dir.path(), limits).await;
    // HTTP/2 (prior knowledge): one request (HEADERS for GET / on stream 1, HPACK-indexed),
    // then only PINGs. The server answers, then says GOAWAY (frame type 7) and closes.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(&h2_preface()).await.unwrap();
    c.write_all(&[
        0, 0, 6, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0x84, 0x41, 0x01, b'x',
    ])
    .await
    .unwrap();
    let (mut rd, mut wr) = c.into_split();
    let pinger = tokio::spawn(async move {
        while wr.write_all(&H2_PING).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut got))
        .await
        .expect("an HTTP/2 connection kept alive by PINGs stayed open")
        .ok();
    pinger.abort();
    let types = h2_frame_types(&got);
    assert!(
        types.contains(&1),
        "no answer (HEADERS) among frames {types:?}"
    );
    assert!(types.contains(&7), "no GOAWAY among frames {types:?}");

    // HTTP/1.1 keep-alive: one request, then silence, well within the header timeout.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_until_closed(&mut c, "an idle keep-alive connection").await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_are_bounded_in_time_and_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.body_read_timeout = Duration::from_millis(300);
    limits.max_body_bytes = 1000;
    let (s, _) = serve_json(dir.path(), limits).await;
    // A body that never arrives: 408.
    let mut c = TcpStream::connect(s.addr).await.unwrap();
    c.write_all(
        b"POST /v1/datasets/d/mget HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"keys\"",
    )
    .await
    .unwrap();
    let answer = read_answer(&mut c).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body_timeout"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-snapkv-version: v1"),
        "{answer}"
    );

    // A declared length over the limit is refused at once: no `100 Continue`, no body read.
    let answer = raw_exchange(
        s.addr,
        b"POST /v1/datasets/d/mget HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\
          Content-Length: 10000000\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert!(answer.contains("body_too_large"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("x-snapkv-version: v1"),
        "{answer}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_in_flight = 1;
    limits.body_read_timeout = Duration::from_secs(30);
    let (s, _) = serve_json(dir.path(), limits).await;
    // One request in flight, waiting for the rest of its body.
    let mut held = TcpStream::connect(s.addr).await.unwrap();
    held.write_all(
        b"POST /v1/datasets/d/mget HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n{\"keys\":",
    )
    .await
    .unwrap();
    let c = client();
    let r = eventually("a refusal while one request is in flight", || {
        let c = c.clone();
        let url = s.url("/v1/datasets/d/keys/k0001");
        async move {
            let r = c.get(url).send().await.ok()?;
            (r.status() == 503).then_some(r)
        }
    })
    .await;
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "overloaded");
    // Health, readiness and metrics answer all the same.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
    }
    // The held request finishes; the slot is free again.
    held.write_all(b" [\"k0001\"]}        ").await.unwrap();
    assert!(read_answer(&mut held).await.starts_with("HTTP/1.1 200"));
    let r = c
        .get(s.url("/v1/datasets/d/keys/k0001"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_bounded_in_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    // About ten entries' worth.
    limits.max_response_bytes = 250;
    let (s, _) = serve_json(dir.path(), limits).await;
    let c = client();
    let keys: Vec<String> = (0..50).map(|i| format!("k{i:04}")).collect();
    let r = c
        .post(s.url("/v1/datasets/d/mget"))
        .json(&serde_json::json!({ "keys": keys }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "response_too_large");
    // A scan page stops early with a cursor; following the cursors gives every key once.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = s.url("/v1/datasets/d/scan?limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let page: serde_json::Value = c.get(url).send().await.unwrap().json().await.unwrap();
        pages += 1;
        let items = page["items"].as_array().unwrap();
        assert!(
            !items.is_empty() && items.len() <= 11,
            "{} items",
            items.len()
        );
        seen.extend(items.iter().map(|i| i["key"].as_str().unwrap().to_owned()));
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 9, "{pages} pages");
    let all: Vec<String> = (0..100).map(|i| format!("k{i:04}")).collect();
    assert_eq!(seen, all);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_closed_clients_get_their_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (s, _) = serve_json(dir.path(), Limits::default()).await;
    for i in 0..50 {
        let mut c = TcpStream::connect(s.addr).await.unwrap();
        c.write_all(
            format!("GET /v1/datasets/d/keys/k{i:04} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200"), "request {i}: {got:?}");
        assert!(
            got.ends_with(&format!("{{\"i\":{i},\"v\":\"v1\"}}")),
            "{got}"
        );
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_details() {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Limits::default();
    limits.max_uri_bytes = 200;
    limits.max_header_bytes = 1000;
    let (s, _) = serve_json(dir.path(), limits).await;
    let c = client();

    // Two If-None-Match lines are one list.
    let r = c
        .get(s.url("/v1/datasets/d/keys/k0001"))
        .send()
        .await
        .unwrap();
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let answer = raw_exchange(
        s.addr,
        format!(
            "GET /v1/datasets/d/keys/k0001 HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"0000000000000000\"\r\n\
             If-None-Match: {etag}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 304"), "{answer}");

    // Every answer about a dataset names the version, errors included.
    let version = |r: &reqwest::Response| {
        r.headers()
            .get("x-snapkv-version")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let cases = [
        c.get(s.url("/v1/datasets/d/keys/nope"))
            .send()
            .await
            .unwrap(), // 404
        c.get(s.url("/v1/datasets/d/scan?limit=0"))
            .send()
            .await
            .unwrap(), // 400
        c.post(s.url("/v1/datasets/d/keys/k0001"))
            .send()
            .await
            .unwrap(), // 405
        c.get(s.url("/v1/datasets/d/mget")).send().await.unwrap(), // 405
        c.post(s.url("/v1/datasets/d/mget"))
            .body("{")
            .send()
            .await
            .unwrap(), // 400
    ];
    for r in &cases {
        assert!(r.status().is_client_error(), "{}", r.status());
        assert_eq!(
            version(r).as_deref(),
            Some("v1"),
            "{} {}",
            r.url(),
            r.status()
        );
    }
    // Requests over the server's own limits get JSON errors too.
    let r = c
        .get(s.url(&format!("/v1/datasets/d/keys/{}", "x".repeat(300))))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 414);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "uri_too_long");
    let r = c
        .get(s.url("/healthz"))
        .header("x-padding", "p".repeat(2000))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 431);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "headers_too_large");

    // Metrics: Prometheus text unless OpenMetrics is asked for, and always a build age.
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    assert!(!text.contains("# EOF"));
    assert!(
        text.contains("# TYPE snapkv_lookups_total counter"),
        "{text}"
    );
    assert!(
        text.contains("snapkv_snapshot_build_age_seconds{dataset=\"d\"}"),
        "{text}"
    );
    let r = c
        .get(s.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text; version=1.0.0"));
    assert!(r.text().await.unwrap().ends_with("# EOF\n"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_come_as_text_or_base64() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("raw.snapkv");
    let rows = vec![
        (b"a".to_vec(), b"plain text".to_vec()),
        (b"b".to_vec(), "caf\u{e9} \"quoted\"".as_bytes().to_vec()),
        (vec![0xff, 0x01], b"binary key".to_vec()),
    ];
    write_snapshot(&path, "raw", "r1", &rows, false);
    let s = Running::start(file_config("raw", &path)).await;
    wait_ready(&s).await;
    let c = client();
    let r = c
        .get(s.url("/v1/datasets/raw/keys/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap(), &b"plain text"[..]);

    let page: serde_json::Value = c
        .get(s.url("/v1/datasets/raw/scan"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["encoding"], "utf8");
    assert_eq!(page["items"][0]["key"], "a");
    assert_eq!(page["items"][1]["value"], "caf\u{e9} \"quoted\"");
    // A key that is not UTF-8 comes as base64.
    assert_eq!(page["items"][2]["key_base64"], "/wE=");
    assert_eq!(page["items"][2]["value"], "binary key");

    // Values that are not all UTF-8 make the whole answer base64.
    let path2 = dir.path().join("bin.snapkv");
    write_snapshot(
        &path2,
        "bin",
        "b1",
        &[(b"x".to_vec(), vec![0, 159, 146, 150])],
        false,
    );
    s.stop().await;
    let s = Running::start(file_config("bin", &path2)).await;
    wait_ready(&s).await;
    let body: serde_json::Value = c
        .post(s.url("/v1/datasets/bin/mget"))
        .json(&serde_json::json!({"keys": ["x", "y"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["encoding"], "base64");
    assert_eq!(body["values"]["x"], "AJ+Slg==");
    assert_eq!(body["missing"], serde_json::json!(["y"]));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_replacement_file_stays_visible_until_a_good_one_comes() {
    let dir = tempfile::tempdir().unwrap();
    let (s, path) = serve_json(dir.path(), Limits::default()).await;
    let c = client();
    // Replace the file with a corrupt one (renamed over the name, as files are replaced).
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0xff;
    let tmp = dir.path().join("bad.tmp");
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let first = eventually("the error", || {
        let (c, s) = (c.clone(), &s);
        async move {
            let i = info(&c, s, "d").await;
            i["sync"]["last_error"].is_string().then_some(i)
        }
    })
    .await;
    // Several polls later the file is still bad, and still reported so.
    let failures = first["sync"]["failures"].as_u64().unwrap();
    let later = eventually("more polls", || {
        let (c, s) = (c.clone(), &s);
        async move {
            let i = info(&c, s, "d").await;
            (i["sync"]["failures"].as_u64().unwrap() >= failures + 3).then_some(i)
        }
    })
    .await;
    assert!(later["sync"]["last_error"].is_string(), "{later}");
    assert_eq!(later["version"], "v1", "the good version is still served");
    let metrics = c
        .get(s.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("snapkv_sync_last_success{dataset=\"d\"} 0"),
        "{metrics}"
    );

    // A file built for another dataset is refused as well, and says so.
    write_snapshot(&path, "other", "v2", &json_rows(10, "v2"), true);
    let refused = eventually("the refusal", || {
        let (c, s) = (c.clone(), &s);
        async move {
            let i = info(&c, s, "d").await;
            let e = i["sync"]["last_error"].as_str()?.to_owned();
            e.contains("built for dataset \"other\"").then_some(i)
        }
    })
    .await;
    assert_eq!(refused["version"], "v1");

    // A good file clears the error.
    write_snapshot(&path, "d", "v3", &json_rows(10, "v3"), true);
    eventually("the good file", || {
        let (c, s) = (c.clone(), &s);
        async move {
            let i = info(&c, s, "d").await;
            (i["version"] == "v3" && i["sync"]["last_error"].is_null()).then_some(())
        }
    })
    .await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_dataset_names_those_that_exist() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let url = root.display().to_string();
    let store = snapkv_store::Store::open(&url, &[]).unwrap();
    for ds in ["alpha", "beta"] {
        let file = dir.path().join(format!("{ds}.snapkv"));
        write_snapshot(&file, ds, "20261101T000000Z", &json_rows(3, "x"), true);
        store
            .publish(ds, &[&file], &snapkv_store::PublishOptions::default())
            .await
            .unwrap();
    }
    let mut config = Config::new(vec![Source::Store {
        name: "gamma".into(),
        store,
        cache: snapkv_store::Cache::new(dir.path().join("cache")),
    }]);
    config.poll_interval = Duration::from_millis(50);
    let s = Running::start(config).await;
    let c = client();
    let error = eventually("the error", || {
        let (c, s) = (c.clone(), &s);
        async move {
            let i = info(&c, s, "gamma").await;
            i["sync"]["last_error"].as_str().map(str::to_owned)
        }
    })
    .await;
    assert!(
        error.contains("nothing published for dataset \"gamma\""),
        "{error}"
    );
    assert!(error.contains("datasets there: alpha, beta"), "{error}");
    let r = c.get(s.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    s.stop().await;
}
