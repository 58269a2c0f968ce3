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

mod cleanup;
mod error;
mod extract;
mod file_writer;
mod json;
mod options;
mod output;
mod parquet_sizes;
mod pipeline;
mod progress;
mod read;
mod sort;
mod source;

pub use cleanup::remove_temporary_files;
pub use error::{ColumnRole, Error, Location, LossyCast, Result};
pub use json::BigNumbers;
pub use options::{
    parse_size, BuildOptions, InputFormat, OnDuplicate, Values, MAX_SHARDS, MIN_MEMORY_LIMIT,
};
pub use output::shard_file_name;
pub use progress::{NoProgress, Phase, Progress};
pub use source::{BatchInput, Input};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
    /// The writer's account of the file (with shards: of all of them, added up).
    pub file: snapkv_format::WriteSummary,
    /// The files written, in shard order (one without shards), with the writer's account of
    /// each.
    pub shards: Vec<(PathBuf, snapkv_format::WriteSummary)>,
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
/// encoder, the writer's compression pipeline and dictionary samples, and the writer's key
/// hashes ([`writer_memory`]).
fn sort_budget(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let reserve =
        (limit / 8).min(64 << 20) + (limit / 4).min(8 << 20) + writer_memory(limit as u64);
    limit.saturating_sub(reserve).max(1 << 20)
}

/// Memory for the snapshot writer's key hashes and locations (24 bytes per key in format
/// version 2), beyond which they go to a temporary file in the build's temporary directory.
pub(crate) fn writer_memory(limit: u64) -> usize {
    usize::try_from(limit / 8)
        .unwrap_or(usize::MAX)
        .min(128 << 20)
}

/// Memory for record batches between the reader and the sorter (decoded, then as pairs): half
/// of the readers' part of the reserve above.
fn in_flight_budget(limit: u64) -> usize {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    (limit / 16).min(32 << 20)
}

/// The dictionary of the snapshot file at `path` (its own, or none when it was written without
/// one), for [`snapkv_format::WriterOptions::dictionary`]: a new version written with its
/// previous version's dictionary stores every block whose entries did not change byte for
/// byte as before, so readers fetch only the changed blocks. Reads the file's end and its
/// dictionary section, not the whole file.
pub fn dictionary_of(path: &std::path::Path) -> Result<snapkv_format::Dictionary> {
    use std::io::{Read, Seek, SeekFrom};
    let fail = |detail: String| {
        Error::InvalidOption(format!(
            "cannot take the dictionary of {}: {detail}",
            path.display()
        ))
    };
    let read = |f: &mut std::fs::File, at: u64, len: u64| -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len as usize];
        f.seek(SeekFrom::Start(at))?;
        f.read_exact(&mut buf)?;
        Ok(buf)
    };
    let mut f = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = f.metadata().map_err(|e| fail(e.to_string()))?.len();
    let tail_len = len.min(snapkv_format::TAIL_LEN);
    let end = read(&mut f, len - tail_len, tail_len).map_err(|e| fail(e.to_string()))?;
    let tail = snapkv_format::Tail::parse(&end, len).map_err(|e| fail(e.to_string()))?;
    let r = tail.dictionary_range();
    // A dictionary is at most what the writer trains (64 KiB by default) or was given; the
    // bound only keeps a damaged footer from asking for an absurd read.
    if r.end - r.start > 64 << 20 {
        return Err(fail(format!(
            "its dictionary claims {} bytes",
            r.end - r.start
        )));
    }
    let bytes = read(&mut f, r.start, r.end - r.start).map_err(|e| fail(e.to_string()))?;
    let dict = tail.dictionary(&bytes).map_err(|e| fail(e.to_string()))?;
    Ok(if dict.is_empty() {
        snapkv_format::Dictionary::Off
    } else {
        snapkv_format::Dictionary::Use(dict.to_vec())
    })
}

