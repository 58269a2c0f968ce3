//! The snapkv builder: job output (Parquet files and Spark/Hive-style directories, Arrow IPC,
//! CSV, NDJSON) to a snapshot file.
//!
//! [`build`] reads the inputs as Arrow record batches, makes a key and a value of every row,
//! sorts the pairs within a memory budget (spilling sorted, compressed runs to a temporary
//! directory and merging them), and streams them to a [`snapkv_format::SnapshotWriter`] writing
//! a temporary file next to the output, renamed over the output only when complete.
//!
//! ```no_run
//! use snapkv_builder::{build, BuildOptions, Input, NoProgress};
//!
//! let inputs = vec![Input::Path("out/predictions/".into())];
//! let mut options = BuildOptions::new(inputs, vec!["user_id".into()]);
//! options.dataset = Some("predictions".into());
//! let summary = build(&options, "predictions.snapkv".as_ref(), &NoProgress)?;
//! println!("{} keys, {} bytes", summary.keys, summary.bytes_out);
//! # Ok::<(), snapkv_builder::Error>(())
//! ```
//!
//! Same inputs and options (with a fixed `built_at`) give a byte-identical file, whatever the
//! memory limit, thread count or temporary directory.
#![forbid(unsafe_code)]

mod error;
mod extract;
mod file_writer;
mod json;
mod pipeline;
mod read;
mod sort;
mod source;

pub use error::{ColumnRole, Error, Location, Result};
pub use json::BigNumbers;
pub use source::{BatchInput, Input};

use snapkv_format::{Metadata, SnapshotWriter, ValueEncoding, WriterOptions};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// An input format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum InputFormat {
    /// Apache Parquet (`.parquet`, `.parq`, `.pq`, or files starting with `PAR1`).
    Parquet,
    /// Arrow IPC, file or stream (`.arrow`, `.arrows`, `.ipc`, `.feather`).
    Arrow,
    /// CSV with a header row (`.csv`), comma-separated unless a delimiter is given.
    Csv,
    /// Tab-separated text with a header row (`.tsv`, `.tab`): CSV with a tab delimiter.
    Tsv,
    /// Newline-delimited JSON objects (`.ndjson`, `.jsonl`, `.json`).
    Ndjson,
}

impl InputFormat {
    /// The format a lowercase file extension stands for.
    pub fn from_extension(ext: &str) -> Option<InputFormat> {
        Some(match ext {
            "parquet" | "parq" | "pq" => InputFormat::Parquet,
            "arrow" | "arrows" | "ipc" | "feather" => InputFormat::Arrow,
            "csv" => InputFormat::Csv,
            "tsv" | "tab" => InputFormat::Tsv,
            "ndjson" | "jsonl" | "json" => InputFormat::Ndjson,
            _ => return None,
        })
    }

    /// The format's name as `--format` takes it.
    pub fn name(self) -> &'static str {
        match self {
            InputFormat::Parquet => "parquet",
            InputFormat::Arrow => "arrow",
            InputFormat::Csv => "csv",
            InputFormat::Tsv => "tsv",
            InputFormat::Ndjson => "ndjson",
        }
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "parquet" => Ok(InputFormat::Parquet),
            "arrow" | "ipc" => Ok(InputFormat::Arrow),
            "csv" => Ok(InputFormat::Csv),
            "tsv" => Ok(InputFormat::Tsv),
            "ndjson" | "jsonl" | "json" => Ok(InputFormat::Ndjson),
            _ => Err(format!(
                "unknown format {s:?}: parquet, arrow, csv, tsv or ndjson"
            )),
        }
    }
}

/// What the value of each key is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Values {
    /// A JSON object of these columns (`None`: every column but the keys), written by Arrow's
    /// JSON writer with nulls explicit. Content type `application/json`.
    Json(Option<Vec<String>>),
    /// The bytes of this string or binary column, as they are. Content type
    /// `application/octet-stream`.
    Raw(String),
}

/// What to do when two rows have the same key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnDuplicate {
    /// Fail, naming the key and both rows.
    Error,
    /// Keep the first row in input order (inputs in the order given, directory and glob
    /// contents sorted by path, then rows in file order).
    First,
    /// Keep the last row in input order.
    Last,
}

impl OnDuplicate {
    /// The name as `--on-duplicate` takes it.
    pub fn name(self) -> &'static str {
        match self {
            OnDuplicate::Error => "error",
            OnDuplicate::First => "first",
            OnDuplicate::Last => "last",
        }
    }
}

