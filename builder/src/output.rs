//! The last stages: the snapshot's metadata, then merging the sorted pairs into the snapshot
//! writer, on a temporary file renamed over the output only when complete.

use crate::error::{Error, Result};
use crate::extract::{self, Plan};
use crate::options::{BuildOptions, Values};
use crate::progress::{Phase, Progress, SpillReport};
use crate::sort::{Locate, Sorter};
use crate::source::Source;
use crate::Interrupt;
use snapkv_format::{Metadata, SnapshotWriter, ValueEncoding, WriteSummary};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The temporary output file; removed on drop unless renamed over the output.
pub(crate) struct TempOutput {
    path: PathBuf,
    file: Option<std::fs::File>,
    kept: bool,
}

impl TempOutput {
    pub(crate) fn create(output: &Path) -> Result<TempOutput> {
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

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The snapshot's metadata: what was built, from what, how.
pub(crate) fn metadata(
    options: &BuildOptions,
    plan: &Plan,
    sources: &[Source],
    rows: u64,
    built_at: &str,
) -> Metadata {
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
    builder.insert("rows".to_owned(), serde_json::json!(rows));
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
    metadata.created_at = Some(built_at.to_owned());
    metadata.value_encoding = value_encoding;
    metadata.content_type = Some(content_type.to_owned());
    metadata.key_columns = options.key_columns.clone();
    metadata.schema = serde_json::to_value(&plan.schema).ok();
    metadata.builder = builder;
    metadata.user = options.user_metadata.clone();

    metadata
}

/// What writing did.
pub(crate) struct Written {
    pub duplicates: u64,
    pub file: WriteSummary,
}

/// Merges the sorted pairs into the snapshot writer on `temp_out`, then renames it over
/// `output` (durably).
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    temp_out: TempOutput,
    output: &Path,
    options: &BuildOptions,
    metadata: Metadata,
    sorter: Sorter,
    rows: u64,
    inputs: &dyn Locate,
    progress: &dyn Progress,
    interrupt: &Interrupt,
) -> Result<Written> {
    let runs_before_merge = sorter.runs();
    let spill_report = SpillReport { progress };
    let out_err = |source| Error::Output {
        path: output.to_owned(),
        source,
    };
    let file = temp_out.file.as_ref().expect("open until renamed");
    let out = crate::file_writer::FileWriter::new(file.try_clone().map_err(out_err)?);
    let mut writer =
        SnapshotWriter::new(out, options.writer.clone(), metadata).map_err(Error::Snapshot)?;
    progress.start(Phase::Write, Some(rows));
    let mut written = 0u64;
    let duplicates = sorter.finish(inputs, &spill_report, &mut |k, v| {
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
    Ok(Written {
        duplicates,
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
