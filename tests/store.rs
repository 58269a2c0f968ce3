//! End-to-end tests of `snapkv publish`, `versions`, `rollback` and `gc`: the real binary
//! against a local directory store and a real S3-compatible server over HTTP (started by
//! `./scripts/test`; without it the S3 tests fail).

use snapkv_format::Metadata;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::s3_store;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Local,
    S3,
}

/// One test's store, dataset and scratch directory.
struct Env {
    store: String,
    options: Vec<String>,
    dir: tempfile::TempDir,
}

impl Env {
    fn new(backend: Backend, test: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let (store, options) = match backend {
            Backend::Local => (dir.path().join("store").display().to_string(), Vec::new()),
            Backend::S3 => s3_store(&format!("cli-{test}")),
        };
        Env {
            store,
            options,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A snapshot of about `bytes` bytes at `name`.
    fn snapshot(&self, name: &str, bytes: usize, seed: u64) -> PathBuf {
        let path = self.path(name);
        common::store::write_snapshot(&path, bytes, seed, Metadata::default());
        path
    }

    /// `snapkv COMMAND --store … --dataset ds ARGS…`, not yet started.
    fn command(&self, command: &str, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_snapkv"));
        c.arg(command)
            .args(["--store", &self.store, "--dataset", "ds"])
            .args(&self.options)
            .args(args)
            .stdin(Stdio::null());
        c
    }

    fn run(&self, command: &str, args: &[&str]) -> Output {
        self.command(command, args).output().unwrap()
    }

    /// Runs and expects exit code 0; returns stdout.
    fn ok(&self, command: &str, args: &[&str]) -> String {
        let out = self.run(command, args);
        assert!(
            out.status.success(),
            "snapkv {command} {args:?}: {:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs and expects exit code 2; returns stderr.
    fn fails(&self, command: &str, args: &[&str]) -> String {
        let out = self.run(command, args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "snapkv {command} {args:?}: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    fn versions(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok("versions", &["--json"])).unwrap()
    }

    fn current(&self) -> Option<String> {
        self.versions()
            .into_iter()
            .find(|v| v["current"] == true)
            .map(|v| v["version"].as_str().unwrap().to_owned())
    }
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

macro_rules! both_backends {
    ($($test:ident),* $(,)?) => {
        mod local {
            $(#[test] fn $test() { super::$test(super::Backend::Local) })*
        }
        mod s3 {
            $(#[test] fn $test() { super::$test(super::Backend::S3) })*
        }
    };
}

both_backends!(
    publish_versions_rollback_gc,
    refusals_are_errors_with_reasons,
    racing_publishers_one_wins,
    killed_publish_leaves_current_and_gc_cleans_it,
    stage_promote_pin_and_history,
    policy_rules_refuse_with_a_report_and_force_is_recorded,
    independent_shard_uploads_and_a_commit,
);

impl Env {
    /// Builds `name` from JSON rows `{"id": "user:<i>", ...fields(i)}` for `i` in `ids`.
    fn build(
        &self,
        name: &str,
        ids: std::ops::Range<u32>,
        fields: impl Fn(u32) -> String,
    ) -> PathBuf {
        let input = self.path(&format!("{name}.ndjson"));
        let rows: String = ids
            .map(|i| format!("{{\"id\":\"user:{i}\",{}}}\n", fields(i)))
            .collect();
        std::fs::write(&input, rows).unwrap();
        let output = self.path(name);
        let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args([
                "build",
                "--key",
                "id",
                "-i",
                arg(&input),
                "-o",
                arg(&output),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        output
    }

    /// `snapkv policy SUB --store … --dataset ds ARGS…`.
    fn policy(&self, sub: &str, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args(["policy", sub, "--store", &self.store, "--dataset", "ds"])
            .args(&self.options)
            .args(args)
            .output()
            .unwrap()
    }

    /// Runs and expects exit code 3 (refused by the policy); returns stderr.
    fn refused(&self, command: &str, args: &[&str]) -> String {
        let out = self.run(command, args);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            out.status.code(),
            Some(3),
            "snapkv {command} {args:?}: {err}"
        );
        err
    }
}

/// The safe-rollout path an operator takes: stage a version, promote it, roll back (which pins),
/// watch the nightly publish get staged, unpin and promote; every step in the history.
fn stage_promote_pin_and_history(backend: Backend) {
    let env = Env::new(backend, "rollout");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    let out = env.ok(
        "publish",
        &[
            arg(&a),
            "--version",
            "v2",
            "--stage",
            "--reason",
            "canary first",
        ],
    );
    assert!(
        out.starts_with("staged ds version v2") && out.contains("CURRENT stays v1"),
        "{out}"
    );
    assert_eq!(env.current().as_deref(), Some("v1"));
    let json = env.versions();
    assert_eq!(
        json.iter()
            .map(|v| (
                v["version"].as_str().unwrap(),
                v["current"] == true,
                v["staged"] == true
            ))
            .collect::<Vec<_>>(),
        [("v1", true, false), ("v2", false, true)]
    );
    assert!(env.ok("versions", &[]).contains("\n+ v2 "));

    let out = env.ok("promote", &["--version", "v2"]);
    assert_eq!(out.lines().next(), Some("CURRENT of ds: v1 -> v2"), "{out}");
    assert!(out.contains("policy: 3 passed, 0 failed"), "{out}");
    let err = env.fails("promote", &["--version", "v1"]);
    assert!(err.contains("older than the current version v2"), "{err}");
    let err = env.fails("promote", &["--version", "v9"]);
    assert!(err.contains("version v9 of ds not found"), "{err}");

    // A rollback pins by default: the nightly publish stages instead of undoing it.
    let out = env.ok("rollback", &["--to", "v1", "--reason", "INC-7: bad scores"]);
    assert!(
        out.contains("v2 -> v1; pinned (INC-7: bad scores)"),
        "{out}"
    );
    let out = env.ok("publish", &[arg(&a), "--version", "v3"]);
    assert!(
        out.starts_with("staged ds version v3") && out.contains("pinned to v1"),
        "{out}"
    );
    assert_eq!(env.current().as_deref(), Some("v1"));
    let json = env.versions();
    let v1 = json.iter().find(|v| v["version"] == "v1").unwrap();
    assert_eq!(v1["pin"]["reason"], "INC-7: bad scores");
    assert!(env.ok("versions", &[]).contains("pinned to v1 by "));
    let err = env.fails("promote", &["--version", "v3"]);
    assert!(
        err.contains("pinned to v1") && err.contains("unpin it first"),
        "{err}"
    );

    let out = env.ok("unpin", &["--reason", "fixed upstream"]);
    assert!(out.contains("no longer pinned (CURRENT stays v1)"), "{out}");
    assert_eq!(env.ok("unpin", &[]).trim(), "ds is not pinned");
    env.ok("promote", &["--version", "v3"]);
    assert_eq!(env.current().as_deref(), Some("v3"));

    // pin --version moves CURRENT and holds it.
    let out = env.ok("pin", &["--version", "v2", "--reason", "hold"]);
    assert!(out.contains("pinned to v2"), "{out}");
    assert_eq!(env.current().as_deref(), Some("v2"));
    let err = env.fails("pin", &["--version", "v7", "--reason", "x"]);
    assert!(err.contains("version v7 of ds not found"), "{err}");

    let history: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok("history", &["--json"])).unwrap();
    // (seq, action, from, to, reason)
    type Step<'a> = (
        u64,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
        Option<&'a str>,
    );
    let steps: Vec<Step> = history
        .iter()
        .map(|e| {
            (
                e["seq"].as_u64().unwrap(),
                e["action"].as_str().unwrap(),
                e["from"].as_str(),
                e["to"].as_str(),
                e["reason"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            (1, "publish", None, Some("v1"), None),
            (2, "stage", Some("v1"), Some("v2"), Some("canary first")),
            (3, "promote", Some("v1"), Some("v2"), None),
            (
                4,
                "rollback",
                Some("v2"),
                Some("v1"),
                Some("INC-7: bad scores")
            ),
            (5, "stage", Some("v1"), Some("v3"), None),
            (6, "unpin", Some("v1"), Some("v1"), Some("fixed upstream")),
            (7, "promote", Some("v1"), Some("v3"), None),
            (8, "pin", Some("v3"), Some("v2"), Some("hold")),
        ]
    );
    assert!(history
        .iter()
        .all(|e| e["by"].as_str().unwrap().contains('@')));
    let table = env.ok("history", &["--last", "2"]);
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table.contains("pin") && table.contains("hold"), "{table}");
}

fn publish_versions_rollback_gc(backend: Backend) {
    let env = Env::new(backend, "lifecycle");
    let a = env.snapshot("part-0.snapkv", 30_000, 1);
    let b = env.snapshot("part-1.snapkv", 20_000, 2);
    let out = env.ok("publish", &[arg(&a), arg(&b), "--version", "v1"]);
    assert!(
        out.contains("published ds version v1: 2 file(s)") && out.contains("50 keys"),
        "{out}"
    );
    assert!(out.contains("CURRENT (none) -> v1"), "{out}");
    let out = env.ok("publish", &[arg(&a), "--version", "v2"]);
    assert!(out.contains("CURRENT v1 -> v2"), "{out}");

    let table = env.ok("versions", &[]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("VERSION") && lines[0].contains("KEYS"),
        "{table}"
    );
    assert!(
        lines[1].starts_with("  v1 ") && lines[1].contains(" 50 "),
        "{table}"
    );
    assert!(
        lines[2].starts_with("* v2 ") && lines[2].contains(" 30 "),
        "{table}"
    );
    let json = env.versions();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["version"], "v1");
    assert_eq!(
        json[0]["files"],
        serde_json::json!(["part-0.snapkv", "part-1.snapkv"])
    );
    assert_eq!(json[0]["keys"], 50);
    assert_eq!(
        json[0]["bytes"],
        std::fs::metadata(&a).unwrap().len() + std::fs::metadata(&b).unwrap().len()
    );
    assert_eq!(json[1]["current"], true);
    assert_eq!(json[1]["complete"], true);

    let out = env.ok("rollback", &["--to", "v1", "--no-pin"]);
    assert_eq!(out.trim(), "CURRENT of ds: v2 -> v1");
    assert_eq!(env.current().as_deref(), Some("v1"));
    let out = env.ok("rollback", &["--to", "v1", "--no-pin"]);
    assert_eq!(out.trim(), "CURRENT of ds is already v1");

    // CURRENT is v1 and v2 is the newest: with --keep 1 both stay.
    let out = env.ok("gc", &["--keep", "1"]);
    assert_eq!(
        out.lines().filter(|l| l.starts_with("kept")).count(),
        2,
        "{out}"
    );
    env.ok("publish", &[arg(&a), "--version", "v3"]);
    let out = env.ok("gc", &["--keep", "1", "--dry-run"]);
    assert!(
        out.contains("would delete v1") && out.contains("would delete v2"),
        "{out}"
    );
    assert_eq!(env.versions().len(), 3);
    let out = env.ok("gc", &["--keep", "1"]);
    assert!(
        out.contains("deleted v1") && out.contains("deleted v2"),
        "{out}"
    );
    assert!(out.contains("kept v3"), "{out}");
    let json = env.versions();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0]["version"], "v3");
    assert_eq!(json[0]["current"], true);
}

fn refusals_are_errors_with_reasons(backend: Backend) {
    let env = Env::new(backend, "refusals");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v2"]);
    let err = env.fails("publish", &[arg(&a), "--version", "v1"]);
    assert!(
        err.starts_with("error: ") && err.contains("not newer than the current version v2"),
        "{err}"
    );
    let err = env.fails("publish", &[arg(&a), "--version", "v2"]);
    assert!(err.contains("not newer"), "{err}");
    let err = env.fails("rollback", &["--to", "v9"]);
    assert!(err.contains("version v9 of ds not found"), "{err}");
    let err = env.fails("gc", &["--keep", "0"]);
    assert!(err.contains("at least 1"), "{err}");

    let corrupt = env.path("corrupt.snapkv");
    let mut bytes = std::fs::read(&a).unwrap();
    bytes[200] ^= 0xff;
    std::fs::write(&corrupt, bytes).unwrap();
    let err = env.fails("publish", &[arg(&corrupt), "--version", "v3"]);
    assert!(err.contains("corrupt"), "{err}");
    assert_eq!(env.versions().len(), 1, "nothing of v3 was uploaded");
    assert_eq!(env.current().as_deref(), Some("v2"));
}

fn racing_publishers_one_wins(backend: Backend) {
    let env = Env::new(backend, "race");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    // Two processes read CURRENT (v1), then upload for about two seconds each.
    let big = env.snapshot("big.snapkv", 1_200_000, 2);
    let children: Vec<_> = ["v2", "v3"]
        .iter()
        .map(|v| {
            env.command(
                "publish",
                &[arg(&big), "--version", v, "--max-rate", "600k"],
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
        })
        .collect();
    let outs: Vec<Output> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    let won: Vec<usize> = (0..2).filter(|&i| outs[i].status.success()).collect();
    assert_eq!(won.len(), 1, "exactly one publisher wins: {outs:?}");
    let (winner, loser) = (["v2", "v3"][won[0]], &outs[1 - won[0]]);
    assert_eq!(loser.status.code(), Some(2));
    let err = String::from_utf8_lossy(&loser.stderr);
    assert!(err.contains("lost the race"), "{err}");
    assert!(
        err.contains(&format!("{winner} was made current by")),
        "{err}"
    );
    assert_eq!(env.current().as_deref(), Some(winner));
}

fn killed_publish_leaves_current_and_gc_cleans_it(backend: Backend) {
    let env = Env::new(backend, "killed");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    let big = env.snapshot("big.snapkv", 12 << 20, 2);
    let mut child = env
        .command(
            "publish",
            &[
                arg(&a),
                arg(&big),
                "--version",
                "v2",
                "--max-rate",
                "4MiB",
                "--part-size",
                "5MiB",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the upload is under way (the version folder shows, incomplete), then kill.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if env.versions().iter().any(|v| v["version"] == "v2") {
            break;
        }
        assert!(Instant::now() < deadline, "the upload never started");
        assert!(child.try_wait().unwrap().is_none(), "publish ended early");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(1500));
    child.kill().unwrap();
    child.wait().unwrap();

    let json = env.versions();
    let v2 = json.iter().find(|v| v["version"] == "v2").unwrap();
    assert_eq!(v2["complete"], false);
    assert_eq!(env.current().as_deref(), Some("v1"));
    assert_eq!(v2["incomplete"]["claimant_gone"], true, "{v2}");
    assert!(v2["incomplete"]["objects"].as_u64().unwrap() >= 1, "{v2}");
    let table = env.ok("versions", &[]);
    assert!(
        table.contains("v2")
            && table.contains("(incomplete: last written")
            && table.contains(&format!("(pid {}), which no longer runs", child.id())),
        "{table}"
    );
    let err = env.fails("rollback", &["--to", "v2"]);
    assert!(err.contains("incomplete"), "{err}");
    // Publishing v2 again is refused while the claim stands: the message says its process is
    // gone and how to clear it at once.
    let err = env.fails("publish", &[arg(&a), "--version", "v2"]);
    assert!(
        err.contains(&format!(
            "process {} no longer runs on this host",
            child.id()
        )) && err.contains("--grace 0s"),
        "{err}"
    );

    // A local store's writes go through `<name>#<n>` staging files: one a killed writer left.
    let staging = env.path("store/ds/CURRENT#7");
    if backend == Backend::Local {
        std::fs::write(&staging, b"{").unwrap();
    }
    let out = env.ok("gc", &["--keep", "5"]);
    assert!(
        out.contains("kept v2 (incomplete, younger than 1h)") && !out.contains("CURRENT#7"),
        "{out}"
    );
    let out = env.ok("gc", &["--keep", "5", "--grace", "0s"]);
    assert!(out.contains("deleted v2 (incomplete, abandoned)"), "{out}");
    if backend == Backend::Local {
        assert!(
            out.contains("deleted CURRENT#7 (a staging file of a write that never finished)"),
            "{out}"
        );
        assert!(!staging.exists());
    }
    assert_eq!(env.versions().len(), 1);
    if backend == Backend::Local {
        assert!(!env.path("store/ds/versions/v2").exists());
    }
    env.ok("publish", &[arg(&a), "--version", "v2"]);
    assert_eq!(env.current().as_deref(), Some("v2"));
}

#[test]
fn unreachable_store_is_a_clear_error_after_bounded_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args([
            "versions",
            "--store",
            "s3://bucket/prefix",
            "--dataset",
            "ds",
        ])
        .args([
            "--store-option",
            &format!("endpoint=http://127.0.0.1:{port}"),
        ])
        .args([
            "--store-option",
            "access_key_id=x",
            "--store-option",
            "secret_access_key=x",
        ])
        .args([
            "--store-option",
            "region=us-east-1",
            "--store-option",
            "max_retries=2",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: storage at s3://bucket/prefix is unavailable (GET"),
        "{err}"
    );
    assert!(err.contains("after 2 retries"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn store_commands_have_help_with_examples() {
    for command in ["publish", "versions", "rollback", "gc"] {
        let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args([command, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{command}");
        let help = String::from_utf8(out.stdout).unwrap();
        assert!(help.contains("Examples:"), "{command}: {help}");
        assert!(
            help.contains(&format!("snapkv {command} ")),
            "{command}: {help}"
        );
        assert!(
            help.contains("--store <URL>") && help.contains("--dataset <NAME>"),
            "{help}"
        );
    }
}

#[test]
fn bad_store_urls_and_options_are_errors() {
    let env = Env::new(Backend::Local, "bad");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args([
            "publish",
            arg(&a),
            "--store",
            "ftp://x/y",
            "--dataset",
            "ds",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown scheme"));
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["versions", "--store", "s3://b/p", "--dataset", "ds"])
        .args(["--store-option", "no_such_option=1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_such_option"));
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["versions", "--store", &env.store, "--dataset", "a/b"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid dataset name"));

    // One slash too few is not a local folder named `s3:`: refused, and nothing is created.
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .current_dir(cwd.path())
        .args([
            "publish",
            arg(&a),
            "--store",
            "s3:/bucket/x",
            "--dataset",
            "ds",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("looks like a s3: URL"), "{stderr}");
    assert_eq!(std::fs::read_dir(cwd.path()).unwrap().count(), 0);

    // `versions` of a dataset that does not exist says which ones do.
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["versions", "--store", &env.store, "--dataset", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no dataset \"nope\"") && stderr.contains("datasets there: ds"),
        "{stderr}"
    );
}

/// `build` reads job output straight from object storage: a Spark/Hive directory of Parquet
/// files, a glob of them, a compressed text object; with the store options of `publish`.
#[test]
fn build_reads_inputs_from_object_storage() {
    use arrow_array::{Int64Array, RecordBatch, StringArray};
    use object_store::ObjectStoreExt;
    use std::sync::Arc;

    let env = Env::new(Backend::S3, "build-input");
    let options = common::store::s3_options();
    let store = snapkv_store::Store::open(&env.store, &options).unwrap();
    let (objects, root) = store.raw_objects();
    let put = |rel: &str, bytes: Vec<u8>| {
        let path = object_store::path::Path::parse(format!("{root}/{rel}")).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(objects.put(&path, bytes.into())).unwrap();
    };
    let parquet = |ids: &[&str], scores: &[i64]| {
        let batch = RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(StringArray::from(ids.to_vec())) as arrow_array::ArrayRef,
            ),
            ("score", Arc::new(Int64Array::from(scores.to_vec())) as _),
        ])
        .unwrap();
        let mut buf = Vec::new();
        let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, batch.schema(), None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        buf
    };
    put(
        "out/day=2026-11-01/part-0.parquet",
        parquet(&["a", "b"], &[1, 2]),
    );
    put("out/day=2026-11-02/part-0.parquet", parquet(&["c"], &[3]));
    put("out/_SUCCESS", Vec::new());
    put("out/_temporary/0/part-9.parquet", b"not parquet".to_vec());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, b"id;score\nx;7\n").unwrap();
    put("text/rows.csv.gz", gz.finish().unwrap());

    let build = |input: &str, extra: &[&str]| {
        let out = env.path("built.snapkv");
        let _ = std::fs::remove_file(&out);
        let mut c = Command::new(env!("CARGO_BIN_EXE_snapkv"));
        c.args(["build", "-i", input, "--key", "id", "-o", arg(&out), "-q"])
            .args(extra)
            .args(&env.options)
            .stdin(Stdio::null());
        let out_ = c.output().unwrap();
        (out_, out)
    };
    let get = |file: &Path, key: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args(["get", arg(file), key])
            .output()
            .unwrap();
        assert!(out.status.success(), "{key}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let ok = |(out, file): (Output, PathBuf)| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        file
    };

    // The directory: both partitions, `_SUCCESS` and `_temporary/` skipped.
    let file = ok(build(&format!("{}/out/", env.store), &[]));
    assert_eq!(
        get(&file, "c"),
        serde_json::json!({"score": 3, "day": "2026-11-02"})
    );
    assert_eq!(get(&file, "a")["day"], "2026-11-01");
    // A glob below the URL, still with its partition folder.
    let file = ok(build(&format!("{}/out/day=*01/*.parquet", env.store), &[]));
    assert_eq!(
        get(&file, "b"),
        serde_json::json!({"score": 2, "day": "2026-11-01"})
    );
    let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args(["get", arg(&file), "c"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "c is not in the glob's files");
    // One compressed text object, with its delimiter.
    let file = ok(build(
        &format!("{}/text/rows.csv.gz", env.store),
        &["--delimiter", ";"],
    ));
    assert_eq!(get(&file, "x"), serde_json::json!({"score": 7}));
    // Nothing there.
    let (out, file) = build(&format!("{}/nothing/", env.store), &[]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no input matches"), "{stderr}");
    assert!(!file.exists());
}

/// A file built without `--dataset`/`--version` is published under what `publish` is given;
/// labels given at build are still checked.
#[test]
fn unlabelled_builds_publish_under_any_name() {
    let env = Env::new(Backend::Local, "labels");
    let input = env.path("rows.ndjson");
    std::fs::write(&input, "{\"id\":\"a\",\"v\":1}\n").unwrap();
    let build = |out: &str, extra: &[&str]| {
        let out = env.path(out);
        let status = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args([
                "build",
                "-i",
                arg(&input),
                "--key",
                "id",
                "-q",
                "-o",
                arg(&out),
            ])
            .args(extra)
            .status()
            .unwrap();
        assert!(status.success());
        out
    };
    let plain = build("next.snapkv", &[]);
    env.ok("publish", &[arg(&plain), "--version", "v7"]);
    assert_eq!(env.current().as_deref(), Some("v7"));
    let labelled = build("other.snapkv", &["--dataset", "other", "--version", "v8"]);
    let stderr = env.fails("publish", &[arg(&labelled)]);
    assert!(stderr.contains("built for dataset \"other\""), "{stderr}");
    let labelled = build("ds.snapkv", &["--dataset", "ds", "--version", "v8"]);
    let stderr = env.fails("publish", &[arg(&labelled), "--version", "v9"]);
    assert!(stderr.contains("built as version \"v8\""), "{stderr}");
    env.ok("publish", &[arg(&labelled)]);
    assert_eq!(env.current().as_deref(), Some("v8"));
}

/// A missing bucket or missing credentials are one line that says what to set, from every
/// command (against the S3-compatible test server).
#[test]
fn cloud_misconfiguration_is_one_line() {
    let env = Env::new(Backend::S3, "misconfigured");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    let run = |args: &[&str], strip_credentials: bool| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_snapkv"));
        c.args(args).stdin(Stdio::null());
        c.args(["--store-option", "max_retries=0"]);
        for pair in env.options.chunks(2) {
            if !(strip_credentials && pair[1].contains("access_key")) {
                c.args(pair);
            }
        }
        if strip_credentials {
            for var in [
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "AWS_SESSION_TOKEN",
            ] {
                c.env_remove(var);
            }
        }
        let out = c.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let one_line = |stderr: &str, says: &[&str]| {
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!stderr.contains("<?xml"), "{stderr}");
        for s in says {
            assert!(stderr.contains(s), "{s:?} not in {stderr}");
        }
    };
    let nowhere = "s3://no-such-bucket-snapkv/p";
    for args in [
        &[
            "publish",
            arg(&a),
            "--store",
            nowhere,
            "--dataset",
            "ds",
            "--version",
            "v1",
        ][..],
        &["versions", "--store", nowhere, "--dataset", "ds"][..],
    ] {
        let stderr = run(args, false);
        one_line(
            &stderr,
            &[
                "the bucket \"no-such-bucket-snapkv\" does not exist",
                "create it",
            ],
        );
    }
    let stderr = run(
        &["versions", "--store", &env.store, "--dataset", "ds"],
        true,
    );
    one_line(
        &stderr,
        &[
            "no credentials were found",
            "AWS_ACCESS_KEY_ID",
            "access_key_id=",
        ],
    );
}

/// Commands that only read (`versions`, `gc --dry-run`, `serve`) create no folder; the first
/// publish does.
#[test]
fn read_only_commands_create_no_folders() {
    let env = Env::new(Backend::Local, "ro");
    let store = Path::new(&env.store);
    for (command, args) in [
        ("versions", &[][..]),
        ("gc", &["--keep", "1", "--dry-run"][..]),
    ] {
        let stderr = env.fails(command, args);
        assert!(
            stderr.contains("no dataset \"ds\"") && stderr.contains("does not exist"),
            "{command}: {stderr}"
        );
        assert!(!store.exists(), "{command} created {}", store.display());
    }
    // `serve` starts (a pod may start before its volume is mounted), says what is missing,
    // and creates nothing.
    let cache = env.path("cache");
    let mut server = Command::new(env!("CARGO_BIN_EXE_snapkv"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--poll-interval",
            "50ms",
        ])
        .args([
            "--store",
            &env.store,
            "--dataset",
            "ds",
            "--cache-dir",
            arg(&cache),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = server.stderr.take().unwrap();
    let found = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("does not exist"))
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !found.is_finished() {
        assert!(Instant::now() < deadline, "no sync error logged");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.kill().unwrap();
    server.wait().unwrap();
    let line = found
        .join()
        .unwrap()
        .expect("serve exited without a sync error");
    assert!(line.contains("nothing published for dataset"), "{line}");
    assert!(!store.exists(), "serve created {}", store.display());

    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    assert_eq!(env.current().as_deref(), Some("v1"));
}

/// `SNAPKV_STORE` stands in for `--store`, and the flag wins over it.
#[test]
fn store_from_the_environment() {
    let env = Env::new(Backend::Local, "env");
    let a = env.snapshot("a.snapkv", 10_000, 1);
    env.ok("publish", &[arg(&a), "--version", "v1"]);
    let versions = |store_env: &str, flags: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args(["versions", "--dataset", "ds"])
            .args(flags)
            .env("SNAPKV_STORE", store_env)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, out) = versions(&env.store, &[]);
    assert_eq!(code, Some(0));
    assert!(out.contains("v1"), "{out}");
    let elsewhere = env.path("empty-store");
    let (code, out) = versions(arg(&elsewhere), &["--store", &env.store]);
    assert_eq!(code, Some(0));
    assert!(out.contains("v1"), "{out}");
}

/// Every rule refuses a version that breaks it, with a report of every rule and exit code 3,
/// before anything is uploaded; `--force --reason` passes and the history names the rules
/// overridden; promote checks again against what is current then.
fn policy_rules_refuse_with_a_report_and_force_is_recorded(backend: Backend) {
    let env = Env::new(backend, "policy");
    let full = |i: u32| format!("\"score\":{i},\"name\":\"n{i}\"");
    let v1 = env.build("v1.snapkv", 0..2000, full);
    env.ok("publish", &[arg(&v1), "--version", "v1"]);
    let keys_stored = || env.versions().len();

    // No POLICY.json: the recommended rules refuse 2 keys with another schema over 2,000.
    let out = env.policy("show", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("no POLICY.json"));
    let tiny = env.build("tiny.snapkv", 0..2, |i| format!("\"other\":{i}"));
    let err = env.refused("publish", &[arg(&tiny), "--version", "v2"]);
    assert!(
        err.contains("FAILED      max_key_drop: 2,000 -> 2 keys (-99.9%)"),
        "{err}"
    );
    assert!(
        err.contains("FAILED      schema: incompatible with v1: dropped \"score\", \"name\""),
        "{err}"
    );
    assert!(
        err.contains("passed      min_keys: 2 keys (minimum 1)"),
        "{err}"
    );
    assert_eq!(keys_stored(), 1, "nothing uploaded");
    // --force needs a reason.
    let err = env.fails("publish", &[arg(&tiny), "--version", "v2", "--force"]);
    assert!(err.contains("--reason"), "{err}");

    // policy init writes the recommended rules, once.
    let out = env.policy("init", &["--reason", "guard the nightly job"]);
    assert!(out.status.success());
    let out = env.policy("init", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already has a policy"));
    let out = env.policy("set", &["colour=blue"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown rule"));

    // One rule at a time, each failing alone.
    let half_null = env.build("half-null.snapkv", 0..2000, |i| {
        if i % 2 == 0 {
            format!("\"score\":null,\"name\":\"n{i}\"")
        } else {
            full(i)
        }
    });
    let rules: [(&[&str], &Path, &str); 5] = [
        (&["min_keys=5000"], &v1, "min_keys: 2,000 keys, fewer than the minimum 5,000"),
        (&["min_keys=1", "max_key_growth=10%"], &env.build("more.snapkv", 0..3000, full), "max_key_growth: 2,000 -> 3,000 keys (+50%) against v1: more than the 10% growth allowed"),
        (&["max_key_growth=off", "required_keys=user:1,user:9999"], &v1, "required_keys: 1 of 2 required keys missing: \"user:9999\""),
        (&["required_keys=off", "max_null_ratio.score=10%"], &half_null, "max_null_ratio: \"score\" 50% null (maximum 10%) in 2,000 sampled rows"),
        (&["max_null_ratio.score=off", "max_changed_share=0.25"], &half_null, "max_changed_share: 1,000 of the 2,000 keys also in v1 changed value (50%): more than the 25% allowed"),
    ];
    for (set, file, failure) in rules {
        let out = env.policy("set", set);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let err = env.refused("publish", &[arg(file), "--version", "v2"]);
        assert!(
            err.contains(&format!("FAILED      {failure}")),
            "{set:?}: {err}"
        );
        assert_eq!(err.matches("FAILED").count(), 1, "{err}");
        assert_eq!(keys_stored(), 1, "nothing uploaded");
    }
    let shown = String::from_utf8(env.policy("show", &["--json"]).stdout).unwrap();
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["policy"]["rules"]["max_changed_share"], 0.25);

    // Forced: published, and the history says which rule was overridden and why.
    let out = env.ok(
        "publish",
        &[
            arg(&half_null),
            "--version",
            "v2",
            "--force",
            "--reason",
            "scores reset on purpose",
        ],
    );
    assert!(
        out.contains("CURRENT v1 -> v2") && out.contains("FORCED"),
        "{out}"
    );
    let history: serde_json::Value =
        serde_json::from_str(&env.ok("history", &["--json", "--last", "1"])).unwrap();
    let last = &history[0];
    assert_eq!(last["action"], "publish");
    assert_eq!(last["forced"], true);
    assert_eq!(last["overridden"], serde_json::json!(["max_changed_share"]));
    assert_eq!(last["reason"], "scores reset on purpose");
    assert!(env
        .ok("history", &[])
        .contains("(forced past max_changed_share) scores reset"));

    // Promote checks against what is current then: a version staged while it passed is
    // refused once the policy no longer allows it.
    env.policy("set", &["max_changed_share=off"]);
    env.ok("publish", &[arg(&v1), "--version", "v3", "--stage"]);
    let out = env.policy("set", &["max_changed_share=1%", "--reason", "stricter"]);
    assert!(out.status.success());
    let err = env.refused("promote", &["--version", "v3"]);
    assert!(
        err.contains("FAILED      max_changed_share: 1,000 of the 2,000 keys also in v2"),
        "{err}"
    );
    assert_eq!(env.current().as_deref(), Some("v2"));
    let out = env.ok(
        "promote",
        &["--version", "v3", "--force", "--reason", "restore scores"],
    );
    assert!(out.starts_with("CURRENT of ds: v2 -> v3"), "{out}");
    let actions: Vec<String> =
        serde_json::from_str::<Vec<serde_json::Value>>(&env.ok("history", &["--json"]))
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{}{}",
                    e["action"].as_str().unwrap(),
                    if e["forced"] == true { "!" } else { "" }
                )
            })
            .collect();
    assert_eq!(
        actions,
        [
            "publish", "policy", "policy", "policy", "policy", "policy", "policy", "publish!",
            "policy", "stage", "policy", "promote!"
        ]
    );
}

/// A sharded version from independent tasks through the CLI: each task builds its key range as
/// shard I/N and uploads it; the commit refuses while a shard is missing, then completes the
/// version and makes it current; running it again changes nothing.
fn independent_shard_uploads_and_a_commit(backend: Backend) {
    let env = Env::new(backend, "commit");
    let shard = |i: u32| {
        // Three-digit ids: the ranges follow each other as bytes, too. `build` writes the rows
        // (and a snapshot not marked as a shard); this task's build marks its output.
        env.build(
            &format!("part{i}.snapkv"),
            (i + 1) * 100..(i + 2) * 100,
            |j| format!("\"n\":{j}"),
        );
        let out = Command::new(env!("CARGO_BIN_EXE_snapkv"))
            .args([
                "build",
                "--key",
                "id",
                "--shard",
                &format!("{i}/3"),
                "-q",
                "-o",
            ])
            .arg(env.path(&format!("shard{i}.snapkv")))
            .arg("-i")
            .arg(env.path(&format!("part{i}.snapkv.ndjson")))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        env.path(&format!("shard{i}.snapkv"))
    };
    for i in [2, 0] {
        let out = env.ok(
            "publish",
            &[
                arg(&shard(i)),
                "--shard",
                &format!("{i}/3"),
                "--version",
                "v1",
            ],
        );
        assert!(
            out.starts_with(&format!("uploaded shard {i}/3 of ds version v1")),
            "{out}"
        );
    }
    let err = env.fails("commit", &["--version", "v1", "--shards", "3"]);
    assert!(
        err.contains("shard(s) 1 of 3 have no completed upload"),
        "{err}"
    );
    assert_eq!(env.current(), None);
    env.ok(
        "publish",
        &[arg(&shard(1)), "--shard", "1/3", "--version", "v1"],
    );
    let out = env.ok("commit", &["--version", "v1", "--shards", "3"]);
    assert!(
        out.starts_with("committed ds version v1: 3 shard(s)") && out.contains("300 keys"),
        "{out}"
    );
    assert_eq!(env.current().as_deref(), Some("v1"));
    let out = env.ok("commit", &["--version", "v1", "--shards", "3"]);
    assert!(out.contains("is committed and current already"), "{out}");
    // A complete version takes no more uploads.
    let err = env.fails(
        "publish",
        &[arg(&shard(1)), "--shard", "1/3", "--version", "v1"],
    );
    assert!(err.contains("already exists"), "{err}");
}
