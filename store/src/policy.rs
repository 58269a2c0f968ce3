//! Dataset policies: the rules a version must pass before it becomes current, stored as
//! `<dataset>/POLICY.json` and checked by [`Store::publish`] and [`Store::promote`] against the
//! current version. A dataset without a policy gets [`Rules::recommended`].

use crate::current::{Current, Swap, Tag};
use crate::error::{Error, Result};
use crate::files::{blocking, OpenSnapshot};
use crate::layout::{now_rfc3339, DatasetPaths};
use crate::manifest::{nonce, user_at_host, Manifest};
use crate::objects::{Cap, Got};
use crate::{Cache, FetchOptions, Store};
use object_store::{GetOptions, PutPayload};
use serde::{Deserialize, Serialize};
use snapkv_format::{Metadata, Snapshot, Tail, ValueEncoding};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Schema of `POLICY.json`.
const POLICY_VERSION: u32 = 1;
/// The most keys a policy may require.
pub const MAX_REQUIRED_KEYS: usize = 10_000;
/// Longest required key, in bytes.
const MAX_REQUIRED_KEY_BYTES: usize = 4096;
/// Rows of the new version read to measure null ratios: whole blocks spread evenly over each
/// file, until at least this many rows.
pub const NULL_SAMPLE_ROWS: u64 = 10_000;
/// The largest metadata section read from the end of a stored snapshot.
const MAX_METADATA_BYTES: u64 = 16 << 20;
/// Attempts of a read-modify-write of `POLICY.json` that lost a race with another writer.
const MAX_POLICY_TRIES: u32 = 10;
/// Column name of a null-ratio rule that applies to every column.
pub const EVERY_COLUMN: &str = "*";

/// A dataset's `POLICY.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// Schema of this document (1).
    pub policy_version: u32,
    /// The rules.
    pub rules: Rules,
    /// When it was last written (RFC 3339, UTC).
    pub updated_at: String,
    /// Who wrote it: `user@host`.
    pub updated_by: String,
    /// Random, unique per write: identifies a writer's own write after a lost answer.
    pub nonce: String,
}

/// The rules of a policy. A rule that is `None` (or empty) is off.
///
/// Ratios are fractions: `0.5` is 50%. Unknown rules in a stored policy are refused rather
/// than ignored, so that a policy written by a newer snapkv is never silently weakened.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct Rules {
    /// The fewest keys a version may have.
    pub min_keys: Option<u64>,
    /// The largest drop in key count against the current version, as a share of its keys
    /// (0.5: the new version has at least half as many keys).
    pub max_key_drop: Option<f64>,
    /// The largest growth in key count against the current version, relative to its keys
    /// (1.0: at most twice as many keys).
    pub max_key_growth: Option<f64>,
    /// Schema compatibility with the current version: no dropped and no retyped columns
    /// (unless allowed), same key columns, same value encoding. Added columns always pass.
    pub schema: Option<SchemaRule>,
    /// The largest share of null (or missing) values per top-level JSON field, in a sample of
    /// [`NULL_SAMPLE_ROWS`] rows; the field `*` applies to every field.
    pub max_null_ratio: BTreeMap<String, f64>,
    /// Keys every version must have (UTF-8).
    pub required_keys: Vec<String>,
    /// The largest share of keys present in both versions whose value changed (exact, by
    /// [`snapkv_format::diff()`]). Needs the current version's data: publish and promote
    /// download it.
    pub max_changed_share: Option<f64>,
}

/// What the schema rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct SchemaRule {
    /// Columns of the current version may be missing from the new one.
    pub allow_dropped: bool,
    /// Columns may change type.
    pub allow_retyped: bool,
}

/// The names of the rules, in report order.
pub const RULES: [&str; 7] = [
    "min_keys",
    "max_key_drop",
    "max_key_growth",
    "schema",
    "max_null_ratio",
    "required_keys",
    "max_changed_share",
];

impl Rules {
    /// The rules of a dataset without `POLICY.json`, and what `snapkv policy init` writes:
    /// at least one key, at most half of the keys dropped, a compatible schema.
    pub fn recommended() -> Rules {
        Rules {
            min_keys: Some(1),
            max_key_drop: Some(0.5),
            schema: Some(SchemaRule::default()),
            ..Rules::default()
        }
    }

