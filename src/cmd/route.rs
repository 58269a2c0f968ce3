//! `snapkv route`: which shard of a sharded version holds a key.

use super::store_args::{runtime, StoreArgs};
use anyhow::Context;
use snapkv_format::Selection;
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv route user:42 --store s3://my-bucket/snapkv --dataset predictions
  snapkv route user:42 user:43 --store ./snapkv-store --dataset predictions --version 20261130T031500Z
  snapkv route user:42 --store ./snapkv-store --dataset predictions --replicas 3 --json

Routing follows the version's split keys (spec/STORE.md, \"Sharded versions\"): the shard of a
key is the number of split keys not greater than it. With --replicas R it also names the
readers started with --shard-of ORDINAL/R that hold the shard.";

/// Print the shard of a sharded version that holds each key, and its key range.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    /// Keys, as text (the key encoding of `snapkv build`: `SE/42` for two key columns).
    #[arg(required = true, value_name = "KEY")]
    keys: Vec<String>,
    #[command(flatten)]
    store: StoreArgs,
    /// The version to route in (default: the one CURRENT names).
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Also name the ordinals, of R readers started with --shard-of ORDINAL/R, that hold
    /// each key's shard.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..))]
    replicas: Option<u32>,
    /// One JSON object per key, on one line each.
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let rt = runtime()?;
    let version = match &args.version {
        Some(v) => v.clone(),
        None => match rt.block_on(store.current(dataset))? {
            Some(c) => c.pointer.version,
            None => return Err(rt.block_on(super::store_args::no_dataset(&store, dataset))),
        },
    };
    let manifest = rt
        .block_on(store.manifest(dataset, &version))
        .with_context(|| format!("cannot read version {version} of {dataset}"))?;
    let splits: Vec<Vec<u8>> = match &manifest.sharding {
        Some(s) => s
            .split_key_bytes()
            .with_context(|| format!("version {version} has split keys that are not base64"))?,
        None => Vec::new(),
    };
    let count = splits.len() + 1;
    let text = |k: Option<&Vec<u8>>| k.map(|k| String::from_utf8_lossy(k).into_owned());
    for key in &args.keys {
        let shard = snapkv_format::shards::shard_of(&splits, key.as_bytes());
        let low = shard.checked_sub(1).and_then(|i| splits.get(i));
        let high = splits.get(shard);
        let file = manifest
            .files
            .get(if manifest.sharding.is_some() {
                shard
            } else {
                0
            })
            .map(|f| f.name.clone())
            .unwrap_or_default();
        let ordinals: Option<Vec<u32>> = args.replicas.map(|r| {
            (0..r)
                .filter(|&o| {
                    Selection::OrdinalOf {
                        ordinal: o as usize,
                        replicas: r as usize,
                    }
                    .held(count)
                    .is_some_and(|held| held.contains(&shard))
                })
                .collect()
        });
        if args.json {
            let mut v = serde_json::json!({
                "key": key,
                "version": version,
                "shard": shard,
                "shards": count,
                "low": text(low),
                "high": text(high),
                "file": file,
            });
            if let Some(o) = &ordinals {
                v["ordinals"] = serde_json::json!(o);
            }
            outln!("{v}")?;
        } else {
            let bound = |k: Option<&Vec<u8>>, open: &str| {
                text(k).map_or(open.to_owned(), |t| format!("{t:?}"))
            };
            let held_by = ordinals.map_or(String::new(), |o| {
                let list: Vec<String> = o.iter().map(u32::to_string).collect();
                format!(
                    "  held by --shard-of {}/{}",
                    list.join(","),
                    args.replicas.unwrap_or(1)
                )
            });
            outln!(
                "{key}: shard {shard} of {count} [{}, {}) in {version}/{file}{held_by}",
                bound(low, "-inf"),
                bound(high, "+inf")
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
