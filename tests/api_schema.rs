//! The running binary against its own specification: Schemathesis generates requests from
//! `spec/openapi.yaml` (valid and invalid ones) and checks every answer's status, content type,
//! headers and body against the spec, that requests the spec allows are accepted and those it
//! forbids are refused, so spec and server cannot drift apart.
//!
//! `scripts/test` installs Schemathesis; without it this test fails and says so.

mod common;

use common::{dataset, snapkv_stdout, write_snapshot, Server};
use std::process::Command;

/// The Schemathesis command line, from `SNAPKV_SCHEMATHESIS` or `PATH`.
fn schemathesis() -> String {
    std::env::var("SNAPKV_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into())
}

#[test]
fn the_server_answers_as_its_spec_says() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.snapkv");
    write_snapshot(&path, "v1", &dataset("v1", 200), true);
    // Served from a store, so that every endpoint (the history too) has something to answer.
    let store = dir.path().join("store").display().to_string();
    let cache = dir.path().join("cache").display().to_string();
    snapkv_stdout(&[
        "publish",
        "--store",
        &store,
        "--dataset",
        "d",
        "--version",
        "v1",
        "--reason",
        "first",
        &path.display().to_string(),
    ]);
    let server = Server::start(&["--store", &store, "--dataset", "d", "--cache-dir", &cache]);
    let root = env!("CARGO_MANIFEST_DIR");
    let report = dir.path().join("report");
    let out = Command::new(schemathesis())
        .current_dir(dir.path())
        .args([
            "--config-file",
            &format!("{root}/tests/schemathesis/schemathesis.toml"),
            "run",
            &format!("{root}/spec/openapi.yaml"),
            "--url",
            &server.url,
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--workers",
            "1",
            "--no-color",
            "--generation-database",
            "none",
            "--report-dir",
        ])
        .arg(&report)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): scripts/test installs it (pip install schemathesis)",
                schemathesis()
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found disagreements between spec/openapi.yaml and the server:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
