//! Moving `CURRENT` by hand: rollback, promote (a staged version), pin and unpin. Every move
//! is a compare-and-swap on `CURRENT` and is appended to the dataset's history.

use crate::current::{Current, Swap};
use crate::error::{Error, Result};
use crate::history::HistoryEntry;
use crate::layout::{check_name, DatasetPaths};
use crate::manifest::{Pin, Pointer};
use crate::policy::{Candidate, CheckOptions, Checked, PolicyReport};
use crate::Store;

/// How [`Store::rollback_with`], [`Store::promote`] and [`Store::pin`] move `CURRENT`.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ChangeOptions {
    /// Why: recorded in the history (and in the pin, when pinning). Required with a forced
    /// promote.
    pub reason: Option<String>,
    /// Pin the dataset to the version it moves to (rollback only; `pin` always pins). A
    /// rollback without it keeps an existing pin, moved to the new version.
    pub pin: bool,
    /// How promote checks the dataset's policy (rollback and pin do not: they go back to
    /// versions that were served, and are the way out of an emergency).
    pub check: CheckOptions,
}

/// What [`Store::promote`] did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Promoted {
    /// The pointer written; `None` if the version was already current (nothing written).
    pub pointer: Option<Pointer>,
    /// The policy checks the version passed (or was forced past); `None` when nothing was
    /// written.
    pub checks: Option<PolicyReport>,
}

/// Which move.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    Rollback,
    Promote,
    Pin,
}

impl Move {
    fn name(self) -> &'static str {
        match self {
            Move::Rollback => "rollback",
            Move::Promote => "promote",
            Move::Pin => "pin",
        }
    }

    /// The move under way, for messages.
    fn doing(self) -> &'static str {
        match self {
            Move::Rollback => "rolling back",
            Move::Promote => "promoting",
            Move::Pin => "pinning",
        }
    }
}

/// What a move found and did.
struct Moved {
    /// `CURRENT` as read before the move.
    before: Pointer,
    /// The pointer written; `None` when nothing had to change.
    written: Option<Pointer>,
    /// The policy checks (promote only).
    checks: Option<PolicyReport>,
}

impl Store {
    /// Moves `CURRENT` of `dataset` to the complete version `to` (older or newer), by
    /// compare-and-swap, without pinning. Returns the pointer written, or `None` if `to` was
    /// already current (nothing is written then). See [`Store::rollback_with`].
    pub async fn rollback(&self, dataset: &str, to: &str) -> Result<Option<Pointer>> {
        self.rollback_with(dataset, to, &ChangeOptions::default())
            .await
    }

    /// [`Store::rollback`] with a reason, and optionally pinning the dataset to `to` so that
    /// the next scheduled publish stages its version rather than undoing the rollback.
    pub async fn rollback_with(
        &self,
        dataset: &str,
        to: &str,
        options: &ChangeOptions,
    ) -> Result<Option<Pointer>> {
        let moved = self
            .move_current(dataset, Some(to), Move::Rollback, options)
            .await?;
        Ok(moved.written)
    }

    /// Makes the staged version `version` current: a complete version newer than `CURRENT`
    /// (as [`Store::publish`] requires of a new one) that passes the dataset's policy against
    /// it ([`Error::Policy`] unless forced). Refused while the dataset is pinned.
    pub async fn promote(
        &self,
        dataset: &str,
        version: &str,
        options: &ChangeOptions,
    ) -> Result<Promoted> {
        let moved = self
            .move_current(dataset, Some(version), Move::Promote, options)
            .await?;
        Ok(Promoted {
            pointer: moved.written,
            checks: moved.checks,
        })
    }

    /// Pins `dataset` to `version` (moving `CURRENT` there first, if it names another complete
    /// version), or to the current version when `version` is `None`. While pinned, `publish`
    /// stages newer versions and `promote` refuses; `unpin` releases.
    pub async fn pin(&self, dataset: &str, version: Option<&str>, reason: &str) -> Result<Pointer> {
        let options = ChangeOptions {
            reason: Some(reason.to_owned()),
            pin: true,
            ..ChangeOptions::default()
        };
        let moved = self
            .move_current(dataset, version, Move::Pin, &options)
            .await?;
        Ok(moved.written.unwrap_or(moved.before))
    }