/// What to build and how.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct BuildOptions {
    /// What to read: local files, directories, globs or stdin; object-storage URLs; record
    /// batches from the caller.
    pub inputs: Vec<Input>,
    /// The input format; detected per file from its extension or first bytes when `None`.
    pub format: Option<InputFormat>,
    /// The field delimiter of CSV inputs; default `,` (tab for `.tsv` files).
    pub delimiter: Option<u8>,
    /// Key columns; several are joined with `/`.
    pub key_columns: Vec<String>,
    /// What the values are.
    pub values: Values,
    /// How integers beyond ±2^53 and decimals are written in JSON values.
    pub json_bigint: BigNumbers,
    /// Duplicate key policy.
    pub on_duplicate: OnDuplicate,
    /// Memory for sorting, in bytes; beyond it sorted runs are spilled to disk. Default 1 GiB.
    pub memory_limit: u64,
    /// Where spilled runs go; default: the output's directory.
    pub temp_dir: Option<PathBuf>,
    /// Snapshot writer options (compression, block size, dictionary, threads). Its thread count
    /// is also the number of threads making pairs, sorting and compressing spilled runs.
    pub writer: WriterOptions,
    /// Dataset name, recorded in the file; `None` records none, and the file may be published
    /// as any dataset.
    pub dataset: Option<String>,
    /// Version label, recorded in the file; `None` records none, and `publish` labels it.
    pub version: Option<String>,
    /// When the build ran, in seconds since the Unix epoch, recorded in the file as its
    /// `created_at`; `None` is now. A fixed time (the CLI takes `SOURCE_DATE_EPOCH`) makes the
    /// output reproducible byte for byte.
    pub built_at: Option<i64>,
    /// Free-form labels stored in the metadata.
    pub user_metadata: BTreeMap<String, String>,
    /// Set to true (from a signal handler) to stop the build; it then removes what it wrote and
    /// returns [`Error::Interrupted`].
    pub interrupt: Option<Arc<AtomicBool>>,
}

impl BuildOptions {
    /// Options with defaults for everything but the inputs and key columns.
    pub fn new(inputs: Vec<Input>, key_columns: Vec<String>) -> BuildOptions {
        BuildOptions {
            inputs,
            format: None,
            delimiter: None,
            key_columns,
            values: Values::Json(None),
            json_bigint: BigNumbers::Number,
            on_duplicate: OnDuplicate::Error,
            memory_limit: 1 << 30,
            temp_dir: None,
            writer: WriterOptions::default(),
            dataset: None,
            version: None,
            built_at: None,
            user_metadata: BTreeMap::new(),
            interrupt: None,
        }
    }
}

/// The stages of a build, for progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// Reading the inputs; counted in input bytes.
    Read,
    /// Sorting a run and writing it to the temporary directory; counted in runs.
    Spill,
    /// Merging and writing the snapshot; counted in rows.
    Write,
}

/// Receives progress. Calls come from the building thread.
pub trait Progress {
    /// A phase starts; `total` is its size in its unit when known.
    fn start(&self, phase: Phase, total: Option<u64>);
    /// `done` units of the phase are complete; `message` says what is happening.
    fn update(&self, phase: Phase, done: u64, message: &str);
    /// The phase is over.
    fn finish(&self, phase: Phase);
}

/// Progress that goes nowhere.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: Phase, _: Option<u64>) {}
    fn update(&self, _: Phase, _: u64, _: &str) {}
    fn finish(&self, _: Phase) {}
}

/// What a build did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BuildSummary {
    /// The output file.
    pub output: PathBuf,
    /// Dataset name written to the metadata, if one was given.
    pub dataset: Option<String>,
    /// Version written to the metadata, if one was given.
    pub version: Option<String>,
    /// When the build ran (RFC 3339, UTC), written to the metadata as `created_at`.
    pub built_at: String,
    /// Input files read.
    pub files: usize,
    /// Rows read.
    pub rows: u64,
    /// Keys written.
    pub keys: u64,
    /// Rows dropped as duplicates (`first`/`last`).
    pub duplicates: u64,
    /// NaN and infinite floats in JSON values, written as `null` (JSON has no such numbers).
    pub non_finite_floats: u64,
    /// Input bytes (file sizes; bytes read for stdin).
    pub bytes_in: u64,
    /// Output file size.
    pub bytes_out: u64,
    /// Bytes of the values and keys before compression.
    pub block_bytes_raw: u64,
    /// Runs spilled to disk (0: sorted in memory).
    pub runs: usize,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The writer's account of the file.
    pub file: snapkv_format::WriteSummary,
}

/// Checks the interrupt flag.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interrupt(Option<Arc<AtomicBool>>);