    /// Checks every value: ratios within 0..=1 (growth: at least 0), at most
    /// [`MAX_REQUIRED_KEYS`] required keys, each non-empty and at most 4 KiB.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let share = |name: &str, v: Option<f64>| match v {
            Some(x) if !(0.0..=1.0).contains(&x) => Err(format!(
                "{name} is {x}: give a share from 0 to 1 (or a percentage)"
            )),
            _ => Ok(()),
        };
        share("max_key_drop", self.max_key_drop)?;
        share("max_changed_share", self.max_changed_share)?;
        if let Some(g) = self.max_key_growth {
            if !(g.is_finite() && g >= 0.0) {
                return Err(format!("max_key_growth is {g}: give a ratio of at least 0"));
            }
        }
        for (column, ratio) in &self.max_null_ratio {
            if column.is_empty() {
                return Err("max_null_ratio has an empty column name".into());
            }
            share(&format!("max_null_ratio.{column}"), Some(*ratio))?;
        }
        if self.required_keys.len() > MAX_REQUIRED_KEYS {
            return Err(format!(
                "required_keys has {} keys; at most {MAX_REQUIRED_KEYS} are allowed",
                self.required_keys.len()
            ));
        }
        if let Some(k) = self
            .required_keys
            .iter()
            .find(|k| k.is_empty() || k.len() > MAX_REQUIRED_KEY_BYTES)
        {
            return Err(format!(
                "required key {:?} must have 1 to {MAX_REQUIRED_KEY_BYTES} bytes",
                cut(k)
            ));
        }
        Ok(())
    }

    /// Applies one `RULE=VALUE` assignment, as `snapkv policy set` takes them:
    ///
    /// - `min_keys=1000`; `max_key_drop=0.2` or `=20%`; `max_key_growth=1` (×2);
    ///   `max_changed_share=0.3`
    /// - `schema=compatible`; `schema.allow_dropped=true`; `schema.allow_retyped=true`
    /// - `max_null_ratio.score=0.1`; `max_null_ratio.*=0.5` (every field)
    /// - `required_keys=user:1,user:2` (or a JSON list); `required_keys+=user:3`;
    ///   `required_keys-=user:1`
    ///
    /// `off` (or `none`) turns a rule off; `RULE.NAME=off` removes one entry.
    pub fn set(&mut self, assignment: &str) -> std::result::Result<(), String> {
        let (name, op, value) = split_assignment(assignment)?;
        let off = matches!(value.to_ascii_lowercase().as_str(), "off" | "none" | "null");
        match (name, op) {
            ("required_keys", "+=") => self.required_keys.push(value.to_owned()),
            ("required_keys", "-=") => {
                let before = self.required_keys.len();
                self.required_keys.retain(|k| k != value);
                if self.required_keys.len() == before {
                    return Err(format!("{value:?} is not a required key"));
                }
            }
            (_, "+=" | "-=") => return Err(format!("{op} applies to required_keys only")),
            ("required_keys", _) if off => self.required_keys.clear(),
            ("required_keys", _) => self.required_keys = parse_keys(value)?,
            ("min_keys", _) => self.min_keys = parse_or_off(off, value, parse_count)?,
            ("max_key_drop", _) => self.max_key_drop = parse_or_off(off, value, parse_ratio)?,
            ("max_key_growth", _) => self.max_key_growth = parse_or_off(off, value, parse_ratio)?,
            ("max_changed_share", _) => {
                self.max_changed_share = parse_or_off(off, value, parse_ratio)?
            }
            ("schema", _) if off || value == "any" => self.schema = None,
            ("schema", _) if value == "compatible" => {
                self.schema.get_or_insert_with(SchemaRule::default);
            }
            ("schema", _) => {
                return Err(format!(
                    "schema={value:?}: give compatible or off (and schema.allow_dropped=true, \
                     schema.allow_retyped=true to loosen it)"
                ))
            }
            ("schema.allow_dropped", _) => {
                self.schema
                    .get_or_insert_with(SchemaRule::default)
                    .allow_dropped = parse_bool(value)?
            }
            ("schema.allow_retyped", _) => {
                self.schema
                    .get_or_insert_with(SchemaRule::default)
                    .allow_retyped = parse_bool(value)?
            }
            (n, _) if n.starts_with("max_null_ratio.") => {
                let column = &n["max_null_ratio.".len()..];
                if column.is_empty() {
                    return Err("max_null_ratio.COLUMN: name a column, or * for every one".into());
                }
                if off {
                    if self.max_null_ratio.remove(column).is_none() {
                        return Err(format!("max_null_ratio has no rule for {column:?}"));
                    }
                } else {
                    self.max_null_ratio
                        .insert(column.to_owned(), parse_ratio(value)?);
                }
            }
            ("max_null_ratio", _) if off => self.max_null_ratio.clear(),
            ("max_null_ratio", _) => {
                return Err("give max_null_ratio.COLUMN=RATIO (or max_null_ratio.*=RATIO)".into())
            }
            (n, _) => {
                return Err(format!(
                    "unknown rule {n:?}: the rules are {}",
                    RULES.join(", ")
                ))
            }
        }
        self.validate()
    }

    /// Whether any rule compares with the current version.
    fn compares(&self) -> bool {
        self.max_key_drop.is_some()
            || self.max_key_growth.is_some()
            || self.schema.is_some()
            || self.max_changed_share.is_some()
    }

    /// Whether a rule reads the new version's keys and values.
    fn reads_new(&self) -> bool {
        !self.max_null_ratio.is_empty()
            || !self.required_keys.is_empty()
            || self.max_changed_share.is_some()
    }
}

