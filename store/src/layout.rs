//! Where things live in the store, and which names are acceptable.

use crate::error::{Error, Result};
use object_store::path::Path as ObjectPath;

/// The pointer object, per dataset.
pub(crate) const CURRENT: &str = "CURRENT";
/// The lock file of compare-and-swap on local directories, per dataset.
pub(crate) const CURRENT_LOCK: &str = "CURRENT.lock";
/// The folder of versions, per dataset.
pub(crate) const VERSIONS: &str = "versions";
/// Written last into a version folder: its presence makes the version complete.
pub(crate) const MANIFEST: &str = "MANIFEST.json";
/// Written first into a version folder (create-if-absent): the publisher's claim.
pub(crate) const CLAIM: &str = "PUBLISHING.json";
/// Names the newest staged version, for readers that preview staged versions.
pub(crate) const STAGED: &str = "STAGED";
/// The most bytes a `STAGED` object may have (it is a few hundred bytes).
pub const MAX_STAGED_BYTES: u64 = 64 << 10;
/// The dataset's policy: rules checked before a version becomes current.
pub(crate) const POLICY: &str = "POLICY.json";
/// The folder of the audit log, per dataset: one object per entry, named by its sequence number.
pub(crate) const HISTORY: &str = "history";
/// Digits of a history entry's sequence number in its object name (zero-padded, so that names
/// sort as numbers).
const HISTORY_DIGITS: usize = 20;

/// The most bytes a `CURRENT` object may have. A pointer is a few hundred bytes; a larger
/// object is refused as corrupt without being read.
pub const MAX_CURRENT_BYTES: u64 = 64 << 10;
/// The most bytes a `PUBLISHING.json` claim may have (it is a few hundred bytes).
pub const MAX_CLAIM_BYTES: u64 = 64 << 10;
/// The most bytes a `MANIFEST.json` may have: room for thousands of files with their builder
/// parameters (about 1 KiB each). Publish refuses to write a larger manifest, and readers
/// refuse to read one.
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
/// The most bytes a history entry may have (a few hundred bytes, and a reason of up to 4 KiB).
pub const MAX_HISTORY_ENTRY_BYTES: u64 = 64 << 10;

/// The most bytes a `POLICY.json` may have: room for the most required keys allowed.
pub const MAX_POLICY_BYTES: u64 = 64 << 20;

/// Checks a dataset, version or file name ([`snapkv_format::names::check_name`]): safe as
/// object keys and file names everywhere, and sorting bytewise the way they read.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    snapkv_format::names::check_name(name).map_err(|detail| Error::invalid(what, detail))
}

/// The object name of file `name`'s block list: a name no file can have (file names start
/// with a letter or digit).
pub(crate) fn block_list_name(name: &str) -> String {
    format!(".{name}.blocks")
}

/// Checks a snapshot file name inside a version: a name, and not one the layout reserves.
pub(crate) fn check_file_name(name: &str) -> Result<()> {
    check_name("file name", name)?;
    if name == MANIFEST || name == CLAIM {
        return Err(Error::invalid(
            "file name",
            format!("{name:?} is reserved by the store layout"),
        ));
    }
    Ok(())
}

/// Paths of one dataset under a store's root.
#[derive(Debug, Clone)]
pub(crate) struct DatasetPaths {
    dataset: ObjectPath,
}

impl DatasetPaths {
    pub(crate) fn new(root: &ObjectPath, dataset: &str) -> Result<DatasetPaths> {
        check_name("dataset name", dataset)?;
        Ok(DatasetPaths {
            dataset: root.clone().join(dataset),
        })
    }

    /// The dataset's folder.
    pub(crate) fn folder(&self) -> ObjectPath {
        self.dataset.clone()
    }

    pub(crate) fn current(&self) -> ObjectPath {
        self.dataset.clone().join(CURRENT)
    }

    pub(crate) fn versions(&self) -> ObjectPath {
        self.dataset.clone().join(VERSIONS)
    }

    pub(crate) fn version(&self, version: &str) -> ObjectPath {
        self.versions().join(version)
    }

    pub(crate) fn manifest(&self, version: &str) -> ObjectPath {
        self.version(version).join(MANIFEST)
    }

    pub(crate) fn claim(&self, version: &str) -> ObjectPath {
        self.version(version).join(CLAIM)
    }

    pub(crate) fn file(&self, version: &str, name: &str) -> ObjectPath {
        self.version(version).join(name)
    }

    /// The block list of file `name` (`spec/STORE.md`, "Block lists").
    pub(crate) fn block_list(&self, version: &str, name: &str) -> ObjectPath {
        self.version(version).join(block_list_name(name))
    }

    pub(crate) fn staged(&self) -> ObjectPath {
        self.dataset.clone().join(STAGED)
    }

    pub(crate) fn policy(&self) -> ObjectPath {
        self.dataset.clone().join(POLICY)
    }

    pub(crate) fn history(&self) -> ObjectPath {
        self.dataset.clone().join(HISTORY)
    }

    pub(crate) fn history_entry(&self, seq: u64) -> ObjectPath {
        self.history()
            .join(format!("{seq:0width$}.json", width = HISTORY_DIGITS))
    }
}

/// The sequence number of a history entry's object name, if it is one.
pub(crate) fn history_seq(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != HISTORY_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The default version: the current UTC time as `YYYYMMDDTHHMMSSZ`.
pub(crate) fn default_version() -> String {
    chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string()
}

/// The current UTC time, RFC 3339 with milliseconds.
pub(crate) fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["a", "20261127T031500Z", "v1.2-rc_3", &"x".repeat(128)] {
            check_name("version", ok).unwrap();
        }
        for bad in [
            "",
            ".hidden",
            "-x",
            "a/b",
            "a b",
            "é",
            &"x".repeat(129),
            "..",
            "_x",
        ] {
            assert!(check_name("version", bad).is_err(), "{bad:?}");
        }
        assert!(check_file_name("MANIFEST.json").is_err());
        assert!(check_file_name("PUBLISHING.json").is_err());
        check_file_name("part-0.snapkv").unwrap();
    }

    #[test]
    fn default_version_sorts_by_time() {
        let v = default_version();
        assert_eq!(v.len(), 16, "{v}");
        assert!(v.ends_with('Z') && v.as_bytes()[8] == b'T', "{v}");
        check_name("version", &v).unwrap();
    }

    #[test]
    fn paths() {
        let p = DatasetPaths::new(&ObjectPath::from("root/prefix"), "scores").unwrap();
        assert_eq!(p.current().as_ref(), "root/prefix/scores/CURRENT");
        assert_eq!(
            p.manifest("v1").as_ref(),
            "root/prefix/scores/versions/v1/MANIFEST.json"
        );
        let p = DatasetPaths::new(&ObjectPath::default(), "scores").unwrap();
        assert_eq!(
            p.file("v1", "a.snapkv").as_ref(),
            "scores/versions/v1/a.snapkv"
        );
        let entry = p.history_entry(42);
        assert_eq!(entry.as_ref(), "scores/history/00000000000000000042.json");
        assert_eq!(history_seq(entry.filename().unwrap()), Some(42));
        assert_eq!(history_seq(&format!("{}.json", u64::MAX)), Some(u64::MAX));
        for bad in [
            "42.json",
            "0000000000000000004x.json",
            "00000000000000000042.txt",
        ] {
            assert_eq!(history_seq(bad), None, "{bad}");
        }
    }
}
