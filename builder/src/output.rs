//! The last stages: the snapshot's metadata, then merging the sorted pairs into the snapshot
//! writer, on a temporary file renamed over the output only when complete.

use crate::error::{Error, Result};
use crate::extract::{self, Plan};
use crate::options::{BuildOptions, Values};
use crate::progress::{Phase, Progress, SpillReport};
use crate::sort::{Locate, Sorter};
use crate::source::Source;
use crate::Interrupt;
use snapkv_format::{Metadata, SnapshotWriter, Spill, ValueEncoding, WriteSummary};
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
        crate::cleanup::register(&path);
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
        crate::cleanup::unregister(&self.path);
    }
}

pub(crate) fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// The file name of shard `index` of `count` in a `--shards` output directory.
pub fn shard_file_name(index: u32, count: u32) -> String {
    format!("shard-{index:05}-of-{count:05}.snapkv")
}

/// Where a build writes: one file, or the shard files of a directory, each first to a
/// temporary file renamed over its final path only when every one is complete.
pub(crate) struct Outputs {
    /// Temporary file and final path, in shard order.
    targets: Vec<(TempOutput, PathBuf)>,
    /// The directory of `--shards`, whose shard files of other builds go once these are in.
    dir: Option<PathBuf>,
    /// Mark the files as shards `(first index, count)`.
    shard: Option<(u32, u32)>,
}

impl Outputs {
    pub(crate) fn create(output: &Path, options: &BuildOptions) -> Result<Outputs> {
        if options.shards <= 1 {
            return Ok(Outputs {
                targets: vec![(TempOutput::create(output)?, output.to_owned())],
                dir: None,
                shard: options.shard_of,
            });
        }
        let n = options.shards;
        std::fs::create_dir_all(output).map_err(|source| Error::Output {
            path: output.to_owned(),
            source,
        })?;
        let targets = (0..n)
            .map(|i| {
                let path = output.join(shard_file_name(i, n));
                Ok((TempOutput::create(&path)?, path))
            })
            .collect::<Result<_>>()?;
        Ok(Outputs {
            targets,
            dir: Some(output.to_owned()),
            shard: Some((0, n)),
        })
    }

    /// The final paths, in shard order.
    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.targets.iter().map(|(_, p)| p.clone()).collect()
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
    /// Every file's summary, in shard order.
    pub files: Vec<WriteSummary>,
}

/// One output being written: its snapshot writer.
type Writer = SnapshotWriter<crate::file_writer::FileWriter>;

/// Starts the snapshot writer of output `i`.
fn start(
    outputs: &Outputs,
    i: usize,
    options: &BuildOptions,
    metadata: &Metadata,
) -> Result<Writer> {
    let (temp, path) = &outputs.targets[i];
    let file = temp.file.as_ref().expect("open until renamed");
    let file = file.try_clone().map_err(|source| Error::Output {
        path: path.clone(),
        source,
    })?;
    let mut metadata = metadata.clone();
    if let Some((first, count)) = outputs.shard {
        metadata.builder.insert(
            "shard".to_owned(),
            serde_json::json!({"index": first + i as u32, "count": count}),
        );
    }
    let mut writer = options.writer.clone();
    if writer.spill.is_none() {
        writer.spill = Some(Spill {
            dir: options.temp_dir.clone().unwrap_or_else(|| parent_dir(path)),
            memory: crate::writer_memory(options.memory_limit),
        });
    }
    SnapshotWriter::new(crate::file_writer::FileWriter::new(file), writer, metadata)
        .map_err(Error::Snapshot)
}

/// Finishes the writer of output `i` and syncs its file.
fn finish(outputs: &Outputs, i: usize, writer: Writer) -> Result<WriteSummary> {
    let (temp, path) = &outputs.targets[i];
    let out_err = |source| Error::Output {
        path: path.clone(),
        source,
    };
    let (out, summary) = writer.finish().map_err(write_error(path))?;
    out.finish().map_err(out_err)?;
    temp.file
        .as_ref()
        .expect("open until renamed")
        .sync_all()
        .map_err(out_err)?;
    read_back(&temp.path, path)?;
    Ok(summary)
}

