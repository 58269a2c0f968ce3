//! `snapkv gc`: delete old versions and abandoned uploads.

use super::store_args::{no_dataset, runtime, StoreArgs};
use snapkv_store::GcOptions;
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  snapkv gc --store ./snapkv-store --dataset predictions --keep 5 --dry-run
  snapkv gc --store s3://my-bucket/snapkv --dataset predictions --keep 3 --grace 6h

Kept: the N newest complete versions, the current one, and the N-1 complete versions just older
than the current one (the rollback targets). Deleted: other complete versions, and incomplete
ones (interrupted uploads) whose newest object is older than the grace period. A running
publisher refreshes its claim every minute, so a grace of an hour or more never deletes a live
upload.";

/// Delete old complete versions and abandoned incomplete ones; never the current one.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// Complete versions to keep (at least 1).
    #[arg(long, value_name = "N")]
    keep: usize,
    /// Age after which an incomplete version counts as abandoned (e.g. 30m, 6h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = super::parse_duration)]
    grace: Duration,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let mut options = GcOptions::default();
    options.keep = args.keep;
    options.grace = args.grace;
    options.dry_run = args.dry_run;
    let rt = runtime()?;
    let dataset = &args.store.dataset;
    let report = rt.block_on(store.gc(dataset, &options))?;
    let r = &report;
    if [&r.deleted, &r.abandoned, &r.in_progress, &r.kept]
        .iter()
        .all(|v| v.is_empty())
    {
        // Not even an incomplete version: the dataset does not exist.
        return Err(rt.block_on(no_dataset(&store, dataset)));
    }
    let verb = if args.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    for v in &report.deleted {
        outln!("{verb} {v}")?;
    }
    for v in &report.abandoned {
        outln!("{verb} {v} (incomplete, abandoned)")?;
    }
    for v in &report.in_progress {
        outln!(
            "kept {v} (incomplete, younger than {})",
            humantime::format_duration(args.grace)
        )?;
    }
    for v in &report.kept {
        outln!("kept {v}")?;
    }
    for f in &report.staging {
        outln!("{verb} {f} (a staging file of a write that never finished)")?;
    }
    if let Some(why) = &report.uploads_unlisted {
        tracing::warn!(error = %why, "open multipart uploads could not all be listed or aborted (the rest of gc ran)");
    }
    for u in &report.uploads {
        outln!("{verb} {u} (an upload that never completed: a publisher stopped midway)")?;
    }
    for o in &report.unreferenced {
        outln!("{verb} {o} (not listed in the manifest: an upload attempt that was not committed, or its receipt)")?;
    }
    Ok(ExitCode::SUCCESS)
}
