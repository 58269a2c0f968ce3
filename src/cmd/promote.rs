//! `snapkv promote`: make a staged version current.

use super::store_args::{runtime, StoreArgs};
use snapkv_store::ChangeOptions;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv publish predictions.snapkv --store s3://my-bucket/snapkv --dataset predictions --stage
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions   # staged versions
  snapkv promote --store s3://my-bucket/snapkv --dataset predictions --version 20261130T031500Z

The version must be complete, newer than CURRENT (to go back, use `snapkv rollback`) and pass
the dataset's policy against CURRENT (`snapkv policy`; exit code 3 with a report if not,
`--force --reason` overrides), and the dataset must not be pinned. CURRENT moves by compare-and-swap; the promotion is recorded in the
dataset's history.";

/// Make a staged version current.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The staged version.
    #[arg(long, value_name = "VERSION")]
    version: String,
    /// Why: recorded in the dataset's history. Required with --force.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Promote even if the version breaks rules of the dataset's policy; the history records
    /// the rules overridden.
    #[arg(long, requires = "reason")]
    force: bool,
    /// Where the policy check downloads versions when a rule reads their data
    /// [default: a temporary directory, removed afterwards].
    #[arg(long, value_name = "DIR")]
    download_dir: Option<std::path::PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let mut options = ChangeOptions::default();
    options.reason = args.reason;
    options.check.force = args.force;
    options.check.download_dir = args.download_dir;
    options.check.open = snapkv_reader::mapped();
    let promoted = runtime()?.block_on(store.promote(dataset, &args.version, &options))?;
    match &promoted.pointer {
        Some(p) => outln!(
            "CURRENT of {dataset}: {} -> {}",
            p.previous.as_deref().unwrap_or("(none)"),
            p.version
        )?,
        None => outln!("CURRENT of {dataset} is already {}", args.version)?,
    }
    if let Some(checks) = &promoted.checks {
        super::publish::print_checks(checks)?;
    }
    Ok(ExitCode::SUCCESS)
}
