//! `snapkv rollback`: point CURRENT at an existing complete version.

use super::store_args::{runtime, StoreArgs};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv rollback --store ./snapkv-store --dataset predictions --to 20261126T031500Z
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions   # pick a version
  snapkv rollback --store s3://my-bucket/snapkv --dataset predictions --to 20261126T031500Z

CURRENT moves by compare-and-swap: if someone else moves it meanwhile, nothing is changed and the
command fails. Readers switch at their next poll. Any complete version can be the target, older
or newer than CURRENT.";

/// Make an existing complete version current again.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The version to make current.
    #[arg(long, value_name = "VERSION")]
    to: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    match runtime()?.block_on(store.rollback(dataset, &args.to))? {
        Some(p) => outln!(
            "CURRENT of {dataset}: {} -> {}",
            p.previous.as_deref().unwrap_or("(none)"),
            p.version
        )?,
        None => outln!("CURRENT of {dataset} is already {}", args.to)?,
    }
    Ok(ExitCode::SUCCESS)
}
