//! The fault suite: publishers and readers (the real binary) against the S3 test server
//! through a fault-injecting proxy, killed at named points, with their cache on a small disk.
//! After every step a checker asserts that `CURRENT` names a complete version that verifies,
//! and that every sampled answer of the reader matches the version it names.
//!
//! Each test prints what it tried (`fault …: N trials`), for the record of a run.

#[path = "../common/mod.rs"]
mod common;
mod proxy;

use common::{client, dataset_info as info, snapkv_stdout, Server};
use proxy::{Fault, Proxy};
use serde_json::Value;
use snapkv_format::{Compression, Dictionary, Metadata, SnapshotWriter, ValueEncoding};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Keys in every version.
const KEYS: usize = 400;

/// A store on the S3 test server, a proxy in front of it, and a scratch directory.
struct World {
    dir: tempfile::TempDir,
    url: String,
    proxy: Proxy,
    rt: tokio::runtime::Runtime,
    /// Bytes of padding in each value (sets the size of a version).
    pad: usize,
    /// Versions published complete, in order.
    published: Vec<String>,
    sampled: usize,
    /// The readers' `read_timeout` through the proxy.
    read_timeout: &'static str,
    /// Versions share all but the sampled keys' values, and readers fetch them by delta (else
    /// every value names its version, and readers download whole files: `--no-delta-sync`).
    delta: bool,
}

impl World {
    fn new(test: &str, pad: usize) -> World {
        let endpoint = common::store::s3_endpoint();
        let proxy = Proxy::start(endpoint.trim_start_matches("http://"));
        World {
            dir: tempfile::tempdir().unwrap(),
            url: format!(
                "s3://{}/{}",
                common::store::BUCKET,
                common::store::unique(test)
            ),
            proxy,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            pad,
            published: Vec::new(),
            sampled: 0,
            read_timeout: "1s",
            delta: false,
        }
    }

    /// `--store-option` arguments reaching the S3 test server directly.
    fn direct(&self) -> Vec<String> {
        options(common::store::s3_options())
    }

    /// `--store-option` arguments reaching it through the proxy, with short timeouts and few
    /// retries so that faults show within a test's time.
    fn proxied(&self) -> Vec<String> {
        let mut o: Vec<(String, String)> = common::store::s3_options()
            .into_iter()
            .filter(|(k, _)| k != "endpoint")
            .collect();
        for (k, v) in [
            ("endpoint", self.proxy.endpoint()),
            ("read_timeout", self.read_timeout.into()),
            ("max_retries", "1".into()),
            ("retry_timeout", "3s".into()),
        ] {
            o.push((k.into(), v));
        }
        options(o)
    }

