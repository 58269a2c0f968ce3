//! The JSON documents of the layout: `MANIFEST.json`, `CURRENT` and `PUBLISHING.json`, and
//! reading a version's manifest from the store.

use crate::error::{Error, Result};
use crate::layout::{check_file_name, check_name, DatasetPaths};
use crate::objects::Cap;
use crate::Store;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The manifest schema this crate writes; it reads this one and older.
pub(crate) const MANIFEST_VERSION: u32 = 1;
/// The `CURRENT` schema this crate writes; it reads this one and older.
pub(crate) const POINTER_VERSION: u32 = 1;

/// `MANIFEST.json` of a version: what a complete version holds. Written once, after every file
/// was uploaded and checked; never modified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Manifest {
    /// Schema of this document (1).
    pub manifest_version: u32,
    /// The dataset.
    pub dataset: String,
    /// The version.
    pub version: String,
    /// When the manifest was written (RFC 3339, UTC): the time the version became complete.
    pub created_at: String,
    /// The snapshot format version of every file.
    pub format_version: u32,
    /// Who published it: `snapkv-store <version> on <host> (pid <pid>)`.
    pub published_by: String,
    /// The snapshot files, in the order given to `publish`; for a sharded version, in shard
    /// order (file `i` is shard `i`).
    pub files: Vec<ManifestFile>,
    /// Present when the files are range shards of one key space (see [`Sharding`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharding: Option<Sharding>,
}

/// How the files of a sharded version split the key space: shard `i` holds the keys `k` with
/// `split_keys[i - 1] <= k < split_keys[i]` (no lower bound for the first shard, no upper bound
/// for the last). `spec/STORE.md` ("Sharded versions") specifies the routing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Sharding {
    /// `range`: the only scheme.
    pub scheme: String,
    /// Number of shards: the number of files.
    pub shards: u32,
    /// The `shards - 1` split keys, non-decreasing, each in standard base64 (padded).
    pub split_keys: Vec<String>,
}

impl Sharding {
    /// Range sharding at `split_keys` (in order).
    pub fn range(split_keys: &[impl AsRef<[u8]>]) -> Sharding {
        use base64::Engine;
        Sharding {
            scheme: "range".into(),
            shards: u32::try_from(split_keys.len() + 1).unwrap_or(u32::MAX),
            split_keys: split_keys
                .iter()
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k))
                .collect(),
        }
    }

    /// The split keys as bytes; `None` if one is not base64.
    pub fn split_key_bytes(&self) -> Option<Vec<Vec<u8>>> {
        use base64::Engine;
        self.split_keys
            .iter()
            .map(|k| base64::engine::general_purpose::STANDARD.decode(k).ok())
            .collect()
    }

    /// Why it does not describe `files` files, if it does not.
    fn check(&self, files: usize) -> std::result::Result<(), String> {
        if self.scheme != "range" {
            return Err(format!(
                "sharding scheme {:?} (this program knows range)",
                self.scheme
            ));
        }
        if self.shards as usize != files {
            return Err(format!("{} shards but {files} files", self.shards));
        }
        if self.split_keys.len() + 1 != files {
            return Err(format!(
                "{} split keys for {files} shards",
                self.split_keys.len()
            ));
        }
        let keys = self.split_key_bytes().ok_or("a split key is not base64")?;
        if let Some(i) = (1..keys.len()).find(|&i| keys[i] < keys[i - 1]) {
            return Err(format!("split key {i} sorts before split key {}", i - 1));
        }
        Ok(())
    }
}

/// One snapshot file of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ManifestFile {
    /// File name inside the version folder (and inside a cache's version directory).
    pub name: String,
    /// Size in bytes.
    pub bytes: u64,
    /// XXH3-64 of the whole file, 16 lowercase hex digits.
    pub xxh3: String,
    /// Number of keys.
    pub keys: u64,
    /// When the snapshot was built (its metadata's `created_at`), if recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built_at: Option<String>,
    /// The builder parameters from the snapshot's metadata.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builder: BTreeMap<String, serde_json::Value>,
}

