//! `snapkv pin` and `snapkv unpin`: hold CURRENT on a version, and let it go.

use super::store_args::{runtime, StoreArgs};
use std::process::ExitCode;

const PIN_EXAMPLES: &str = "\
Examples:
  snapkv pin --store s3://my-bucket/snapkv --dataset predictions --reason \"INC-1234: bad scores\"
  snapkv pin --store s3://my-bucket/snapkv --dataset predictions --version 20261128T031500Z \\
      --reason \"hold the last good version\"
  snapkv unpin --store s3://my-bucket/snapkv --dataset predictions --reason \"fixed upstream\"

While a dataset is pinned, `snapkv publish` uploads and completes new versions but stages them
(CURRENT stays), and `snapkv promote` refuses. `snapkv versions` shows the pin; `snapkv unpin`
releases it. Both are recorded in the dataset's history.";

/// Hold CURRENT on a version: publishes stage their versions until `snapkv unpin`.
#[derive(clap::Args)]
#[command(after_help = PIN_EXAMPLES)]
pub struct PinArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The version to pin (made current first if it is not) [default: the current one].
    #[arg(long, value_name = "VERSION")]
    version: Option<String>,
    /// Why: shown by `snapkv versions` and recorded in the history.
    #[arg(long, value_name = "TEXT")]
    reason: String,
}

/// Release the pin of a dataset: publishes make their versions current again.
#[derive(clap::Args)]
#[command(after_help = PIN_EXAMPLES)]
pub struct UnpinArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Why: recorded in the dataset's history.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

pub fn pin(args: PinArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let pointer = runtime()?.block_on(store.pin(dataset, args.version.as_deref(), &args.reason))?;
    outln!(
        "{dataset} is pinned to {}: publishes stage their versions until `snapkv unpin`",
        pointer.version
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn unpin(args: UnpinArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    match runtime()?.block_on(store.unpin(dataset, args.reason.as_deref()))? {
        Some(p) => outln!(
            "{dataset} is no longer pinned (CURRENT stays {}); staged versions can be promoted",
            p.version
        )?,
        None => outln!("{dataset} is not pinned")?,
    }
    Ok(ExitCode::SUCCESS)
}