    /// The snapshot file of `version` (written on first use).
    fn file(&self, version: &str) -> PathBuf {
        let path = self.dir.path().join(version).join("d.snapkv");
        if !path.exists() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            write_version(&path, version, self.pad, self.delta);
        }
        path
    }

    /// Publishes `version` directly; it becomes current.
    fn publish(&mut self, version: &str) {
        self.publish_with(version, &[]);
    }

    /// `snapkv publish` arguments for `version` of dataset `d` with store `options` and
    /// `extra` arguments.
    fn publish_args(&self, version: &str, options: Vec<String>, extra: &[&str]) -> Vec<String> {
        let file = self.file(version);
        let mut args = vec!["publish".to_owned(), "--store".into(), self.url.clone()];
        args.extend(options);
        args.extend(["--dataset", "d", "--version", version].map(String::from));
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(file.display().to_string());
        args
    }

    /// Publishes `version` directly with `extra` arguments (`--stage`).
    fn publish_with(&mut self, version: &str, extra: &[&str]) {
        let args = self.publish_args(version, self.direct(), extra);
        snapkv_stdout(&args.iter().map(String::as_str).collect::<Vec<_>>());
        self.published.push(version.to_owned());
    }

    /// Publishes `version` through the proxy with `extra` arguments, and kills the publisher
    /// (SIGKILL) once a request of it is held by the proxy; then lets the proxy go on.
    fn publish_killed(&self, version: &str, extra: &[&str]) {
        let args = self.publish_args(version, self.proxied(), extra);
        let mut publisher = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.proxy.wait_until_waiting();
        publisher.kill().unwrap();
        publisher.wait().unwrap();
        self.proxy.release();
        self.proxy.disarm();
    }

    /// `snapkv ARGS --store URL (direct options) --dataset d`, its output; must succeed.
    fn admin(&self, args: &[&str]) -> String {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--store".into(), self.url.clone()]);
        all.extend(self.direct());
        all.extend(["--dataset".into(), "d".into()]);
        snapkv_stdout(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// The versions the store lists (`versions --json`).
    fn versions(&self) -> Vec<Value> {
        serde_json::from_str::<Value>(&self.admin(&["versions", "--json"]))
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    }

    /// A reader following the store through the proxy, caching in `cache`.
    fn reader(&self, cache: &Path) -> Server {
        self.reader_with(cache, &[]).0
    }

    /// [`World::reader`] with more `serve` arguments, and its log lines (warnings and worse)
    /// as they come.
    fn reader_with(&self, cache: &Path, extra: &[&str]) -> (Server, Logs) {
        let mut args = vec![
            "serve".to_owned(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--store".into(),
            self.url.clone(),
        ];
        args.extend(self.proxied());
        args.extend(
            [
                "--dataset",
                "d",
                "--cache-dir",
                cache.to_str().unwrap(),
                "--poll-interval",
                "50ms",
            ]
            .map(String::from),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        if !self.delta {
            args.push("--no-delta-sync".into());
        }
        let mut server =
            Server::spawn_with(&args.iter().map(String::as_str).collect::<Vec<_>>(), |c| {
                c.stderr(Stdio::piped());
            });
        let stderr = server.take_stderr().unwrap();
        let logs = Logs::default();
        let lines = std::sync::Arc::clone(&logs);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                eprintln!("{line}");
                lines.lock().unwrap().push(line);
            }
        });
        (server, logs)
    }

    /// The checker: `CURRENT` names `expected`, a complete version that downloads and verifies
    /// in full; and, with a reader, sampled answers match the version each names, which is one
    /// published whole. Returns the version the reader serves.
    fn check(&mut self, expected: &str, reader: Option<&Server>) -> Option<String> {
        let store = snapkv_store::Store::open(&self.url, &common::store::s3_options()).unwrap();
        let cache = snapkv_store::Cache::new(self.dir.path().join("checker"));
        let current = self
            .rt
            .block_on(store.current("d"))
            .unwrap()
            .expect("CURRENT is there");
        assert_eq!(current.pointer.version, expected, "CURRENT moved");
        let fetched = self.rt.block_on(store.fetch(
            "d",
            expected,
            &cache,
            &snapkv_store::FetchOptions::default(),
        ));
        if let Err(e) = fetched {
            panic!("CURRENT names {expected}, which does not verify: {e}");
        }
        reader.map(|r| self.sample(&r.url))
    }

    /// Reads 20 keys from the reader: each answer matches the version it names, one published
    /// whole. Returns that version (all answers name the same one unless a swap came between).
    fn sample(&mut self, url: &str) -> String {
        let c = client();
        let mut seen = String::new();
        for i in (0..KEYS).step_by(KEYS / 20) {
            let key = format!("k{i:05}");
            let r = c
                .get(format!("{url}/v1/datasets/d/keys/{key}"))
                .send()
                .unwrap();
            assert_eq!(r.status(), 200, "{key}");
            let version = r.headers()["x-snapkv-version"].to_str().unwrap().to_owned();
            let value: Value = r.json().unwrap();
            assert_eq!(value["v"], version.as_str(), "{key}: a mixed answer");
            assert_eq!(value["k"], key.as_str());
            assert!(
                self.published.contains(&version),
                "{version} was never published whole"
            );
            self.sampled += 1;
            seen = version;
        }
        seen
    }
}

/// Log lines of a reader.
type Logs = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn options(o: Vec<(String, String)>) -> Vec<String> {
    o.into_iter()
        .flat_map(|(k, v)| ["--store-option".to_owned(), format!("{k}={v}")])
        .collect()
}

