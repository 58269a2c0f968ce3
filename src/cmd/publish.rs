//! `snapkv publish`: upload snapshot files as a new version and make it current.

use super::store_args::{runtime, StoreArgs};
use indicatif::{ProgressBar, ProgressStyle};
use snapkv_store::PublishOptions;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

const EXAMPLES: &str = "\
Examples:
  snapkv publish predictions.snapkv --store ./snapkv-store --dataset predictions
  snapkv publish part-0.snapkv part-1.snapkv --store s3://my-bucket/snapkv --dataset predictions \\
      --version 20261127T031500Z
  snapkv publish predictions.snapkv --store s3://bucket/prefix --dataset predictions \\
      --store-option endpoint=http://127.0.0.1:9000 --store-option region=us-east-1

Each file is verified, uploaded into <store>/<dataset>/versions/<version>/, checked, listed in the
version's MANIFEST.json, and only then is CURRENT moved to the version by compare-and-swap. A
version not newer than CURRENT is refused (use `snapkv rollback`), and so is an existing one. If
another publisher moves CURRENT first, this one fails and names the winner.

Before uploading, the version is checked against the dataset's policy (`snapkv policy`) and
the current version; a version that breaks a rule is refused with a report and exit code 3
(`--force --reason` overrides, recorded in the history).

--stage stops before CURRENT moves: the version is complete and listed as staged by `snapkv
versions`, and `snapkv promote` makes it current later. A pinned dataset (`snapkv pin`) stages
every publish. Every publish is recorded in the dataset's history (`snapkv history`).";

/// Upload snapshot files as a new version of a dataset, then make it current.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Snapshot files: together, one version.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    #[command(flatten)]
    store: StoreArgs,
    /// Version label [default: the version in the files' metadata, else the UTC time as
    /// YYYYMMDDTHHMMSSZ]. Versions sort as strings: a new one must sort after CURRENT.
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Upload bandwidth bound, bytes per second (suffixes k, M, G, KiB, MiB, GiB).
    #[arg(long, value_name = "RATE", value_parser = snapkv_builder::parse_size)]
    max_rate: Option<u64>,
    /// Multipart part size (at least 5MiB).
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = snapkv_builder::parse_size)]
    part_size: u64,
    /// Parts of a file uploaded at once.
    #[arg(long, value_name = "N", default_value_t = 8)]
    concurrency: usize,
    /// Upload and complete the version but leave CURRENT alone (`snapkv promote` moves it).
    #[arg(long)]
    stage: bool,
    /// Why: recorded in the dataset's history. Required with --force.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Publish even if the version breaks rules of the dataset's policy (`snapkv policy`);
    /// the history records the rules overridden.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Upload FILE as shard I of N of --version only (CURRENT is not touched): one task of a
    /// sharded version built by independent tasks; `snapkv commit` completes the version once
    /// every shard is uploaded. Retrying a task is safe (each upload is an attempt; the commit
    /// takes one per shard).
    #[arg(long, value_name = "I/N", value_parser = super::build::parse_shard, requires = "version", conflicts_with = "stage")]
    shard: Option<(u32, u32)>,
    /// Where the policy check downloads the current version when a rule compares values
    /// (max_changed_share) [default: a temporary directory, removed afterwards]. Keeping it
    /// between runs saves a download when the current version is already there.
    #[arg(long, value_name = "DIR")]
    download_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    if let Some(shard) = args.shard {
        return publish_shard(args, &store, shard);
    }
    let total: u64 = args
        .files
        .iter()
        .filter_map(|f| std::fs::metadata(f).ok())
        .map(|m| m.len())
        .sum();
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        )?
        .progress_chars("=> "),
    );
    bar.set_message("uploading");
    let mut options = PublishOptions::default();
    options.version = args.version;
    options.max_bytes_per_sec = args.max_rate;
    options.part_size = usize::try_from(args.part_size)?;
    options.concurrency = args.concurrency.max(1);
    options.stage = args.stage;
    options.reason = args.reason;
    options.force = args.force;
    options.download_dir = args.download_dir;
    options.open = snapkv_reader::mapped();
    let progress = bar.clone();
    options.progress = Some(Arc::new(move |n| progress.inc(n)));
    let published = runtime()?.block_on(store.publish(&args.store.dataset, &args.files, &options));
    bar.finish_and_clear();
    let published = published?;
    let m = &published.manifest;
    if published.staged {
        let why = match &published.pinned {
            Some(pin) => format!(
                "the dataset is pinned to {} by {} ({}); `snapkv unpin` releases it",
                published.previous.as_deref().unwrap_or("(none)"),
                pin.by,
                pin.reason
            ),
            None => format!(
                "CURRENT stays {}; `snapkv promote --version {}` makes it current",
                published.previous.as_deref().unwrap_or("(none)"),
                m.version
            ),
        };
        outln!(
            "staged {} version {}: {} file(s), {} bytes, {} keys; {why}",
            m.dataset,
            m.version,
            m.files.len(),
            m.total_bytes(),
            m.total_keys(),
        )?;
        print_checks(&published.checks)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "published {} version {}: {} file(s), {} bytes, {} keys; CURRENT {} -> {}",
        m.dataset,
        m.version,
        m.files.len(),
        m.total_bytes(),
        m.total_keys(),
        published.previous.as_deref().unwrap_or("(none)"),
        m.version
    )?;
    print_checks(&published.checks)?;
    Ok(ExitCode::SUCCESS)
}

/// The policy checks of a publish or promote: one line when all passed, every rule when some
/// were forced past.
pub(crate) fn print_checks(report: &snapkv_store::PolicyReport) -> std::io::Result<()> {
    if report.passed() {
        outln!("policy: {}", report.summary())?;
        for c in &report.checks {
            if c.outcome == snapkv_store::Outcome::NotChecked {
                outln!("  not checked {}: {}", c.rule, c.detail)?;
            }
        }
        Ok(())
    } else {
        outln!(
            "policy: FORCED past failed rules: {}\n{report}",
            report.summary()
        )
    }
}

/// `publish FILE --shard I/N --version V`: one shard's upload, as an attempt with its receipt.
fn publish_shard(
    args: Args,
    store: &snapkv_store::Store,
    shard: (u32, u32),
) -> anyhow::Result<ExitCode> {
    let [file] = &args.files[..] else {
        anyhow::bail!(
            "--shard uploads one file, the shard: {} given",
            args.files.len()
        );
    };
    let version = args.version.as_deref().unwrap_or_default();
    let mut options = PublishOptions::default();
    options.max_bytes_per_sec = args.max_rate;
    options.part_size = usize::try_from(args.part_size)?;
    options.concurrency = args.concurrency.max(1);
    options.open = snapkv_reader::mapped();
    let receipt = runtime()?.block_on(store.publish_shard(
        &args.store.dataset,
        file,
        shard,
        version,
        &options,
    ))?;
    outln!(
        "uploaded shard {}/{} of {} version {version}: {} bytes, {} keys, attempt {}; \
         `snapkv commit --version {version} --shards {}` completes the version",
        receipt.shard,
        receipt.shards,
        args.store.dataset,
        receipt.bytes,
        receipt.keys,
        receipt.attempt,
        receipt.shards
    )?;
    Ok(ExitCode::SUCCESS)
}
