//! Shared by the server tests: snapshot files and a running `snapkv serve`.
#![allow(dead_code)]

use snapkv_format::{Metadata, SnapshotWriter, ValueEncoding, WriterOptions};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The value of `key` in `version` of the test datasets.
pub fn value_of(version: &str, key: &str) -> String {
    format!("{{\"v\":\"{version}\",\"k\":\"{key}\"}}")
}

/// A dataset with keys k0000..k(n-1), some with `/` and spaces, values naming their version.
pub fn dataset(version: &str, n: usize) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = (0..n)
        .map(|i| format!("k{i:04}"))
        .chain([
            "dir/a b".to_string(),
            "dir/x%y".to_string(),
            "ünï".to_string(),
        ])
        .map(|k| {
            let v = value_of(version, &k);
            (k, v)
        })
        .collect();
    rows.sort();
    rows
}

/// Writes a snapshot of sorted `rows` labelled `version`.
pub fn write_snapshot(path: &Path, version: &str, rows: &[(String, String)], json: bool) {
    let mut meta = Metadata::default();
    meta.dataset = Some("d".into());
    meta.version = Some(version.into());
    meta.created_at = Some("2026-11-27T03:15:00Z".into());
    if json {
        meta.value_encoding = ValueEncoding::Json;
        meta.content_type = Some("application/json".into());
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = SnapshotWriter::new(file, WriterOptions::default(), meta).unwrap();
    for (k, v) in rows {
        w.insert(k.as_bytes(), v.as_bytes()).unwrap();
    }
    w.finish().unwrap();
}

/// An HTTP client. TLS is never used here, but the TLS stack the workspace builds reqwest with
/// wants a crypto provider installed before any client is built.
pub fn client() -> reqwest::blocking::Client {
    client_builder().build().unwrap()
}

/// `/v1/datasets/d` of the reader at `url`.
pub fn dataset_info(url: &str) -> serde_json::Value {
    client()
        .get(format!("{url}/v1/datasets/d"))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// A client builder, with the crypto provider installed.
pub fn client_builder() -> reqwest::blocking::ClientBuilder {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::builder()
}

/// A `snapkv serve` child process on 127.0.0.1:0; killed when dropped.
pub struct Server {
    pub url: String,
    /// The first line the server printed on stdout (its address).
    pub first_line: String,
    /// The lines it printed on stdout after the first, as they come.
    pub stdout: std::sync::mpsc::Receiver<String>,
    child: Child,
}

impl Server {
    /// Starts `snapkv serve ARGS` and waits until `/readyz` says ready.
    pub fn start(args: &[&str]) -> Server {
        let s = Server::start_unready(args);
        s.wait_ready();
        s
    }

    /// Starts `snapkv serve ARGS` and waits only for the listening socket.
    pub fn start_unready(args: &[&str]) -> Server {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::spawn(&all)
    }

    /// Starts `snapkv ARGS` (a command that prints `listening on URL` first) and waits for the
    /// listening socket.
    pub fn spawn(args: &[&str]) -> Server {
        Server::spawn_with(args, |_| {})
    }

    /// As [`Server::spawn`], with `configure` changing the command first (environment, working
    /// directory, where stderr goes).
    pub fn spawn_with(args: &[&str], configure: impl FnOnce(&mut Command)) -> Server {
        let mut command = Command::new(env!("CARGO_BIN_EXE_snapkv"));
        command
            .args(args)
            .env("SNAPKV_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        configure(&mut command);
        let mut child = command.spawn().expect("start snapkv serve");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        stdout.read_line(&mut line).unwrap();
        // Keep reading what follows, so the child never writes into a closed pipe.
        let (lines, stdout_lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = lines.send(line);
            }
        });
        // `listening on URL`, or in JSON log format `{"listening": URL, ...}`.
        let json = serde_json::from_str::<serde_json::Value>(&line).ok();
        let url = match json.as_ref().and_then(|v| v["listening"].as_str()) {
            Some(url) => url.to_owned(),
            None => line
                .trim()
                .strip_prefix("listening on ")
                .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
                .to_owned(),
        };
        Server {
            url,
            first_line: line.trim().to_owned(),
            stdout: stdout_lines,
            child,
        }
    }

    pub fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let c = client();
        loop {
            if let Ok(r) = c.get(format!("{}/readyz", self.url)).send() {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "server never became ready");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's stderr, once, when `spawn_with` piped it.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Sends SIGTERM and waits for the exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What `snapkv ARGS` prints on stdout; panics unless it succeeds.
pub fn snapkv_stdout(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "snapkv {args:?}: {stderr}");
    String::from_utf8(out.stdout).unwrap()
}

/// Builds `d.snapkv` in `dir`, version `v1`, keyed by `key`, from an input file named `name`
/// that holds `text`.
pub fn build_snapshot(dir: &Path, name: &str, text: &str, key: &str) -> std::path::PathBuf {
    let input = dir.join(name);
    std::fs::write(&input, text).unwrap();
    let output = dir.join("d.snapkv");
    let (i, o) = (input.to_str().unwrap(), output.to_str().unwrap());
    snapkv_stdout(&[
        "build",
        "-i",
        i,
        "-k",
        key,
        "-o",
        o,
        "--version",
        "v1",
        "-q",
    ]);
    output
}

/// What `snapkv SUBCOMMAND --help` prints.
pub fn help_text(subcommand: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(subcommand.split(' '))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "snapkv {subcommand} --help failed");
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags (`--name`) that `snapkv SUBCOMMAND --help` lists, global ones included.
pub fn help_flags(subcommand: &str) -> std::collections::BTreeSet<String> {
    help_text(subcommand)
        .lines()
        // Option lines start with the flag: `  -k, --key <COL>` or `      --json`.
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split([' ', ',']).find(|w| w.starts_with("--")))
        .map(str::to_owned)
        .collect()
}

/// The store crate's test helpers: the S3 test server, unique names, snapshot files of a
/// given size.
#[path = "../../store/tests/common/mod.rs"]
pub mod store;

/// A fresh store on the S3 test server, named after `test`: its URL and the `--store-option`
/// arguments that reach the server.
pub fn s3_store(test: &str) -> (String, Vec<String>) {
    let options = store::s3_options()
        .into_iter()
        .flat_map(|(k, v)| ["--store-option".to_owned(), format!("{k}={v}")])
        .collect();
    (
        format!("s3://{}/{}", store::BUCKET, store::unique(test)),
        options,
    )
}
