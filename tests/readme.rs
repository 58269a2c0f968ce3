//! The README's command blocks, run in order so that they cannot rot.
//!
//! Every ```` ```sh ```` block of `README.md` runs under `sh -e` in one temporary directory,
//! with the built `snapkv` first on `PATH`, and must exit 0. Two markers in the info string
//! change that:
//! - ```` ```sh server ````: one long-running `snapkv` command. The test starts it in the
//!   background (on a free port instead of 8080) and stops it with SIGTERM at the end; the blocks
//!   after it reach it at `localhost:8080`, rewritten to its real address.
//! - ```` ```sh no-run ````: needs the network, a cloud account, Docker or minutes. Skipped, but
//!   its `snapkv` lines may use only flags that the commands accept.

mod common;
#[allow(dead_code)]
#[path = "cli/util.rs"]
mod util;

use arrow_array::{ArrayRef, BinaryArray, Int64Array, RecordBatch, StringArray};
use common::Server;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;

/// What the test does with a block.
#[derive(Debug, PartialEq)]
enum Kind {
    Run,
    Server,
    NoRun,
}

/// A shell block of a Markdown file.
struct Block {
    /// Where its opening fence is: `FILE:LINE`.
    at: String,
    kind: Kind,
    text: String,
}

/// The shell blocks of `markdown` from `file`, in order. Other languages are not commands;
/// shell blocks under another name than `sh` would silently go untested, so they are refused.
fn shell_blocks(file: &str, markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<(String, Option<Kind>, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut open, fence) {
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                let lang = words.next().unwrap_or_default();
                let marks: Vec<&str> = words.collect();
                let kind = match (lang, marks.as_slice()) {
                    ("sh", []) => Some(Kind::Run),
                    ("sh", ["server"]) => Some(Kind::Server),
                    ("sh", ["no-run"]) => Some(Kind::NoRun),
                    ("sh", _) => panic!("{file}:{}: unknown marks {marks:?}", i + 1),
                    ("bash" | "shell" | "console" | "zsh", _) => {
                        panic!("{file}:{}: write shell blocks as ```sh", i + 1)
                    }
                    _ => None,
                };
                open = Some((format!("{file}:{}", i + 1), kind, String::new()));
            }
            (Some((start, kind, text)), Some(_)) => {
                if let Some(kind) = kind.take() {
                    blocks.push(Block {
                        at: std::mem::take(start),
                        kind,
                        text: std::mem::take(text),
                    });
                }
                open = None;
            }
            (Some((_, _, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "{file}: a code block is never closed");
    blocks
}

/// The commands of a block, continuation lines joined, comments and blank lines dropped.
fn command_lines(text: &str) -> Vec<String> {
    text.replace("\\\n", " ")
        .lines()
        .map(|l| l.split(" #").next().unwrap().trim().to_owned())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Removes the SNAPKV_* settings of the environment the test runs in: the README's commands
/// run with their defaults.
fn clean_env(cmd: &mut Command) {
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("SNAPKV_") {
            cmd.env_remove(k);
        }
    }
}

/// The inputs of the "CLI by example" block: job output as it would come from elsewhere.
fn write_job_output(dir: &Path) {
    let column = |values: Vec<&str>| Arc::new(StringArray::from(values)) as ArrayRef;
    // SE/t0000042 is the key the block looks up.
    for (part, countries) in [(0, ["SE", "US", "SE"]), (1, ["JP", "SE", "US"])] {
        let titles: Vec<String> = (0..3)
            .map(|i| format!("t{:07}", 40 + part * 3 + i))
            .collect();
        let batch = RecordBatch::try_from_iter([
            ("country", column(countries.to_vec())),
            ("title_id", Arc::new(StringArray::from(titles)) as ArrayRef),
            (
                "views",
                Arc::new(Int64Array::from(vec![10, 20, 30])) as ArrayRef,
            ),
        ])
        .unwrap();
        util::write_parquet(&dir.join(format!("out/part-{part}.parquet")), &[batch]);
    }
    let ids = || Arc::new(Int64Array::from(vec![1, 2, 3])) as ArrayRef;
    let blobs = RecordBatch::try_from_iter([
        ("id", ids()),
        (
            "payload",
            Arc::new(BinaryArray::from(vec![&b"\x00\x01"[..], b"raw", b""])) as ArrayRef,
        ),
    ])
    .unwrap();
    util::write_ipc_file(&dir.join("blobs.arrow"), &[blobs]);
    let huge =
        RecordBatch::try_from_iter([("id", ids()), ("v", column(vec!["a", "b", "c"]))]).unwrap();
    util::write_parquet(&dir.join("huge/part-00000.parquet"), &[huge]);
    std::fs::write(
        dir.join("events.ndjson"),
        "{\"id\": 1, \"score\": 0.5, \"rank\": 3, \"note\": \"x\"}\n\
         {\"id\": 2, \"score\": 0.9, \"rank\": 1, \"note\": \"y\"}\n",
    )
    .unwrap();
    std::fs::write(dir.join("x.csv"), "id,name\n1,a\n2,b\n1,c\n").unwrap();
}

/// Checks that every `snapkv` line of a block uses only flags its command accepts.
fn check_flags(block: &Block) -> usize {
    let mut checked = 0;
    for line in command_lines(&block.text) {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"snapkv") {
            continue;
        }
        let mut sub = words.get(1).expect("a subcommand").to_string();
        let mut first = 2;
        // `snapkv policy init|set|show`: the flags are the nested subcommand's.
        if sub == "policy" {
            sub = format!("policy {}", words[2]);
            first = 3;
        }
        let flags = common::help_flags(&sub);
        for w in &words[first..] {
            let w = w.trim_matches(['[', ']']);
            if let Some(f) = w.starts_with("--").then(|| w.split('=').next().unwrap()) {
                assert!(flags.contains(f), "{}: snapkv {sub} has no {f}", block.at);
                checked += 1;
            }
        }
    }
    checked
}

#[test]
fn readme_command_blocks_run() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = shell_blocks("README.md", &readme);
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    write_job_output(&work);

    let bin = Path::new(env!("CARGO_BIN_EXE_snapkv")).parent().unwrap();
    let path = std::env::join_paths(
        std::iter::once(bin.to_path_buf())
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap())),
    )
    .unwrap();
    // curl reads $CURL_HOME/.curlrc: an HTTP error fails the block, and the progress meter
    // stays out of the output.
    let curl_home = dir.path().join("curl");
    std::fs::create_dir(&curl_home).unwrap();
    std::fs::write(
        curl_home.join(".curlrc"),
        "--fail-with-body\n--silent\n--show-error\n--max-time 10\n",
    )
    .unwrap();

    let mut server: Option<Server> = None;
    let (mut ran, mut skipped, mut flags) = (0, 0, 0);
    for block in &blocks {
        match block.kind {
            Kind::NoRun => {
                skipped += 1;
                flags += check_flags(block);
            }
            Kind::Server => {
                assert!(server.is_none(), "{}: a second server", block.at);
                let lines = command_lines(&block.text);
                let words: Vec<&str> = match lines.as_slice() {
                    [line] => line.split_whitespace().collect(),
                    _ => panic!("{}: a server block is one command", block.at),
                };
                assert_eq!(words[0], "snapkv", "{}", block.at);
                assert!(
                    !words.contains(&"--listen") && !block.text.contains(['\'', '"']),
                    "{}: the test picks the address; no quoting",
                    block.at
                );
                let s = Server::spawn_with(&words[1..], |c| {
                    clean_env(c);
                    c.current_dir(&work).env("SNAPKV_LISTEN", "127.0.0.1:0");
                });
                s.wait_ready();
                server = Some(s);
            }
            Kind::Run => {
                let mut text = block.text.clone();
                if let Some(s) = &server {
                    let addr = s.url.strip_prefix("http://").unwrap();
                    text = text
                        .replace("localhost:8080", addr)
                        .replace("127.0.0.1:8080", addr);
                }
                let mut cmd = Command::new("sh");
                clean_env(&mut cmd);
                let out = cmd
                    .args(["-e", "-c", &text])
                    .current_dir(&work)
                    .env("PATH", &path)
                    .env("CURL_HOME", &curl_home)
                    .stdin(Stdio::null())
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}: the block failed ({}):\n{text}\nstdout:\n{}\nstderr:\n{}",
                    block.at,
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
                ran += 1;
            }
        }
    }
    if let Some(mut s) = server {
        let status = s.terminate();
        assert!(status.success(), "the README's server exited with {status}");
    }
    eprintln!(
        "README.md: ran {ran} blocks, skipped {skipped} no-run blocks ({flags} flags checked)"
    );
    assert!(ran >= 4, "only {ran} blocks ran");
    assert!(skipped >= 1 && flags > 0);
}

#[test]
fn deploy_readme_commands_use_real_flags() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/README.md");
    let blocks = shell_blocks("deploy/README.md", &std::fs::read_to_string(path).unwrap());
    let mut flags = 0;
    for block in &blocks {
        // These need Docker, a cluster or a cloud account.
        assert_eq!(block.kind, Kind::NoRun, "{}", block.at);
        flags += check_flags(block);
    }
    assert!(flags > 0);
}
