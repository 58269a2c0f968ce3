//! `snapkv history`: the audit log of a dataset.

use super::store_args::{no_dataset, runtime, StoreArgs};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv history --store ./snapkv-store --dataset predictions
  snapkv history --store s3://my-bucket/snapkv --dataset predictions --last 20 --json

Every publish (and staged publish), promote, rollback, pin and unpin appends one entry: when,
who (user@host), what, from which version to which, and why.";

/// Show who changed a dataset's CURRENT, when, from what to what, and why.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Only the N newest entries.
    #[arg(long, value_name = "N")]
    last: Option<usize>,
    /// One JSON array on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let rt = runtime()?;
    let entries = rt.block_on(store.history(dataset, args.last))?;
    if entries.is_empty() && rt.block_on(store.versions(dataset))?.is_empty() {
        return Err(rt.block_on(no_dataset(&store, dataset)));
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&entries)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:>5}  {:<24}  {:<9} {:<20} {:<20} {:<24} REASON",
        "SEQ",
        "AT",
        "ACTION",
        "FROM",
        "TO",
        "BY"
    )?;
    for e in &entries {
        let forced = match (e.forced, e.overridden.is_empty()) {
            (false, _) => String::new(),
            (true, true) => "(forced) ".to_owned(),
            (true, false) => format!("(forced past {}) ", e.overridden.join(", ")),
        };
        outln!(
            "{:>5}  {:<24}  {:<9} {:<20} {:<20} {:<24} {}{}",
            e.seq,
            e.at,
            e.action,
            e.from.as_deref().unwrap_or("-"),
            e.to.as_deref().unwrap_or("-"),
            e.by,
            forced,
            e.reason.as_deref().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