impl Manifest {
    /// Total size of the files. A manifest read from a store was checked to have a total that
    /// fits in a `u64`; one built or changed otherwise saturates at `u64::MAX`.
    pub fn total_bytes(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |total, f| total.saturating_add(f.bytes))
    }

    /// Total number of keys. A manifest read from a store was checked to have a total that
    /// fits in a `u64`; one built or changed otherwise saturates at `u64::MAX`.
    pub fn total_keys(&self) -> u64 {
        self.files
            .iter()
            .fold(0u64, |total, f| total.saturating_add(f.keys))
    }

    /// The file called `name`.
    pub fn file(&self, name: &str) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Parses and checks a manifest read from `what` for `dataset`/`version`.
    pub(crate) fn parse(
        bytes: &[u8],
        what: &str,
        dataset: &str,
        version: &str,
    ) -> Result<Manifest> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: what.to_owned(),
            detail: "not a manifest".into(),
            source: Some(Box::new(e)),
        })?;
        let bad = |detail: String| Err(Error::corrupt(what, detail));
        if m.manifest_version == 0 || m.manifest_version > MANIFEST_VERSION {
            return bad(format!(
                "manifest_version {} (this program reads 1 to {MANIFEST_VERSION})",
                m.manifest_version
            ));
        }
        if m.dataset != dataset || m.version != version {
            return bad(format!(
                "it describes {}/{}, not {dataset}/{version}",
                m.dataset, m.version
            ));
        }
        if m.files.is_empty() {
            return bad("it lists no file".into());
        }
        if let Some(s) = &m.sharding {
            if let Err(e) = s.check(m.files.len()) {
                return bad(format!("bad sharding: {e}"));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for f in &m.files {
            if check_file_name(&f.name).is_err() || !names.insert(f.name.as_str()) {
                return bad(format!("bad or repeated file name {:?}", f.name));
            }
            if parse_xxh3(&f.xxh3).is_none() {
                return bad(format!("bad checksum {:?} of {}", f.xxh3, f.name));
            }
        }
        // The numbers are untrusted: their totals must be representable.
        let fits = |field: fn(&ManifestFile) -> u64| {
            m.files
                .iter()
                .try_fold(0u64, |total, f| total.checked_add(field(f)))
                .is_some()
        };
        if !fits(|f| f.bytes) {
            return bad("the files' sizes add up to more than 2^64 - 1 bytes".into());
        }
        if !fits(|f| f.keys) {
            return bad("the files' key counts add up to more than 2^64 - 1".into());
        }
        Ok(m)
    }
}

impl Store {
    /// Reads and checks `MANIFEST.json` of a version. [`Error::NotFound`] if the version has
    /// none (it does not exist, or is incomplete); [`Error::Corrupt`] if it does not parse, does
    /// not describe this version, or is over
    /// [`MAX_MANIFEST_BYTES`](crate::MAX_MANIFEST_BYTES) (it is not read past the limit).
    pub async fn manifest(&self, dataset: &str, version: &str) -> Result<Manifest> {
        let paths = DatasetPaths::new(&self.root, dataset)?;
        check_name("version", version)?;
        let path = paths.manifest(version);
        let Some(bytes) = self.get_small(&path, Cap::MANIFEST).await? else {
            return Err(Error::NotFound {
                what: format!("complete version {version} of {dataset}"),
            });
        };
        Manifest::parse(
            &bytes,
            &format!("manifest of {dataset}/{version}"),
            dataset,
            version,
        )
    }
}