/// Builds a snapshot at `output` from the inputs. On any error nothing is left behind: neither
/// the output (an existing file there is untouched) nor temporary files.
///
/// The stages, each in its module: check the options ([`options`]), find the inputs
/// ([`source`]), plan the columns from the first input's schema ([`extract`]), read every
/// input into pairs and sort them ([`pipeline`], [`sort`]), then write and rename the snapshot
/// ([`output`]).
pub fn build(
    options: &BuildOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<BuildSummary> {
    let result = build_unchecked(options, output, progress);
    // Whatever stopped a build that was asked to stop (a read cut short, say) is reported as
    // the interruption it is.
    match result {
        Err(_) if Interrupt(options.interrupt.clone()).check().is_err() => Err(Error::Interrupted),
        result => result,
    }
}

fn build_unchecked(
    options: &BuildOptions,
    output: &Path,
    progress: &dyn Progress,
) -> Result<BuildSummary> {
    let started = Instant::now();
    let interrupt = Interrupt(options.interrupt.clone());
    let built_at = options::check(options, output)?;
    let sources = source::discover(&options.inputs, options.reading())?;
    let outputs = output::Outputs::create(output, options)?;

    let settings = read::Settings {
        text_columns: options.key_columns.clone(),
        memory_limit: options.memory_limit,
        interrupt: interrupt.clone(),
    };
    let first = read::open(&sources[0], &settings)?;
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

    let threads = snapkv_format::pool::threads(options.writer.threads);
    let mut sorter = sort::Sorter::new(
        sort_budget(options.memory_limit),
        threads,
        options.on_duplicate,
        options
            .temp_dir
            .clone()
            .unwrap_or_else(|| output::parent_dir(output)),
        interrupt.clone(),
    );
    let read = pipeline::read_inputs(
        &sources,
        first,
        &plan,
        &settings,
        &mut sorter,
        threads,
        in_flight_budget(options.memory_limit),
        progress,
        &interrupt,
    )?;
    // A shard of a version built by independent tasks may be empty (a key range without
    // rows); anything else without rows is a mistake.
    if read.rows == 0 && options.shard_of.is_none() {
        return Err(Error::NoRows {
            files: sources.len(),
        });
    }
    let runs = sorter.runs();

    let metadata = output::metadata(options, &plan, &sources, read.rows, &built_at);
    let paths = outputs.paths();
    let written = output::write(
        outputs,
        options,
        metadata,
        sorter,
        read.rows,
        &read.inputs,
        progress,
        &interrupt,
    )?;
    let bytes_in = sources
        .iter()
        .map(|s| s.size.unwrap_or(0))
        .sum::<u64>()
        .max(read.bytes);
    let _ = std::io::stderr().flush();
    let file = written
        .files
        .iter()
        .fold(snapkv_format::WriteSummary::default(), |t, f| {
            let mut t = t;
            t.key_count += f.key_count;
            t.block_count += f.block_count;
            t.raw_blocks += f.raw_blocks;
            t.file_bytes += f.file_bytes;
            t.block_bytes_raw += f.block_bytes_raw;
            t.block_bytes_stored += f.block_bytes_stored;
            t.index_bytes += f.index_bytes;
            t.filter_bytes += f.filter_bytes;
            t.lookup_bytes += f.lookup_bytes;
            t.dictionary_bytes += f.dictionary_bytes;
            t.block_table_bytes += f.block_table_bytes;
            t.metadata_bytes += f.metadata_bytes;
            t
        });
    Ok(BuildSummary {
        output: output.to_owned(),
        dataset: options.dataset.clone(),
        version: options.version.clone(),
        built_at,
        files: sources.len(),
        rows: read.rows,
        keys: file.key_count,
        duplicates: written.duplicates,
        non_finite_floats: plan.json.counts.non_finite.load(Ordering::Relaxed),
        bytes_in,
        bytes_out: file.file_bytes,
        block_bytes_raw: file.block_bytes_raw,
        runs,
        seconds: started.elapsed().as_secs_f64(),
        file,
        shards: paths.into_iter().zip(written.files).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        assert_eq!(
            sort_budget(1 << 30),
            (1 << 30) - (64 << 20) - (8 << 20) - (128 << 20)
        );
        assert!(sort_budget(MIN_MEMORY_LIMIT) >= 1 << 20);
    }
}
