//! `snapkv commit`: complete a sharded version whose shards were uploaded by independent tasks.

use super::store_args::{runtime, StoreArgs};
use snapkv_store::PublishOptions;
use std::path::PathBuf;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  # Each task of a Kubernetes Indexed Job (or Airflow task) builds and uploads its shard:
  snapkv build -i part-$I/ --key user_id --shard $I/8 --version 20261130T031500Z -o shard.snapkv
  snapkv publish shard.snapkv --shard $I/8 --version 20261130T031500Z \\
      --store s3://my-bucket/snapkv --dataset predictions
  # Then one step commits the version:
  snapkv commit --version 20261130T031500Z --shards 8 \\
      --store s3://my-bucket/snapkv --dataset predictions

Each upload is an attempt with a receipt, so retried and speculative tasks are harmless: the
commit takes one attempt per shard (the smallest attempt id), checks that the shards' key
ranges follow each other, checks the dataset's policy, writes the manifest and moves CURRENT
by compare-and-swap (or stages the version). A missing shard refuses the commit and names it;
running the commit again is safe. gc deletes the attempts the manifest does not list.";

/// Complete a sharded version from its uploaded shards (`snapkv publish --shard I/N`) and make
/// it current.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The version whose shards were uploaded.
    #[arg(long, value_name = "V")]
    version: String,
    /// How many shards the version has.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(snapkv_builder::MAX_SHARDS)))]
    shards: u32,
    /// Complete the version but leave CURRENT alone (`snapkv promote` moves it).
    #[arg(long)]
    stage: bool,
    /// Why: recorded in the dataset's history. Required with --force.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Commit even if the version breaks rules of the dataset's policy; the history records
    /// the rules overridden.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Where the policy check downloads versions when a rule reads their data [default: a
    /// temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    download_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let mut options = PublishOptions::default();
    options.stage = args.stage;
    options.reason = args.reason;
    options.force = args.force;
    options.download_dir = args.download_dir;
    options.open = snapkv_reader::mapped();
    let dataset = &args.store.dataset;
    let published =
        runtime()?.block_on(store.commit(dataset, &args.version, args.shards, &options))?;
    let m = &published.manifest;
    let what = format!(
        "{} version {}: {} shard(s), {} bytes, {} keys",
        m.dataset,
        m.version,
        m.files.len(),
        m.total_bytes(),
        m.total_keys()
    );
    if published.staged {
        outln!(
            "committed {what}; staged: CURRENT stays {}",
            published.previous.as_deref().unwrap_or("(none)")
        )?;
    } else if published.previous.as_deref() == Some(m.version.as_str()) {
        outln!("{what} is committed and current already")?;
    } else {
        outln!(
            "committed {what}; CURRENT {} -> {}",
            published.previous.as_deref().unwrap_or("(none)"),
            m.version
        )?;
    }
    super::publish::print_checks(&published.checks)?;
    Ok(ExitCode::SUCCESS)
}
