//! Running the binary and making inputs.

use arrow_array::RecordBatch;
use snapkv_format::Snapshot;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

/// What a run of the binary did.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Panics with the run's output unless it exited 0.
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "stderr: {}\nstdout: {}",
            self.stderr, self.stdout
        );
        self
    }

    /// Panics unless it failed with exit code 2 and a message containing every `parts`.
    #[track_caller]
    pub fn fails_with(self, parts: &[&str]) -> Run {
        assert_eq!(self.code, 2, "stderr: {}", self.stderr);
        assert!(
            self.stderr.starts_with("error: "),
            "stderr: {}",
            self.stderr
        );
        for p in parts {
            assert!(
                self.stderr.contains(p),
                "expected {p:?} in the message: {}",
                self.stderr
            );
        }
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_snapkv"));
    cmd.args(args);
    cmd
}

/// Runs `snapkv ARGS`, with `stdin` as standard input when given.
pub fn snapkv(args: &[&str], stdin: Option<&[u8]>) -> Run {
    snapkv_with(args, stdin, &[])
}

/// As [`snapkv`], with `env` set.
pub fn snapkv_with(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let mut cmd = command(args);
    cmd.envs(env.iter().copied());
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run snapkv");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let out = child.wait_with_output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `snapkv build -q` of `input`, keyed by its column `id`, to `out`, with more arguments.
pub fn build_by_id(input: &Path, out: &Path, more: &[&str]) -> Run {
    let mut args = vec![
        "build",
        "-i",
        input.to_str().unwrap(),
        "-k",
        "id",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ];
    args.extend_from_slice(more);
    snapkv(&args, None)
}

/// Opens a snapshot file, checking every checksum.
pub fn open(path: &Path) -> Snapshot {
    let s = Snapshot::open(std::fs::read(path).unwrap()).unwrap();
    s.verify().unwrap();
    s
}

/// The value of `key` as JSON.
#[track_caller]
pub fn json_value(s: &Snapshot, key: &str) -> serde_json::Value {
    let v = s
        .get(key.as_bytes())
        .unwrap()
        .unwrap_or_else(|| panic!("key {key:?} is missing"));
    serde_json::from_slice(&v).unwrap()
}

pub fn write_parquet(path: &Path, batches: &[RecordBatch]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .set_max_row_group_row_count(Some(5000))
        .build();
    let mut w =
        parquet::arrow::ArrowWriter::try_new(file, batches[0].schema(), Some(props)).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
}

pub fn write_ipc_file(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow_ipc::writer::FileWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

pub fn write_ipc_stream(path: &Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap();
    let mut w = arrow_ipc::writer::StreamWriter::try_new(file, &batches[0].schema()).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.finish().unwrap();
}

/// Every entry under `dir`, recursively, as paths relative to it.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(dir).unwrap().display().to_string());
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Asserts that nothing but `expected` (relative paths) is under `dir`: no temporary files.
#[track_caller]
pub fn assert_only(dir: &Path, expected: &[&str]) {
    let mut want: Vec<String> = expected.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(files_under(dir), want);
}