    /// Releases the pin of `dataset`. Returns the pointer written, or `None` if the dataset
    /// was not pinned (nothing is written then).
    pub async fn unpin(&self, dataset: &str, reason: Option<&str>) -> Result<Option<Pointer>> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        let current = self.existing_current(dataset).await?;
        if current.pointer.pin.is_none() {
            return Ok(None);
        }
        let mut pointer = Pointer::new(
            &current.pointer.version,
            current.pointer.previous.as_deref(),
            "unpin",
        );
        pointer.pin = None;
        self.swap_or_conflict(&paths, dataset, &pointer, &current, "unpinning")
            .await?;
        let v = Some(current.pointer.version.as_str());
        self.record(&paths, HistoryEntry::new("unpin", v, v, reason))
            .await;
        Ok(Some(pointer))
    }

    /// `CURRENT` of `dataset`, which must exist.
    async fn existing_current(&self, dataset: &str) -> Result<Current> {
        self.current(dataset).await?.ok_or_else(|| Error::NotFound {
            what: format!("CURRENT of {dataset} (nothing was published)"),
        })
    }

    /// Moves `CURRENT` to `to` (the current version when `None`) as `how` does.
    async fn move_current(
        &self,
        dataset: &str,
        to: Option<&str>,
        how: Move,
        options: &ChangeOptions,
    ) -> Result<Moved> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        if let Some(to) = to {
            check_name("version", to)?;
        }
        let current = self.existing_current(dataset).await?;
        let to = to.unwrap_or(&current.pointer.version).to_owned();
        let to = to.as_str();
        self.require_complete(&paths, dataset, to).await?;
        let was = current.pointer.version.clone();
        if how == Move::Promote {
            if let Some(pin) = &current.pointer.pin {
                return Err(Error::Refused {
                    reason: format!(
                        "{dataset} is pinned to {was} by {} since {} ({}): unpin it first",
                        pin.by, pin.at, pin.reason
                    ),
                });
            }
            if to < was.as_str() {
                return Err(Error::Refused {
                    reason: format!(
                        "version {to} of {dataset} is older than the current version {was}: \
                         promote makes newer versions current; use rollback to go back"
                    ),
                });
            }
        }
        let reason = options.reason.as_deref().unwrap_or(how.name());
        // A pin already on the target version stays as it is, unless `pin` gives a new reason.
        let pin = match &current.pointer.pin {
            Some(kept) if to == was && (how != Move::Pin || kept.reason == reason) => {
                Some(kept.clone())
            }
            kept if !options.pin => kept.clone(),
            _ => Some(Pin::new(reason)),
        };
        if to == was && pin == current.pointer.pin {
            return Ok(Moved {
                before: current.pointer,
                written: None,
                checks: None,
            });
        }
        let (checks, overridden) = if how == Move::Promote {
            let Checked { report, overridden } = self
                .check_policy(
                    dataset,
                    Some(&current),
                    Candidate::Stored { version: to },
                    &options.check,
                    options.reason.as_deref(),
                )
                .await?;
            (Some(report), overridden)
        } else {
            (None, Vec::new())
        };
        let previous = if to == was {
            current.pointer.previous.clone()
        } else {
            Some(was.clone())
        };
        let mut pointer = Pointer::new(to, previous.as_deref(), how.name());
        pointer.pin = pin;
        self.swap_or_conflict(&paths, dataset, &pointer, &current, how.doing())
            .await?;
        // gc deletes a manifest first and then checks CURRENT; a move writes CURRENT first
        // and then checks the manifest: one of the two sees the other.
        if !self.exists(&paths.manifest(to)).await? {
            if let Some(now) = self.current(dataset).await? {
                if now.pointer.nonce == pointer.nonce {
                    let mut back = Pointer::new(&was, Some(to), how.name());
                    back.pin = current.pointer.pin.clone();
                    self.swap_current(&paths, dataset, &back, Some(&now.tag))
                        .await?;
                }
            }
            return Err(Error::Conflict {
                reason: format!(
                    "version {to} of {dataset} was deleted while moving CURRENT to it; CURRENT \
                     was put back to {was}"
                ),
                current: Some(Box::new(current.pointer)),
            });
        }
        self.record(
            &paths,
            HistoryEntry::new(how.name(), Some(&was), Some(to), options.reason.as_deref())
                .overriding(overridden),
        )
        .await;
        Ok(Moved {
            before: current.pointer,
            written: Some(pointer),
            checks,
        })
    }

    /// Refuses a version that does not exist or is incomplete (no manifest).
    async fn require_complete(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        version: &str,
    ) -> Result<()> {
        let Err(e) = self.manifest(dataset, version).await else {
            return Ok(());
        };
        if !e.is_not_found() {
            return Err(e);
        }
        let objects = self.list_version(paths, version).await?;
        Err(if objects.is_empty() {
            Error::NotFound {
                what: format!("version {version} of {dataset}"),
            }
        } else {
            Error::Refused {
                reason: format!(
                    "version {version} of {dataset} is incomplete (it has no manifest): only \
                     complete versions can be made current"
                ),
            }
        })
    }

    /// Swaps `CURRENT` from `current` to `pointer`, or fails naming who moved it meanwhile.
    async fn swap_or_conflict(
        &self,
        paths: &DatasetPaths,
        dataset: &str,
        pointer: &Pointer,
        current: &Current,
        doing: &str,
    ) -> Result<()> {
        if let Swap::Done = self
            .swap_current(paths, dataset, pointer, Some(&current.tag))
            .await?
        {
            return Ok(());
        }
        let now = self.current(dataset).await?;
        Err(Error::Conflict {
            reason: format!(
                "CURRENT of {dataset} moved to {} while {doing} from {}: nothing was changed; \
                 check the versions and try again",
                now.as_ref()
                    .map_or("nothing", |c| c.pointer.version.as_str()),
                current.pointer.version
            ),
            current: now.map(|c| Box::new(c.pointer)),
        })
    }
}
