//! `snapkv versions`: the versions of a dataset in a store.

use super::store_args::{no_dataset, runtime, StoreArgs};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv versions --store ./snapkv-store --dataset predictions
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions --json

The current version is marked '*', staged ones (complete, newer than the current one: `snapkv
promote` makes one current) '+'. A pin (`snapkv pin`) is shown under the table. An incomplete
version has no manifest: an upload under way, or one that was interrupted (`snapkv gc` removes
those after a grace period).";

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
    let pin = rt
        .block_on(store.current(dataset))?
        .and_then(|c| c.pointer.pin);
    let current = versions
        .iter()
        .find(|v| v.current)
        .map(|v| v.version.as_str());
    // Staged: complete, not current, and newer than the current version (or no version is
    // current yet).
    let staged = |v: &snapkv_store::VersionInfo| {
        v.manifest.is_some() && !v.current && current.is_none_or(|c| v.version.as_str() > c)
    };
    if args.json {
        let rows: Vec<_> = versions
            .iter()
            .map(|v| {
                let m = v.manifest.as_ref();
                serde_json::json!({
                    "version": v.version,
                    "current": v.current,
                    "staged": staged(v),
                    "complete": m.is_some(),
                    "pin": if v.current { pin.as_ref() } else { None },
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
        let mark = match (v.current, staged(v)) {
            (true, _) => '*',
            (false, true) => '+',
            (false, false) => ' ',
        };
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
    if let Some(pin) = &pin {
        outln!(
            "pinned to {} by {} since {}: {}",
            current.unwrap_or("(none)"),
            pin.by,
            pin.at,
            pin.reason
        )?;
    }
    Ok(ExitCode::SUCCESS)
}
