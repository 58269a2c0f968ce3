//! `snapkv policy`: the rules a dataset's versions must pass before they become current.

use super::store_args::{runtime, StoreArgs};
use snapkv_store::{Policy, Rules};
use std::process::ExitCode;

const EXAMPLES: &str = "\
Examples:
  snapkv policy init --store s3://my-bucket/snapkv --dataset predictions
  snapkv policy set --store s3://my-bucket/snapkv --dataset predictions \\
      min_keys=150000 max_key_drop=10% max_null_ratio.score=0.01 required_keys=user:1,user:2
  snapkv policy set --store s3://my-bucket/snapkv --dataset predictions max_changed_share=30%
  snapkv policy show --store s3://my-bucket/snapkv --dataset predictions

`snapkv publish` and `snapkv promote` check a version against the current one before CURRENT
moves (publish: before uploading). A version that breaks a rule is refused with a report of
every rule and exit code 3; `--force --reason TEXT` overrides, and the history records it. A
dataset without a policy gets the recommended rules, the ones `policy init` writes.

Rules (`off` turns one off):
  min_keys=N                 at least N keys
  max_key_drop=SHARE         at most this share of the current version's key count lost
                             (0.5 or 50%)
  max_key_growth=RATIO       at most this growth in key count (1 = twice as many keys)
  schema=compatible|off      no dropped or retyped columns, same key columns and value
                             encoding (added columns pass); loosen with
                             schema.allow_dropped=true, schema.allow_retyped=true
  max_null_ratio.FIELD=SHARE at most this share of null or missing FIELD in 10,000 sampled
                             rows of JSON values; FIELD * is every field
  required_keys=K1,K2,...    keys every version must have (also a JSON list;
                             required_keys+=K adds one, required_keys-=K removes one)
  max_changed_share=SHARE    at most this share of the keys in both versions changed value
                             (exact; downloads the current version to compare)";

/// The rules a dataset's versions must pass to become current: init, set, show.
#[derive(clap::Args)]
#[command(after_help = EXAMPLES)]
pub struct Args {
    #[command(subcommand)]
    command: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    /// Write the recommended policy: at least 1 key, at most 50% of the keys dropped, a
    /// compatible schema.
    #[command(after_help = EXAMPLES)]
    Init(InitArgs),
    /// Change rules: RULE=VALUE ... (starting from the recommended rules if there is no
    /// policy yet).
    #[command(after_help = EXAMPLES)]
    Set(SetArgs),
    /// Print the rules that apply.
    #[command(after_help = EXAMPLES)]
    Show(ShowArgs),
}

#[derive(clap::Args)]
struct InitArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Replace an existing policy.
    #[arg(long)]
    force: bool,
    /// Why: recorded in the dataset's history.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

#[derive(clap::Args)]
struct SetArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// RULE=VALUE assignments (see the rules below).
    #[arg(required = true, value_name = "RULE=VALUE")]
    rules: Vec<String>,
    /// Why: recorded in the dataset's history.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
}

#[derive(clap::Args)]
struct ShowArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// Print POLICY.json as stored (or the recommended rules, with `"stored": false`).
    #[arg(long)]
    json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Init(a) => init(a),
        Sub::Set(a) => set(a),
        Sub::Show(a) => show(a),
    }
}

fn init(args: InitArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let rt = runtime()?;
    if !args.force {
        if let Some(p) = rt.block_on(store.policy(dataset))? {
            anyhow::bail!(
                "{dataset} already has a policy (written {} by {}): `snapkv policy show` prints \
                 it; `policy init --force` replaces it",
                p.updated_at,
                p.updated_by
            );
        }
    }
    let policy = rt.block_on(store.update_policy(dataset, args.reason.as_deref(), |r| {
        *r = Rules::recommended();
        Ok(())
    }))?;
    outln!("wrote the recommended policy of {dataset}:")?;
    print_rules(&policy.rules)?;
    Ok(ExitCode::SUCCESS)
}

fn set(args: SetArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    // An assignment that fails leaves the stored policy as it was.
    let policy =
        runtime()?.block_on(store.update_policy(dataset, args.reason.as_deref(), |r| {
            for a in &args.rules {
                r.set(a).map_err(|e| format!("{a:?}: {e}"))?;
            }
            Ok(())
        }))?;
    outln!("policy of {dataset} updated:")?;
    print_rules(&policy.rules)?;
    Ok(ExitCode::SUCCESS)
}

fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.open()?;
    let dataset = &args.store.dataset;
    let stored = runtime()?.block_on(store.policy(dataset))?;
    if args.json {
        let value = match &stored {
            Some(p) => serde_json::json!({ "stored": true, "policy": p }),
            None => serde_json::json!({ "stored": false, "rules": Rules::recommended() }),
        };
        outln!("{}", serde_json::to_string_pretty(&value)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    match &stored {
        Some(Policy {
            updated_at,
            updated_by,
            ..
        }) => outln!("policy of {dataset} (POLICY.json, written {updated_at} by {updated_by}):")?,
        None => outln!(
            "{dataset} has no POLICY.json: the recommended rules apply (`snapkv policy init` \
             writes them)"
        )?,
    }
    let rules = stored.map_or_else(Rules::recommended, |p| p.rules);
    print_rules(&rules)?;
    Ok(ExitCode::SUCCESS)
}

/// One line per rule, `off` for those that are off.
fn print_rules(r: &Rules) -> std::io::Result<()> {
    let off = || "off".to_owned();
    let pct = |x: f64| format!("{}%", (x * 1e5).round() / 1e3);
    let lines = [
        ("min_keys", r.min_keys.map_or_else(off, |n| n.to_string())),
        ("max_key_drop", r.max_key_drop.map_or_else(off, pct)),
        ("max_key_growth", r.max_key_growth.map_or_else(off, pct)),
        (
            "schema",
            r.schema.map_or_else(off, |s| {
                format!(
                    "compatible (dropped columns {}, retyped columns {})",
                    if s.allow_dropped {
                        "allowed"
                    } else {
                        "refused"
                    },
                    if s.allow_retyped {
                        "allowed"
                    } else {
                        "refused"
                    }
                )
            }),
        ),
        (
            "max_null_ratio",
            if r.max_null_ratio.is_empty() {
                off()
            } else {
                r.max_null_ratio
                    .iter()
                    .map(|(c, x)| format!("{c} {}", pct(*x)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        ),
        (
            "required_keys",
            match r.required_keys.len() {
                0 => off(),
                n => {
                    let shown: Vec<&str> = r.required_keys.iter().take(5).map(|k| &k[..]).collect();
                    let more = if n > 5 { ", …" } else { "" };
                    format!("{n} key(s): {}{more}", shown.join(", "))
                }
            },
        ),
        (
            "max_changed_share",
            r.max_changed_share.map_or_else(off, pct),
        ),
    ];
    for (name, value) in lines {
        outln!("  {name:<18} {value}")?;
    }
    Ok(())
}
