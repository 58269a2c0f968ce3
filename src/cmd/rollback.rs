//! `snapkv rollback`: point CURRENT at an existing complete version.

use super::store_args::{pinned_note, runtime, StoreArgs};
use snapkv_store::ChangeOptions;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv rollback --store ./snapkv-store --dataset predictions --to 20261126T031500Z
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions   # pick a version
  snapkv rollback --store s3://my-bucket/snapkv --dataset predictions --to 20261126T031500Z

CURRENT moves by compare-and-swap: if someone else moves it meanwhile, nothing is changed and the
command fails. Readers switch at their next poll. Any complete version can be the target, older
or newer than CURRENT.

A rollback pins the dataset to the version (unless --no-pin): the next scheduled publish stages
its version instead of undoing the rollback, until `snapkv unpin`. The rollback is recorded in
the dataset's history.";

/// Make an existing complete version current again.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// The version to make current.
    #[arg(long, value_name = "VERSION")]
    to: String,
    /// Why: recorded in the history and the pin.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Do not pin the dataset (a pin already there stays, moved to this version).
    #[arg(long)]
    no_pin: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let mut options = ChangeOptions::default();
    options.reason = args.reason;
    options.pin = !args.no_pin;
    match runtime()?.block_on(store.rollback_with(dataset, &args.to, &options))? {
        Some(p) => outln!(
            "CURRENT of {dataset}: {} -> {}{}",
            p.previous.as_deref().unwrap_or("(none)"),
            p.version,
            pinned_note(&p)
        )?,
        None => outln!("CURRENT of {dataset} is already {}", args.to)?,
    }
    Ok(ExitCode::SUCCESS)
}
