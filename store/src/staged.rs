//! `STAGED`: the newest staged version of a dataset, for readers that preview staged versions
//! before they are promoted. Written by publish when it stages; only ever moves to newer
//! versions.

use crate::current::{Swap, Tag};
use crate::error::{Error, Result};
use crate::layout::{now_rfc3339, DatasetPaths};
use crate::manifest::{nonce, user_at_host};
use crate::objects::{Cap, Got};
use crate::Store;
use object_store::{GetOptions, PutPayload};
use serde::{Deserialize, Serialize};

/// Attempts of a move of `STAGED` that lost a race with another writer.
const MAX_TRIES: u32 = 10;

/// The content of `STAGED`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Staged {
    /// The newest staged version: complete, and not current when it was staged.
    pub version: String,
    /// When it was staged (RFC 3339, UTC).
    pub staged_at: String,
    /// Who staged it: `user@host`.
    pub staged_by: String,
    /// Random, unique per write.
    pub nonce: String,
}

/// The answer of [`Store::poll_staged`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StagedPoll {
    /// `STAGED` is still the write the given tag names.
    Unchanged,
    /// Nothing was ever staged.
    Missing,
    /// `STAGED` is (now) this, with the tag of its write.
    Changed(Staged, Tag),
}

impl Store {
    /// Reads `STAGED` of `dataset` unless it is still the write `known` names (a conditional
    /// `GET`, like [`Store::poll_current`]).
    pub async fn poll_staged(&self, dataset: &str, known: Option<&Tag>) -> Result<StagedPoll> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let path = paths.staged();
        let options = GetOptions {
            if_none_match: known.and_then(|t| t.e_tag()),
            ..Default::default()
        };
        let object = match self.get_small_opts(&path, options, Cap::STAGED).await? {
            Got::Found(object) => object,
            Got::NotModified => return Ok(StagedPoll::Unchanged),
            Got::Missing => return Ok(StagedPoll::Missing),
        };
        let tag = Tag::of(object.meta());
        if known.is_some_and(|k| k.e_tag().is_some() && *k == tag) {
            return Ok(StagedPoll::Unchanged);
        }
        let bytes = self.read_small(*object).await?;
        let staged: Staged = serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            what: format!("{dataset}/{}", crate::layout::STAGED),
            detail: "not a STAGED object".into(),
            source: Some(Box::new(e)),
        })?;
        crate::layout::check_name("version", &staged.version)?;
        Ok(StagedPoll::Changed(staged, tag))
    }

    /// Moves `STAGED` of `dataset` to `version` unless it names a newer (or the same)
    /// version already: compare-and-swap, started over when another writer came first.
    pub(crate) async fn mark_staged(&self, dataset: &str, version: &str) -> Result<()> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let path = paths.staged();
        for _ in 0..MAX_TRIES {
            let (known, tag) = match self.poll_staged(dataset, None).await? {
                StagedPoll::Changed(s, tag) => (Some(s), Some(tag)),
                _ => (None, None),
            };
            if known
                .as_ref()
                .is_some_and(|s| s.version.as_str() >= version)
            {
                return Ok(());
            }
            let staged = Staged {
                version: version.to_owned(),
                staged_at: now_rfc3339(),
                staged_by: user_at_host(),
                nonce: nonce(),
            };
            let body = PutPayload::from(serde_json::to_vec_pretty(&staged).expect("serializable"));
            match self.put_if(dataset, &path, body, tag.as_ref()).await {
                Ok(Swap::Done) => return Ok(()),
                Ok(Swap::Lost) => continue,
                Err(e) if crate::policy::is_precondition(&e) => continue,
                Err(e) => return Err(self.err("PUT", &path, e)),
            }
        }
        Err(Error::Conflict {
            reason: format!("STAGED of {dataset} kept changing while {version} was staged"),
            current: None,
        })
    }
}
