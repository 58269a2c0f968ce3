//! `snapkv build`: job output to a snapshot file.

use anyhow::Context;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use snapkv_builder::{
    BigNumbers, BuildOptions, BuildSummary, Input, InputFormat, OnDuplicate, Phase, Values,
};
use snapkv_format::{Compression, Dictionary, WriterOptions};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  # A Spark/Hive output directory (part-*.parquet under col=value/ folders), keyed by user_id
  snapkv build --input s3-export/predictions/ --key user_id --output predictions.snapkv

  # Several inputs and globs, a composite key (\"US/42\"), reproducible with --version
  snapkv build -i 'day=*/part-*.parquet' -i extra.parquet --key country,user_id \\
      --version 20261127T031500Z -o predictions.snapkv

  # Straight from object storage (credentials and endpoint as for publish)
  snapkv build -i s3://my-bucket/jobs/predictions/ --key user_id -o predictions.snapkv

  # Compressed CSV, two columns as the JSON value, the last row of a repeated key wins
  snapkv build -i users.csv.gz --key id --value-columns name,email --on-duplicate last \\
      -o users.snapkv

  # A spreadsheet's semicolon-separated export, and CSV from stdin
  snapkv build -i export.csv --delimiter ';' --key id -o export.snapkv
  cat users.csv | snapkv build -i - --format csv --key id -o users.snapkv

  # 8 range shards of one version, in one pass, then published together
  snapkv build -i predictions/ --key user_id --shards 8 -o predictions-shards/
  snapkv publish predictions-shards/*.snapkv --store s3://my-bucket/snapkv --dataset predictions

  # Today's version with yesterday's dictionary: unchanged blocks stay byte-identical, so
  # readers holding yesterday's version download only what changed
  snapkv build -i predictions/ --key user_id --dictionary-from yesterday.snapkv -o today.snapkv
  # ... or with that of the version the store's CURRENT names
  snapkv build -i predictions/ --key user_id --dataset predictions \
      --dictionary-from-store s3://my-bucket/snapkv -o today.snapkv

  # Values stored as they are (a binary column), within 256 MiB of memory
  snapkv build -i embeddings.arrow --key id --raw-value vector --memory-limit 256MiB -o emb.snapkv

Values are a JSON object of the non-key columns (or --value-columns) unless --raw-value is given.
Timestamps with a zone are RFC 3339 instants with their offset (Z for UTC; Spark's INT96 is
UTC); without a zone they are wall-clock times without an offset. NaN and infinite floats are
null (counted in the summary).
The output is written to a temporary file next to it and renamed when complete.
Exit codes: 0 built; 2 an error (the message says what and where); 130 interrupted.";

/// Build a snapshot file from Parquet, Arrow IPC, CSV or NDJSON.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Input file, directory (Spark/Hive/DuckDB/pandas layout) or glob, local or in object
    /// storage (s3://, gs://, az:// URLs, opened as `publish` opens its store); `-` reads
    /// stdin. Repeatable.
    #[arg(long, short = 'i', value_name = "PATH|URL", required = true, num_args = 1..)]
    input: Vec<String>,
    /// Option for s3://, gs://, az:// inputs, KEY=VALUE, repeatable: endpoint, region,
    /// access_key_id, … as for `publish` (AWS_*, GOOGLE_* and AZURE_* variables are read too).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = super::store_args::parse_option)]
    store_options: Vec<(String, String)>,
    /// Key column(s); several are joined with `/` (integers in decimal).
    #[arg(
        long,
        short = 'k',
        value_name = "COL[,COL...]",
        required = true,
        value_delimiter = ','
    )]
    key: Vec<String>,
    /// The snapshot file to write; with --shards, the directory of the shard files.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: PathBuf,
    /// Write N range shards in one pass: OUTPUT is a directory that gets
    /// shard-00000-of-0000N.snapkv ..., each an equal share of the rows in key order; publish
    /// them together (`snapkv publish DIR/*.snapkv`) as one sharded version.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(snapkv_builder::MAX_SHARDS)))]
    shards: u32,
    /// Mark the output as shard I of N of a version built by independent tasks, each from the
    /// rows of its own key range (publish checks that the ranges do not overlap).
    #[arg(long, value_name = "I/N", value_parser = parse_shard, conflicts_with = "shards")]
    shard: Option<(u32, u32)>,
    /// Input format, instead of detecting it from file names and contents. Text inputs may
    /// be compressed: `.gz` and `.zst` names are decompressed.
    #[arg(long, value_name = "parquet|arrow|csv|tsv|ndjson")]
    format: Option<InputFormat>,
    /// Field delimiter of CSV inputs: one character, or `tab` (default `,`; tab for .tsv).
    #[arg(long, value_name = "CHAR", value_parser = parse_delimiter)]
    delimiter: Option<u8>,
    /// Columns of the JSON value, in this order (default: every column but the keys).
    #[arg(
        long,
        value_name = "C,...",
        value_delimiter = ',',
        conflicts_with = "raw_value"
    )]
    value_columns: Option<Vec<String>>,
    /// Integers beyond ±2^53 and decimals in JSON values: exact JSON numbers (number), or
    /// strings that JavaScript clients cannot round (string).
    #[arg(long, value_name = "number|string", default_value = "number", value_parser = parse_bigint)]
    json_bigint: BigNumbers,
    /// Store this string/binary column's bytes as the value, as they are.
    #[arg(long, value_name = "COL")]
    raw_value: Option<String>,
    /// Dataset name to record in the file; publish then refuses another. Without it the file
    /// can be published as any dataset.
    #[arg(long, value_name = "NAME")]
    dataset: Option<String>,
    /// Version label to record in the file; publish then refuses another. Without it publish
    /// labels the file (with its --version, else the UTC time). The build time is recorded
    /// either way (SOURCE_DATE_EPOCH fixes it: same input, flags and time give a byte-identical
    /// file).
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Block compression.
    #[arg(long, value_name = "zstd[:LEVEL]|none", default_value = "zstd:3", value_parser = parse_compression)]
    compression: Compression,
    /// Target uncompressed block size.
    #[arg(long, value_name = "BYTES", default_value = "4KiB", value_parser = parse_block_size)]
    block_size: u32,
    /// Snapshot format version to write: 2 (lookups go straight to their entry through a hash
    /// index), or 1 for readers older than version 2 (upgrade readers first, then write 2).
    #[arg(long, value_name = "1|2", default_value_t = snapkv_format::FORMAT_VERSION,
          value_parser = clap::value_parser!(u32).range(i64::from(snapkv_format::MIN_FORMAT_VERSION)..=i64::from(snapkv_format::FORMAT_VERSION)))]
    format_version: u32,
    /// Train a zstd dictionary on the values (auto) or not (off).
    #[arg(long, value_name = "auto|off", default_value = "auto", value_parser = ["auto", "off"])]
    dict: String,
    /// Compress with the dictionary of this snapshot file (the dataset's previous version)
    /// instead of training one: blocks whose entries did not change are then stored
    /// byte-identical, and readers holding that version fetch only the changed blocks.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dict", "dictionary_from_store"])]
    dictionary_from: Option<PathBuf>,
    /// The same with the dictionary of the version CURRENT names for --dataset in this store
    /// (of a sharded version, the shard --shard names; store options as for the inputs). A
    /// dataset without a current version: a dictionary is trained.
    #[arg(
        long,
        value_name = "STORE",
        conflicts_with = "dict",
        requires = "dataset"
    )]
    dictionary_from_store: Option<String>,
    /// Memory for the build; beyond it sorted runs and key hashes are spilled to --temp-dir.
    /// The filter and lookup sections take about 6 bytes per key on top (--format-version 1:
    /// 8 bytes per key of filter hashes).
    #[arg(long, value_name = "SIZE", default_value = "1GiB", value_parser = snapkv_builder::parse_size)]
    memory_limit: u64,
    /// What to do when two rows have the same key.
    #[arg(long, value_name = "POLICY", default_value = "error", value_parser = parse_on_duplicate)]
    on_duplicate: OnDuplicate,
    /// Threads for making keys and values, sorting and compression (0: one per core). The
    /// output does not depend on it.
    #[arg(long, value_name = "N", default_value_t = 0)]
    threads: usize,
    /// Directory for spilled runs (default: the output's directory).
    #[arg(long, value_name = "DIR")]
    temp_dir: Option<PathBuf>,
    /// A label stored in the metadata; repeatable.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label)]
    label: Vec<(String, String)>,
    /// No progress bars and no summary line.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// The dictionary of the current version of `dataset` in the store at `url` (`None`: it has
/// none), for `--dictionary-from-store`.
fn store_dictionary(
    url: &str,
    store_options: &[(String, String)],
    dataset: &str,
    shard: Option<u32>,
) -> anyhow::Result<Option<Dictionary>> {
    let store = snapkv_store::Store::open(url, store_options)
        .with_context(|| format!("cannot open store {url}"))?;
    let dict = super::store_args::runtime()?
        .block_on(store.current_dictionary(dataset, shard))
        .with_context(|| format!("cannot read the dictionary of {dataset} in {url}"))?;
    Ok(dict.map(|d| match d.is_empty() {
        true => Dictionary::Off,
        false => Dictionary::Use(d),
    }))
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    match s {
        "none" => Ok(Compression::None),
        "zstd" => Ok(Compression::Zstd { level: 3 }),
        _ => match s.strip_prefix("zstd:").map(str::parse::<i32>) {
            Some(Ok(level)) if (-7..=22).contains(&level) && level != 0 => {
                Ok(Compression::Zstd { level })
            }
            _ => Err("expected none, zstd or zstd:LEVEL (LEVEL 1..=22, or -7..=-1)".into()),
        },
    }
}

fn parse_block_size(s: &str) -> Result<u32, String> {
    let n = snapkv_builder::parse_size(s)?;
    let (min, max) = (snapkv_format::MIN_BLOCK_SIZE, snapkv_format::MAX_BLOCK_SIZE);
    u32::try_from(n)
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("block size must be {min} to {max} bytes"))
}

fn parse_bigint(s: &str) -> Result<BigNumbers, String> {
    match s {
        "number" => Ok(BigNumbers::Number),
        "string" => Ok(BigNumbers::String),
        _ => Err("expected number or string".into()),
    }
}

fn parse_delimiter(s: &str) -> Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() && s != "\n" && s != "\r" && s != "\"" => {
            Ok(s.as_bytes()[0])
        }
        _ => Err("expected one ASCII character (not a quote or a newline), or tab".into()),
    }
}

fn parse_on_duplicate(s: &str) -> Result<OnDuplicate, String> {
    match s {
        "error" => Ok(OnDuplicate::Error),
        "first" => Ok(OnDuplicate::First),
        "last" => Ok(OnDuplicate::Last),
        _ => Err("expected error, first or last".into()),
    }
}

/// `I/N`: shard I (from 0) of N.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.trim().parse::<u32>().ok()?, n.trim().parse::<u32>().ok()?)));
    match parsed {
        Some((i, n)) if i < n && n <= snapkv_builder::MAX_SHARDS => Ok((i, n)),
        _ => Err(format!(
            "expected I/N with I from 0 to N-1 and N from 1 to {} (3/8: the fourth of 8 shards)",
            snapkv_builder::MAX_SHARDS
        )),
    }
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "expected KEY=VALUE".into())
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        // The first Ctrl-C or SIGTERM asks the build to stop and clean up; a second one
        // removes its temporary files and exits at once. The handler runs on its own thread,
        // not in a signal handler, so it may remove files.
        let _ = ctrlc::set_handler(move || {
            if flag.swap(true, Ordering::SeqCst) {
                snapkv_builder::remove_temporary_files();
                std::process::exit(130);
            }
        });
    }
    let inputs = args
        .input
        .iter()
        .map(|i| Input::parse(i, &args.store_options))
        .collect();
    let mut options = BuildOptions::new(inputs, args.key);
    options.format = args.format;
    options.delimiter = args.delimiter;
    options.values = match args.raw_value {
        Some(c) => Values::Raw(c),
        None => Values::Json(args.value_columns),
    };
    options.json_bigint = args.json_bigint;
    options.on_duplicate = args.on_duplicate;
    options.memory_limit = args.memory_limit;
    options.temp_dir = args.temp_dir;
    options.dataset = args.dataset;
    options.version = args.version;
    options.built_at = source_date_epoch()?;
    options.user_metadata = args.label.into_iter().collect::<BTreeMap<_, _>>();
    options.interrupt = Some(interrupted);
    options.shards = args.shards;
    options.shard_of = args.shard;
    let mut writer = WriterOptions::default();
    writer.compression = args.compression;
    writer.block_size = args.block_size;
    if args.dict == "off" {
        writer.dictionary = Dictionary::Off;
    }
    let reuse = args.dictionary_from.is_some() || args.dictionary_from_store.is_some();
    if reuse && args.compression == Compression::None {
        anyhow::bail!("a dictionary to compress with needs compression (it is --compression none)");
    }
    if let Some(path) = &args.dictionary_from {
        writer.dictionary = snapkv_builder::dictionary_of(path)?;
    }
    if let (Some(url), Some(dataset)) = (&args.dictionary_from_store, &options.dataset) {
        let shard = args.shard.map(|(i, _)| i);
        if let Some(d) = store_dictionary(url, &args.store_options, dataset, shard)? {
            writer.dictionary = d;
        }
    }
    writer.threads = args.threads;
    writer.format_version = args.format_version;
    options.writer = writer;

    let bars = Bars::new(args.quiet);
    let summary = match snapkv_builder::build(&options, &args.output, &bars) {
        Ok(s) => s,
        Err(snapkv_builder::Error::Interrupted) => {
            bars.clear();
            eprintln!("interrupted: nothing was written");
            return Ok(ExitCode::from(130));
        }
        Err(e) => {
            bars.clear();
            return Err(e).with_context(|| format!("cannot build {}", args.output.display()));
        }
    };
    bars.clear();
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary_json(&summary))?)?;
    } else if !args.quiet {
        eprintln!("{}", summary_line(&summary));
        if summary.shards.len() > 1 {
            let sizes: Vec<u64> = summary.shards.iter().map(|(_, f)| f.key_count).collect();
            let mean = summary.keys as f64 / sizes.len() as f64;
            let largest = sizes.iter().copied().max().unwrap_or(0);
            eprintln!(
                "{} shards: {} to {} keys each (largest/mean {:.3})",
                sizes.len(),
                sizes.iter().copied().min().unwrap_or(0),
                largest,
                largest as f64 / mean.max(1e-9)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `SOURCE_DATE_EPOCH`, the reproducible-builds convention for a fixed build time.
fn source_date_epoch() -> anyhow::Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) => Ok(Some(s.trim().parse().map_err(|_| {
            anyhow::anyhow!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")
        })?)),
        Err(_) => Ok(None),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

fn summary_line(s: &BuildSummary) -> String {
    let secs = s.seconds.max(1e-9);
    let mut dups = if s.duplicates > 0 {
        format!(" ({} duplicate rows dropped)", s.duplicates)
    } else {
        String::new()
    };
    if s.non_finite_floats > 0 {
        dups.push_str(&format!(
            " ({} NaN or infinite floats written as null)",
            s.non_finite_floats
        ));
    }
    let labels: Vec<String> = [("dataset", &s.dataset), ("version", &s.version)]
        .into_iter()
        .filter_map(|(what, v)| v.as_ref().map(|v| format!("{what} {v}")))
        .collect();
    let labels = if labels.is_empty() {
        String::new()
    } else {
        format!(" ({})", labels.join(", "))
    };
    format!(
        "built {}{labels}: {} rows, {} keys{dups}; {} in, {} out (ratio {:.2}); {:.2}s, {:.0} rows/s{}",
        s.output.display(),
        s.rows,
        s.keys,
        mb(s.bytes_in),
        mb(s.bytes_out),
        s.bytes_in as f64 / s.bytes_out.max(1) as f64,
        s.seconds,
        s.rows as f64 / secs,
        if s.runs > 0 {
            format!(", {} runs spilled", s.runs)
        } else {
            String::new()
        }
    )
}

fn summary_json(s: &BuildSummary) -> serde_json::Value {
    let secs = s.seconds.max(1e-9);
    serde_json::json!({
        "output": s.output,
        "dataset": s.dataset,
        "version": s.version,
        "built_at": s.built_at,
        "files": s.files,
        "rows": s.rows,
        "keys": s.keys,
        "duplicates_dropped": s.duplicates,
        "non_finite_floats": s.non_finite_floats,
        "bytes_in": s.bytes_in,
        "bytes_out": s.bytes_out,
        "ratio": s.bytes_in as f64 / s.bytes_out.max(1) as f64,
        "value_bytes_raw": s.block_bytes_raw,
        "blocks": s.file.block_count,
        "dictionary_bytes": s.file.dictionary_bytes,
        "index_bytes": s.file.index_bytes,
        "filter_bytes": s.file.filter_bytes,
        "lookup_bytes": s.file.lookup_bytes,
        "runs_spilled": s.runs,
        "seconds": s.seconds,
        "rows_per_second": s.rows as f64 / secs,
        "shards": s.shards.iter().map(|(path, f)| serde_json::json!({
            "file": path,
            "keys": f.key_count,
            "bytes": f.file_bytes,
        })).collect::<Vec<_>>(),
    })
}

/// Progress bars on stderr (hidden when stderr is not a terminal, or with --quiet).
struct Bars {
    multi: MultiProgress,
    bars: Mutex<Vec<(Phase, ProgressBar)>>,
}

impl Bars {
    fn new(quiet: bool) -> Bars {
        let target = if quiet {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        };
        Bars {
            multi: MultiProgress::with_draw_target(target),
            bars: Mutex::new(Vec::new()),
        }
    }

    fn bar(&self, phase: Phase) -> Option<ProgressBar> {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        bars.iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, b)| b.clone())
    }

    fn clear(&self) {
        let bars = self.bars.lock().unwrap_or_else(|e| e.into_inner());
        for (_, b) in bars.iter() {
            b.finish_and_clear();
        }
        let _ = self.multi.clear();
    }
}

impl snapkv_builder::Progress for Bars {
    fn start(&self, phase: Phase, total: Option<u64>) {
        let (name, unit) = match phase {
            Phase::Read => ("read ", "{bytes}/{total_bytes} {bytes_per_sec}"),
            Phase::Spill => ("sort ", "{pos} runs"),
            Phase::Write => ("write", "{human_pos}/{human_len} rows {per_sec}"),
            _ => ("     ", "{pos}"),
        };
        let bar = match total {
            Some(t) => {
                let style =
                    ProgressStyle::with_template(&format!("{name} [{{bar:30}}] {unit} {{msg}}"))
                        .unwrap_or_else(|_| ProgressStyle::default_bar())
                        .progress_chars("=> ");
                ProgressBar::new(t).with_style(style)
            }
            None => {
                let style = ProgressStyle::with_template(&format!("{name} {{spinner}} {{msg}}"))
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
                ProgressBar::new_spinner().with_style(style)
            }
        };
        let bar = self.multi.add(bar);
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((phase, bar));
    }

    fn update(&self, phase: Phase, done: u64, message: &str) {
        if let Some(b) = self.bar(phase) {
            b.set_position(done);
            b.set_message(message.to_owned());
        }
    }

    fn finish(&self, phase: Phase) {
        if let Some(b) = self.bar(phase) {
            b.finish();
        }
    }
}