impl Policy {
    /// A policy with `rules`, written now by this user.
    pub fn new(rules: Rules) -> Policy {
        Policy {
            policy_version: POLICY_VERSION,
            rules,
            updated_at: now_rfc3339(),
            updated_by: user_at_host(),
            nonce: nonce(),
        }
    }

    /// Parses and checks a stored policy.
    fn parse(bytes: &[u8], what: &str) -> Result<Policy> {
        let corrupt = |detail: String| Error::corrupt(what.to_owned(), detail);
        let policy: Policy = serde_json::from_slice(bytes).map_err(|e| {
            corrupt(format!(
                "not a policy this snapkv understands ({e}); a newer snapkv may have written it"
            ))
        })?;
        if policy.policy_version != POLICY_VERSION {
            return Err(corrupt(format!(
                "policy_version {} (this snapkv reads {POLICY_VERSION})",
                policy.policy_version
            )));
        }
        policy.rules.validate().map_err(corrupt)?;
        Ok(policy)
    }
}

/// How a rule fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The version passes it.
    Passed,
    /// The version breaks it.
    Failed,
    /// It could not be checked (no current version, raw values, …): the detail says why.
    NotChecked,
}

/// One rule's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyCheck {
    /// The rule (a name of [`RULES`]).
    pub rule: String,
    /// How it fared.
    pub outcome: Outcome,
    /// What was measured, against what limit.
    pub detail: String,
}

/// The checks of one version against its dataset's policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PolicyReport {
    /// The dataset.
    pub dataset: String,
    /// The version checked.
    pub version: String,
    /// The version it was compared with (`CURRENT`), if any.
    pub current: Option<String>,
    /// Whether the rules are the dataset's `POLICY.json` (else [`Rules::recommended`]).
    pub stored_policy: bool,
    /// One per rule that is on, in [`RULES`] order.
    pub checks: Vec<PolicyCheck>,
}

impl PolicyReport {
    /// The rules the version breaks.
    pub fn failed(&self) -> impl Iterator<Item = &PolicyCheck> {
        self.checks.iter().filter(|c| c.outcome == Outcome::Failed)
    }

    /// True when no rule failed.
    pub fn passed(&self) -> bool {
        self.failed().next().is_none()
    }

    /// One line: how many rules passed, failed and were not checked.
    pub fn summary(&self) -> String {
        let count = |o| self.checks.iter().filter(|c| c.outcome == o).count();
        let (passed, failed, skipped) = (
            count(Outcome::Passed),
            count(Outcome::Failed),
            count(Outcome::NotChecked),
        );
        let mut s = format!("{passed} passed, {failed} failed");
        if skipped > 0 {
            let _ = write!(s, ", {skipped} not checked");
        }
        s.push_str(if self.stored_policy {
            ", rules of POLICY.json"
        } else {
            ", recommended rules: the dataset has no POLICY.json"
        });
        s
    }
}

impl std::fmt::Display for PolicyReport {
    /// Every check, one per line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, c) in self.checks.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let mark = match c.outcome {
                Outcome::Passed => "passed",
                Outcome::Failed => "FAILED",
                Outcome::NotChecked => "not checked",
            };
            write!(f, "  {mark:<11} {}: {}", c.rule, c.detail)?;
        }
        Ok(())
    }
}

/// How publish and promote apply the policy.
#[derive(Clone)]
#[non_exhaustive]
pub struct CheckOptions {
    /// Make the version current (or stage it) even if it breaks rules; needs a reason, and
    /// is recorded in the history with the rules overridden.
    pub force: bool,
    /// Where versions are downloaded when a rule reads the current version's data (or, on
    /// promote, the staged version's) [default: a temporary directory, removed afterwards].
    pub download_dir: Option<PathBuf>,
    /// Opens downloaded and local files. Default: [`crate::read_snapshot`].
    pub open: OpenSnapshot,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            force: false,
            download_dir: None,
            open: crate::files::default_open(),
        }
    }
}

impl std::fmt::Debug for CheckOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckOptions")
            .field("force", &self.force)
            .field("download_dir", &self.download_dir)
            .finish_non_exhaustive()
    }
}

/// The outcome of checking a version: the report, and the rules a forced move overrode.
pub(crate) struct Checked {
    pub report: PolicyReport,
    pub overridden: Vec<String>,
}

/// A version under check: counts from the manifest (or local files), metadata and data when
/// a rule needs them.
pub(crate) struct Side {
    version: String,
    keys: u64,
    names: Vec<String>,
    /// The first file's.
    metadata: Option<Metadata>,
    /// Open files, in `names` order; empty unless a rule reads data.
    snapshots: Vec<Snapshot>,
}