/// A snapshot of dataset `d`, `version`: keys k00000.., each value naming its version and key,
/// padded with `pad` pseudo-random hex digits, stored uncompressed (the file's size follows).
/// With `delta`, only the keys [`World::sample`] reads name the version (the others `base`):
/// versions of the same name length then share every other block byte for byte.
fn write_version(path: &Path, version: &str, pad: usize, delta: bool) {
    let mut meta = Metadata::default();
    meta.dataset = Some("d".into());
    meta.version = Some(version.into());
    meta.value_encoding = ValueEncoding::Json;
    let mut options = snapkv_format::WriterOptions::default();
    options.compression = Compression::None;
    options.dictionary = Dictionary::Off;
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = SnapshotWriter::new(file, options, meta).unwrap();
    let mut state = 0x9E37_79B9_7F4A_7C15u64 ^ version.len() as u64;
    for i in 0..KEYS {
        let padding: String = (0..pad)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                char::from_digit((state % 16) as u32, 16).unwrap()
            })
            .collect();
        let named = if !delta || i % (KEYS / 20) == 0 {
            version
        } else {
            "base"
        };
        let value = format!("{{\"v\":\"{named}\",\"k\":\"k{i:05}\",\"pad\":\"{padding}\"}}");
        w.insert(format!("k{i:05}").as_bytes(), value.as_bytes())
            .unwrap();
    }
    w.finish().unwrap();
}