impl Interrupt {
    pub(crate) fn check(&self) -> Result<()> {
        match &self.0 {
            Some(flag) if flag.load(Ordering::Relaxed) => Err(Error::Interrupted),
            _ => Ok(()),
        }
    }
}

/// Memory held back from the sort buffer for everything else: the readers' batches, the JSON
/// encoder, the writer's compression pipeline and dictionary samples.
fn sort_budget(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve = (limit / 8).min(64 << 20) + (limit / 4).min(8 << 20);
    limit.saturating_sub(reserve).max(1 << 20)
}

/// Memory for record batches between the reader and the sorter (decoded, then as pairs): half
/// of the readers' part of the reserve above.
fn in_flight_budget(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit / 16).min(32 << 20)
}

/// Smallest `memory_limit` accepted.
pub const MIN_MEMORY_LIMIT: u64 = 4 << 20;

/// A dataset name or version, checked against the one grammar the store uses too.
fn check_label(what: &str, s: &str) -> Result<()> {
    snapkv_format::names::check_name(s)
        .map_err(|detail| Error::InvalidOption(format!("invalid {what} {detail}")))
}

/// The RFC 3339 form (UTC, seconds) of a time in seconds since the Unix epoch.
fn rfc3339(unix_seconds: i64) -> Result<String> {
    chrono::DateTime::from_timestamp(unix_seconds, 0)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .ok_or_else(|| Error::InvalidOption(format!("build time {unix_seconds} is out of range")))
}

/// The temporary output file; removed on drop unless renamed over the output.
struct TempOutput {
    path: PathBuf,
    file: Option<std::fs::File>,
    kept: bool,
}