/// The new version of a check.
pub(crate) enum Candidate<'a> {
    /// Local files about to be published.
    Local {
        version: &'a str,
        files: &'a [PathBuf],
        names: &'a [String],
        keys: u64,
        metadata: &'a Metadata,
    },
    /// A complete version in the store (a staged one, on promote).
    Stored { version: &'a str },
    /// Files in the store that `manifest` lists, before it is written (a commit of shards).
    Pending { manifest: &'a Manifest },
}

impl Store {
    /// The stored policy of `dataset`, or `None` if it has none (then
    /// [`Rules::recommended`] apply).
    pub async fn policy(&self, dataset: &str) -> Result<Option<Policy>> {
        Ok(self.read_policy(dataset).await?.map(|(p, _)| p))
    }

    /// The rules that apply to `dataset`, and whether they are stored.
    pub async fn rules(&self, dataset: &str) -> Result<(Rules, bool)> {
        Ok(match self.policy(dataset).await? {
            Some(p) => (p.rules, true),
            None => (Rules::recommended(), false),
        })
    }

    /// Changes the policy of `dataset` (starting from [`Rules::recommended`] if it has none)
    /// by `edit`, a read-modify-write by compare-and-swap that starts over if another writer
    /// changed it meanwhile. Recorded in the history. Returns the policy written.
    pub async fn update_policy<F>(
        &self,
        dataset: &str,
        reason: Option<&str>,
        edit: F,
    ) -> Result<Policy>
    where
        F: Fn(&mut Rules) -> std::result::Result<(), String>,
    {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        for _ in 0..MAX_POLICY_TRIES {
            let read = self.read_policy(dataset).await?;
            let mut rules = read
                .as_ref()
                .map_or_else(Rules::recommended, |(p, _)| p.rules.clone());
            edit(&mut rules).map_err(|detail| Error::invalid("policy", detail))?;
            rules
                .validate()
                .map_err(|detail| Error::invalid("policy", detail))?;
            let policy = Policy::new(rules);
            let body = PutPayload::from(serde_json::to_vec_pretty(&policy).expect("serializable"));
            let path = paths.policy();
            let tag = read.as_ref().map(|(_, t)| t);
            match self.put_if(dataset, &path, body, tag).await {
                Ok(Swap::Done) => {}
                Ok(Swap::Lost) => continue,
                Err(e) if is_precondition(&e) => {
                    // Our write may have landed with its answer lost: then it holds our nonce.
                    match self.read_policy(dataset).await? {
                        Some((p, _)) if p.nonce == policy.nonce => {}
                        _ => continue,
                    }
                }
                Err(e) => return Err(self.err("PUT", &path, e)),
            }
            let entry = crate::history::HistoryEntry::new("policy", None, None, reason);
            self.record(&paths, entry).await;
            return Ok(policy);
        }
        Err(Error::Conflict {
            reason: format!(
                "the policy of {dataset} kept changing while it was being updated: try again"
            ),
            current: None,
        })
    }

    /// `POLICY.json` and the tag of its write.
    async fn read_policy(&self, dataset: &str) -> Result<Option<(Policy, Tag)>> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let path = paths.policy();
        let object = match self
            .get_small_opts(&path, GetOptions::default(), Cap::POLICY)
            .await?
        {
            Got::Found(object) => object,
            Got::NotModified | Got::Missing => return Ok(None),
        };
        let tag = Tag::of(object.meta());
        let bytes = self.read_small(*object).await?;
        let policy = Policy::parse(&bytes, &format!("{dataset}/{}", crate::layout::POLICY))?;
        Ok(Some((policy, tag)))
    }

    /// Checks `candidate` against the policy of `dataset` and `current`. Breaking a rule is
    /// [`Error::Policy`] unless `options.force` (which needs a `reason`).
    pub(crate) async fn check_policy(
        &self,
        dataset: &str,
        current: Option<&Current>,
        candidate: Candidate<'_>,
        options: &CheckOptions,
        reason: Option<&str>,
    ) -> Result<Checked> {
        if options.force && reason.is_none_or(|r| r.trim().is_empty()) {
            return Err(Error::invalid(
                "force",
                "forcing past the policy needs a reason (it is recorded in the history)",
            ));
        }
        let (rules, stored_policy) = self.rules(dataset).await?;
        let scratch;
        let download_dir = match &options.download_dir {
            Some(dir) => dir.clone(),
            None => {
                scratch = tempfile::Builder::new()
                    .prefix("snapkv-check-")
                    .tempdir()
                    .map_err(|e| Error::io("create", std::env::temp_dir(), e))?;
                scratch.path().to_owned()
            }
        };
        let cache = Cache::new(&download_dir);
        let fetch = FetchOptions {
            open: options.open.clone(),
            ..FetchOptions::default()
        };
        let old = match current {
            Some(c) if rules.compares() => {
                let v = &c.pointer.version;
                let manifest = self.manifest(dataset, v).await?;
                let mut side = self
                    .stored_side(dataset, &manifest, rules.schema.is_some())
                    .await?;
                if rules.max_changed_share.is_some() {
                    side.snapshots = self.fetch_open(dataset, v, &cache, &fetch).await?;
                }
                Some(side)
            }
            _ => None,
        };
        let new = match candidate {
            Candidate::Local {
                version,
                files,
                names,
                keys,
                metadata,
            } => {
                let snapshots = if rules.reads_new() {
                    open_all(&options.open, files.to_vec()).await?
                } else {
                    Vec::new()
                };
                Side {
                    version: version.to_owned(),
                    keys,
                    names: names.to_vec(),
                    metadata: Some(metadata.clone()),
                    snapshots,
                }
            }
            Candidate::Stored { version } => {
                let manifest = self.manifest(dataset, version).await?;
                self.candidate_side(dataset, &rules, manifest, &cache, &fetch)
                    .await?
            }
            Candidate::Pending { manifest } => {
                self.candidate_side(dataset, &rules, manifest.clone(), &cache, &fetch)
                    .await?
            }
        };
        let report = PolicyReport {
            dataset: dataset.to_owned(),
            version: new.version.clone(),
            current: current.map(|c| c.pointer.version.clone()),
            stored_policy,
            checks: blocking(move || evaluate(&rules, old.as_ref(), &new)).await,
        };
        let overridden: Vec<String> = report.failed().map(|c| c.rule.clone()).collect();
        if !overridden.is_empty() && !options.force {
            return Err(Error::Policy {
                report: Box::new(report),
            });
        }
        Ok(Checked { report, overridden })
    }

    /// The side of a new version in the store: counts from `manifest`, metadata and data as
    /// the rules need them.
    async fn candidate_side(
        &self,
        dataset: &str,
        rules: &Rules,
        manifest: Manifest,
        cache: &Cache,
        fetch: &FetchOptions,
    ) -> Result<Side> {
        let metadata = rules.schema.is_some() || !rules.max_null_ratio.is_empty();
        let mut side = self.stored_side(dataset, &manifest, metadata).await?;
        if rules.reads_new() {
            let version = manifest.version.clone();
            let local = self
                .fetch_listed(dataset, &version, manifest, cache, fetch)
                .await?;
            side.snapshots = open_all(&fetch.open, local.paths()).await?;
            side.metadata = side.snapshots.first().map(|s| s.metadata().clone());
        }
        Ok(side)
    }

    /// A stored version's counts, and its first file's metadata when `metadata` (read from
    /// the end of the file: two range reads).
    async fn stored_side(
        &self,
        dataset: &str,
        manifest: &Manifest,
        metadata: bool,
    ) -> Result<Side> {
        let mut side = Side {
            version: manifest.version.clone(),
            keys: manifest.total_keys(),
            names: manifest.files.iter().map(|f| f.name.clone()).collect(),
            metadata: None,
            snapshots: Vec::new(),
        };
        if let (true, Some(first)) = (metadata, manifest.files.first()) {
            let paths = DatasetPaths::new(&self.root, dataset)?;
            let path = paths.file(&manifest.version, &first.name);
            side.metadata = Some(self.stored_metadata(&path, first.bytes).await?);
        }
        Ok(side)
    }

    /// The metadata of the stored snapshot at `path`, of `len` bytes, from its end.
    async fn stored_metadata(&self, path: &object_store::path::Path, len: u64) -> Result<Metadata> {
        let (tail, bytes) = self
            .stored_section(path, len, Tail::metadata_range, MAX_METADATA_BYTES)
            .await?;
        tail.metadata(&bytes)
            .map_err(|e| crate::delta::stored_corrupt(path, e))
    }

    /// Downloads a version into `cache` (verified) and opens its files.
    async fn fetch_open(
        &self,
        dataset: &str,
        version: &str,
        cache: &Cache,
        options: &FetchOptions,
    ) -> Result<Vec<Snapshot>> {
        let local = self.fetch(dataset, version, cache, options).await?;
        open_all(&options.open, local.paths()).await
    }
}

