//! `snapkv versions`: the versions of a dataset in a store.

use super::store_args::{no_dataset, runtime, StoreArgs};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv versions --store ./snapkv-store --dataset predictions
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions --json

The current version is marked '*'. An incomplete version has no manifest: an upload under way,
or one that was interrupted (`snapkv gc` removes those after a grace period).";

/// List the versions of a dataset: files, bytes, keys, when published, which is current.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    /// One JSON array on stdout instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let rt = runtime()?;
    let versions = rt.block_on(store.versions(dataset))?;
    if versions.is_empty() {
        // Not even an incomplete version: the dataset does not exist.
        return Err(rt.block_on(no_dataset(&store, dataset)));
    }
    if args.json {
        let rows: Vec<_> = versions
            .iter()
            .map(|v| {
                let m = v.manifest.as_ref();
                serde_json::json!({
                    "version": v.version,
                    "current": v.current,
                    "complete": m.is_some(),
                    "files": m.map(|m| m.files.iter().map(|f| &f.name).collect::<Vec<_>>()),
                    "bytes": m.map(|m| m.total_bytes()),
                    "keys": m.map(|m| m.total_keys()),
                    "created_at": m.map(|m| &m.created_at),
                    "published_by": m.map(|m| &m.published_by),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "  {:<20} {:>5} {:>14} {:>12}  CREATED",
        "VERSION",
        "FILES",
        "BYTES",
        "KEYS"
    )?;
    for v in &versions {
        let mark = if v.current { '*' } else { ' ' };
        match &v.manifest {
            Some(m) => outln!(
                "{mark} {:<20} {:>5} {:>14} {:>12}  {}",
                v.version,
                m.files.len(),
                m.total_bytes(),
                m.total_keys(),
                m.created_at
            )?,
            None => outln!("{mark} {:<20} (incomplete)", v.version)?,
        }
    }
    Ok(ExitCode::SUCCESS)
}
