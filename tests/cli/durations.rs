//! Duration flags: one grammar (humantime's) for every subcommand.

use crate::util::*;
use std::process::Stdio;

/// Runs `snapkv ARGS` with none of the environment variables that could stand in for a flag.
fn run(args: &[&str]) -> Run {
    let out = command(args)
        .env_remove("SNAPKV_STORE")
        .env_remove("SNAPKV_POLL_INTERVAL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn compound_durations_are_accepted() {
    // With every duration accepted, serve gets as far as noticing it has nothing to serve.
    run(&[
        "serve",
        "--poll-interval",
        "1m30s",
        "--header-read-timeout",
        "2s500ms",
        "--drain-timeout",
        "1h 5m",
    ])
    .fails_with(&["nothing to serve"]);
    // gc's flag parses too: the error is about the missing arguments, not the duration.
    let gc = run(&["gc", "--grace", "1h30m"]);
    assert_eq!(gc.code, 2, "{}", gc.stderr);
    assert!(gc.stderr.contains("--keep"), "{}", gc.stderr);
    assert!(!gc.stderr.contains("invalid value"), "{}", gc.stderr);
}

#[test]
fn a_bad_duration_names_the_flag_and_the_accepted_forms() {
    for flag in [
        "--poll-interval",
        "--header-read-timeout",
        "--drain-timeout",
    ] {
        run(&["serve", flag, "10parsecs", "--file", "x=/nonexistent"]).fails_with(&[
            flag,
            "10parsecs",
            "500ms, 10s, 1m30s or 2h",
        ]);
    }
    run(&["gc", "--grace", "soon"]).fails_with(&["--grace", "soon", "1m30s"]);
}