impl TempOutput {
    fn create(output: &Path) -> Result<TempOutput> {
        let out_err = |source| Error::Output {
            path: output.to_owned(),
            source,
        };
        let name = output
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| out_err(std::io::Error::other("the path has no UTF-8 file name")))?;
        let dir = parent_dir(output);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = dir.join(format!(".{name}.{}.{nanos:09}.tmp", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(out_err)?;
        Ok(TempOutput {
            path,
            file: Some(file),
            kept: false,
        })
    }
}

impl Drop for TempOutput {
    fn drop(&mut self) {
        if !self.kept {
            self.file.take();
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Sequence numbers to (input, row): the first sequence number of each input.
struct Inputs {
    starts: Vec<(u64, String)>,
}

impl sort::Locate for Inputs {
    fn locate(&self, seq: u64) -> Location {
        let i = self
            .starts
            .partition_point(|(s, _)| *s <= seq)
            .saturating_sub(1);
        let (start, name) = &self.starts[i];
        Location {
            input: name.clone(),
            row: seq - start + 1,
        }
    }
}

struct SpillReport<'a> {
    progress: &'a dyn Progress,
}

impl sort::SpillProgress for SpillReport<'_> {
    fn spilling(&self, run: usize, pairs: u64) {
        if run == 1 {
            self.progress.start(Phase::Spill, None);
        }
        self.progress.update(
            Phase::Spill,
            run as u64 - 1,
            &format!("sorting and spilling run {run} ({pairs} rows)"),
        );
    }
    fn spilled(&self) {}
}

/// Builds a snapshot at `output` from the inputs. On any error nothing is left behind: neither
/// the output (an existing file there is untouched) nor temporary files.
pub fn build(
    options: &BuildOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<BuildSummary> {
    let started = Instant::now();
    let interrupt = Interrupt(options.interrupt.clone());
    if output.is_dir() {
        return Err(Error::Output {
            path: output.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::IsADirectory, "it is a directory"),
        });
    }
    if options.key_columns.is_empty() {
        return Err(Error::InvalidOption("no key column given".into()));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some(dup) = options.key_columns.iter().find(|k| !seen.insert(*k)) {
        return Err(Error::InvalidOption(format!(
            "key column {dup:?} is given twice"
        )));
    }
    if let Values::Json(Some(cols)) = &options.values {
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = cols.iter().find(|c| !seen.insert(*c)) {
            return Err(Error::InvalidOption(format!(
                "value column {dup:?} is given twice"
            )));
        }
        if cols.is_empty() {
            return Err(Error::InvalidOption("--value-columns is empty".into()));
        }
    }
    if options.memory_limit < MIN_MEMORY_LIMIT {
        return Err(Error::InvalidOption(format!(
            "memory limit {} is below the minimum of {} MiB",
            options.memory_limit,
            MIN_MEMORY_LIMIT >> 20
        )));
    }
    if let Some(v) = &options.version {
        check_label("version", v)?;
    }
    if let Some(d) = &options.dataset {
        check_label("dataset name", d)?;
    }
    let built_at = rfc3339(
        options
            .built_at
            .unwrap_or_else(|| chrono::Utc::now().timestamp()),
    )?;
    // Probe that the writer accepts the options before reading anything.
    SnapshotWriter::new(std::io::sink(), options.writer.clone(), Metadata::default())
        .map_err(Error::Snapshot)?;

    let sources = source::discover(
        &options.inputs,
        source::Reading {
            format: options.format,
            delimiter: options.delimiter,
        },
    )?;
    let temp_out = TempOutput::create(output)?;
    let temp_base = match &options.temp_dir {
        Some(d) => d.clone(),
        None => parent_dir(output),
    };

    let text_columns = &options.key_columns;
    let first = read::open(&sources[0], text_columns)?;
    let plan = Arc::new(extract::Plan::new(
        &options.key_columns,
        &options.values,
        &sources[0],
        &first.schema,
        &sources,
        Arc::new(json::Factory {
            big: options.json_bigint,
            counts: Default::default(),
        }),
    )?);
    let threads = match options.writer.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut sorter = sort::Sorter::new(
        sort_budget(options.memory_limit),
        threads,
        options.on_duplicate,
        temp_base,
        interrupt.clone(),
    );
    let total_bytes: Option<u64> = sources.iter().map(|s| s.size).sum();
    progress.start(Phase::Read, total_bytes);
    let mut inputs = Inputs { starts: Vec::new() };
    let mut seq = 0u64;
    let mut bytes_done = 0u64;
    let spill_report = SpillReport { progress };
    let mut pipeline = pipeline::Pipeline::start(
        pipeline::Reader {
            sources: sources.clone(),
            first,
            plan: Arc::clone(&plan),
            text_columns: text_columns.clone(),
        },
        threads,
        in_flight_budget(options.memory_limit),
    );
    // The input being read: its source, rows (when known), bytes consumed, rows so far.
    let mut current: Option<(&source::Source, Option<u64>, Arc<AtomicU64>)> = None;
    let mut row = 0u64;
    let input_bytes = |current: &Option<(&source::Source, Option<u64>, Arc<AtomicU64>)>| {
        current.as_ref().map_or(0, |(source, _, consumed)| {
            source
                .size
                .unwrap_or_else(|| consumed.load(Ordering::Relaxed))
        })
    };
    while let Some(event) = pipeline.next() {
        interrupt.check()?;
        match event? {
            pipeline::Event::Input {
                index,
                rows,
                consumed,
            } => {
                bytes_done += input_bytes(&current);
                let source = &sources[index];
                inputs.starts.push((seq, source.name.clone()));
                current = Some((source, rows, consumed));
                row = 0;
            }
            pipeline::Event::Batch {
                pairs,
                rows,
                consumed,
                memory,
            } => {
                sorter.push(pairs, seq, &inputs, &spill_report)?;
                pipeline.done_with(memory);
                row += rows as u64;
                seq += rows as u64;
                let Some((source, file_rows, _)) = &current else {
                    continue;
                };
                let in_file = match (file_rows, source.size) {
                    (Some(n), Some(size)) if *n > 0 => size * row / n,
                    _ => consumed,
                };
                progress.update(
                    Phase::Read,
                    bytes_done + in_file,
                    &format!("{seq} rows from {}", source.name),
                );
            }
            pipeline::Event::End => bytes_done += input_bytes(&current),
        }
    }
    drop(pipeline);
    progress.finish(Phase::Read);
    if seq == 0 {
        return Err(Error::NoRows {
            files: sources.len(),
        });
    }
    let runs_before_merge = sorter.runs();

    let (value_encoding, content_type) = match &options.values {
        Values::Json(_) => (ValueEncoding::Json, "application/json"),
        Values::Raw(_) => (ValueEncoding::Raw, "application/octet-stream"),
    };
    let mut builder = BTreeMap::new();
    builder.insert(
        "tool".to_owned(),
        serde_json::json!(concat!("snapkv-builder ", env!("CARGO_PKG_VERSION"))),
    );
    builder.insert(
        "input_format".to_owned(),
        serde_json::json!(sources[0].format.name()),
    );
    builder.insert(
        "on_duplicate".to_owned(),
        serde_json::json!(options.on_duplicate.name()),
    );
    builder.insert("rows".to_owned(), serde_json::json!(seq));
    match &plan.values {
        extract::ValuePlan::Json(cols) => {
            builder.insert("value_columns".to_owned(), serde_json::json!(cols));
            builder.insert(
                "json_bigint".to_owned(),
                serde_json::json!(options.json_bigint.name()),
            );
        }
        extract::ValuePlan::Raw(col) => {
            builder.insert("raw_value_column".to_owned(), serde_json::json!(col));
        }
    }
    if !plan.partitions.is_empty() {
        let names: Vec<&str> = plan.partitions.iter().map(|(n, _)| n.as_str()).collect();
        builder.insert("partition_columns".to_owned(), serde_json::json!(names));
    }
    let mut metadata = Metadata::default();
    metadata.dataset = options.dataset.clone();
    metadata.version = options.version.clone();
    metadata.created_at = Some(built_at.clone());
    metadata.value_encoding = value_encoding;
    metadata.content_type = Some(content_type.to_owned());
    metadata.key_columns = options.key_columns.clone();
    metadata.schema = serde_json::to_value(&plan.schema).ok();
    metadata.builder = builder;
    metadata.user = options.user_metadata.clone();

    let out_err = |source| Error::Output {
        path: output.to_owned(),
        source,
    };
    let file = temp_out.file.as_ref().expect("open until renamed");
    let out = file_writer::FileWriter::new(file.try_clone().map_err(out_err)?);
    let mut writer =
        SnapshotWriter::new(out, options.writer.clone(), metadata).map_err(Error::Snapshot)?;
    progress.start(Phase::Write, Some(seq));
    let mut written = 0u64;
    let duplicates = sorter.finish(&inputs, &spill_report, &mut |k, v| {
        writer.insert(k, v).map_err(write_error(output))?;
        written += 1;
        if written % 16384 == 0 {
            progress.update(Phase::Write, written, "writing");
        }
        Ok(())
    })?;
    if runs_before_merge > 0 {
        progress.finish(Phase::Spill);
    }
    let (out, file_summary) = writer.finish().map_err(write_error(output))?;
    out.finish().map_err(out_err)?;
    file.sync_all().map_err(out_err)?;
    progress.finish(Phase::Write);
    interrupt.check()?;
    let mut temp_out = temp_out;
    std::fs::rename(&temp_out.path, output).map_err(out_err)?;
    temp_out.kept = true;
    // The rename is durable once the directory is synced.
    if let Ok(dir) = std::fs::File::open(parent_dir(output)) {
        let _ = dir.sync_all();
    }
    let bytes_in = sources
        .iter()
        .map(|s| s.size.unwrap_or(0))
        .sum::<u64>()
        .max(bytes_done);
    let _ = std::io::stderr().flush();
    Ok(BuildSummary {
        output: output.to_owned(),
        dataset: options.dataset.clone(),
        version: options.version.clone(),
        built_at,
        files: sources.len(),
        rows: seq,
        keys: file_summary.key_count,
        duplicates,
        non_finite_floats: plan.json.counts.non_finite.load(Ordering::Relaxed),
        bytes_in,
        bytes_out: file_summary.file_bytes,
        block_bytes_raw: file_summary.block_bytes_raw,
        runs: runs_before_merge,
        seconds: started.elapsed().as_secs_f64(),
        file: file_summary,
    })
}

/// Maps a writer error: I/O errors are about the output, the rest about the snapshot.
fn write_error(output: &Path) -> impl Fn(snapkv_format::Error) -> Error + '_ {
    move |e| match e {
        snapkv_format::Error::Io(source) => Error::Output {
            path: output.to_owned(),
            source,
        },
        e => Error::Snapshot(e),
    }
}

/// Parses a size such as `1GiB`, `512MiB`, `256M`, `64k` or `1000000`. `K`, `M`, `G`, `T` (with
/// or without `iB`) are powers of 1024; `KB`, `MB`, `GB`, `TB` are powers of 1000.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 1GiB, 512MiB, 4096)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit (use K, M, G, T, KiB, MB, ...)"
            ))
        }
    };
    let v = num * mult as f64;
    if !(v.is_finite() && v >= 0.0 && v < u64::MAX as f64) || (mult == 1 && num.fract() != 0.0) {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("12 parsecs").is_err());
    }

    #[test]
    fn labels_and_times() {
        assert_eq!(rfc3339(1_795_749_300).unwrap(), "2026-11-27T03:15:00Z");
        assert!(rfc3339(i64::MAX).is_err());
        assert!(check_label("version", "20261127T031500Z").is_ok());
        assert!(check_label("version", "a/b").is_err());
        assert!(check_label("version", "_rc1").is_err());
        assert!(check_label("version", "").is_err());
    }

    #[test]
    fn budgets() {
        assert_eq!(sort_budget(1 << 30), (1 << 30) - (64 << 20) - (8 << 20));
        assert!(sort_budget(MIN_MEMORY_LIMIT) >= 1 << 20);
    }
}
