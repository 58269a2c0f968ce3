//! `snapkv serve` end to end: the real binary on 127.0.0.1:0, a real HTTP client.

mod common;

use common::{
    build_snapshot, client, client_builder, dataset, dataset_info, snapkv_stdout, value_of,
    write_snapshot, Server,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn error_code(resp: reqwest::blocking::Response) -> (StatusCode, String) {
    let status = resp.status();
    let body: Value = resp.json().expect("JSON error body");
    (
        status,
        body["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

/// Waits until `answered` grew by `n` (at most 30 s).
fn wait_answers(answered: &std::sync::atomic::AtomicU64, n: u64) {
    let target = answered.load(Ordering::Relaxed) + n;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while answered.load(Ordering::Relaxed) < target {
        assert!(std::time::Instant::now() < deadline, "the clients stalled");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Client threads sending GET, mget and scan requests for keys k0000..k(keys-1) until
/// finished. Each answer must succeed and agree with the version it names.
struct Hammer {
    stop: Arc<AtomicBool>,
    /// Requests answered so far, by all threads.
    answered: Arc<std::sync::atomic::AtomicU64>,
    threads: Vec<std::thread::JoinHandle<(u64, BTreeSet<String>)>>,
}

impl Hammer {
    fn start(url: &str, threads: u64, keys: u64) -> Hammer {
        let stop = Arc::new(AtomicBool::new(false));
        let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let threads = (0..threads)
            .map(|w| {
                let (url, stop, answered) = (url.to_owned(), stop.clone(), answered.clone());
                std::thread::spawn(move || Hammer::run(&url, w, keys, &stop, &answered))
            })
            .collect();
        Hammer {
            stop,
            answered,
            threads,
        }
    }

    /// Waits until the clients had `n` more answers (at most 30 s).
    fn wait_answers(&self, n: u64) {
        wait_answers(&self.answered, n);
    }

    fn run(
        url: &str,
        w: u64,
        keys: u64,
        stop: &AtomicBool,
        answered: &std::sync::atomic::AtomicU64,
    ) -> (u64, BTreeSet<String>) {
        let c = client();
        let mut seen = BTreeSet::new();
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let k = format!("k{:04}", (n * 7 + w) % keys);
            n += 1;
            let version = match n % 3 {
                0 => {
                    let r = c
                        .get(format!("{url}/v1/datasets/d/keys/{k}"))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v = r.headers()["x-snapkv-version"].to_str().unwrap().to_owned();
                    assert_eq!(r.text().unwrap(), value_of(&v, &k));
                    v
                }
                1 => {
                    let keys = [k.clone(), format!("k{:04}", (n * 13) % keys)];
                    let r = c
                        .post(format!("{url}/v1/datasets/d/mget"))
                        .body(json!({ "keys": keys }).to_string())
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let body: Value = r.json().unwrap();
                    let v = body["version"].as_str().unwrap().to_owned();
                    for key in &keys {
                        assert_eq!(body["values"][key], json!({"v": v, "k": key}));
                    }
                    v
                }
                _ => {
                    let r = c
                        .get(format!("{url}/v1/datasets/d/scan?start={k}&limit=20"))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let body: Value = r.json().unwrap();
                    let v = body["version"].as_str().unwrap().to_owned();
                    let items = body["items"].as_array().unwrap();
                    assert!(!items.is_empty());
                    for item in items {
                        assert_eq!(item["value"], json!({"v": v, "k": item["key"]}));
                    }
                    v
                }
            };
            seen.insert(version);
            answered.fetch_add(1, Ordering::Relaxed);
        }
        (n, seen)
    }

    /// Stops the clients; the number of requests sent and the versions seen.
    fn finish(self) -> (u64, BTreeSet<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let mut total = 0;
        let mut versions = BTreeSet::new();
        for t in self.threads {
            let (n, seen) = t
                .join()
                .expect("a client saw a failed or inconsistent answer");
            total += n;
            versions.extend(seen);
        }
        (total, versions)
    }
}

#[test]
fn every_endpoint_and_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 500), true);
    // A small body limit: an over-limit body still fits the socket buffers, so the client has
    // sent all of it when the 413 arrives (a larger one may see the connection close first).
    let server = Server::start(&[
        "--file",
        &format!("d={}", path.display()),
        "--max-body-bytes",
        "64KiB",
    ]);
    let c = client();
    let url = |p: &str| format!("{}{p}", server.url);

    let r = c.get(url("/healthz")).send().unwrap();
    assert_eq!(r.status(), 200);
    let r = c.get(url("/readyz")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().unwrap()["ready"], true);

    // A key: the stored bytes, the version, an ETag.
    let r = c.get(url("/v1/datasets/d/keys/k0042")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    assert_eq!(r.headers()["content-type"], "application/json");
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(r.text().unwrap(), value_of("v1", "k0042"));
    let r = c
        .get(url("/v1/datasets/d/keys/k0042"))
        .header("if-none-match", &etag)
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(r.headers()["x-snapkv-version"], "v1");

    // Keys are percent-decoded and may contain `/`.
    let r = c.get(url("/v1/datasets/d/keys/dir/a%20b")).send().unwrap();
    assert_eq!(r.text().unwrap(), value_of("v1", "dir/a b"));
    let r = c
        .get(url("/v1/datasets/d/keys/dir%2Fx%25y"))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), value_of("v1", "dir/x%y"));
    let r = c
        .get(url("/v1/datasets/d/keys/%C3%BCn%C3%AF"))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), value_of("v1", "ünï"));

    // Misses and errors.
    let r = c.get(url("/v1/datasets/d/keys/nope")).send().unwrap();
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    assert_eq!(
        error_code(r),
        (StatusCode::NOT_FOUND, "key_not_found".into())
    );
    let r = c.get(url("/v1/datasets/zz/keys/k0001")).send().unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::NOT_FOUND, "dataset_not_found".into())
    );
    let r = c.get(url("/v1/datasets/d/keys/bad%zz")).send().unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::BAD_REQUEST, "bad_percent_encoding".into())
    );
    let long = "x".repeat(5000);
    let r = c
        .get(url(&format!("/v1/datasets/d/keys/{long}")))
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::BAD_REQUEST, "key_too_long".into())
    );
    let r = c.delete(url("/v1/datasets/d/keys/k0001")).send().unwrap();
    assert_eq!(r.headers()["allow"], "GET, HEAD");
    assert_eq!(
        error_code(r),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    let r = c.get(url("/nowhere")).send().unwrap();
    assert_eq!(error_code(r), (StatusCode::NOT_FOUND, "no_route".into()));

    // mget: one version, found values and missing keys.
    let r = c
        .post(url("/v1/datasets/d/mget"))
        .body(json!({"keys": ["k0001", "k0499", "missing", "dir/a b"]}).to_string())
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    let body: Value = r.json().unwrap();
    assert_eq!(body["version"], "v1");
    assert_eq!(body["encoding"], "json");
    assert_eq!(body["values"]["k0001"], json!({"v": "v1", "k": "k0001"}));
    assert_eq!(
        body["values"]["dir/a b"],
        json!({"v": "v1", "k": "dir/a b"})
    );
    assert_eq!(body["missing"], json!(["missing"]));
    for (body, code) in [
        ("{\"keys\": [", "bad_json"),
        ("{\"keys\": 3}", "bad_json"),
        ("{\"nope\": []}", "bad_json"),
    ] {
        let r = c
            .post(url("/v1/datasets/d/mget"))
            .body(body)
            .send()
            .unwrap();
        assert_eq!(
            error_code(r),
            (StatusCode::BAD_REQUEST, code.into()),
            "{body}"
        );
    }
    let many: Vec<String> = (0..1001).map(|i| format!("k{i}")).collect();
    let r = c
        .post(url("/v1/datasets/d/mget"))
        .body(json!({ "keys": many }).to_string())
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::BAD_REQUEST, "too_many_keys".into())
    );
    let r = c
        .post(url("/v1/datasets/d/mget"))
        .body(vec![b' '; 100_000])
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large".into())
    );
    let r = c.get(url("/v1/datasets/d/mget")).send().unwrap();
    assert_eq!(r.headers()["allow"], "POST");
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);

    // scan: prefix pages joined by the cursor equal the whole prefix, in key order.
    let mut keys = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut u = url("/v1/datasets/d/scan?prefix=k01&limit=7");
        if let Some(a) = &after {
            u.push_str(&format!("&after={a}"));
        }
        let body: Value = c.get(u).send().unwrap().json().unwrap();
        assert_eq!(body["version"], "v1");
        for item in body["items"].as_array().unwrap() {
            let k = item["key"].as_str().unwrap().to_owned();
            assert_eq!(item["value"], json!({"v": "v1", "k": k}));
            keys.push(k);
        }
        match body["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => break,
        }
    }
    let want: Vec<String> = (100..200).map(|i| format!("k{i:04}")).collect();
    assert_eq!(keys, want);
    let body: Value = c
        .get(url("/v1/datasets/d/scan?start=k0010&end=k0013"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let got: Vec<&str> = body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["key"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["k0010", "k0011", "k0012"]);
    for (q, code) in [
        ("limit=0", "bad_limit"),
        ("limit=100000", "bad_limit"),
        ("prefix=a&start=b", "bad_range"),
        ("after=%%%", "bad_percent_encoding"),
        ("after=!!", "bad_cursor"),
        ("color=red", "unknown_parameter"),
    ] {
        let r = c
            .get(url(&format!("/v1/datasets/d/scan?{q}")))
            .send()
            .unwrap();
        assert_eq!(error_code(r), (StatusCode::BAD_REQUEST, code.into()), "{q}");
    }

    // Dataset list and info.
    let body: Value = c.get(url("/v1/datasets")).send().unwrap().json().unwrap();
    assert_eq!(body["datasets"][0]["name"], "d");
    assert_eq!(body["datasets"][0]["version"], "v1");
    assert_eq!(body["datasets"][0]["keys"], 503);
    let body: Value = c.get(url("/v1/datasets/d")).send().unwrap().json().unwrap();
    assert_eq!(body["version"], "v1");
    assert_eq!(body["metadata"]["value_encoding"], "json");
    assert!(body["loaded_at"].as_str().unwrap().ends_with('Z'));

    // Metrics saw the traffic.
    let text = c.get(url("/metrics")).send().unwrap().text().unwrap();
    for needle in [
        "snapkv_http_requests_total{route=\"key\",status=\"200\"}",
        "snapkv_http_request_duration_seconds_count{route=\"key\",status=\"200\"}",
        "snapkv_lookups_total{dataset=\"d\",result=\"miss\"}",
        "snapkv_snapshot_info{dataset=\"d\",version=\"v1\"} 1",
        "snapkv_snapshot_keys{dataset=\"d\"} 503",
        "snapkv_mapped_bytes{dataset=\"d\"}",
        "snapkv_sync_last_success{dataset=\"d\"} 1",
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    // By default the index sections are read from a copy in anonymous memory.
    let copied: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("snapkv_index_memory_bytes{dataset=\"d\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no index memory gauge:\n{text}"));
    assert!(copied > 0, "the index sections were not copied:\n{text}");
}

/// A JSON value's fields come in the order of the source columns from `get`, `scan` and every
/// HTTP answer alike: the order they are stored in.
#[test]
fn values_keep_the_column_order_everywhere() {
    let dir = tempfile::tempdir().unwrap();
    // CSV columns keep the header's order (NDJSON's inferred columns are sorted by name).
    let text = "id,zeta,alpha,mid\na,1,2,3\nb,4,5,6\n";
    let file = build_snapshot(dir.path(), "in.csv", text, "id");
    let f = file.to_str().unwrap();
    let (a, b) = (
        r#"{"zeta":1,"alpha":2,"mid":3}"#,
        r#"{"zeta":4,"alpha":5,"mid":6}"#,
    );
    let entry = |k: &str, v: &str| format!(r#"{{"key":"{k}","value":{v}}}"#);
    let (entry_a, entry_b) = (entry("a", a), entry("b", b));

    assert_eq!(snapkv_stdout(&["get", f, "a", "b"]), format!("{a}\n{b}\n"));
    assert_eq!(
        snapkv_stdout(&["scan", f]),
        format!("{entry_a}\n{entry_b}\n")
    );

    let server = Server::start(&["--file", &format!("d={f}")]);
    let c = client();
    let url = |p: &str| format!("{}/v1/datasets/d/{p}", server.url);
    let get = c.get(url("keys/a")).send().unwrap().text().unwrap();
    assert_eq!(get, a);
    let mget = c
        .post(url("mget"))
        .body(r#"{"keys":["a","b"]}"#)
        .send()
        .unwrap();
    let mget = mget.text().unwrap();
    assert!(
        mget.contains(&format!(r#""values":{{"a":{a},"b":{b}}}"#)),
        "{mget}"
    );
    let scan = c.get(url("scan")).send().unwrap().text().unwrap();
    let items = format!(r#""items":[{entry_a},{entry_b}]"#);
    assert!(scan.contains(&items), "{scan}");
}

/// Integer key columns make keys of their decimal text, which sort as text; mget takes them
/// as JSON numbers too, and refuses other non-strings naming their place.
#[test]
fn integer_keys_are_their_decimal_text() {
    let dir = tempfile::tempdir().unwrap();
    let text: String = [7, 42, 43, 44, 100, -3]
        .iter()
        .map(|id| format!("{{\"user_id\": {id}, \"score\": {}}}\n", id * 10))
        .collect();
    let file = build_snapshot(dir.path(), "in.ndjson", &text, "user_id");
    let f = file.to_str().unwrap();
    let keys = |args: &[&str]| -> Vec<String> {
        let out = snapkv_stdout(&[&["scan", f], args].concat());
        out.lines()
            .map(|l| {
                serde_json::from_str::<Value>(l).unwrap()["key"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(keys(&[]), ["-3", "100", "42", "43", "44", "7"]);
    assert_eq!(keys(&["--prefix", "4"]), ["42", "43", "44"]);

    let server = Server::start(&["--file", &format!("d={f}")]);
    let c = client();
    let url = |p: &str| format!("{}/v1/datasets/d/{p}", server.url);
    let r = c.get(url("keys/7")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), r#"{"score":70}"#);

    let r = c
        .post(url("mget"))
        .body(r#"{"keys": [7, "42", 100, 7, 99, -3, "7"]}"#)
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    let values = json!({"7": {"score": 70}, "42": {"score": 420}, "100": {"score": 1000}, "-3": {"score": -30}});
    assert_eq!(body["values"], values);
    assert_eq!(body["missing"], json!(["99"]));

    for (keys, message) in [
        ("[7, 1.5]", "keys[1] is 1.5, not an integer"),
        ("[7.0]", "keys[0] is 7.0, not an integer"),
        ("[\"a\", true]", "keys[1] is true"),
        ("[null]", "keys[0] is null"),
        ("[\"a\", \"b\", {\"id\": 7}]", "keys[2] is an object"),
        ("[[7]]", "keys[0] is an array"),
    ] {
        let r = c
            .post(url("mget"))
            .body(format!("{{\"keys\": {keys}}}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{keys}");
        let body: Value = r.json().unwrap();
        assert_eq!(body["error"]["code"], "bad_json", "{keys}");
        let got = body["error"]["message"].as_str().unwrap();
        assert!(got.starts_with(message), "{keys}: {got}");
    }
}

#[test]
fn http2_prior_knowledge_works() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    let server = Server::start(&["--file", &format!("d={}", path.display())]);
    let c = client_builder().http2_prior_knowledge().build().unwrap();
    let r = c
        .get(format!("{}/v1/datasets/d/keys/k0003", server.url))
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.text().unwrap(), value_of("v1", "k0003"));
}

/// A client hammers GET, mget and scan while the file is replaced twice: no request fails and
/// every answer is consistent with the version it names. Then a corrupt replacement is refused
/// and the last good version stays served, and the error is visible.
#[test]
fn swaps_under_load_without_failed_or_mixed_answers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 2000), true);
    let server = Server::start(&[
        "--file",
        &format!("d={}", path.display()),
        "--poll-interval",
        "50ms",
    ]);
    let hammer = Hammer::start(&server.url, 3, 2000);
    hammer.wait_answers(100);
    for v in ["v2", "v3"] {
        let tmp = dir.path().join(format!("{v}.tmp"));
        write_snapshot(&tmp, v, &dataset(v, 2000), true);
        std::fs::rename(&tmp, &path).unwrap();
        let info = wait_for_version(&server.url, v);
        assert!(info["previous_version"].is_string());
        hammer.wait_answers(100);
    }
    // A corrupt file replaces the good one: refused, v3 stays served, the error shows.
    let tmp = dir.path().join("bad.tmp");
    write_snapshot(&tmp, "v4", &dataset("v4", 2000), true);
    let mut bytes = std::fs::read(&tmp).unwrap();
    bytes[100] ^= 0x40;
    std::fs::write(&tmp, &bytes).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let info = wait_for_error(&server.url);
    let c = client();
    assert_eq!(info["version"], "v3");
    assert!(
        info["sync"]["last_error"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{info}"
    );
    let text = c
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("snapkv_sync_last_success{dataset=\"d\"} 0"),
        "{text}"
    );
    // The file disappears altogether: still serving, and the error says so.
    std::fs::remove_file(&path).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let info: Value = c
            .get(format!("{}/v1/datasets/d", server.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if info["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("No such file"))
        {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    hammer.wait_answers(100);
    let (total, versions) = hammer.finish();
    assert!(total > 500, "only {total} requests");
    assert_eq!(
        versions,
        ["v1", "v2", "v3"].map(String::from).into(),
        "clients saw {versions:?}"
    );
    let r = c
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), value_of("v3", "k0001"));
}

#[test]
fn sigterm_drains_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    let mut server = Server::start(&["--file", &format!("d={}", path.display())]);
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[test]
fn not_ready_until_loaded_and_bad_flags_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("later.snapkv");
    let server = Server::start_unready(&[
        "--file",
        &format!("d={}", path.display()),
        "--poll-interval",
        "50ms",
    ]);
    let c = client();
    let r = c.get(format!("{}/readyz", server.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let r = c
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::SERVICE_UNAVAILABLE, "not_loaded".into())
    );
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    server.wait_ready();
    let r = c
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["serve", "--file", "no-equals-sign"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("NAME=PATH"));
}

/// A snapshot of dataset `d` at version `v` with `n` keys (values naming the version), in its
/// own folder under `dir` as `d.snapkv`.
fn version_file(dir: &std::path::Path, v: &str, n: usize) -> std::path::PathBuf {
    let p = dir.join(v).join("d.snapkv");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    write_snapshot(&p, v, &dataset(v, n), true);
    p
}

fn publish(store: &std::path::Path, file: &std::path::Path, version: &str) {
    publish_to(store.to_str().unwrap(), &[], file, version);
}

/// `snapkv publish` of `file` as dataset `d`, `version`, to the store at `url` with `options`.
fn publish_to(url: &str, options: &[String], file: &std::path::Path, version: &str) {
    let file = file.display().to_string();
    let mut args = vec!["publish", "--store", url];
    args.extend(options.iter().map(String::as_str));
    args.extend(["--dataset", "d", "--version", version, &file]);
    snapkv_stdout(&args);
}

/// `serve` arguments that follow dataset `d` of the local-directory store `store` through the
/// cache directory `cache`, polling every 50 ms.
fn follow_args(store: &std::path::Path, cache: &std::path::Path) -> Vec<String> {
    [
        "--store",
        store.to_str().unwrap(),
        "--dataset",
        "d",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--poll-interval",
        "50ms",
    ]
    .map(String::from)
    .to_vec()
}

/// Flips a byte of `version`'s file `d.snapkv` in the local-directory store `store`.
fn corrupt_in_store(store: &std::path::Path, version: &str) {
    let stored = store.join(format!("d/versions/{version}/d.snapkv"));
    let mut bytes = std::fs::read(&stored).unwrap();
    bytes[64] ^= 1;
    let mut perms = std::fs::metadata(&stored).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&stored, perms).unwrap();
    std::fs::write(&stored, &bytes).unwrap();
}

/// The value of `series` (`name{labels}`) in the `/metrics` of the reader at `url`.
fn metric(url: &str, series: &str) -> f64 {
    let text = client()
        .get(format!("{url}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series}:\n{text}"))
        .parse()
        .unwrap()
}

fn wait_for_version(url: &str, version: &str) -> Value {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = c
            .get(format!("{url}/v1/datasets/d"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if body["version"] == version {
            return body;
        }
        assert!(Instant::now() < deadline, "{version} never served: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for_error(url: &str) -> Value {
    let c = client();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body: Value = c
            .get(format!("{url}/v1/datasets/d"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        if body["sync"]["last_error"].is_string() {
            return body;
        }
        assert!(Instant::now() < deadline, "no sync error reported: {body}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Versions published through a real (local-directory) store while clients hammer the
/// server: no failed or mixed answers. Then: a restart serves the cached version with the store
/// gone, and a corrupted object in the store is refused while the last good version stays up.
#[test]
fn follows_a_store_through_publishes_restarts_and_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let file = |v: &str| version_file(dir.path(), v, 1000);
    publish(&store, &file("v1"), "v1");
    let args = |store: &std::path::Path| follow_args(store, &cache);
    let a = args(&store);
    let mut server = Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_version(&server.url, "v1");

    let hammer = Hammer::start(&server.url, 2, 1000);
    hammer.wait_answers(50);
    for v in ["v2", "v3"] {
        publish(&store, &file(v), v);
        wait_for_version(&server.url, v);
        hammer.wait_answers(50);
    }
    let (n, seen) = hammer.finish();
    assert_eq!(
        seen,
        ["v1", "v2", "v3"].map(String::from).into(),
        "{n} requests"
    );
    // Only the served version and the previous one stay in the cache (v1 goes on the
    // server's blocking pool once nothing holds it), beside the record of the one served.
    let cached = || {
        let mut v: Vec<_> = std::fs::read_dir(cache.join("d"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while cached() != ["v2", "v3"] {
        assert!(Instant::now() < deadline, "{:?}", cached());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(server.terminate().success());
    assert_eq!(cached(), ["v2", "v3"]);
    assert_eq!(
        std::fs::read_to_string(cache.join("d/.served")).unwrap(),
        "v3"
    );

    // Restart with the store gone: the cached v3 is served at once; the sync error shows.
    let gone = dir.path().join("no-such-store");
    let mut a = vec![
        "serve".to_owned(),
        "--listen".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    a.extend(args(&gone));
    let mut server = Server::spawn_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), |c| {
        c.stderr(std::process::Stdio::piped());
    });
    let stderr = server.take_stderr().unwrap();
    let warnings = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map(Result::unwrap)
            .filter(|l| l.contains("sync failed"))
            .count()
    });
    server.wait_ready();
    let info = wait_for_error(&server.url);
    assert_eq!(info["version"], "v3");
    let r = client()
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(r.text().unwrap(), value_of("v3", "k0001"));
    // The same failure at every 50 ms poll is logged after 1, 2, 4, 8, ... failures only.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let failures = loop {
        let failures = wait_for_error(&server.url)["sync"]["failures"]
            .as_u64()
            .unwrap();
        if failures >= 20 {
            break failures;
        }
        assert!(std::time::Instant::now() < deadline, "{failures} failures");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(server.terminate().success());
    let warnings = warnings.join().unwrap() as u64;
    assert!(failures >= 10, "{failures} failures");
    assert!(
        (1..=failures.ilog2() as u64 + 2).contains(&warnings),
        "{warnings} warnings for {failures} failures"
    );

    // v4 is published, then its object is corrupted in storage: refused, v3 stays served.
    publish(&store, &file("v4"), "v4");
    corrupt_in_store(&store, "v4");
    let a = args(&store);
    let server = Server::start(&a.iter().map(String::as_str).collect::<Vec<_>>());
    let info = wait_for_error(&server.url);
    assert_eq!(info["version"], "v3", "{info}");
    let text = client()
        .get(format!("{}/metrics", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        text.contains("snapkv_sync_last_success{dataset=\"d\"} 0"),
        "{text}"
    );
    // CURRENT names v4, which this reader cannot serve: it is behind, and says so; the
    // version it serves is older than the store's current one.
    let gauge = |name: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name}:\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    assert!(
        gauge("snapkv_sync_behind_seconds{dataset=\"d\"}") > 0.0,
        "{text}"
    );
    let served = gauge("snapkv_version_age_seconds{dataset=\"d\",role=\"served\"}");
    let current = gauge("snapkv_version_age_seconds{dataset=\"d\",role=\"store_current\"}");
    assert!(served > current, "{text}");
}

/// Versions published through the S3-compatible test server while clients hammer the server:
/// no failed or mixed answers, and the store's credentials and endpoint reach the sync loop.
#[test]
fn follows_an_s3_store_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let (store, options) = common::s3_store("serve-swap");
    let file = |v: &str| {
        let p = dir.path().join(v).join("d.snapkv");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        write_snapshot(&p, v, &dataset(v, 1000), true);
        p
    };
    publish_to(&store, &options, &file("v1"), "v1");
    let cache = dir.path().join("cache");
    let mut args = vec![
        "--store",
        &store,
        "--dataset",
        "d",
        "--cache-dir",
        cache.to_str().unwrap(),
        "--poll-interval",
        "50ms",
    ];
    args.extend(options.iter().map(String::as_str));
    let mut server = Server::start(&args);
    wait_for_version(&server.url, "v1");
    let hammer = Hammer::start(&server.url, 2, 1000);
    hammer.wait_answers(50);
    for v in ["v2", "v3"] {
        publish_to(&store, &options, &file(v), v);
        let info = wait_for_version(&server.url, v);
        assert!(info["sync"]["last_error"].is_null(), "{info}");
        hammer.wait_answers(50);
    }
    let (n, seen) = hammer.finish();
    assert_eq!(
        seen,
        ["v1", "v2", "v3"].map(String::from).into(),
        "{n} requests"
    );
    assert!(server.terminate().success());
}

/// Keys k00000..k19999 of version `v`: a key in one of the ranges of `changes` has a value
/// naming that range's version (the last one that holds it), the others `base`. Written with
/// `dict` (the previous version's dictionary) when given.
fn delta_version(
    dir: &std::path::Path,
    v: &str,
    changes: &[(&str, std::ops::Range<u64>)],
    dict: Option<&[u8]>,
) -> std::path::PathBuf {
    let p = dir.join(v).join("d.snapkv");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let mut meta = snapkv_format::Metadata::default();
    meta.value_encoding = snapkv_format::ValueEncoding::Json;
    let mut o = snapkv_format::WriterOptions::default();
    if let Some(d) = dict {
        o.dictionary = snapkv_format::Dictionary::Use(d.to_vec());
    }
    let mut w = snapkv_format::SnapshotWriter::new(Vec::new(), o, meta).unwrap();
    for i in 0..20_000u64 {
        let k = format!("k{i:05}");
        w.insert(k.as_bytes(), value_of(named(changes, i), &k).as_bytes())
            .unwrap();
    }
    std::fs::write(&p, w.finish().unwrap().0).unwrap();
    p
}

/// The version named by key `i`'s value under `changes` (see [`delta_version`]).
fn named<'a>(changes: &[(&'a str, std::ops::Range<u64>)], i: u64) -> &'a str {
    changes
        .iter()
        .rev()
        .find(|(_, r)| r.contains(&i))
        .map_or("base", |(v, _)| v)
}

/// New versions that change 1% of the keys each are fetched by delta (copying the blocks the
/// served version has) and swapped in while clients read: every answer is right for the
/// version it names, and `/metrics` counts the bytes downloaded and reused.
#[test]
fn delta_syncs_swap_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let v1 = delta_version(dir.path(), "v1", &[], None);
    let dict = snapkv_format::Snapshot::open(std::fs::read(&v1).unwrap())
        .unwrap()
        .dictionary()
        .to_vec();
    // What each version changed, cumulatively.
    let changes = |v: &str| -> Vec<(&'static str, std::ops::Range<u64>)> {
        let all = [("v2", 5_000..5_200), ("v3", 12_000..12_200)];
        all.into_iter().filter(|(c, _)| *c <= v).collect()
    };
    publish(&store, &v1, "v1");
    let args = follow_args(&store, &dir.path().join("cache"));
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    wait_for_version(&server.url, "v1");
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let clients: Vec<_> = (0..2u64)
        .map(|w| {
            let (url, stop, answered) = (server.url.clone(), stop.clone(), answered.clone());
            std::thread::spawn(move || {
                let c = client();
                let mut seen = BTreeSet::new();
                let mut n = w;
                while !stop.load(Ordering::Relaxed) {
                    // Keys in the changed ranges and elsewhere.
                    let i =
                        [5_000 + n % 200, 12_000 + n % 200, n * 7919 % 20_000][(n % 3) as usize];
                    n += 1;
                    let k = format!("k{i:05}");
                    let r = c
                        .get(format!("{url}/v1/datasets/d/keys/{k}"))
                        .send()
                        .unwrap();
                    assert_eq!(r.status(), 200);
                    let v = r.headers()["x-snapkv-version"].to_str().unwrap().to_owned();
                    let expected = value_of(named(&changes(&v), i), &k);
                    assert_eq!(r.text().unwrap(), expected, "{k} at {v}");
                    seen.insert(v);
                    answered.fetch_add(1, Ordering::Relaxed);
                }
                seen
            })
        })
        .collect();
    wait_answers(&answered, 50);
    for v in ["v2", "v3"] {
        let file = delta_version(dir.path(), v, &changes(v), Some(&dict));
        publish(&store, &file, v);
        wait_for_version(&server.url, v);
        wait_answers(&answered, 50);
    }
    stop.store(true, Ordering::Relaxed);
    let mut seen = BTreeSet::new();
    for c in clients {
        seen.extend(c.join().expect("a client saw a failed or wrong answer"));
    }
    assert_eq!(seen, ["v1", "v2", "v3"].map(String::from).into());
    let counter = |name: &str| metric(&server.url, &format!("{name}{{dataset=\"d\"}}"));
    let downloaded = counter("snapkv_sync_bytes_downloaded_total");
    let reused = counter("snapkv_sync_bytes_reused_total");
    let size = |v: &str| {
        std::fs::metadata(dir.path().join(v).join("d.snapkv"))
            .unwrap()
            .len() as f64
    };
    // v1 whole; v2 and v3 mostly from the blocks of the version before.
    let later = size("v2") + size("v3");
    assert!(downloaded >= size("v1"), "{downloaded}");
    assert!(
        reused > later / 3.0,
        "{reused} reused, {downloaded} downloaded"
    );
    assert!(
        downloaded + reused <= size("v1") + later,
        "{downloaded} + {reused}"
    );
}

/// A reader with nothing cached and `--ready-when opened` is ready once it has read the
/// version's footer and index sections: GET, mget and scans are right while the blocks arrive
/// (lookups read theirs by range, the rest downloads slowly), through the swap to the complete
/// file, and through the next version. No request fails.
#[test]
fn a_lazily_opened_version_serves_before_its_download_ends() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let v1 = version_file(dir.path(), "v1", 20_000);
    publish(&store, &v1, "v1");
    let mut args = follow_args(&store, &cache);
    args.extend(["--ready-when", "opened", "--max-download-rate", "64KB"].map(String::from));
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let info = wait_for_version(&server.url, "v1");
    let size = std::fs::metadata(&v1).unwrap().len();
    assert!(
        info["lazy"]["blocks_missing"].as_u64().unwrap() > 0,
        "served before the blocks arrived: {info}"
    );
    assert!(info["file"].as_str().unwrap().ends_with(".d.snapkv.lazy"));
    let hammer = Hammer::start(&server.url, 2, 20_000);
    hammer.wait_answers(200);
    let during = dataset_info(&server.url);
    assert!(
        during["lazy"]["blocks_missing"].as_u64().unwrap() > 0,
        "200 answers while the blocks arrive: {during}"
    );
    // Complete: the file under its final name, served as any cached version.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let body = dataset_info(&server.url);
        if body["lazy"].is_null() {
            assert_eq!(body["version"], "v1");
            assert!(
                body["file"].as_str().unwrap().ends_with("v1/d.snapkv"),
                "{body}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "never complete: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let kept = cache.join("d/v1/d.snapkv");
    assert_eq!(std::fs::read(&kept).unwrap(), std::fs::read(&v1).unwrap());
    assert!(!cache.join("d/v1/.d.snapkv.lazy").exists());
    assert!(cache.join("d/v1/MANIFEST.json").exists());
    hammer.wait_answers(100);
    let v2 = version_file(dir.path(), "v2", 20_000);
    publish(&store, &v2, "v2");
    wait_for_version(&server.url, "v2");
    hammer.wait_answers(100);
    let (_, seen) = hammer.finish();
    assert_eq!(seen, ["v1", "v2"].map(String::from).into());
    let downloaded = metric(
        &server.url,
        "snapkv_sync_bytes_downloaded_total{dataset=\"d\"}",
    );
    // v1 once (its footer read twice, and a block that a lookup and the fill read at once),
    // and v2.
    let v2_size = std::fs::metadata(&v2).unwrap().len() as f64;
    assert!(downloaded >= size as f64 + v2_size, "{downloaded}");
    assert!(
        downloaded <= 1.02 * size as f64 + v2_size,
        "{downloaded} for {size} + {v2_size}"
    );
}

/// A lazily opened version whose file, once complete, is not the one its manifest names (a
/// checksum that does not match) stops being served at once, and is not opened lazily again:
/// the dataset is not ready, and says why.
#[test]
fn a_lazily_opened_version_that_fails_its_checks_is_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let v1 = version_file(dir.path(), "v1", 2_000);
    publish(&store, &v1, "v1");
    let manifest = store.join("d/versions/v1/MANIFEST.json");
    let mut m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    m["files"][0]["xxh3"] = json!("0123456789abcdef");
    std::fs::write(&manifest, serde_json::to_vec(&m).unwrap()).unwrap();
    let mut args = follow_args(&store, &dir.path().join("cache"));
    args.extend(["--ready-when", "opened"].map(String::from));
    let server = Server::start_unready(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let info = dataset_info(&server.url);
        let error = info["sync"]["last_error"].as_str().unwrap_or_default();
        if error.contains("0123456789abcdef") && info["ready"] == false {
            assert!(info["version"].is_null(), "{info}");
            // It was opened lazily (and then fetched whole, which failed the same check).
            assert!(dir.path().join("cache/d/v1/.d.snapkv.lazy").exists());
            break;
        }
        assert!(Instant::now() < deadline, "still served: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = client()
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.json::<Value>().unwrap()["error"]["code"], "not_loaded");
}

/// The demo's pieces: sample data, build, publish to a local store, serve, answer, stop.
#[test]
fn demo_builds_publishes_serves_and_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let demo = demo.to_str().unwrap();
    let args = [
        "demo",
        "--dir",
        demo,
        "--rows",
        "5000",
        "--listen",
        "127.0.0.1:0",
    ];
    for run in 0..2 {
        // Run directly, not through cargo: the instructions name this binary.
        let mut server = Server::spawn_with(&args, |c| {
            c.env_remove("CARGO_MANIFEST_DIR");
        });
        server.wait_ready();
        let c = client();
        let r = c
            .get(format!(
                "{}/v1/datasets/content/keys/SE/t0000042",
                server.url
            ))
            .send()
            .unwrap();
        assert_eq!(r.status(), 200, "run {run}");
        let v: Value = r.json().unwrap();
        assert_eq!(v["title"], "Title 42");
        assert!(
            v["views"].is_i64() && v["genres"].is_array() || v["genres"].is_null(),
            "{v}"
        );
        let body: Value = c
            .get(format!(
                "{}/v1/datasets/content/scan?prefix=JP/&limit=3",
                server.url
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(body["items"].as_array().unwrap().len(), 3);
        if run == 0 {
            run_printed_instructions(&server);
        }
        assert!(server.terminate().success());
    }
}

/// Runs the commands the demo prints under "Publish a new version", as a user copies them,
/// and waits until the server answers from the version they published.
fn run_printed_instructions(server: &Server) {
    let mut printed = Vec::new();
    loop {
        let line = server
            .stdout
            .recv_timeout(Duration::from_secs(30))
            .expect("the demo printed no instructions");
        if line.contains("Ctrl-C stops the server") {
            break;
        }
        printed.push(line);
    }
    let from = printed
        .iter()
        .position(|l| l.contains("Publish a new version"))
        .expect("no publishing instructions");
    let commands: Vec<&str> = printed[from + 1..]
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    let bin = std::fs::canonicalize(env!("CARGO_BIN_EXE_snapkv")).unwrap();
    for c in &commands {
        assert!(
            c.starts_with(&format!("{} ", bin.display())),
            "{c} does not name the binary that ran"
        );
        let out = std::process::Command::new("sh")
            .args(["-c", c])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{c}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let url = format!("{}/v1/datasets/content/keys/SE/t0000042", server.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = client().get(&url).send().unwrap();
        let version = r.headers()["x-snapkv-version"].to_str().unwrap().to_owned();
        if version != "20261127T000000Z" {
            break;
        }
        assert!(Instant::now() < deadline, "still serving {version}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `snapkv serve --listen 127.0.0.1:0 ARGS` at level info with `env` set, through one
/// lookup and a SIGTERM; returns what it wrote to stderr, line by line.
fn serve_logs(args: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    serve_output(args, env).1
}

/// As [`serve_logs`], with the first line the server printed on stdout.
fn serve_output(args: &[&str], env: &[(&str, &str)]) -> (String, Vec<String>) {
    let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
    all.extend_from_slice(args);
    let mut server = Server::spawn_with(&all, |c| {
        c.env("SNAPKV_LOG", "info")
            .stderr(std::process::Stdio::piped());
        c.envs(env.iter().copied());
    });
    let stderr = server.take_stderr().unwrap();
    let lines = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    });
    server.wait_ready();
    let r = client()
        .get(format!("{}/v1/datasets/d/keys/k0001", server.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let first = server.first_line.clone();
    assert!(server.terminate().success());
    (first, lines.join().unwrap())
}

/// Every line parsed as a JSON log event with a timestamp, a level and a message.
#[track_caller]
fn json_events(lines: &[String]) -> Vec<Value> {
    assert!(!lines.is_empty(), "no log lines");
    lines
        .iter()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            for field in ["timestamp", "level", "message"] {
                assert!(e[field].is_string(), "no {field} in {l}");
            }
            e
        })
        .collect()
}

#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    let file = format!("d={}", path.display());

    let (stdout, stderr) = serve_output(&["--log-format", "json", "--file", &file], &[]);
    // The address line on stdout is JSON too.
    let listening: Value = serde_json::from_str(&stdout).unwrap();
    assert!(listening["listening"]
        .as_str()
        .unwrap()
        .starts_with("http://127.0.0.1:"));
    let events = json_events(&stderr);
    let messages: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for want in ["listening", "loaded", "SIGTERM: shutting down", "stopped"] {
        assert!(messages.contains(&want), "no {want:?} in {messages:?}");
    }
    // An event's fields sit beside the message, where log collectors index them.
    let loaded = events.iter().find(|e| e["message"] == "loaded").unwrap();
    assert_eq!(loaded["level"], "INFO");
    assert_eq!(loaded["dataset"], "d");
    assert_eq!(loaded["version"], "v1");

    // The environment chooses the format too, and a fatal error is a JSON event as well.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .arg("serve")
        .env("SNAPKV_LOG_FORMAT", "json")
        .env_remove("SNAPKV_STORE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr: Vec<String> = String::from_utf8(out.stderr)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let events = json_events(&stderr);
    assert_eq!(events.len(), 1, "{stderr:?}");
    assert_eq!(events[0]["level"], "ERROR");
    assert!(events[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("nothing to serve"));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["--log-format", "xml", "serve", "--file", &file])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn text_logs_have_no_colours_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    let lines = serve_logs(&["--file", &format!("d={}", path.display())], &[]);
    assert!(
        lines
            .iter()
            .any(|l| l.contains("INFO") && l.contains("loaded")),
        "{lines:?}"
    );
    assert!(!lines.iter().any(|l| l.contains('\x1b')), "{lines:?}");
}

/// A store that cannot be reached: each failed poll is one warning at the default level; the
/// storage client's own retries of that poll are not logged (they show at debug).
#[test]
fn an_unreachable_store_logs_one_line_per_failure() {
    let dir = tempfile::tempdir().unwrap();
    // A local port nothing listens on: every request fails to connect and is retried.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let cache = dir.path().join("cache");
    let options = [
        format!("endpoint={endpoint}"),
        "allow_http=true".into(),
        "access_key_id=k".into(),
        "secret_access_key=s".into(),
        "region=us-east-1".into(),
        "max_retries=2".into(),
        "retry_timeout=5s".into(),
    ];
    let mut args = vec![
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--store",
        "s3://bucket/root",
        "--dataset",
        "d",
        "--poll-interval",
        "50ms",
        "--cache-dir",
        cache.to_str().unwrap(),
    ];
    for o in &options {
        args.extend(["--store-option", o.as_str()]);
    }
    let mut server = Server::spawn_with(&args, |c| {
        c.env_remove("SNAPKV_LOG")
            .stderr(std::process::Stdio::piped());
    });
    let stderr = server.take_stderr().unwrap();
    let seen = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        // Reads to the end, so that the server never writes into a closed pipe.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr).lines() {
                seen.lock().unwrap().push(line.unwrap());
            }
        })
    };
    // The first failure comes after the client's retries of that poll.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !seen
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("sync failed"))
    {
        assert!(Instant::now() < deadline, "no sync failure logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = seen.lock().unwrap().clone();
    assert!(server.terminate().success());
    reader.join().unwrap();
    // Failures in a row are logged after 1, 2, 4, ... of them: by the time the first was
    // read, at most the second may have followed.
    let failures = lines.iter().filter(|l| l.contains("sync failed")).count();
    assert!((1..=2).contains(&failures), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains("object_store")),
        "retries logged: {lines:#?}"
    );
}

/// The canary path through a real store and server: a reader that previews staged versions
/// holds the staged one and answers only requests pinned to it; a restart never serves it; once
/// promoted it is current, and the version it replaced still answers requests pinned to it.
#[test]
fn staged_versions_answer_pinned_requests_until_promoted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let file = |v: &str| version_file(dir.path(), v, 100);
    publish(&store, &file("v1"), "v1");
    let store_arg = store.display().to_string();
    let cache_arg = cache.display().to_string();
    let args = [
        "--store",
        &store_arg,
        "--dataset",
        "d",
        "--cache-dir",
        &cache_arg,
        "--poll-interval",
        "50ms",
        "--preview-staged",
    ];
    let mut server = Server::start(&args);
    wait_for_version(&server.url, "v1");
    let v2 = file("v2").display().to_string();
    snapkv_stdout(&[
        "publish",
        "--store",
        &store_arg,
        "--dataset",
        "d",
        "--version",
        "v2",
        "--stage",
        &v2,
    ]);
    let c = client();
    let info = |url: &str| -> Value {
        c.get(format!("{url}/v1/datasets/d"))
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while info(&server.url)["staged_version"] != "v2" {
        assert!(
            Instant::now() < deadline,
            "v2 never held: {}",
            info(&server.url)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // Unpinned requests stay on CURRENT; pinned ones get the staged version.
    let get = |url: &str, pin: Option<&str>, query: &str| {
        let mut r = c.get(format!("{url}/v1/datasets/d/keys/k0001{query}"));
        if let Some(v) = pin {
            r = r.header("X-Snapkv-Version", v);
        }
        let r = r.send().unwrap();
        let version = r
            .headers()
            .get("x-snapkv-version")
            .map(|v| v.to_str().unwrap().to_owned());
        (r.status(), version, r.text().unwrap())
    };
    let (status, version, body) = get(&server.url, None, "");
    assert_eq!((status, version.as_deref()), (StatusCode::OK, Some("v1")));
    assert_eq!(body, value_of("v1", "k0001"));
    for (pin, query) in [
        (Some("v2"), ""),
        (None, "?version=v2"),
        (Some("v2"), "?version=v2"),
    ] {
        let (status, version, body) = get(&server.url, pin, query);
        assert_eq!((status, version.as_deref()), (StatusCode::OK, Some("v2")));
        assert_eq!(body, value_of("v2", "k0001"));
    }
    let scan: Value = c
        .get(format!(
            "{}/v1/datasets/d/scan?prefix=k000&version=v2",
            server.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(scan["version"], "v2", "{scan}");
    let mget: Value = c
        .post(format!("{}/v1/datasets/d/mget", server.url))
        .header("X-Snapkv-Version", "v2")
        .body(r#"{"keys": ["k0002"]}"#)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(mget["values"]["k0002"], json!({"v": "v2", "k": "k0002"}));
    let (status, code) = error_code(
        c.get(format!("{}/v1/datasets/d/keys/k0001", server.url))
            .header("X-Snapkv-Version", "v9")
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "version_not_held")
    );
    let (status, code) = error_code(
        c.get(format!(
            "{}/v1/datasets/d/keys/k0001?version=v2",
            server.url
        ))
        .header("X-Snapkv-Version", "v1")
        .send()
        .unwrap(),
    );
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::CONFLICT, "conflicting_versions")
    );

    // The store's history, newest last: the publish and the stage, with who and why.
    let history = |url: &str, query: &str| -> Vec<(String, String)> {
        let r = c
            .get(format!("{url}/v1/datasets/d/history{query}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let body: Value = r.json().unwrap();
        assert_eq!(body["dataset"], "d");
        body["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                assert!(e["by"].as_str().unwrap().contains('@'), "{e}");
                (
                    e["action"].as_str().unwrap().to_owned(),
                    e["to"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pair = |a: &str, v: &str| (a.to_owned(), v.to_owned());
    assert_eq!(
        history(&server.url, ""),
        [pair("publish", "v1"), pair("stage", "v2")]
    );
    assert_eq!(history(&server.url, "?last=1"), [pair("stage", "v2")]);
    for bad in ["?last=0", "?last=x", "?lats=1"] {
        let (status, _) = error_code(
            c.get(format!("{}/v1/datasets/d/history{bad}", server.url))
                .send()
                .unwrap(),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
    }

    // A reader without --preview-staged does not hold it.
    let plain_cache = dir.path().join("plain-cache").display().to_string();
    let plain = Server::start(&[
        "--store",
        &store_arg,
        "--dataset",
        "d",
        "--cache-dir",
        &plain_cache,
    ]);
    let (status, _, body) = get(&plain.url, Some("v2"), "");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("v1 (current)"), "{body}");
    drop(plain);

    // A restart starts from the served version, never the staged one.
    drop(server);
    let names = |d: &std::path::Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&cache.join("d")), ["v1"]);
    assert_eq!(
        std::fs::read_to_string(cache.join("d/.served")).unwrap(),
        "v1"
    );
    assert_eq!(names(&cache.join(".staged").join("d")), ["v2"]);
    server = Server::start(&args);
    assert_eq!(info(&server.url)["version"], "v1");

    // Promoted: v2 is current, v1 (previous) still answers requests pinned to it.
    snapkv_stdout(&[
        "promote",
        "--store",
        &store_arg,
        "--dataset",
        "d",
        "--version",
        "v2",
    ]);
    let body = wait_for_version(&server.url, "v2");
    assert_eq!(body["previous_version"], "v1", "{body}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !info(&server.url)["staged_version"].is_null() {
        assert!(Instant::now() < deadline, "staged v2 still held");
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, version, body) = get(&server.url, Some("v1"), "");
    assert_eq!((status, version.as_deref()), (StatusCode::OK, Some("v1")));
    assert_eq!(body, value_of("v1", "k0001"));
    let (_, version, _) = get(&server.url, None, "");
    assert_eq!(version.as_deref(), Some("v2"));
    assert_eq!(
        history(&server.url, ""),
        [
            pair("publish", "v1"),
            pair("stage", "v2"),
            pair("promote", "v2")
        ]
    );
    // The preview's download goes once nothing holds it.
    while cache.join(".staged").join("d").join("v2").exists() {
        assert!(
            Instant::now() < deadline,
            "the staged download was never removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A version of 4 range shards (`build --shards`, `publish DIR/*.snapkv`) served whole by one
/// reader: every key answers from its shard, an mget spans all shards, and scans page through
/// the shard boundaries in key order with one cursor.
/// Builds 1000 rows `{"n": KEY}` (keys `user:0000`...) into `count` shards and publishes
/// them as `version` of dataset `d`; returns the keys. The value is the key, with `@VERSION`
/// after it for versions other than v1.
fn publish_shards(dir: &std::path::Path, store: &str, version: &str, count: usize) -> Vec<String> {
    let keys: Vec<String> = (0..1000).map(|i| format!("user:{i:04}")).collect();
    let value = |k: &str| match version {
        "v1" => k.to_owned(),
        v => format!("{k}@{v}"),
    };
    let rows: String = keys
        .iter()
        .map(|k| format!("{{\"id\":\"{k}\",\"n\":\"{}\"}}\n", value(k)))
        .collect();
    let input = dir.join(format!("rows-{version}.ndjson"));
    std::fs::write(&input, rows).unwrap();
    let shards = dir.join(format!("shards-{version}"));
    let n = count.to_string();
    snapkv_stdout(&[
        "build",
        "-i",
        input.to_str().unwrap(),
        "--key",
        "id",
        "--shards",
        &n,
        "-o",
        shards.to_str().unwrap(),
        "-q",
    ]);
    let mut publish = vec![
        "publish",
        "--store",
        store,
        "--dataset",
        "d",
        "--version",
        version,
    ];
    // In any order: the shard numbers in the files decide.
    let files: Vec<String> = (0..count)
        .rev()
        .map(|s| {
            shards
                .join(format!("shard-{s:05}-of-{count:05}.snapkv"))
                .display()
                .to_string()
        })
        .collect();
    publish.extend(files.iter().map(String::as_str));
    snapkv_stdout(&publish);
    keys
}

/// A reader holding shards 1-2 of a 4-shard version opens them lazily: it answers the keys of
/// its shards right while their blocks arrive (421 for the others), then holds exactly its
/// two files, complete.
#[test]
fn a_sharded_version_opens_lazily_in_part() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let value = |i: u64| format!("{i:016x}", i = i.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let rows: String = (0..20_000u64)
        .map(|i| format!("{{\"id\":\"user:{i:05}\",\"n\":\"{}\"}}\n", value(i)))
        .collect();
    let input = dir.path().join("rows.ndjson");
    std::fs::write(&input, rows).unwrap();
    let shards = dir.path().join("shards");
    let (input, out) = (input.to_str().unwrap(), shards.to_str().unwrap());
    snapkv_stdout(&[
        "build", "-i", input, "--key", "id", "--shards", "4", "-o", out, "-q",
    ]);
    let files: Vec<String> = (0..4)
        .map(|s| {
            shards
                .join(format!("shard-{s:05}-of-00004.snapkv"))
                .display()
                .to_string()
        })
        .collect();
    let mut publish = vec![
        "publish",
        "--store",
        &store,
        "--dataset",
        "d",
        "--version",
        "v1",
    ];
    publish.extend(files.iter().map(String::as_str));
    snapkv_stdout(&publish);
    let mut args = follow_args(std::path::Path::new(&store), &dir.path().join("cache"));
    args.extend(
        [
            "--shards",
            "1-2",
            "--no-forward",
            "--ready-when",
            "opened",
            "--max-download-rate",
            "32KB",
        ]
        .map(String::from),
    );
    let server = Server::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let info = dataset_info(&server.url);
    assert_eq!(info["shards_held"], json!([1, 2]), "{info}");
    assert!(
        info["lazy"]["blocks_missing"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{info}"
    );
    let c = client();
    let mut held = 0;
    for i in (0..20_000u64).step_by(37) {
        let k = format!("user:{i:05}");
        let r = c
            .get(format!("{}/v1/datasets/d/keys/{k}", server.url))
            .send()
            .unwrap();
        match r.status() {
            StatusCode::OK => {
                held += 1;
                assert_eq!(r.json::<Value>().unwrap(), json!({ "n": value(i) }));
            }
            StatusCode::MISDIRECTED_REQUEST => {}
            s => panic!("{k}: {s}"),
        }
    }
    assert!((200..=340).contains(&held), "{held} keys held of 541");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !dataset_info(&server.url)["lazy"].is_null() {
        assert!(Instant::now() < deadline, "never complete");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut files: Vec<String> = std::fs::read_dir(dir.path().join("cache/d/v1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "MANIFEST.json",
            "shard-00001-of-00004.snapkv",
            "shard-00002-of-00004.snapkv"
        ]
    );
}

/// Every key of dataset `d` through `url`'s scan, in pages of `page`.
fn scan_all(url: &str, page: usize) -> Vec<String> {
    let c = client();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let cursor = after
            .as_ref()
            .map_or(String::new(), |a| format!("&after={a}"));
        let r = c
            .get(format!("{url}/v1/datasets/d/scan?limit={page}{cursor}"))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let page: Value = r.json().unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["key"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(n) => after = Some(n.to_owned()),
            None => return seen,
        }
    }
}

/// A free port on 127.0.0.1, for readers that must know each other's address before they
/// start.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until the reader at `url` lists a peer holding shard `shard` of `version`.
fn wait_for_peer(url: &str, version: &str, shard: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let shards: Value = client()
            .get(format!("{url}/v1/shards"))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let known = shards["peers"].as_array().unwrap().iter().any(|p| {
            p["held"].as_array().unwrap().iter().any(|h| {
                h["version"] == version && h["held"].as_array().unwrap().contains(&json!(shard))
            })
        });
        if known {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no peer of {url} holds {version} shard {shard}: {shards}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sharded_readers_forward_to_each_other_and_answer_from_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let keys = publish_shards(dir.path(), &store, "v1", 4);
    let (pa, pb) = (free_port(), free_port());
    let (la, lb) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));
    // B lists both (a reader skips itself); A finds B through a DNS name (localhost: also
    // ::1, where nothing listens, which is left out).
    let (peers_a, peers_b) = (
        format!("dns+http://localhost:{pb}"),
        format!("http://{la},http://{lb}"),
    );
    let cache = |n: &str| dir.path().join(n).display().to_string();
    let (ca, cb, cc) = (cache("a"), cache("b"), cache("c"));
    let common = [
        "--store",
        &store,
        "--dataset",
        "d",
        "--peer-refresh",
        "100ms",
    ];
    let mut a_args = vec![
        "serve",
        "--listen",
        &la,
        "--shards",
        "0-1",
        "--cache-dir",
        &ca,
        "--poll-interval",
        "100ms",
        "--peers",
        &peers_a,
    ];
    a_args.extend(common);
    // B follows the store once, at start: it stays on v1 while A moves on.
    let mut b_args = vec![
        "serve",
        "--listen",
        &lb,
        "--shard-of",
        "1/2",
        "--cache-dir",
        &cb,
        "--poll-interval",
        "1h",
        "--peers",
        &peers_b,
    ];
    b_args.extend(common);
    let (a, b) = (Server::spawn(&a_args), Server::spawn(&b_args));
    a.wait_ready();
    b.wait_ready();
    // Each downloaded its own shards only.
    let files = |dir: &str| -> Vec<String> {
        let mut f: Vec<String> = std::fs::read_dir(std::path::Path::new(dir).join("d/v1"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".snapkv"))
            .collect();
        f.sort();
        f
    };
    assert_eq!(
        files(&ca),
        ["shard-00000-of-00004.snapkv", "shard-00001-of-00004.snapkv"]
    );
    assert_eq!(
        files(&cb),
        ["shard-00002-of-00004.snapkv", "shard-00003-of-00004.snapkv"]
    );
    wait_for_peer(&a.url, "v1", 3);
    wait_for_peer(&b.url, "v1", 0);
    let c = client();
    for server in [&a, &b] {
        let info: Value = c
            .get(format!("{}/v1/datasets/d", server.url))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(
            (info["shards"].clone(), info["keys"].clone()),
            (json!(4), json!(500)),
            "{info}"
        );
        // Every key answers through either reader, with its version.
        for k in keys
            .iter()
            .step_by(7)
            .chain([&keys[249], &keys[250], &keys[999]])
        {
            let r = c
                .get(format!("{}/v1/datasets/d/keys/{k}", server.url))
                .send()
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{k} via {}", server.url);
            assert_eq!(r.headers()["x-snapkv-version"], "v1");
            assert_eq!(r.json::<Value>().unwrap(), json!({"n": k}));
        }
        let r = c
            .get(format!("{}/v1/datasets/d/keys/user:9999", server.url))
            .send()
            .unwrap();
        assert_eq!(
            error_code(r),
            (StatusCode::NOT_FOUND, "key_not_found".into())
        );
        // One mget of keys of every shard, and some that are nowhere.
        let mut asked: Vec<String> = keys.iter().rev().step_by(2).cloned().collect();
        asked.extend(["user:x".to_owned(), "a".to_owned()]);
        let text = c
            .post(format!("{}/v1/datasets/d/mget", server.url))
            .json(&json!({ "keys": asked }))
            .send()
            .unwrap()
            .text()
            .unwrap();
        // In the order asked.
        assert!(text.contains("\"values\":{\"user:0999\":"), "{text}");
        let mget: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(mget["version"], "v1", "{mget}");
        let values = mget["values"].as_object().unwrap();
        assert_eq!(values.len(), 500);
        assert!(asked[..500].iter().all(|k| values[k] == json!({"n": k})));
        assert_eq!(mget["missing"], json!(["user:x", "a"]));
        // Pages of 99 cross every shard boundary, held here or not.
        assert_eq!(scan_all(&server.url, 99), keys);
        let prefix: Value = c
            .get(format!(
                "{}/v1/datasets/d/scan?prefix=user:04&limit=1000",
                server.url
            ))
            .send()
            .unwrap()
            .json()
            .unwrap();
        let found: Vec<&str> = prefix["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["key"].as_str().unwrap())
            .collect();
        assert_eq!(
            found,
            keys[400..500]
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>()
        );
    }

    // A forwarded lookup keeps its ?fields=.
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0999?fields=n", a.url))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap(), json!({"n": "user:0999"}));

    // A reader without peers answers 421 for what it does not hold, naming the shard.
    let lone_reader = |shards: &str| {
        Server::start(&[
            "--store",
            &store,
            "--dataset",
            "d",
            "--shards",
            shards,
            "--cache-dir",
            &cc,
        ])
    };
    let lone = lone_reader("0-1");
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0999", lone.url))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::MISDIRECTED_REQUEST);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["shard"].as_u64()
        ),
        (Some("misdirected"), Some(3))
    );
    assert_eq!(body["error"]["range"], "[\"user:0750\", +inf)");
    let r = c
        .post(format!("{}/v1/datasets/d/mget", lone.url))
        .json(&json!({"keys": ["user:0000", "user:0600"]}))
        .send()
        .unwrap();
    assert_eq!(error_code(r).0, StatusCode::MISDIRECTED_REQUEST);
    // Its scan pages end where its shards end; the next one is misdirected.
    let page: Value = c
        .get(format!(
            "{}/v1/datasets/d/scan?start=user:0490&limit=50",
            lone.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 10);
    let next = page["next"].as_str().unwrap().to_owned();
    let r = c
        .get(format!(
            "{}/v1/datasets/d/scan?limit=50&after={next}",
            lone.url
        ))
        .send()
        .unwrap();
    assert_eq!(error_code(r).0, StatusCode::MISDIRECTED_REQUEST);
    // A forwarded request is never forwarded again.
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0999", a.url))
        .header("x-snapkv-forwarded", "1")
        .send()
        .unwrap();
    assert_eq!(error_code(r).0, StatusCode::MISDIRECTED_REQUEST);

    // v2: A follows it, B stays on v1. A answers its own keys from v2; a request that needs
    // B's shards is answered whole from v1, which both hold: one version per answer.
    publish_shards(dir.path(), &store, "v2", 4);
    wait_for_version(&a.url, "v2");
    wait_for_peer(&b.url, "v2", 0);
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0000", a.url))
        .send()
        .unwrap();
    assert_eq!(r.headers()["x-snapkv-version"], "v2");
    assert_eq!(r.json::<Value>().unwrap(), json!({"n": "user:0000@v2"}));
    for server in [&a, &b] {
        let r = c
            .get(format!("{}/v1/datasets/d/keys/user:0999", server.url))
            .send()
            .unwrap();
        assert_eq!(r.headers()["x-snapkv-version"], "v1");
        assert_eq!(r.json::<Value>().unwrap(), json!({"n": "user:0999"}));
        let mget: Value = c
            .post(format!("{}/v1/datasets/d/mget", server.url))
            .json(&json!({ "keys": ["user:0000", "user:0999"] }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(mget["version"], "v1", "{mget}");
        assert_eq!(
            mget["values"],
            json!({"user:0000": {"n": "user:0000"}, "user:0999": {"n": "user:0999"}})
        );
        assert_eq!(scan_all(&server.url, 333), keys);
    }
    // Pinned to v2, B's shards cannot answer: a 503 to retry, never a mixed answer.
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0999", a.url))
        .header("x-snapkv-version", "v2")
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::SERVICE_UNAVAILABLE, "shard_unavailable".into())
    );
    let metrics = c
        .get(format!("{}/metrics", a.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("snapkv_forwarded_requests_total{dataset=\"d\",result=\"answered\"}"),
        "{metrics}"
    );
    // The lone reader restarted on the same cache with other shards: it fetches them.
    drop(lone);
    let lone = lone_reader("2-3");
    let info: Value = c
        .get(format!("{}/v1/datasets/d", lone.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(
        (&info["version"], &info["shards_held"]),
        (&json!("v2"), &json!([2, 3]))
    );
    let r = c
        .get(format!("{}/v1/datasets/d/keys/user:0999", lone.url))
        .send()
        .unwrap();
    assert_eq!(r.json::<Value>().unwrap(), json!({"n": "user:0999@v2"}));
}

#[test]
fn serves_a_sharded_version_whole() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store").display().to_string();
    let keys = publish_shards(dir.path(), &store, "v1", 4);
    let cache = dir.path().join("cache").display().to_string();
    let server = Server::start(&["--store", &store, "--dataset", "d", "--cache-dir", &cache]);
    let c = client();
    let info: Value = c
        .get(format!("{}/v1/datasets/d", server.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(info["keys"], 1000, "{info}");
    for k in ["user:0000", "user:0249", "user:0250", "user:0999"] {
        let r = c
            .get(format!("{}/v1/datasets/d/keys/{k}", server.url))
            .send()
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{k}");
        assert_eq!(r.json::<Value>().unwrap(), json!({"n": k}));
    }
    let mget: Value = c
        .post(format!("{}/v1/datasets/d/mget", server.url))
        .json(&json!({"keys": keys}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(mget["values"].as_object().unwrap().len(), 1000);
    assert_eq!(mget["missing"], json!([]));
    // Pages of 99 cross every shard boundary.
    assert_eq!(scan_all(&server.url, 99), keys);
    let prefix: Value = c
        .get(format!(
            "{}/v1/datasets/d/scan?prefix=user:02&limit=1000",
            server.url
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(prefix["items"].as_array().unwrap().len(), 100);
}

#[test]
fn queries_run_next_to_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut rows = String::new();
    for (c, country) in ["DE", "SE", "US"].iter().enumerate() {
        for i in 0..40 {
            let id = c * 40 + i;
            let genre = ["drama", "comedy", "horror"][id % 3];
            rows.push_str(&format!(
                "{{\"country\":\"{country}\",\"title_id\":{id},\"genre\":\"{genre}\",\"views\":{}}}\n",
                id * 10
            ));
        }
    }
    let input = dir.path().join("titles.ndjson");
    std::fs::write(&input, rows).unwrap();
    let file = dir.path().join("titles.snapkv");
    snapkv_stdout(&[
        "build",
        "-i",
        input.to_str().unwrap(),
        "-k",
        "country,title_id",
        "-o",
        file.to_str().unwrap(),
        "--version",
        "v1",
        "-q",
    ]);
    let source = format!("views={}", file.display());
    let server = Server::start(&["--file", &source, "--query-max-rows-scanned", "50"]);
    let c = client();
    let url = format!("{}/v1/datasets/views/query", server.url);
    let r = c
        .post(&url)
        .json(
            &json!({"prefix": "SE/", "filter": {"views": {">": 500}}, "group_by": ["genre"],
                      "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"}},
                      "order_by": [{"field": "total", "desc": true}], "limit": 2}),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    let answer: Value = r.json().unwrap();
    // SE holds ids 40..80; views > 500 keeps 51..80.
    let total = |g: usize| {
        (51..80)
            .filter(|i| i % 3 == g)
            .map(|i| i * 10)
            .sum::<usize>()
    };
    let mut expected = [
        ("drama", total(0)),
        ("comedy", total(1)),
        ("horror", total(2)),
    ];
    expected.sort_by_key(|e| std::cmp::Reverse(e.1));
    let got: Vec<(String, u64)> = answer["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["genre"].as_str().unwrap().to_owned(),
                r["total"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], (expected[0].0.to_owned(), expected[0].1 as u64));
    assert_eq!(
        (
            answer["version"].as_str(),
            answer["stats"]["rows_scanned"].as_u64()
        ),
        (Some("v1"), Some(40))
    );
    // NDJSON rows when asked for.
    let text = c
        .post(&url)
        .header("accept", "application/x-ndjson")
        .json(&json!({"keys": ["DE/3", "US/119"], "fields": ["views"]}))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert_eq!(
        text,
        "{\"key\":\"DE/3\",\"views\":30}\n{\"key\":\"US/119\",\"views\":1190}\n"
    );
    // A dataset served from a file has no history.
    let (status, code) = error_code(
        c.get(format!("{}/v1/datasets/views/history", server.url))
            .send()
            .unwrap(),
    );
    assert_eq!(
        (status, code.as_str()),
        (StatusCode::NOT_FOUND, "no_history")
    );
    // An Arrow IPC stream when asked for: typed columns in the query's order.
    let r = c
        .post(&url)
        .header("accept", "application/vnd.apache.arrow.stream, application/json;q=0.5")
        .body(r#"{"prefix": "DE/", "group_by": ["genre"], "aggregates": {"total": {"sum": "views"}, "n": {"count": "*"}}}"#)
        .send()
        .unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    assert_eq!(r.headers()["x-snapkv-version"], "v1");
    let bytes = r.bytes().unwrap();
    let mut reader =
        arrow_ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes.to_vec()), None)
            .unwrap();
    assert_eq!(reader.schema().metadata()["snapkv.version"], "v1");
    let batch = reader.next().unwrap().unwrap();
    let names: Vec<String> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["genre", "total", "n"]);
    assert_eq!(
        batch.schema().field(1).data_type(),
        &arrow_schema::DataType::Int64
    );
    let n =
        arrow_array::cast::AsArray::as_primitive::<arrow_array::types::Int64Type>(batch.column(2));
    assert_eq!(
        n.iter().flatten().sum::<i64>(),
        40,
        "the 40 DE rows, counted once"
    );
    // A bad field is a 400 naming it; going over a limit is a 422 naming the limit.
    let r = c
        .post(&url)
        .json(&json!({"filter": {"veiws": {">": 1}}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["field"].as_str()
        ),
        (Some("bad_query"), Some("veiws"))
    );
    let r = c
        .post(&url)
        .json(&json!({"aggregates": {"n": {"count": "*"}}}))
        .send()
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().unwrap();
    assert_eq!(
        (
            body["error"]["code"].as_str(),
            body["error"]["limit"].as_str()
        ),
        (Some("over_budget"), Some("max_rows_scanned"))
    );
    let r = c.get(&url).send().unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::METHOD_NOT_ALLOWED, "use_post".into())
    );
    // ?fields= picks fields of values (key columns too) on lookups, mgets and scans.
    let base = format!("{}/v1/datasets/views", server.url);
    let got = |r: reqwest::blocking::Response| -> Value {
        assert_eq!(r.status(), StatusCode::OK);
        r.json().unwrap()
    };
    let one = got(c
        .get(format!("{base}/keys/SE%2F41?fields=views,title_id"))
        .send()
        .unwrap());
    assert_eq!(one, json!({"views": 410, "title_id": 41}));
    let many = got(c
        .post(format!("{base}/mget?fields=genre"))
        .json(&json!({"keys": ["DE/0", "US/80"]}))
        .send()
        .unwrap());
    assert_eq!(
        many["values"],
        json!({"DE/0": {"genre": "drama"}, "US/80": {"genre": "horror"}})
    );
    let page = got(c
        .get(format!("{base}/scan?prefix=US/&limit=1&fields=country"))
        .send()
        .unwrap());
    assert_eq!(
        page["items"],
        json!([{"key": "US/100", "value": {"country": "US"}}])
    );
    let r = c
        .get(format!("{base}/keys/SE%2F41?fields=veiws"))
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::BAD_REQUEST, "bad_fields".into())
    );
    let r = c
        .post(&url)
        .header("x-snapkv-version", "v0")
        .json(&json!({}))
        .send()
        .unwrap();
    assert_eq!(
        error_code(r),
        (StatusCode::CONFLICT, "version_not_held".into())
    );
}

#[test]
fn the_explorer_is_served_under_a_strict_policy_and_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 10), true);
    let source = format!("d={}", path.display());
    let server = Server::start(&["--file", &source]);
    let c = client_builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(format!("{}/ui", server.url)).send().unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/ui/");
    for (asset, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/uPlot.iife.min.js", "text/javascript"),
    ] {
        let r = c.get(format!("{}{asset}", server.url)).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{asset}");
        let h = r.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{asset}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(
            csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
            "{csp}"
        );
        assert_eq!(h["x-content-type-options"], "nosniff");
    }
    // The page loads nothing from elsewhere.
    let page = c
        .get(format!("{}/ui/", server.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("<script>"));
    let r = c.get(format!("{}/ui/nope.js", server.url)).send().unwrap();
    assert_eq!(error_code(r), (StatusCode::NOT_FOUND, "no_route".into()));
    let off = Server::start(&["--file", &source, "--ui", "false"]);
    let r = c.get(format!("{}/ui/", off.url)).send().unwrap();
    assert_eq!(error_code(r), (StatusCode::NOT_FOUND, "no_route".into()));
}

/// Counts the lines of a reader's stderr that contain `needle`, as they come.
fn count_lines(server: &mut Server, needle: &'static str) -> Arc<std::sync::atomic::AtomicUsize> {
    use std::io::BufRead;
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let stderr = server.take_stderr().unwrap();
    let c = Arc::clone(&count);
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.contains(needle) {
                c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
    });
    count
}

/// What a reader keeps across restarts and failures: the version it served (a rollback stays
/// rolled back while storage is down), no abandoned downloads, and a version that fails is
/// tried again after a growing delay rather than at every poll.
#[test]
fn a_reader_remembers_what_it_served_and_backs_off_from_what_fails() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let cache = dir.path().join("cache");
    let file = |v: &str| version_file(dir.path(), v, 200);
    let args = |store: &std::path::Path| -> Vec<String> {
        let mut a = ["serve", "--listen", "127.0.0.1:0"]
            .map(String::from)
            .to_vec();
        a.extend(follow_args(store, &cache));
        a
    };
    let start = |store: &std::path::Path, log: &str| {
        let a = args(store);
        let log = log.to_owned();
        let server = Server::spawn_with(&a.iter().map(String::as_str).collect::<Vec<_>>(), |c| {
            c.env("SNAPKV_LOG", log)
                .stderr(std::process::Stdio::piped());
        });
        server.wait_ready();
        server
    };
    publish(&store, &file("v1"), "v1");
    publish(&store, &file("v2"), "v2");
    let mut server = start(&store, "warn");
    wait_for_version(&server.url, "v2");
    snapkv_stdout(&[
        "rollback",
        "--store",
        store.to_str().unwrap(),
        "--dataset",
        "d",
        "--to",
        "v1",
        "--no-pin",
    ]);
    wait_for_version(&server.url, "v1");
    assert!(server.terminate().success());

    // A download abandoned by an earlier run, of a version CURRENT no longer names.
    let abandoned = cache.join("d/v9");
    std::fs::create_dir_all(&abandoned).unwrap();
    std::fs::write(abandoned.join(".d.snapkv.partial"), b"half a file").unwrap();

    // Storage unreachable: the rolled-back v1 is served, not the newer v2 in the cache, and
    // nothing says yet whether v9 is still wanted.
    let mut server = start(&dir.path().join("gone"), "warn");
    assert_eq!(wait_for_error(&server.url)["version"], "v1");
    assert!(abandoned.exists());
    assert!(server.terminate().success());

    // While the reader is down, v3 is published, and corrupted in storage.
    publish(&store, &file("v3"), "v3");
    corrupt_in_store(&store, "v3");

    // Storage back: v1 is served until CURRENT's v3 can be, and the abandoned v9 goes. v3 is
    // refused, and tried again after 100 ms, 200 ms, 400 ms, ... (±25%), not at each of the
    // 50 ms polls.
    let mut server = start(&store, "info");
    let attempts = count_lines(&mut server, "trying it again later");
    let deadline = Instant::now() + Duration::from_secs(30);
    while abandoned.exists() {
        assert!(Instant::now() < deadline, "the abandoned download stayed");
        std::thread::sleep(Duration::from_millis(20));
    }
    let polls = |url: &str| wait_for_error(url)["sync"]["failures"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while polls(&server.url) < 40 {
        assert!(Instant::now() < deadline, "the reader stopped polling");
        std::thread::sleep(Duration::from_millis(20));
    }
    let tried = attempts.load(std::sync::atomic::Ordering::SeqCst);
    assert!((2..=10).contains(&tried), "{tried} attempts in 40 polls");
    assert_eq!(wait_for_error(&server.url)["version"], "v1");

    // A new CURRENT is tried at once, whatever the backoff of the one before.
    publish(&store, &file("v4"), "v4");
    wait_for_version(&server.url, "v4");
    let last_success = metric(
        &server.url,
        "snapkv_sync_last_success_timestamp_seconds{dataset=\"d\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (now - 60.0..=now + 1.0).contains(&last_success),
        "{last_success} vs {now}"
    );
}
