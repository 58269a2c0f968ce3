//! The audit log of a dataset: one object per change of `CURRENT` (and per staged version),
//! `<dataset>/history/<seq>.json`, written with create-if-absent so that concurrent writers
//! never overwrite each other's entries.

use crate::error::{Error, Result};
use crate::layout::{history_seq, now_rfc3339, DatasetPaths};
use crate::manifest::{identity, nonce, user_at_host};
use crate::objects::Cap;
use crate::Store;
use futures_util::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

/// Schema of a history entry.
const HISTORY_VERSION: u32 = 1;
/// Sequence numbers tried, one after the other, before an append gives up: each failed try
/// means another writer took that number, so this bounds the writers racing one append.
const MAX_APPEND_TRIES: u32 = 1000;
/// Longest reason kept; a longer one is cut (at a character boundary) and marked.
const MAX_REASON_BYTES: usize = 4096;

/// One entry of a dataset's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct HistoryEntry {
    /// Schema of this document (1).
    pub history_version: u32,
    /// Position in the log: 1 for the first entry, then consecutive (gaps only where a writer
    /// died between taking a number and writing it, which create-if-absent makes impossible).
    pub seq: u64,
    /// When (RFC 3339, UTC).
    pub at: String,
    /// Who: `user@host`.
    pub by: String,
    /// The program: `snapkv-store <version> on <host> (pid <pid>)`.
    pub tool: String,
    /// `publish`, `stage`, `promote`, `rollback`, `pin`, `unpin` or `policy` (a change of
    /// `POLICY.json`).
    pub action: String,
    /// The version `CURRENT` named before, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The version the action concerned: made current, staged, or pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Whether a check was overridden.
    #[serde(default)]
    pub forced: bool,
    /// The policy rules a forced move overrode.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub overridden: Vec<String>,
    /// Random, unique per entry: identifies a writer's own entry after a lost answer.
    pub nonce: String,
}

impl HistoryEntry {
    /// An entry for `action`, by this user and program, now.
    pub(crate) fn new(
        action: &str,
        from: Option<&str>,
        to: Option<&str>,
        reason: Option<&str>,
    ) -> HistoryEntry {
        HistoryEntry {
            history_version: HISTORY_VERSION,
            seq: 0,
            at: now_rfc3339(),
            by: user_at_host(),
            tool: identity(),
            action: action.to_owned(),
            from: from.map(str::to_owned),
            to: to.map(str::to_owned),
            reason: reason.map(cut_reason),
            forced: false,
            overridden: Vec::new(),
            nonce: nonce(),
        }
    }
}

impl HistoryEntry {
    /// Marks the entry as forced past the policy `rules` (none: not forced).
    pub(crate) fn overriding(mut self, rules: Vec<String>) -> HistoryEntry {
        self.forced = !rules.is_empty();
        self.overridden = rules;
        self
    }
}

fn cut_reason(reason: &str) -> String {
    if reason.len() <= MAX_REASON_BYTES {
        return reason.to_owned();
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &reason[..end])
}

impl Store {
    /// The history of `dataset`, oldest first; the `last` newest entries when given.
    pub async fn history(&self, dataset: &str, last: Option<usize>) -> Result<Vec<HistoryEntry>> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let mut seqs = self.history_seqs(&paths).await?;
        if let Some(n) = last {
            seqs.drain(..seqs.len().saturating_sub(n));
        }
        futures_util::stream::iter(seqs)
            .map(|seq| {
                let path = paths.history_entry(seq);
                async move {
                    let what = format!("history entry {path}");
                    let Some(bytes) = self.get_small(&path, Cap::HISTORY).await? else {
                        return Ok(None);
                    };
                    let entry: HistoryEntry =
                        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
                            what: what.clone(),
                            detail: "not a history entry".into(),
                            source: Some(Box::new(e)),
                        })?;
                    if entry.seq != seq {
                        return Err(Error::corrupt(
                            what,
                            format!("it holds sequence number {}", entry.seq),
                        ));
                    }
                    Ok(Some(entry))
                }
            })
            .buffered(8)
            .try_filter_map(|e| async move { Ok(e) })
            .try_collect()
            .await
    }

    /// The sequence numbers of the entries present, ascending.
    async fn history_seqs(&self, paths: &DatasetPaths) -> Result<Vec<u64>> {
        let mut seqs: Vec<u64> = self
            .list_folder(&paths.history())
            .await?
            .objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(history_seq))
            .collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    /// Appends `entry` to the history of its dataset under the next free sequence number,
    /// which it returns. A number another writer took first is skipped (create-if-absent), so
    /// no entry is ever overwritten.
    pub(crate) async fn append_history(
        &self,
        paths: &DatasetPaths,
        mut entry: HistoryEntry,
    ) -> Result<u64> {
        let mut seq = self.history_seqs(paths).await?.last().map_or(1, |s| s + 1);
        for _ in 0..MAX_APPEND_TRIES {
            entry.seq = seq;
            let path = paths.history_entry(seq);
            let body = serde_json::to_vec_pretty(&entry).expect("serializable");
            if self.create(&path, body).await? {
                return Ok(seq);
            }
            // Taken: by another writer, or by this one if an earlier answer was lost.
            if let Some(bytes) = self.get_small(&path, Cap::HISTORY).await? {
                if serde_json::from_slice::<HistoryEntry>(&bytes)
                    .is_ok_and(|e| e.nonce == entry.nonce)
                {
                    return Ok(seq);
                }
            }
            seq += 1;
        }
        Err(Error::Conflict {
            reason: format!(
                "could not append to the history at {}: {MAX_APPEND_TRIES} sequence numbers \
                 were taken by other writers meanwhile",
                paths.history()
            ),
            current: None,
        })
    }

    /// Appends `entry` after a change that has already happened: a failure is logged, not
    /// returned, since the change stands.
    pub(crate) async fn record(&self, paths: &DatasetPaths, entry: HistoryEntry) {
        let action = entry.action.clone();
        if let Err(e) = self.append_history(paths, entry).await {
            tracing::warn!(%action, error = %e, "the change was made but its history entry was not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_reasons_are_cut_at_a_character() {
        assert_eq!(cut_reason("short"), "short");
        let long = "é".repeat(3000);
        let cut = cut_reason(&long);
        assert!(cut.len() <= MAX_REASON_BYTES + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