/// The content of `CURRENT`: which version readers serve. Every write carries a fresh
/// `nonce`, so no two writes have the same bytes, and an ETag (a content hash on S3) names
/// one write only: compare-and-swap on it cannot be fooled by an old value coming back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pointer {
    /// Schema of this document (1).
    pub pointer_version: u32,
    /// The current version.
    pub version: String,
    /// The version this write replaced, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// What wrote it: `publish`, `promote`, `rollback`, `pin` or `unpin`.
    pub reason: String,
    /// When it was written (RFC 3339, UTC).
    pub updated_at: String,
    /// Who wrote it: `snapkv-store <version> on <host> (pid <pid>)`.
    pub updated_by: String,
    /// Random, unique per write.
    pub nonce: String,
    /// Set while the dataset is pinned to `version`: `publish` stages newer versions instead
    /// of making them current, and `promote` refuses, until `unpin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<Pin>,
}

/// Why and by whom a dataset is pinned (see [`Pointer::pin`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Pin {
    /// Why, in the words of whoever pinned it.
    pub reason: String,
    /// Who: `user@host`.
    pub by: String,
    /// When (RFC 3339, UTC).
    pub at: String,
}

impl Pin {
    pub(crate) fn new(reason: &str) -> Pin {
        Pin {
            reason: reason.to_owned(),
            by: user_at_host(),
            at: crate::layout::now_rfc3339(),
        }
    }
}

impl Pointer {
    pub(crate) fn new(version: &str, previous: Option<&str>, reason: &str) -> Pointer {
        Pointer {
            pointer_version: POINTER_VERSION,
            version: version.to_owned(),
            previous: previous.map(str::to_owned),
            reason: reason.to_owned(),
            updated_at: crate::layout::now_rfc3339(),
            updated_by: identity(),
            nonce: nonce(),
            pin: None,
        }
    }

    pub(crate) fn parse(bytes: &[u8], what: &str) -> Result<Pointer> {
        let p: Pointer = serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
            what: what.to_owned(),
            detail: "not a CURRENT pointer".into(),
            source: Some(Box::new(e)),
        })?;
        if p.pointer_version == 0 || p.pointer_version > POINTER_VERSION {
            return Err(Error::corrupt(
                what,
                format!(
                    "pointer_version {} (this program reads 1 to {POINTER_VERSION})",
                    p.pointer_version
                ),
            ));
        }
        check_name("version", &p.version).map_err(|_| {
            Error::corrupt(what, format!("it names an invalid version {:?}", p.version))
        })?;
        Ok(p)
    }
}

/// `PUBLISHING.json`: the claim a publisher creates (create-if-absent) before uploading into a
/// version folder, and refreshes while it uploads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Claim {
    pub version: String,
    pub started_at: String,
    pub heartbeat_at: String,
    pub by: String,
    pub nonce: String,
}

/// This machine's host name.
fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .unwrap_or_else(|| "unknown-host".into())
}

/// `snapkv-store <version> on <host> (pid <pid>)`.
pub(crate) fn identity() -> String {
    format!(
        "snapkv-store {} on {} (pid {})",
        env!("CARGO_PKG_VERSION"),
        host(),
        std::process::id()
    )
}

/// The pid of the process an [`identity`] names, when that process was on this host and no
/// longer runs (on systems with `/proc`): its claim was abandoned.
pub(crate) fn gone_from_this_host(identity: &str) -> Option<u32> {
    let (rest, pid) = identity.strip_suffix(')')?.rsplit_once(" (pid ")?;
    let (_, on) = rest.rsplit_once(" on ")?;
    let pid: u32 = pid.parse().ok()?;
    let proc = std::path::Path::new("/proc");
    (on == host() && proc.join("self").exists() && !proc.join(pid.to_string()).exists())
        .then_some(pid)
}

/// `<user>@<host>`: the user from `SNAPKV_USER`, else `USER`, `LOGNAME` or `USERNAME`.
pub(crate) fn user_at_host() -> String {
    let user = ["SNAPKV_USER", "USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()))
        .unwrap_or_else(|| "unknown-user".into());
    format!("{}@{}", user.trim(), host())
}

/// 128 random bits as hex, from the standard library's randomly seeded hasher, the clock, the
/// process id and a counter.
pub(crate) fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut parts = [0u64; 2];
    for part in &mut parts {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        h.write_u128(now.as_nanos());
        *part = h.finish();
    }
    format!("{:016x}{:016x}", parts[0], parts[1])
}

