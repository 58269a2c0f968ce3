//! `snapkv versions`: the versions of a dataset in a store.

use super::store_args::{no_dataset, runtime, StoreArgs};
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  snapkv versions --store ./snapkv-store --dataset predictions
  snapkv versions --store s3://my-bucket/snapkv --dataset predictions --json

The current version is marked '*', staged ones (complete, newer than the current one: `snapkv
promote` makes one current) '+'. A pin (`snapkv pin`) is shown under the table. An incomplete
version has no manifest: an upload under way, or one that was interrupted (`snapkv gc` removes
those after a grace period). Its row shows the objects and bytes uploaded so far, how long ago
the last one was written, and who claimed it (said when that process ran on this host and no
longer runs).";

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
                    "incomplete": v.incomplete.as_ref().map(|i| serde_json::json!({
                        "objects": i.objects,
                        "bytes": i.bytes,
                        "newest_at": i.newest.map(|t| t.to_rfc3339()),
                        "claimed_by": i.claimed_by,
                        "claimant_gone": i.claimant_gone,
                    })),
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
            None => {
                let Some(i) = &v.incomplete else {
                    outln!("{mark} {:<20} (incomplete)", v.version)?;
                    continue;
                };
                let age = i.newest.map_or("no objects".to_owned(), |t| {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64);
                    let secs = (now - t.timestamp()).max(0) as u64;
                    format!(
                        "last written {} ago",
                        humantime::format_duration(Duration::from_secs(secs))
                    )
                });
                let holder = match (&i.claimed_by, i.claimant_gone) {
                    (Some(by), true) => format!("; claimed by {by}, which no longer runs"),
                    (Some(by), false) => format!("; claimed by {by}"),
                    (None, _) => "; no claim".to_owned(),
                };
                outln!(
                    "{mark} {:<20} {:>5} {:>14} {:>12}  (incomplete: {age}{holder})",
                    v.version,
                    i.objects,
                    i.bytes,
                    "-"
                )?
            }
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
