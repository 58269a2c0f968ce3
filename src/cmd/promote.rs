//! `snapkv promote`: make a staged version current.

use super::store_args::{runtime, StoreArgs};
use snapkv_store::ChangeOptions;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv publish predictions.snapkv --store s3://my-bucket/snapkv --dataset predictions --stage
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions   # staged versions
  snapkv promote --store s3://my-bucket/snapkv --dataset predictions --version 20261130T031500Z

The version must be complete and newer than CURRENT (to go back, use `snapkv rollback`), and the
dataset must not be pinned. CURRENT moves by compare-and-swap; the promotion is recorded in the
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
    /// Why: recorded in the dataset's history.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let mut options = ChangeOptions::default();
    options.reason = args.reason;
    match runtime()?.block_on(store.promote(dataset, &args.version, &options))? {
        Some(p) => outln!(
            "CURRENT of {dataset}: {} -> {}",
            p.previous.as_deref().unwrap_or("(none)"),
            p.version
        )?,
        None => outln!("CURRENT of {dataset} is already {}", args.version)?,
    }
    Ok(ExitCode::SUCCESS)
}
