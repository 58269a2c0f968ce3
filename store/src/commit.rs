//! Sharded versions from independent uploaders: each task uploads its shard as an attempt with
//! a receipt ([`Store::publish_shard`]), and one commit ([`Store::commit`]) picks one attempt
//! per shard, writes the manifest and makes the version current. `spec/STORE.md` ("Sharded
//! versions") is the protocol.

use crate::error::{Error, Result};
use crate::files::{self, RateLimit};
use crate::layout::{check_name, now_rfc3339, DatasetPaths};
use crate::manifest::{format_xxh3, identity, nonce, user_at_host, Manifest, ManifestFile};
use crate::objects::Cap;
use crate::policy::{Candidate, CheckOptions};
use crate::publish::{already_exists, check_manifest_size, Published};
use crate::sharding::ShardInfo;
use crate::{PublishOptions, Store};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Schema of a shard receipt.
const RECEIPT_VERSION: u32 = 1;
/// The most bytes a receipt may have.
pub const MAX_RECEIPT_BYTES: u64 = 64 << 10;

/// The format version of files whose receipts do not say.
fn format_version_1() -> u32 {
    1
}

/// What an uploader records once its shard file is completely uploaded and size-checked:
/// `shard-<I>-of-<N>.<attempt>.json` in the version folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Receipt {
    /// Schema of this document (1).
    pub receipt_version: u32,
    /// The shard's index, from 0.
    pub shard: u32,
    /// The number of shards of the version.
    pub shards: u32,
    /// The attempt: 16 random hex digits.
    pub attempt: String,
    /// The file uploaded, in the version folder.
    pub file: String,
    /// Its size.
    pub bytes: u64,
    /// XXH3-64 of the file, 16 lowercase hex digits.
    pub xxh3: String,
    /// Keys in the shard.
    pub keys: u64,
    /// Its snapshot format version (absent in receipts written before version 2 existed:
    /// version 1).
    #[serde(default = "format_version_1")]
    pub format_version: u32,
    /// Its first key, base64; absent when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_key: Option<String>,
    /// Its last key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_key: Option<String>,
    /// When the snapshot was built, if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_at: Option<String>,
    /// The builder parameters from the snapshot's metadata.
    #[serde(default)]
    pub builder: BTreeMap<String, serde_json::Value>,
    /// When the receipt was written.
    pub uploaded_at: String,
    /// Who uploaded it: `user@host`.
    pub by: String,
}

/// The object name of shard `shard` of `shards`, attempt `attempt`, with `ext`.
fn attempt_name(shard: u32, shards: u32, attempt: &str, ext: &str) -> String {
    format!("shard-{shard:05}-of-{shards:05}.{attempt}.{ext}")
}

/// `(shard, shards, attempt)` of a receipt's object name.
fn parse_receipt_name(name: &str) -> Option<(u32, u32, String)> {
    let rest = name.strip_prefix("shard-")?.strip_suffix(".json")?;
    let (shard, rest) = rest.split_once("-of-")?;
    let (shards, attempt) = rest.split_once('.')?;
    let ok = shard.len() == 5
        && shards.len() == 5
        && attempt.len() == 16
        && attempt
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    ok.then(|| {
        Some((
            shard.parse().ok()?,
            shards.parse().ok()?,
            attempt.to_owned(),
        ))
    })?
}