/// Opens local snapshot files with `open`, on the blocking pool.
async fn open_all(open: &OpenSnapshot, paths: Vec<PathBuf>) -> Result<Vec<Snapshot>> {
    let open = open.clone();
    blocking(move || {
        paths
            .iter()
            .map(|path| {
                open(path).map_err(|e| Error::Corrupt {
                    what: path.display().to_string(),
                    detail: "not a valid snapshot".into(),
                    source: Some(e),
                })
            })
            .collect()
    })
    .await
}

pub(crate) fn is_precondition(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }
    )
}

/// Every rule that is on, in [`RULES`] order.
fn evaluate(rules: &Rules, old: Option<&Side>, new: &Side) -> Vec<PolicyCheck> {
    let mut checks = Vec::new();
    let mut push = |rule: &str, outcome: Outcome, detail: String| {
        checks.push(PolicyCheck {
            rule: rule.to_owned(),
            outcome,
            detail,
        })
    };
    let no_current = || "no current version to compare with".to_owned();
    if let Some(min) = rules.min_keys {
        let n = new.keys;
        if n < min {
            push(
                "min_keys",
                Outcome::Failed,
                format!("{}, fewer than the minimum {}", keys(n), num(min)),
            );
        } else {
            push(
                "min_keys",
                Outcome::Passed,
                format!("{} (minimum {})", keys(n), num(min)),
            );
        }
    }
    for (rule, limit, drop) in [
        ("max_key_drop", rules.max_key_drop, true),
        ("max_key_growth", rules.max_key_growth, false),
    ] {
        let Some(limit) = limit else { continue };
        let Some(old) = old else {
            push(rule, Outcome::NotChecked, no_current());
            continue;
        };
        let (a, b) = (old.keys, new.keys);
        if a == 0 {
            push(
                rule,
                Outcome::NotChecked,
                format!("the current version {} has no keys", old.version),
            );
            continue;
        }
        let change = (b as f64 - a as f64) / a as f64;
        let sign = if change < 0.0 { "-" } else { "+" };
        let counts = format!(
            "{} -> {} ({sign}{}) against {}",
            num(a),
            keys(b),
            pct(change.abs()),
            old.version
        );
        let (over, what) = if drop {
            (-change > limit, "drop")
        } else {
            (change > limit, "growth")
        };
        if over {
            push(
                rule,
                Outcome::Failed,
                format!("{counts}: more than the {} {what} allowed", pct(limit)),
            );
        } else {
            push(
                rule,
                Outcome::Passed,
                format!("{counts} (at most {} {what})", pct(limit)),
            );
        }
    }
    if let Some(rule) = rules.schema {
        let (outcome, detail) = match (old, &new.metadata) {
            (None, _) => (Outcome::NotChecked, no_current()),
            (Some(old), Some(new_meta)) => match &old.metadata {
                Some(old_meta) => check_schema(rule, old_meta, new_meta, &old.version),
                None => (Outcome::NotChecked, "no metadata was read".into()),
            },
            (Some(_), None) => (Outcome::NotChecked, "no metadata was read".into()),
        };
        push("schema", outcome, detail);
    }
    if !rules.max_null_ratio.is_empty() {
        let (outcome, detail) = check_nulls(&rules.max_null_ratio, new);
        push("max_null_ratio", outcome, detail);
    }
    if !rules.required_keys.is_empty() {
        let (outcome, detail) = check_required(&rules.required_keys, new);
        push("required_keys", outcome, detail);
    }
    if let Some(limit) = rules.max_changed_share {
        let (outcome, detail) = match old {
            None => (Outcome::NotChecked, no_current()),
            Some(old) => check_changed(limit, old, new),
        };
        push("max_changed_share", outcome, detail);
    }
    checks
}

