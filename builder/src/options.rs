//! What a build is asked to do, and the checks made before anything is read.

use crate::error::{Error, Result};
use crate::json::BigNumbers;
use crate::source::{Input, Reading};
use snapkv_format::{Metadata, SnapshotWriter, WriterOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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
    /// Range shards to write, in one pass: with more than 1, the output is a directory that
    /// gets `shard-IIIII-of-NNNNN.snapkv` files, each an equal share of the sorted rows (exact
    /// quantiles of the key order), marked as shard `I` of `N` for `publish`. Default 1.
    pub shards: u32,
    /// Mark the one output as shard `I` of `N` of a version built by independent tasks (each
    /// builds the rows of its key range; `publish` checks that the ranges do not overlap).
    pub shard_of: Option<(u32, u32)>,
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
            shards: 1,
            shard_of: None,
        }
    }
}

/// Most shards of one version.
pub const MAX_SHARDS: u32 = 10_000;

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

impl BuildOptions {
    /// How the inputs are read.
    pub(crate) fn reading(&self) -> Reading {
        Reading {
            format: self.format,
            delimiter: self.delimiter,
        }
    }
}

/// Checks the options before anything is read; returns the build time (RFC 3339).
pub(crate) fn check(options: &BuildOptions, output: &Path) -> Result<String> {
    if options.shards == 0 || options.shards > MAX_SHARDS {
        return Err(Error::InvalidOption(format!(
            "--shards {} is not from 1 to {MAX_SHARDS}",
            options.shards
        )));
    }
    if let Some((i, n)) = options.shard_of {
        if i >= n || n > MAX_SHARDS {
            return Err(Error::InvalidOption(format!(
                "shard {i}/{n}: give I/N with I from 0 to N-1 and N at most {MAX_SHARDS}"
            )));
        }
        if options.shards > 1 {
            return Err(Error::InvalidOption(
                "--shards splits one build into shards; --shard marks the output of one task \
                 as one shard: give one of them"
                    .into(),
            ));
        }
    }
    if options.shards > 1 {
        if output.exists() && !output.is_dir() {
            return Err(Error::Output {
                path: output.to_owned(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotADirectory,
                    "--shards writes a directory of shard files, and this is a file",
                ),
            });
        }
    } else if output.is_dir() {
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

    Ok(built_at)
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
}