/// Waits until the reader serves `version`, sampling its answers meanwhile.
fn serves(world: &mut World, reader: &Server, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while info(&reader.url)["version"] != version {
        assert!(
            Instant::now() < deadline,
            "{version} never served: {}",
            info(&reader.url)
        );
        world.sample(&reader.url);
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until `condition` holds, for at most 60 s.
fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Storage faults between a reader and the store (cut connections, stalls, flipped bytes in
/// objects and in `CURRENT`, refused connections, a slow link): while a fault lasts, the
/// reader keeps serving the version it has and says why; once it clears, the new version is
/// served. No answer is ever partial or of a version not published whole.
#[test]
fn storage_faults_never_reach_a_reader() {
    let mut w = World::new("faults-storage", 1000);
    let cache = w.dir.path().join("cache");
    w.publish("v0001");
    let size = std::fs::metadata(w.file("v0001")).unwrap().len() as usize;
    let reader = w.reader(&cache);
    reader.wait_ready();
    w.check("v0001", Some(&reader));
    // Offsets are in the object, also in ranged answers.
    let trials: Vec<Trial> = vec![
        (
            "cut object body",
            "GET",
            "d.snapkv",
            Fault::Cut(0),
            None,
            false,
        ),
        (
            "cut object body",
            "GET",
            "d.snapkv",
            Fault::Cut(size / 2),
            None,
            false,
        ),
        (
            "cut object body",
            "GET",
            "d.snapkv",
            Fault::Cut(size - 1),
            None,
            false,
        ),
        (
            "cut object body once",
            "GET",
            "d.snapkv",
            Fault::Cut(size / 2),
            Some(1),
            true,
        ),
        (
            "cut object body once",
            "GET",
            "d.snapkv",
            Fault::Cut(size - 1),
            Some(1),
            true,
        ),
        (
            "stall object body",
            "GET",
            "d.snapkv",
            Fault::Stall(0),
            None,
            false,
        ),
        (
            "stall object body",
            "GET",
            "d.snapkv",
            Fault::Stall(size / 2),
            None,
            false,
        ),
        (
            "flip object byte",
            "GET",
            "d.snapkv",
            Fault::Corrupt(0),
            None,
            false,
        ),
        (
            "flip object byte",
            "GET",
            "d.snapkv",
            Fault::Corrupt(size / 2),
            None,
            false,
        ),
        (
            "flip object byte",
            "GET",
            "d.snapkv",
            Fault::Corrupt(size - 1),
            None,
            false,
        ),
        (
            "flip object byte once",
            "GET",
            "d.snapkv",
            Fault::Corrupt(size / 3),
            Some(1),
            true,
        ),
        (
            "flip CURRENT byte",
            "GET",
            "/d/CURRENT",
            Fault::Corrupt(1),
            None,
            false,
        ),
        (
            "flip CURRENT byte",
            "GET",
            "/d/CURRENT",
            Fault::Corrupt(20),
            None,
            false,
        ),
        (
            "flip manifest byte",
            "GET",
            "MANIFEST.json",
            Fault::Corrupt(30),
            None,
            false,
        ),
        (
            "cut manifest",
            "GET",
            "MANIFEST.json",
            Fault::Cut(0),
            None,
            false,
        ),
        (
            "cut manifest",
            "GET",
            "MANIFEST.json",
            Fault::Cut(20),
            None,
            false,
        ),
        ("refuse connections", "", "", Fault::Refuse, None, false),
        (
            "refuse connections 3 times",
            "",
            "",
            Fault::Refuse,
            Some(3),
            true,
        ),
        (
            "slow link",
            "GET",
            "d.snapkv",
            Fault::Slow(size * 2),
            None,
            true,
        ),
    ];
    let mut counts: std::collections::BTreeMap<&str, (usize, usize)> = Default::default();
    for (n, (name, method, path, fault, times, passes)) in trials.into_iter().enumerate() {
        let (before, old) = (w.proxy.fired(), w.published.last().unwrap().clone());
        let version = format!("v{:04}", n + 2);
        w.proxy.arm(method, path, fault, times);
        if fault == Fault::Refuse {
            w.proxy.cut_connections();
        }
        w.publish(&version);
        if !passes {
            // The fault hit the reader at least twice, and it says why it does not serve the
            // new version; it still serves the old one, whole.
            wait_until(&format!("{name}: two hits and an error shown"), || {
                w.sample(&reader.url);
                w.proxy.fired() >= before + 2 && info(&reader.url)["sync"]["last_error"].is_string()
            });
            assert_eq!(
                w.sample(&reader.url),
                old,
                "{name}: served through the fault"
            );
            w.proxy.disarm();
            w.proxy.release();
        }
        serves(&mut w, &reader, &version);
        w.proxy.disarm();
        w.proxy.release();
        w.check(&version, Some(&reader));
        let c = counts.entry(name).or_default();
        *c = (c.0 + 1, c.1 + w.proxy.fired() - before);
    }
    for (name, (trials, hits)) in counts {
        println!("fault {name}: {trials} trials, {hits} faulty exchanges, all recovered");
    }
    println!("answers sampled and checked: {}", w.sampled);
    // Nothing half-downloaded stays in the cache.
    let left: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".partial"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// A storage fault trial: its name, the method and part of the path of the requests it hits,
/// the fault, how many exchanges it hits (all: `None`), and whether the new version gets
/// through while it lasts.
type Trial = (
    &'static str,
    &'static str,
    &'static str,
    Fault,
    Option<usize>,
    bool,
);

/// Every file under `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// `snapkv publish` through the proxy, killed (SIGKILL) when it reaches each named point:
/// `CURRENT` keeps naming the version before, the reader keeps serving it, `versions` shows
/// what the killed publisher left and `gc` removes it, and the next publish goes through.
#[test]
fn publishers_killed_at_each_point_leave_current_whole() {
    let mut w = World::new("faults-publish-kill", 200);
    w.publish("v0001");
    let reader = w.reader(&w.dir.path().join("cache"));
    reader.wait_ready();
    // (point, method, path): the request held when the publisher is killed.
    let points = [
        ("claim", "PUT", "/PUBLISHING.json"),
        ("file upload", "PUT", "/d.snapkv"),
        ("manifest", "PUT", "/MANIFEST.json"),
        ("CURRENT swap", "PUT", "/d/CURRENT"),
    ];
    let mut n = 1;
    for (point, method, path) in points {
        let before = w.published.last().unwrap().clone();
        n += 1;
        let killed = format!("v{n:04}");
        w.proxy.arm(method, path, Fault::Hold, Some(1));
        w.publish_killed(&killed, &[]);
        assert_eq!(
            w.check(&before, Some(&reader)).as_deref(),
            Some(before.as_str()),
            "{point}"
        );
        let listed = w.versions();
        let row = listed.iter().find(|v| v["version"] == killed.as_str());
        match point {
            // Killed before anything of the version was written.
            "claim" => assert!(row.is_none(), "{point}: {listed:?}"),
            // Complete, not current: a later publish still goes after it.
            "CURRENT swap" => assert!(row.unwrap()["incomplete"].is_null(), "{point}"),
            _ => assert!(
                row.unwrap()["incomplete"].is_object(),
                "{point}: {listed:?}"
            ),
        }
        // The killed publisher's leftovers go; complete versions stay.
        w.admin(&["gc", "--keep", "100", "--grace", "0s"]);
        assert!(
            w.versions().iter().all(|v| v["incomplete"].is_null()),
            "{point}: gc left an incomplete version"
        );
        n += 1;
        let next = format!("v{n:04}");
        w.publish(&next);
        serves(&mut w, &reader, &next);
        w.check(&next, Some(&reader));
        println!("kill of the publisher at {point}: 1 trial, CURRENT whole, recovered");
    }
    println!("answers sampled and checked: {}", w.sampled);
}

/// A reader killed (SIGKILL) in the middle of a download starts again from its cache: it
/// serves what it served at once, then resumes and serves the new version; no partial file
/// stays.
#[test]
fn a_reader_killed_mid_download_resumes() {
    let mut w = World::new("faults-reader-kill", 1000);
    let cache = w.dir.path().join("cache");
    w.publish("v0001");
    let size = std::fs::metadata(w.file("v0001")).unwrap().len() as usize;
    let mut reader = w.reader(&cache);
    reader.wait_ready();
    for (n, at) in [size / 3, size - 10].into_iter().enumerate() {
        let (old, version) = (
            w.published.last().unwrap().clone(),
            format!("v{:04}", n + 2),
        );
        w.proxy.arm("GET", "d.snapkv", Fault::Stall(at), Some(1));
        w.publish(&version);
        w.proxy.wait_until_waiting();
        drop(reader);
        w.proxy.release();
        w.proxy.disarm();
        let partial = cache.join("d").join(&version).join(".d.snapkv.partial");
        assert!(partial.exists(), "the download had not started");
        reader = w.reader(&cache);
        reader.wait_ready();
        // The version served before the kill answers at once (or the new one, if the
        // resumed download already finished).
        let first = w.sample(&reader.url);
        assert!(first == old || first == version, "{first}");
        serves(&mut w, &reader, &version);
        w.check(&version, Some(&reader));
        assert!(!partial.exists());
        println!("kill of the reader at {at} of {size} bytes downloaded: resumed");
    }
    println!("answers sampled and checked: {}", w.sampled);
}

/// Delta syncs through faults: a range read cut once is retried or the file downloaded whole;
/// ranges corrupted on every read are never served (the reader keeps its version and says why)
/// and, once the fault clears, the version arrives by delta.
#[test]
fn delta_syncs_through_cut_and_corrupt_ranges() {
    let mut w = World::new("faults-delta", 1000);
    w.delta = true;
    let cache = w.dir.path().join("cache");
    w.publish("v0001");
    let reader = w.reader(&cache);
    reader.wait_ready();
    // Bytes the reader's syncs copied from the versions it had.
    let reused = || -> f64 {
        let text = client()
            .get(format!("{}/metrics", reader.url))
            .send()
            .unwrap()
            .text()
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("snapkv_sync_bytes_reused_total{dataset=\"d\"} "))
            .map_or(0.0, |v| v.parse().unwrap())
    };
    // No fault: most of the file is copied from v0001.
    w.publish("v0002");
    serves(&mut w, &reader, "v0002");
    w.check("v0002", Some(&reader));
    let size = std::fs::metadata(w.file("v0002")).unwrap().len() as f64;
    assert!(reused() > size / 2.0, "{} of {size} reused", reused());

    // The first range read (the footer) cut: retried, or the whole file downloaded.
    w.proxy.arm("GET", "d.snapkv", Fault::Cut(10), Some(1));
    w.publish("v0003");
    serves(&mut w, &reader, "v0003");
    w.check("v0003", Some(&reader));
    w.proxy.disarm();

    let before = reused();
    // Every read of the object corrupted: the delta and the whole download both fail their
    // checks; v0003 stays served, the error is reported, nothing of v0004 is kept.
    w.proxy.arm("GET", "d.snapkv", Fault::Corrupt(100), None);
    w.publish("v0004");
    wait_until("the sync error reported", || {
        info(&reader.url)["sync"]["last_error"].is_string()
    });
    assert_eq!(w.sample(&reader.url), "v0003");
    assert!(!cache.join("d/v0004/d.snapkv").exists());
    assert_eq!(reused(), before, "nothing of a failed fetch counts");
    w.proxy.disarm();
    serves(&mut w, &reader, "v0004");
    w.check("v0004", Some(&reader));
    assert!(
        reused() > size * 1.5,
        "{} reused over v0002..v0004",
        reused()
    );
    println!("delta syncs: clean, a cut range read, corrupted ranges until cleared");
}

/// A reader that opened a version lazily loses its storage mid-download: keys whose blocks
/// are local still answer, the others get a quick `503 not_local` with `Retry-After` (never a
/// wrong or partial answer); once storage is back the same keys answer, the download
/// completes and the version verifies.
#[test]
fn a_lazy_open_serves_what_it_has_while_storage_is_gone() {
    let mut w = World::new("faults-lazy", 1000);
    let cache = w.dir.path().join("cache");
    w.publish("v0001");
    let (reader, _logs) = w.reader_with(
        &cache,
        &[
            "--ready-when",
            "opened",
            "--max-download-rate",
            "32KB",
            "--lazy-timeout",
            "1s",
        ],
    );
    reader.wait_ready();
    let missing = || info(&reader.url)["lazy"]["blocks_missing"].as_u64();
    assert!(missing().unwrap() > 0, "{}", info(&reader.url));
    // Reads the blocks of the sampled keys by range.
    assert_eq!(w.sample(&reader.url), "v0001");

    w.proxy.arm("", "", Fault::Refuse, None);
    w.proxy.cut_connections();
    // What is local answers; the last key's block (the fill goes in file order) is not.
    assert_eq!(w.sample(&reader.url), "v0001");
    let last = format!("{}/v1/datasets/d/keys/k{:05}", reader.url, KEYS - 2);
    let started = Instant::now();
    let r = client().get(&last).send().unwrap();
    assert_eq!(r.status(), 503, "{:?}", r.text());
    assert_eq!(r.headers()["retry-after"], "1");
    let body: Value = r.json().unwrap();
    assert_eq!(body["error"]["code"], "not_local", "{body}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(missing().unwrap() > 0);

    w.proxy.disarm();
    wait_until("the missing key answers once storage is back", || {
        client()
            .get(&last)
            .send()
            .is_ok_and(|r| r.status() == 200 && r.json::<Value>().unwrap()["v"] == "v0001")
    });
    wait_until("the download completes", || missing().is_none());
    assert!(cache.join("d/v0001/d.snapkv").exists());
    assert!(!cache.join("d/v0001/.d.snapkv.lazy").exists());
    w.check("v0001", Some(&reader));
    println!("lazy open: served, lost storage (503 for missing blocks), recovered, completed");
}

/// A small file system for a reader's cache: a tmpfs mounted for the test, unmounted when
/// dropped. Mounting needs root (CAP_SYS_ADMIN), as `.ci/run` has.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount(dir: &Path, bytes: u64) -> SmallDisk {
        std::fs::create_dir_all(dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={}k", bytes / 1024))
            .args(["tmpfs", dir.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cannot mount a {bytes}-byte tmpfs for the cache at {} (the test needs root, as \
             .ci/run has): {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk {
            dir: dir.to_owned(),
        }
    }

    fn free(&self) -> u64 {
        let out = Command::new("df")
            .args(["--output=avail", "-B1"])
            .arg(&self.dir)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// The version directories in a reader's cache.
fn cached_versions(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache.join("d"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A cache with room for 2.85 versions: the reader holds the served and the previous
/// version; the next one fits only once the previous one is released, which it is (logged,
/// and shown in `/v1/datasets/d`); a restart holds both versions in the cache again.
fn tight_cache(w: &mut World, cache: &Path, extra: &[&str]) {
    w.publish("v0001");
    let (mut reader, mut logs) = w.reader_with(cache, extra);
    reader.wait_ready();
    w.publish("v0002");
    serves(w, &reader, "v0002");
    assert_eq!(info(&reader.url)["previous_version"], "v0001");
    for (next, released, kept) in [("v0003", "v0001", "v0002"), ("v0004", "v0002", "v0003")] {
        w.publish(next);
        serves(w, &reader, next);
        w.check(next, Some(&reader));
        let i = info(&reader.url);
        assert_eq!(i["previous_version"], kept, "{i}");
        let r = &i["cache"]["previous_released"];
        assert_eq!(
            (r["version"].as_str(), r["for_version"].as_str()),
            (Some(released), Some(next)),
            "{i}"
        );
        assert_eq!(cached_versions(cache), [kept, next]);
        wait_until("the release logged", || {
            logs.lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("released the previous version") && l.contains(released))
        });
        if next == "v0003" {
            // A reader killed and started again holds the served version and the previous
            // one (both complete in the cache), so the next version again needs room.
            drop(reader);
            (reader, logs) = w.reader_with(cache, extra);
            reader.wait_ready();
            assert_eq!(info(&reader.url)["version"], next);
            wait_until("the previous version held after the restart", || {
                info(&reader.url)["previous_version"] == kept
            });
        }
    }
}

/// The cache on a disk with room for 2.85 versions.
#[test]
fn a_reader_on_a_small_disk_releases_the_previous_version_for_the_next() {
    let mut w = World::new("faults-small-disk", 2500);
    let size = std::fs::metadata(w.file("v0001")).unwrap().len();
    let disk = SmallDisk::mount(&w.dir.path().join("cache"), size * 285 / 100);
    tight_cache(&mut w, &disk.dir.clone(), &[]);
    println!(
        "small disk: 2 versions that did not fit, both served after releasing the previous one"
    );
}

/// The same under `--cache-dir-limit` on a large disk.
#[test]
fn a_reader_under_a_cache_limit_releases_the_previous_version_for_the_next() {
    let mut w = World::new("faults-cache-limit", 2500);
    let size = std::fs::metadata(w.file("v0001")).unwrap().len();
    let limit = (size * 285 / 100).to_string();
    let cache = w.dir.path().join("cache");
    tight_cache(&mut w, &cache, &["--cache-dir-limit", &limit]);
}

/// A staged version held for preview never takes the room of served versions: it gives way to
/// the next current version, and is not held when only the served versions fit.
#[test]
fn staged_previews_give_way_to_served_versions_in_a_tight_cache() {
    let mut w = World::new("faults-staged-room", 2500);
    let size = std::fs::metadata(w.file("v0001")).unwrap().len();
    let limit = (size * 295 / 100).to_string();
    let cache = w.dir.path().join("cache");
    let extra = ["--cache-dir-limit", &limit, "--preview-staged"];
    let staged_dirs = || -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(cache.join(".staged/d"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    w.publish("v0001");
    let (reader, logs) = w.reader_with(&cache, &extra);
    reader.wait_ready();
    // Room for the served version and a staged one.
    w.publish_with("v0002", &["--stage"]);
    wait_until("v0002 held for preview", || {
        info(&reader.url)["staged_version"] == "v0002"
    });
    // A newer staged version replaces it in its room.
    w.publish_with("v0003", &["--stage"]);
    wait_until("v0003 held for preview", || {
        info(&reader.url)["staged_version"] == "v0003"
    });
    assert_eq!(staged_dirs(), ["v0003"]);
    // A newer current version needs the preview's room: the preview goes.
    w.publish("v0004");
    serves(&mut w, &reader, "v0004");
    w.check("v0004", Some(&reader));
    wait_until("the preview's release logged", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("no longer holding the staged version") && l.contains("v0003"))
    });
    assert_eq!(cached_versions(&cache), ["v0001", "v0004"]);
    // Served and previous leave less than a version: a new staged one is not held.
    w.publish_with("v0005", &["--stage"]);
    wait_until("the preview refused for lack of room", || {
        info(&reader.url)["sync"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("staged preview of v0005: not held"))
    });
    assert!(info(&reader.url)["staged_version"].is_null());
    // Promoted, it is fetched as the current version, in the previous version's room.
    w.admin(&["promote", "--version", "v0005"]);
    serves(&mut w, &reader, "v0005");
    w.check("v0005", Some(&reader));
    assert_eq!(
        info(&reader.url)["cache"]["previous_released"]["version"],
        "v0001"
    );
    println!("staged previews in a tight cache: 3 trials, served versions kept their room");
}

/// The disk fills while a version downloads (another process wrote to it): the write fails
/// for lack of space, the reader releases the previous version and the download resumes.
#[test]
fn a_disk_that_fills_during_a_download_releases_the_previous_version() {
    let mut w = World::new("faults-disk-fills", 2500);
    // The download is stalled while the disk fills: the reader must not give up on it first.
    w.read_timeout = "30s";
    let size = std::fs::metadata(w.file("v0001")).unwrap().len();
    let disk = SmallDisk::mount(&w.dir.path().join("cache"), size * 36 / 10);
    let cache = disk.dir.clone();
    w.publish("v0001");
    let (reader, logs) = w.reader_with(&cache, &[]);
    reader.wait_ready();
    w.publish("v0002");
    serves(&mut w, &reader, "v0002");
    wait_until("v0001 held as the previous version", || {
        info(&reader.url)["previous_version"] == "v0001"
    });
    w.proxy
        .arm("GET", "d.snapkv", Fault::Stall(size as usize / 4), Some(1));
    w.publish("v0003");
    w.proxy.wait_until_waiting();
    // Fill the disk but for a third of a version: less than the rest of the download.
    let filler = cache.join("filler");
    let room = disk.free().saturating_sub(size / 3);
    std::fs::write(&filler, vec![0u8; room as usize]).unwrap();
    w.proxy.release();
    serves(&mut w, &reader, "v0003");
    w.check("v0003", Some(&reader));
    let i = info(&reader.url);
    assert_eq!(i["cache"]["previous_released"]["version"], "v0001", "{i}");
    wait_until("the release logged", || {
        logs.lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("released the previous version") && l.contains("disk full"))
    });
    std::fs::remove_file(&filler).unwrap();
    println!("disk filled mid-download: 1 trial, previous released, download resumed");
}

/// The multipart uploads open on the S3 test server under the world's store (asked directly,
/// unsigned, as the test server allows).
fn open_uploads(w: &World) -> usize {
    let prefix = w.url.trim_start_matches("s3://").split_once('/').unwrap().1;
    let endpoint = common::store::s3_endpoint();
    let body = client()
        .get(format!(
            "{endpoint}/{}?uploads&prefix={prefix}/",
            common::store::BUCKET
        ))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(body.contains("ListMultipartUploadsResult"), "{body}");
    body.matches("<UploadId>").count()
}

/// A publisher killed between the parts of a multipart upload leaves the upload open (its
/// parts stored, though no listing of objects shows them): `gc` aborts it once older than
/// the grace period.
#[test]
fn gc_aborts_the_multipart_upload_of_a_killed_publisher() {
    let mut w = World::new("faults-multipart", 15_000);
    w.publish("v0001");
    let size = std::fs::metadata(w.file("v0002")).unwrap().len();
    assert!(size > 5 << 20, "{size} bytes: one part");
    w.proxy.arm("PUT", "partNumber=2", Fault::Hold, Some(1));
    w.publish_killed("v0002", &["--part-size", "5MiB"]);
    w.check("v0001", None);
    assert_eq!(open_uploads(&w), 1);
    // Its version is in progress (the claim is younger than the grace period): it may be a
    // publisher still at work. (The test server dates every upload 2010, so the upload's own
    // age is not what keeps it here.)
    let kept = w.admin(&["gc", "--keep", "5", "--grace", "1h"]);
    assert!(!kept.contains("never completed"), "{kept}");
    assert_eq!(open_uploads(&w), 1);
    let dry = w.admin(&["gc", "--keep", "5", "--grace", "0s", "--dry-run"]);
    assert!(
        dry.contains("would delete v0002/d.snapkv (an upload that never completed"),
        "{dry}"
    );
    assert_eq!(open_uploads(&w), 1);
    let done = w.admin(&["gc", "--keep", "5", "--grace", "0s"]);
    assert!(
        done.contains("deleted v0002/d.snapkv (an upload that never completed"),
        "{done}"
    );
    assert_eq!(open_uploads(&w), 0);
    w.publish("v0003");
    w.check("v0003", None);
    println!("kill of the publisher between multipart parts: 1 trial, upload aborted by gc");
}