impl Store {
    /// Uploads `file` as shard `shard` of `shards` of `version` (which must not be complete
    /// yet), as a new attempt with its receipt; CURRENT is not touched. Any number of
    /// attempts of one shard may run: [`Store::commit`] references one. Returns the receipt.
    pub async fn publish_shard(
        &self,
        dataset: &str,
        file: &Path,
        (shard, shards): (u32, u32),
        version: &str,
        options: &PublishOptions,
    ) -> Result<Receipt> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        check_name("version", version)?;
        if shard >= shards {
            return Err(Error::invalid(
                "shard",
                format!(
                    "{shard}/{shards}: the shard is from 0 to {}",
                    shards.saturating_sub(1)
                ),
            ));
        }
        let local = files::verify_local(file.to_owned(), options.open.clone()).await?;
        if let Some((i, n)) = local.shard {
            if (i, n) != (shard, shards) {
                return Err(Error::invalid(
                    "shard",
                    format!(
                        "{} was built as shard {i}/{n}, not {shard}/{shards}",
                        file.display()
                    ),
                ));
            }
        }
        crate::publish::choose_version(
            dataset,
            &[file.to_owned()],
            std::slice::from_ref(&local),
            Some(version),
        )?;
        if self.exists(&paths.manifest(version)).await? {
            return Err(already_exists(dataset, version));
        }
        let attempt = nonce()[..16].to_owned();
        let name = attempt_name(shard, shards, &attempt, "snapkv");
        let path = paths.file(version, &name);
        let limit = RateLimit::new(options.max_bytes_per_sec);
        let uploaded = async {
            let (bytes, xxh3) = self
                .upload(&path, file, local.bytes, options, &limit)
                .await?;
            if (bytes, xxh3) != (local.bytes, local.xxh3) {
                return Err(Error::corrupt(
                    file.display().to_string(),
                    "the file changed while it was uploaded",
                ));
            }
            let stored = self.head(&path).await?;
            if stored.size != local.bytes {
                return Err(Error::corrupt(
                    format!("stored object {path}"),
                    format!("{} bytes stored, {} uploaded", stored.size, local.bytes),
                ));
            }
            self.put_block_list(&paths.block_list(version, &name), file)
                .await
        }
        .await;
        if let Err(e) = uploaded {
            if let Err(cleanup) = self.delete(&path).await {
                tracing::warn!(%path, error = %cleanup, "cannot remove an interrupted shard upload");
            }
            return Err(e);
        }
        let key = |k: &Option<Vec<u8>>| k.as_ref().map(|k| STANDARD.encode(k));
        let (first, last) = (key(&local.first_key), key(&local.last_key));
        let receipt = Receipt {
            receipt_version: RECEIPT_VERSION,
            shard,
            shards,
            attempt: attempt.clone(),
            file: name,
            bytes: local.bytes,
            xxh3: format_xxh3(local.xxh3),
            keys: local.keys,
            format_version: local.format_version,
            first_key: first,
            last_key: last,
            built_at: local.metadata.created_at.clone(),
            builder: local.metadata.builder.clone(),
            uploaded_at: now_rfc3339(),
            by: user_at_host(),
        };
        let receipt_path = paths.file(version, &attempt_name(shard, shards, &attempt, "json"));
        let body = serde_json::to_vec_pretty(&receipt).expect("serializable");
        if !self.create(&receipt_path, body).await? {
            // The attempt id is random: an existing receipt is our own create, retried.
            tracing::debug!(path = %receipt_path, "receipt already written");
        }
        Ok(receipt)
    }

    /// Commits `version` of `dataset` from its uploaded shards (see [`Store::publish_shard`]):
    /// one attempt per shard (the smallest attempt id), split keys from their key ranges, the
    /// policy, the manifest, then `CURRENT` as publish moves it (or staged). Running it again
    /// is safe: a complete version is made current (or found current).
    pub async fn commit(
        &self,
        dataset: &str,
        version: &str,
        shards: u32,
        options: &PublishOptions,
    ) -> Result<Published> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        check_name("version", version)?;
        if shards == 0 {
            return Err(Error::invalid("shards", "a version has at least 1 shard"));
        }
        let check = CheckOptions {
            force: options.force,
            download_dir: options.download_dir.clone(),
            open: options.open.clone(),
        };
        let current = self.current(dataset).await?;
        let reason = options.reason.as_deref();
        let (manifest, checked) = match self.manifest(dataset, version).await {
            Ok(manifest) => {
                if current
                    .as_ref()
                    .is_some_and(|c| c.pointer.version == version)
                {
                    let checked = self
                        .check_policy(dataset, None, Candidate::Stored { version }, &check, reason)
                        .await?;
                    return Ok(Published {
                        manifest,
                        previous: current.map(|c| c.pointer.version),
                        staged: false,
                        pinned: None,
                        checks: checked.report,
                    });
                }
                let checked = self
                    .check_policy(
                        dataset,
                        current.as_ref(),
                        Candidate::Stored { version },
                        &check,
                        reason,
                    )
                    .await?;
                (manifest, checked)
            }
            Err(e) if e.is_not_found() => {
                let manifest = self
                    .shard_manifest(&paths, dataset, version, shards)
                    .await?;
                let checked = self
                    .check_policy(
                        dataset,
                        current.as_ref(),
                        Candidate::Pending {
                            manifest: &manifest,
                        },
                        &check,
                        reason,
                    )
                    .await?;
                let written = self
                    .create(
                        &paths.manifest(version),
                        serde_json::to_vec_pretty(&manifest).expect("serializable"),
                    )
                    .await?;
                // Another commit may have written it first: that manifest stands.
                let manifest = if written {
                    manifest
                } else {
                    self.manifest(dataset, version).await?
                };
                (manifest, checked)
            }
            Err(e) => return Err(e),
        };
        if let Some(c) = &current {
            if version <= c.pointer.version.as_str() {
                return Err(crate::Error::Refused {
                    reason: format!(
                        "version {version} of {dataset} is complete but not newer than the \
                         current version {}: use rollback to make it current",
                        c.pointer.version
                    ),
                });
            }
        }
        let report = checked.report.clone();
        match self
            .make_current(&paths, current.as_ref(), manifest.clone(), options, checked)
            .await
        {
            // A commit racing this one made the same version current: done.
            Err(Error::Conflict {
                current: Some(now), ..
            }) if now.version == version => Ok(Published {
                manifest,
                previous: Some(now.version),
                staged: false,
                pinned: None,
                checks: report,
            }),
            other => other,
        }
    }

    /// The manifest of `version` from its shards' receipts: one attempt per shard.
    async fn shard_manifest(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        version: &str,
        shards: u32,
    ) -> Result<Manifest> {
        let objects = self.list_version(paths, version).await?;
        let sizes: BTreeMap<String, u64> = objects
            .iter()
            .filter_map(|o| Some((o.location.filename()?.to_owned(), o.size)))
            .collect();
        // The smallest attempt id of each shard.
        let mut chosen: BTreeMap<u32, String> = BTreeMap::new();
        let mut other_counts = std::collections::BTreeSet::new();
        for name in sizes.keys() {
            let Some((shard, count, attempt)) = parse_receipt_name(name) else {
                continue;
            };
            if count != shards {
                other_counts.insert(count);
                continue;
            }
            let entry = chosen.entry(shard).or_insert_with(|| attempt.clone());
            if attempt < *entry {
                *entry = attempt;
            }
        }
        let missing: Vec<String> = (0..shards)
            .filter(|i| !chosen.contains_key(i))
            .map(|i| i.to_string())
            .collect();
        if !missing.is_empty() {
            let others = if other_counts.is_empty() {
                String::new()
            } else {
                format!(
                    " (there are receipts of shards of {} shards)",
                    other_counts
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(Error::Refused {
                reason: format!(
                    "version {version} of {dataset} cannot be committed: shard(s) {} of {shards} \
                     have no completed upload{others}",
                    shorten(&missing)
                ),
            });
        }
        let mut receipts = Vec::with_capacity(shards as usize);
        for (shard, attempt) in &chosen {
            let name = attempt_name(*shard, shards, attempt, "json");
            let what = format!("receipt {dataset}/{version}/{name}");
            let bytes = self
                .get_small(&paths.file(version, &name), Cap::RECEIPT)
                .await?
                .ok_or_else(|| Error::NotFound { what: what.clone() })?;
            let r: Receipt = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                what: what.clone(),
                detail: "not a shard receipt".into(),
                source: Some(Box::new(e)),
            })?;
            let expected = attempt_name(*shard, shards, attempt, "snapkv");
            let bad = (r.receipt_version != RECEIPT_VERSION)
                || (r.shard, r.shards) != (*shard, shards)
                || r.attempt != *attempt
                || r.file != expected
                || crate::manifest::parse_xxh3(&r.xxh3).is_none();
            if bad {
                return Err(Error::corrupt(what, "it does not describe its own attempt"));
            }
            match sizes.get(&r.file) {
                Some(size) if *size == r.bytes => {}
                Some(size) => {
                    return Err(Error::corrupt(
                        format!("stored object {}", paths.file(version, &r.file)),
                        format!("{size} bytes stored, {} in its receipt", r.bytes),
                    ))
                }
                None => {
                    return Err(Error::NotFound {
                        what: format!("shard file {} of {dataset}/{version}", r.file),
                    })
                }
            }
            receipts.push(r);
        }
        let key = |k: &Option<String>, what: &str| -> Result<Option<Vec<u8>>> {
            k.as_ref()
                .map(|k| {
                    STANDARD.decode(k).map_err(|_| {
                        Error::corrupt(
                            format!("a receipt of {dataset}/{version}"),
                            format!("its {what} is not base64"),
                        )
                    })
                })
                .transpose()
        };
        let infos = receipts
            .iter()
            .map(|r| {
                Ok(ShardInfo {
                    index: r.shard,
                    count: r.shards,
                    first: key(&r.first_key, "first key")?,
                    last: key(&r.last_key, "last key")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let splits = crate::sharding::split_keys(&infos).map_err(|e| Error::Refused {
            reason: format!("version {version} of {dataset} cannot be committed: {e}"),
        })?;
        let manifest = Manifest {
            manifest_version: crate::manifest::MANIFEST_VERSION,
            dataset: dataset.to_owned(),
            version: version.to_owned(),
            created_at: now_rfc3339(),
            format_version: receipts
                .iter()
                .map(|r| r.format_version)
                .max()
                .unwrap_or(snapkv_format::FORMAT_VERSION),
            published_by: identity(),
            files: receipts
                .into_iter()
                .map(|r| ManifestFile {
                    name: r.file,
                    bytes: r.bytes,
                    xxh3: r.xxh3,
                    keys: r.keys,
                    built_at: r.built_at,
                    builder: r.builder,
                })
                .collect(),
            sharding: Some(crate::manifest::Sharding::range(&splits)),
        };
        check_manifest_size(&manifest)?;
        Ok(manifest)
    }
}

/// `0, 1, 2, … (12 in all)` for long lists.
fn shorten(items: &[String]) -> String {
    if items.len() <= 10 {
        return items.join(", ");
    }
    format!("{}, … ({} in all)", items[..10].join(", "), items.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_names() {
        let n = attempt_name(3, 8, "0123456789abcdef", "json");
        assert_eq!(n, "shard-00003-of-00008.0123456789abcdef.json");
        assert_eq!(
            parse_receipt_name(&n),
            Some((3, 8, "0123456789abcdef".into()))
        );
        for bad in [
            "shard-00003-of-00008.0123456789abcdef.snapkv",
            "shard-3-of-8.0123456789abcdef.json",
            "shard-00003-of-00008.0123456789ABCDEF.json",
            "shard-00003-of-00008.short.json",
            "MANIFEST.json",
        ] {
            assert_eq!(parse_receipt_name(bad), None, "{bad}");
        }
    }
}