/// Formats an XXH3-64 checksum as the manifest stores it.
pub(crate) fn format_xxh3(v: u64) -> String {
    format!("{v:016x}")
}

/// Parses a manifest checksum: exactly 16 lowercase hex digits.
pub(crate) fn parse_xxh3(s: &str) -> Option<u64> {
    if s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(s, 16).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            manifest_version: 1,
            dataset: "scores".into(),
            version: "v1".into(),
            created_at: "2026-11-27T03:15:00.000Z".into(),
            format_version: 1,
            published_by: identity(),
            files: vec![ManifestFile {
                name: "a.snapkv".into(),
                bytes: 10,
                xxh3: format_xxh3(0xabc),
                keys: 2,
                built_at: None,
                builder: BTreeMap::new(),
            }],
            sharding: None,
        }
    }

    #[test]
    fn manifest_round_trip_and_checks() {
        let m = manifest();
        let bytes = serde_json::to_vec(&m).unwrap();
        assert_eq!(Manifest::parse(&bytes, "m", "scores", "v1").unwrap(), m);
        assert!(matches!(
            Manifest::parse(&bytes, "m", "scores", "v2"),
            Err(Error::Corrupt { .. })
        ));
        let mut newer = m.clone();
        newer.manifest_version = 2;
        let bytes = serde_json::to_vec(&newer).unwrap();
        assert!(Manifest::parse(&bytes, "m", "scores", "v1").is_err());
        let mut dup = m.clone();
        dup.files.push(dup.files[0].clone());
        let bytes = serde_json::to_vec(&dup).unwrap();
        assert!(Manifest::parse(&bytes, "m", "scores", "v1").is_err());
        let mut bad_sum = m;
        bad_sum.files[0].xxh3 = "ABC".into();
        let bytes = serde_json::to_vec(&bad_sum).unwrap();
        assert!(Manifest::parse(&bytes, "m", "scores", "v1").is_err());
    }

    #[test]
    fn totals_that_overflow_are_corrupt() {
        let mut m = manifest();
        let mut second = m.files[0].clone();
        second.name = "b.snapkv".into();
        m.files.push(second);
        let parse = |m: &Manifest| {
            let bytes = serde_json::to_vec(m).unwrap();
            Manifest::parse(&bytes, "m", "scores", "v1")
        };
        m.files[0].bytes = u64::MAX - 10;
        m.files[1].bytes = 10;
        assert_eq!(parse(&m).unwrap().total_bytes(), u64::MAX);

        m.files[0].bytes = u64::MAX;
        m.files[1].bytes = u64::MAX;
        let e = parse(&m).unwrap_err();
        assert!(matches!(e, Error::Corrupt { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "m is corrupt: the files' sizes add up to more than 2^64 - 1 bytes"
        );
        // Built by hand rather than parsed: the totals saturate instead of overflowing.
        assert_eq!(m.total_bytes(), u64::MAX);

        m.files[0].bytes = 1;
        m.files[1].bytes = 1;
        m.files[0].keys = u64::MAX;
        m.files[1].keys = 1;
        let e = parse(&m).unwrap_err();
        assert!(e.to_string().contains("key counts add up"), "{e}");
        assert_eq!(m.total_keys(), u64::MAX);
    }

    #[test]
    fn pointers_differ_per_write() {
        let a = Pointer::new("v1", None, "publish");
        let b = Pointer::new("v1", None, "publish");
        assert_ne!(a.nonce, b.nonce);
        let bytes = serde_json::to_vec(&a).unwrap();
        assert_eq!(Pointer::parse(&bytes, "CURRENT").unwrap(), a);
        assert!(Pointer::parse(b"{}", "CURRENT").is_err());
    }

    #[test]
    fn checksums() {
        assert_eq!(parse_xxh3(&format_xxh3(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_xxh3("000000000000000g"), None);
        assert_eq!(parse_xxh3("0"), None);
    }
}