fn check_schema(
    rule: SchemaRule,
    old: &Metadata,
    new: &Metadata,
    against: &str,
) -> (Outcome, String) {
    let d = snapkv_format::diff::schema_diff(old, new);
    let names = |fields: &mut dyn Iterator<Item = &str>| {
        fields
            .map(|n| format!("{n:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut broken = Vec::new();
    let mut allowed = Vec::new();
    if !d.removed.is_empty() {
        let text = format!(
            "dropped {}",
            names(&mut d.removed.iter().map(|f| f.name.as_str()))
        );
        if rule.allow_dropped {
            allowed.push(text);
        } else {
            broken.push(text);
        }
    }
    if !d.retyped.is_empty() {
        let text = format!(
            "retyped {}",
            d.retyped
                .iter()
                .map(|c| format!("{:?} ({} -> {})", c.name, c.old, c.new))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if rule.allow_retyped {
            allowed.push(text);
        } else {
            broken.push(text);
        }
    }
    if let Some(k) = &d.key_columns {
        broken.push(format!("key columns {:?} -> {:?}", k.old, k.new));
    }
    if let Some(e) = &d.value_encoding {
        broken.push(format!("value encoding {:?} -> {:?}", e.old, e.new));
    }
    if d.incomparable {
        broken.push("one version has no Arrow schema to compare".into());
    }
    if !d.added.is_empty() {
        allowed.push(format!(
            "added {}",
            names(&mut d.added.iter().map(|f| f.name.as_str()))
        ));
    }
    if !broken.is_empty() {
        return (
            Outcome::Failed,
            format!("incompatible with {against}: {}", broken.join("; ")),
        );
    }
    if allowed.is_empty() {
        (Outcome::Passed, format!("same schema as {against}"))
    } else {
        (
            Outcome::Passed,
            format!("compatible with {against}: {}", allowed.join("; ")),
        )
    }
}

/// Null ratios per field in whole blocks spread evenly over each file.
fn check_nulls(limits: &BTreeMap<String, f64>, new: &Side) -> (Outcome, String) {
    let json = new
        .metadata
        .as_ref()
        .is_none_or(|m| m.value_encoding == ValueEncoding::Json);
    if !json {
        return (
            Outcome::NotChecked,
            "values are raw bytes, not JSON objects".into(),
        );
    }
    let mut rows = 0u64;
    // Non-null values per field.
    let mut present: BTreeMap<String, u64> = BTreeMap::new();
    for snapshot in &new.snapshots {
        let share = NULL_SAMPLE_ROWS.div_ceil(new.snapshots.len() as u64);
        let blocks = snapshot.block_count();
        if blocks == 0 {
            continue;
        }
        let per_block = (snapshot.len() / blocks).max(1);
        let wanted = share.div_ceil(per_block).clamp(1, blocks);
        for i in 0..wanted {
            // Evenly spread: the i-th of `wanted` equal parts of the file.
            let block = i * blocks / wanted;
            for entry in snapshot.block_entries(block) {
                let Ok((_, value)) = entry else {
                    return (
                        Outcome::Failed,
                        format!("block {block} of the new version cannot be read"),
                    );
                };
                rows += 1;
                if let Ok(serde_json::Value::Object(fields)) =
                    serde_json::from_slice::<serde_json::Value>(&value)
                {
                    for (name, v) in fields {
                        if !v.is_null() {
                            *present.entry(name).or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    if rows == 0 {
        return (Outcome::NotChecked, "the new version has no rows".into());
    }
    let ratio = |column: &str| 1.0 - present.get(column).copied().unwrap_or(0) as f64 / rows as f64;
    let mut columns: BTreeMap<&str, f64> = BTreeMap::new();
    if let Some(every) = limits.get(EVERY_COLUMN) {
        for name in present.keys() {
            columns.insert(name, *every);
        }
    }
    for (name, limit) in limits {
        if name != EVERY_COLUMN {
            columns.insert(name, *limit);
        }
    }
    let mut over = Vec::new();
    let mut worst: Option<(&str, f64)> = None;
    for (name, limit) in &columns {
        let r = ratio(name);
        if r > *limit {
            over.push(format!(
                "{name:?} {} null (maximum {})",
                pct(r),
                pct(*limit)
            ));
        }
        if worst.is_none_or(|(_, w)| r > w) {
            worst = Some((name, r));
        }
    }
    let sample = format!("in {} sampled rows", num(rows));
    if !over.is_empty() {
        return (Outcome::Failed, format!("{} {sample}", over.join(", ")));
    }
    match worst {
        Some((name, r)) => (
            Outcome::Passed,
            format!(
                "{} field(s) within their limits {sample} (most nulls: {name:?}, {})",
                columns.len(),
                pct(r)
            ),
        ),
        None => (Outcome::Passed, format!("no fields {sample}")),
    }
}

fn check_required(keys: &[String], new: &Side) -> (Outcome, String) {
    let mut missing = Vec::new();
    for key in keys {
        let mut found = false;
        for s in &new.snapshots {
            match s.get(key.as_bytes()) {
                Ok(Some(_)) => {
                    found = true;
                    break;
                }
                Ok(None) => {}
                Err(e) => {
                    return (
                        Outcome::Failed,
                        format!("looking up {:?} failed: {e}", cut(key)),
                    )
                }
            }
        }
        if !found {
            missing.push(key);
        }
    }
    if missing.is_empty() {
        return (
            Outcome::Passed,
            format!("all {} required keys present", num(keys.len() as u64)),
        );
    }
    let shown: Vec<String> = missing
        .iter()
        .take(10)
        .map(|k| format!("{:?}", cut(k)))
        .collect();
    let more = if missing.len() > shown.len() {
        format!(" and {} more", missing.len() - shown.len())
    } else {
        String::new()
    };
    (
        Outcome::Failed,
        format!(
            "{} of {} required keys missing: {}{more}",
            num(missing.len() as u64),
            num(keys.len() as u64),
            shown.join(", ")
        ),
    )
}

/// The share of keys in both versions whose value changed: the one file of each version, or
/// files of the same names.
fn check_changed(limit: f64, old: &Side, new: &Side) -> (Outcome, String) {
    let single = old.names.len() == 1 && new.names.len() == 1;
    if !single && old.names != new.names {
        return (
            Outcome::NotChecked,
            format!(
                "the versions have different files ({} and {}): versions of several files are \
                 compared file by file, by name",
                old.names.join(", "),
                new.names.join(", ")
            ),
        );
    }
    let mut options = snapkv_format::DiffOptions::default();
    options.examples = 0;
    options.sample = 0;
    let (mut changed, mut common) = (0u64, 0u64);
    for (a, b) in old.snapshots.iter().zip(&new.snapshots) {
        match snapkv_format::diff(a, b, &options) {
            Ok(d) => {
                changed += d.changed;
                common += d.changed + d.unchanged;
            }
            Err(e) => {
                return (
                    Outcome::Failed,
                    format!("the versions cannot be compared: {e}"),
                )
            }
        }
    }
    if common == 0 {
        return (
            Outcome::NotChecked,
            format!("no key is in both {} and {}", old.version, new.version),
        );
    }
    let share = changed as f64 / common as f64;
    let text = format!(
        "{} of the {} keys also in {} changed value ({})",
        num(changed),
        num(common),
        old.version,
        pct(share)
    );
    if share > limit {
        (
            Outcome::Failed,
            format!("{text}: more than the {} allowed", pct(limit)),
        )
    } else {
        (Outcome::Passed, format!("{text}, at most {}", pct(limit)))
    }
}

/// `1234567` as `1,234,567`.
fn num(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1 key`, `2,000 keys`.
fn keys(n: u64) -> String {
    if n == 1 {
        "1 key".to_owned()
    } else {
        format!("{} keys", num(n))
    }
}

/// A share as a percentage, without trailing zeros.
fn pct(share: f64) -> String {
    let s = format!("{:.3}", share * 100.0);
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// A key shortened for messages.
fn cut(key: &str) -> String {
    if key.len() <= 64 {
        return key.to_owned();
    }
    let mut end = 64;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

fn split_assignment(s: &str) -> std::result::Result<(&str, &str, &str), String> {
    for op in ["+=", "-=", "="] {
        if let Some((name, value)) = s.split_once(op) {
            if !name.contains('=') {
                return Ok((name.trim(), op, value.trim()));
            }
        }
    }
    Err(format!(
        "{s:?}: give RULE=VALUE (rules: {})",
        RULES.join(", ")
    ))
}

fn parse_or_off<T>(
    off: bool,
    value: &str,
    parse: fn(&str) -> std::result::Result<T, String>,
) -> std::result::Result<Option<T>, String> {
    if off {
        Ok(None)
    } else {
        parse(value).map(Some)
    }
}

fn parse_count(value: &str) -> std::result::Result<u64, String> {
    value
        .replace(['_', ','], "")
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number"))
}

/// `0.25` or `25%`.
fn parse_ratio(value: &str) -> std::result::Result<f64, String> {
    let (number, scale) = match value.strip_suffix('%') {
        Some(n) => (n, 100.0),
        None => (value, 1.0),
    };
    match number.trim().parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x / scale),
        _ => Err(format!("{value:?} is not a number or a percentage")),
    }
}

fn parse_bool(value: &str) -> std::result::Result<bool, String> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{value:?} is not true or false")),
    }
}

/// `a,b,c`, or a JSON list of strings.
fn parse_keys(value: &str) -> std::result::Result<Vec<String>, String> {
    if value.starts_with('[') {
        return serde_json::from_str(value)
            .map_err(|e| format!("required_keys is not a JSON list of strings: {e}"));
    }
    Ok(value
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignments() {
        let mut r = Rules::recommended();
        r.set("min_keys=200_000").unwrap();
        r.set("max_key_drop=20%").unwrap();
        r.set("max_key_growth=1.5").unwrap();
        r.set("schema.allow_dropped=true").unwrap();
        r.set("max_null_ratio.score=0.1").unwrap();
        r.set("max_null_ratio.*=0.5").unwrap();
        r.set("required_keys=user:1, user:2").unwrap();
        r.set("required_keys+=user:3").unwrap();
        r.set("required_keys-=user:1").unwrap();
        r.set("max_changed_share=off").unwrap();
        assert_eq!(r.min_keys, Some(200_000));
        assert_eq!(r.max_key_drop, Some(0.2));
        assert_eq!(r.max_key_growth, Some(1.5));
        assert!(r.schema.unwrap().allow_dropped);
        assert_eq!(r.max_null_ratio.len(), 2);
        assert_eq!(r.required_keys, ["user:2", "user:3"]);
        r.set("schema=off").unwrap();
        assert_eq!(r.schema, None);
        r.set(r#"required_keys=["a,b"]"#).unwrap();
        assert_eq!(r.required_keys, ["a,b"]);
        for bad in [
            "max_key_drop=2",
            "max_key_drop=-1%",
            "max_key_growth=nan",
            "min_keys=many",
            "colour=blue",
            "schema=loose",
            "max_null_ratio.=0.1",
            "max_null_ratio.other=off",
            "required_keys-=nope",
            "min_keys+=1",
            "nothing",
        ] {
            let mut r = Rules::recommended();
            assert!(r.set(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn stored_policies_are_checked() {
        let p = Policy::new(Rules::recommended());
        let bytes = serde_json::to_vec(&p).unwrap();
        assert_eq!(Policy::parse(&bytes, "p").unwrap(), p);
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        v["rules"]["future_rule"] = 1.into();
        let e = Policy::parse(&serde_json::to_vec(&v).unwrap(), "p").unwrap_err();
        assert!(e.to_string().contains("future_rule"), "{e}");
        v["rules"].as_object_mut().unwrap().remove("future_rule");
        v["rules"]["max_key_drop"] = 7.into();
        assert!(Policy::parse(&serde_json::to_vec(&v).unwrap(), "p").is_err());
        assert!(Policy::parse(b"[]", "p").is_err());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(num(0), "0");
        assert_eq!(num(1234567), "1,234,567");
        assert_eq!(pct(0.5), "50%");
        assert_eq!(pct(0.12345), "12.345%");
        assert_eq!(pct(0.0), "0%");
    }
}