/// Reads the footer and metadata of the file written as readers do (they are what readers
/// parse before anything else), before it is renamed over the output.
fn read_back(written: &Path, path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let out_err = |source| Error::Output {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(written).map_err(out_err)?;
    let unreadable = |source| Error::Unreadable {
        path: path.to_owned(),
        source,
    };
    let len = f.seek(SeekFrom::End(0)).map_err(out_err)?;
    let mut end = vec![0; snapkv_format::TAIL_LEN.min(len) as usize];
    f.seek(SeekFrom::Start(len - end.len() as u64))
        .and_then(|_| f.read_exact(&mut end))
        .map_err(out_err)?;
    let tail = snapkv_format::Tail::parse(&end, len).map_err(unreadable)?;
    let range = tail.metadata_range();
    let mut metadata = vec![0; usize::try_from(range.end - range.start).unwrap_or(0)];
    f.seek(SeekFrom::Start(range.start))
        .and_then(|_| f.read_exact(&mut metadata))
        .map_err(out_err)?;
    tail.metadata(&metadata).map_err(unreadable)?;
    Ok(())
}

/// Merges the sorted pairs into the snapshot writers, in key order: with shards, shard `i` of
/// `n` takes the pairs from `rows * i / n` on. Then renames every temporary file over its
/// output (durably) and, for a shard directory, removes shard files of other builds.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write(
    outputs: Outputs,
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
    let n = outputs.targets.len() as u64;
    // Where shard `i + 1` starts: the quantiles of the sorted rows.
    let boundary = |i: u64| rows.saturating_mul(i + 1) / n;
    let mut current = 0usize;
    let mut writer = start(&outputs, 0, options, &metadata)?;
    let mut files = Vec::with_capacity(outputs.targets.len());
    progress.start(Phase::Write, Some(rows));
    let mut written = 0u64;
    let duplicates = sorter.finish(inputs, &spill_report, &mut |k, v| {
        while (current as u64) + 1 < n && written >= boundary(current as u64) {
            let next = start(&outputs, current + 1, options, &metadata)?;
            let done = std::mem::replace(&mut writer, next);
            files.push(finish(&outputs, current, done)?);
            current += 1;
        }
        writer
            .insert(k, v)
            .map_err(write_error(&outputs.targets[current].1))?;
        written += 1;
        if written % 16384 == 0 {
            progress.update(Phase::Write, written, "writing");
        }
        Ok(())
    })?;
    if runs_before_merge > 0 {
        progress.finish(Phase::Spill);
    }
    files.push(finish(&outputs, current, writer)?);
    // Shards past the last row (more shards than keys) are empty.
    for i in current + 1..outputs.targets.len() {
        let empty = start(&outputs, i, options, &metadata)?;
        files.push(finish(&outputs, i, empty)?);
    }
    progress.finish(Phase::Write);
    interrupt.check()?;
    let Outputs { targets, dir, .. } = outputs;
    let kept: Vec<PathBuf> = targets.iter().map(|(_, p)| p.clone()).collect();
    for (mut temp, path) in targets {
        std::fs::rename(&temp.path, &path).map_err(|source| Error::Output {
            path: path.clone(),
            source,
        })?;
        temp.kept = true;
    }
    // The renames are durable once the directory is synced.
    if let Ok(d) = std::fs::File::open(parent_dir(&kept[0])) {
        let _ = d.sync_all();
    }
    if let Some(dir) = dir {
        remove_other_shards(&dir, &kept)?;
    }
    Ok(Written { duplicates, files })
}

/// Removes `shard-*-of-*.snapkv` files of other builds from a shard directory, so that
/// `publish DIR/*.snapkv` publishes this build's shards only.
fn remove_other_shards(dir: &Path, kept: &[PathBuf]) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|source| Error::Output {
        path: dir.to_owned(),
        source,
    })?;
    for e in entries.flatten() {
        let path = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        let is_shard =
            name.starts_with("shard-") && name.contains("-of-") && name.ends_with(".snapkv");
        if is_shard && !kept.contains(&path) {
            std::fs::remove_file(&path).map_err(|source| Error::Output { path, source })?;
        }
    }
    Ok(())
}

/// Maps a writer error: I/O errors are about the output, the rest about the snapshot.
fn write_error(output: &Path) -> impl Fn(snapkv_format::Error) -> Error + '_ {
    move |e| match e {
        snapkv_format::Error::Io(source) => Error::Output {
            path: output.to_owned(),
            source,
        },
        snapkv_format::Error::Spill { dir, source } => Error::Temp { dir, source },
        e => Error::Snapshot(e),
    }
}
