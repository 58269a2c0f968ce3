//! One conformance suite, run against every backend: in memory, a local directory, and a real
//! S3-compatible server over HTTP (started by `./scripts/test`; without it the S3 tests fail).

mod common;

use common::{Backend, Env};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, PutPayload};
use snapkv_format::{Metadata, Shards, Snapshot, SnapshotWriter, WriterOptions};
use snapkv_store::{
    Cache, Error, FetchOptions, GcOptions, Poll, PublishOptions, Store, MAX_CLAIM_BYTES,
    MAX_CURRENT_BYTES, MAX_MANIFEST_BYTES,
};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

macro_rules! conformance {
    ($($test:ident),* $(,)?) => {
        mod memory {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Memory).await })*
        }
        mod local {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::Local).await })*
        }
        mod s3 {
            $(#[tokio::test] async fn $test() { super::$test(super::Backend::S3).await })*
        }
    };
}

conformance!(
    publish_list_and_current,
    multipart_upload_round_trip,
    version_defaults_to_metadata_and_mismatches_are_refused,
    refuses_versions_not_newer_and_existing,
    refuses_corrupt_input,
    file_changed_during_publish_is_refused_and_cleaned_up,
    rollback_moves_current,
    gc_keeps_window_and_current,
    racing_publishers_of_different_versions,
    racing_publishers_of_the_same_version,
    interrupted_upload_leaves_current_and_gc_cleans_it,
    poll_current_is_conditional,
    fetch_verifies_and_caches,
    fetch_refuses_corrupt_object,
    fetch_refuses_invalid_snapshot_with_matching_manifest,
    fetch_resumes_partial_download,
    fetch_bandwidth_limit,
    datasets_are_the_folders_with_current_or_versions,
    oversized_small_objects_are_corrupt,
    publish_refuses_a_manifest_over_the_limit,
    history_entries_of_racing_writers_all_land,
    racing_policy_updates_all_land,
    sharded_commit_of_concurrent_retried_uploads,
    delta_fetch_reuses_cached_blocks,
    delta_fetch_reuses_blocks_across_files,
    delta_fetch_falls_back_on_bad_bytes,
    lazy_open_reads_blocks_on_demand_then_completes,
    lazy_open_never_keeps_a_bad_block,
    delta_fetch_plans_from_the_block_list_or_the_table,
);

/// A shard file with `keys` (JSON values naming the key), marked as shard `i` of `n`.
fn shard_file(env: &Env, name: &str, keys: &[String], shard: Option<(u32, u32)>) -> PathBuf {
    let mut meta = Metadata::default();
    if let Some((i, n)) = shard {
        meta.builder
            .insert("shard".into(), serde_json::json!({"index": i, "count": n}));
    }
    let mut w = SnapshotWriter::new(Vec::new(), WriterOptions::default(), meta).unwrap();
    for k in keys {
        w.insert(k.as_bytes(), format!("{{\"k\":\"{k}\"}}").as_bytes())
            .unwrap();
    }
    let path = env.path(name);
    std::fs::write(&path, w.finish().unwrap().0).unwrap();
    path
}

/// The attempt id of the uploads that die before their receipt. Attempt ids are random hex:
/// tests look for this whole id, as any four hex digits may occur in one.
const DEAD: &str = "00000000dead0000";

/// 100 shards uploaded at once by independent uploaders: some upload twice (a retry, a
/// speculative copy), some die after the file and before the receipt. A commit before every
/// shard is in refuses, naming what is missing; then two racing commits end in one version
/// whose manifest lists one attempt per shard, in key order, that a reader fetches and routes.
async fn sharded_commit_of_concurrent_retried_uploads(backend: Backend) {
    const N: u32 = 100;
    let env = Env::new(backend, "shards");
    let store = env.store();
    let keys = |i: u32| -> Vec<String> { (0..3).map(|j| format!("k{i:03}-{j}")).collect() };
    let files: Vec<PathBuf> = (0..N)
        .map(|i| shard_file(&env, &format!("s{i}.snapkv"), &keys(i), Some((i, N))))
        .collect();
    let options = PublishOptions::default();
    // Shards 90.. die before their receipt: their file is there, nothing else.
    let (objects, root) = store.raw_objects();
    for i in 90..N {
        let path = root
            .clone()
            .join("ds")
            .join("versions")
            .join("v1")
            .join(format!("shard-{i:05}-of-{N:05}.{DEAD}.snapkv"));
        objects
            .put(&path, std::fs::read(&files[i as usize]).unwrap().into())
            .await
            .unwrap();
    }
    // The others upload concurrently; every tenth twice.
    let uploads = (0..90u32).chain((0..90).step_by(10)).map(|i| {
        let (store, file, options) = (&store, files[i as usize].clone(), &options);
        async move {
            store
                .publish_shard("ds", &file, (i, N), "v1", options)
                .await
        }
    });
    let receipts = futures_util::future::join_all(uploads).await;
    for r in &receipts {
        r.as_ref().unwrap();
    }
    let e = store.commit("ds", "v1", N, &options).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("shard(s) 90, 91, 92, 93, 94, 95, 96, 97, 98, 99 of 100"),
        "{e}"
    );
    assert!(store.current("ds").await.unwrap().is_none());
    // The dead tasks are retried.
    for i in 90..N {
        store
            .publish_shard("ds", &files[i as usize], (i, N), "v1", &options)
            .await
            .unwrap();
    }
    // A wrong shard number is refused before anything is written.
    let e = store
        .publish_shard("ds", &files[3], (4, N), "v1", &options)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("built as shard 3/100"), "{e}");
    let other = env.store();
    let (a, b) = futures_util::join!(
        store.commit("ds", "v1", N, &options),
        other.commit("ds", "v1", N, &options)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.manifest, b.manifest);
    let m = store.manifest("ds", "v1").await.unwrap();
    assert_eq!(m.files.len(), N as usize);
    assert_eq!(m.total_keys(), u64::from(N) * 3);
    for (i, f) in m.files.iter().enumerate() {
        assert!(
            f.name.starts_with(&format!("shard-{i:05}-of-00100.")),
            "{}",
            f.name
        );
        assert!(
            !f.name.contains(DEAD),
            "a file without a receipt was committed"
        );
        // Of two attempts, the smaller id.
        let attempts: Vec<&String> = receipts
            .iter()
            .map(|r| r.as_ref().unwrap())
            .filter(|r| r.shard as usize == i)
            .map(|r| &r.attempt)
            .collect();
        if let Some(min) = attempts.iter().min() {
            assert!(
                f.name.contains(min.as_str()),
                "{} is not attempt {min}",
                f.name
            );
        }
    }
    let splits = m.sharding.as_ref().unwrap().split_key_bytes().unwrap();
    assert_eq!(splits.len(), N as usize - 1);
    assert_eq!(splits[0], b"k001-0");
    assert_eq!(current_version(&store).await.as_deref(), Some("v1"));
    let history = store.history("ds", None).await.unwrap();
    assert_eq!(history.len(), 1, "one commit moved CURRENT");

    // Read back as one version: every key from its shard.
    let cache = Cache::new(env.path("cache"));
    let local = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap();
    let snapshots = local
        .paths()
        .iter()
        .map(|p| Snapshot::open(std::fs::read(p).unwrap()).unwrap())
        .collect();
    let shards = Shards::new(snapshots, splits.into_iter().map(Into::into).collect()).unwrap();
    for i in 0..N {
        for k in keys(i) {
            assert_eq!(
                shards.get(k.as_bytes()).unwrap().as_deref(),
                Some(format!("{{\"k\":\"{k}\"}}").as_bytes())
            );
        }
    }
    // gc keeps the version and deletes the attempts it does not list.
    let mut gc = GcOptions::default();
    gc.keep = 1;
    gc.grace = std::time::Duration::ZERO;
    let report = store.gc("ds", &gc).await.unwrap();
    assert_eq!(report.kept, ["v1"]);
    assert!(
        report.unreferenced.iter().any(|o| o.contains(DEAD)),
        "{report:?}"
    );
    let prefix = root.clone().join("ds").join("versions").join("v1");
    let left: Vec<_> =
        futures_util::TryStreamExt::try_collect::<Vec<_>>(objects.list(Some(&prefix)))
            .await
            .unwrap();
    assert_eq!(
        left.len(),
        2 * N as usize + 1,
        "the manifest, and one file per shard with its block list"
    );

    // Shards whose key ranges overlap are refused.
    let x = shard_file(&env, "x0.snapkv", &["a".into(), "m".into()], Some((0, 2)));
    let y = shard_file(&env, "x1.snapkv", &["k".into(), "z".into()], Some((1, 2)));
    store
        .publish_shard("ds", &x, (0, 2), "v2", &options)
        .await
        .unwrap();
    store
        .publish_shard("ds", &y, (1, 2), "v2", &options)
        .await
        .unwrap();
    let e = store.commit("ds", "v2", 2, &options).await.unwrap_err();
    assert!(e.to_string().contains("overlap"), "{e}");
}

/// Writers that change a dataset's policy at the same moment each see their change kept:
/// the read-modify-write starts over when another write came first.
async fn racing_policy_updates_all_land(backend: Backend) {
    let env = Env::new(backend, "policy-race");
    let stores: Vec<Store> = (0..4).map(|_| env.store()).collect();
    assert_eq!(stores[0].policy("ds").await.unwrap(), None);
    let keys = ["k0", "k1", "k2", "k3"];
    let results = futures_util::future::join_all(stores.iter().zip(keys).map(|(s, k)| {
        s.update_policy("ds", Some(k), move |r| {
            r.set(&format!("required_keys+={k}"))
        })
    }))
    .await;
    for r in results {
        r.unwrap();
    }
    let policy = env.store().policy("ds").await.unwrap().unwrap();
    let mut required = policy.rules.required_keys.clone();
    required.sort_unstable();
    assert_eq!(required, keys);
    // Started from the recommended rules.
    assert_eq!(policy.rules.max_key_drop, Some(0.5));
    let history = env.store().history("ds", None).await.unwrap();
    assert_eq!(history.len(), 4);
    assert!(history.iter().all(|e| e.action == "policy"));
    // A bad edit writes nothing.
    let e = stores[0]
        .update_policy("ds", None, |r| r.set("max_key_drop=7"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert_eq!(env.store().policy("ds").await.unwrap().unwrap(), policy);
}

/// Writers that append to a dataset's history at the same moment each get their own entry:
/// create-if-absent hands every sequence number to one writer only.
async fn history_entries_of_racing_writers_all_land(backend: Backend) {
    let env = Env::new(backend, "history-race");
    let f = env.snapshot("a.snapkv", 1_000, 1);
    let stores: Vec<Store> = (0..4).map(|_| env.store()).collect();
    let versions = ["v1", "v2", "v3", "v4"];
    let results = futures_util::future::join_all(stores.iter().zip(versions).map(|(s, v)| {
        let f = f.clone();
        async move {
            let mut options = version(v);
            options.stage = true;
            options.reason = Some(format!("stage {v}"));
            s.publish("ds", &[f], &options).await
        }
    }))
    .await;
    for r in &results {
        assert!(r.as_ref().unwrap().staged);
    }
    let store = env.store();
    assert!(store.current("ds").await.unwrap().is_none());
    let history = store.history("ds", None).await.unwrap();
    assert_eq!(
        history.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    let mut staged: Vec<&str> = history.iter().map(|e| e.to.as_deref().unwrap()).collect();
    staged.sort_unstable();
    assert_eq!(staged, versions);
    assert!(history.iter().all(|e| e.action == "stage"
        && e.reason.as_deref() == Some(&format!("stage {}", e.to.as_deref().unwrap())[..])));
    assert_eq!(store.history("ds", Some(1)).await.unwrap(), history[3..]);
}

fn version(v: &str) -> PublishOptions {
    let mut o = PublishOptions::default();
    o.version = Some(v.to_owned());
    o
}

async fn publish<P: AsRef<std::path::Path>>(
    store: &Store,
    files: &[P],
    v: &str,
) -> snapkv_store::Published {
    store.publish("ds", files, &version(v)).await.unwrap()
}

async fn current_version(store: &Store) -> Option<String> {
    store
        .current("ds")
        .await
        .unwrap()
        .map(|c| c.pointer.version)
}

/// Rewrites a stored object through the backend itself, as bit rot or a stray writer would.
async fn tamper(store: &Store, key: &str, f: impl FnOnce(&mut Vec<u8>)) {
    let (objects, root) = store.raw_objects();
    let path = ObjectPath::from(format!("{}/{key}", root.as_ref()).trim_start_matches('/'));
    let mut bytes = objects
        .get(&path)
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec();
    f(&mut bytes);
    objects.put(&path, PutPayload::from(bytes)).await.unwrap();
}

async fn publish_list_and_current(backend: Backend) {
    let env = Env::new(backend, "publish");
    let store = env.store();
    assert_eq!(store.current("ds").await.unwrap(), None);
    assert!(store.versions("ds").await.unwrap().is_empty());

    let a = env.snapshot("a.snapkv", 50_000, 1);
    let b = env.snapshot("b.snapkv", 20_000, 2);
    let published = publish(&store, &[&a, &b], "v1").await;
    assert_eq!(published.previous, None);
    let m = &published.manifest;
    assert_eq!((m.dataset.as_str(), m.version.as_str()), ("ds", "v1"));
    assert_eq!(m.files.len(), 2);
    assert_eq!(m.files[0].name, "a.snapkv");
    assert_eq!(m.files[0].bytes, std::fs::metadata(&a).unwrap().len());
    assert_eq!(m.files[0].keys, 50);
    assert_eq!(m.total_keys(), 70);
    assert_eq!(m.format_version, snapkv_format::FORMAT_VERSION);
    assert_eq!(store.manifest("ds", "v1").await.unwrap(), *m);

    let current = store.current("ds").await.unwrap().unwrap();
    assert_eq!(current.pointer.version, "v1");
    assert_eq!(current.pointer.reason, "publish");
    assert_eq!(current.pointer.previous, None);

    let published = publish(&store, &[&a], "v2").await;
    assert_eq!(published.previous.as_deref(), Some("v1"));
    let versions = store.versions("ds").await.unwrap();
    let listed: Vec<_> = versions
        .iter()
        .map(|v| (v.version.as_str(), v.current, v.manifest.is_some()))
        .collect();
    assert_eq!(listed, [("v1", false, true), ("v2", true, true)]);
    // Another handle sees the same state; other datasets are separate.
    assert_eq!(current_version(&env.store()).await.as_deref(), Some("v2"));
    assert_eq!(env.store().current("other").await.unwrap(), None);
    assert!(matches!(
        store.manifest("ds", "v9").await,
        Err(Error::NotFound { .. })
    ));
}

async fn multipart_upload_round_trip(backend: Backend) {
    let env = Env::new(backend, "multipart");
    let store = env.store();
    let big = env.snapshot("big.snapkv", 12 << 20, 3);
    let mut options = version("v1");
    options.part_size = 5 << 20;
    options.concurrency = 2;
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    options.progress = Some(Arc::new(move |n| {
        counter.fetch_add(n, Ordering::Relaxed);
    }));
    let published = store.publish("ds", &[&big], &options).await.unwrap();
    let size = std::fs::metadata(&big).unwrap().len();
    assert_eq!(published.manifest.files[0].bytes, size);
    assert_eq!(sent.load(Ordering::Relaxed), size);
    let cache = Cache::new(env.path("cache"));
    let local = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(local.path("big.snapkv")).unwrap(),
        std::fs::read(&big).unwrap()
    );
}

async fn version_defaults_to_metadata_and_mismatches_are_refused(backend: Backend) {
    let env = Env::new(backend, "metadata");
    let store = env.store();
    let mut meta = Metadata::default();
    meta.dataset = Some("ds".into());
    meta.version = Some("20261127T031500Z".into());
    let file = env.path("labelled.snapkv");
    common::write_snapshot(&file, 10_000, 4, meta.clone());
    let published = store
        .publish("ds", &[&file], &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(published.manifest.version, "20261127T031500Z");

    let e = store
        .publish("other", &[&file], &version("20261128T000000Z"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let e = store
        .publish("ds", &[file], &version("20261128T000000Z"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("built as version"), "{e}");

    // Unlabelled files get the current UTC time.
    let plain = env.snapshot("plain.snapkv", 10_000, 5);
    let published = store
        .publish("ds", &[plain], &PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(published.manifest.version.len(), 16);
    assert!(published.manifest.version.as_str() > "20261127T031500Z");
}

async fn refuses_versions_not_newer_and_existing(backend: Backend) {
    let env = Env::new(backend, "refuse");
    let store = env.store();
    let f = env.snapshot("a.snapkv", 10_000, 1);
    publish(&store, &[&f], "v2").await;
    for stale in ["v1", "v2"] {
        let e = store
            .publish("ds", &[&f], &version(stale))
            .await
            .unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("not newer than the current version v2"),
            "{e}"
        );
    }
    publish(&store, &[&f], "v3").await;
    store.rollback("ds", "v2").await.unwrap();
    // v3 is newer than CURRENT (v2) but exists: versions are immutable.
    let e = store
        .publish("ds", &[&f], &version("v3"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(current_version(&store).await.as_deref(), Some("v2"));
    // Bad names are refused before anything is written.
    for bad in ["", "../x", "a/b", ".v"] {
        let e = store.publish("ds", &[&f], &version(bad)).await.unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{bad:?}: {e}");
    }
    let e = store
        .publish("bad/ds", &[&f], &version("v9"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let e = store
        .publish("ds", &[f.clone(), f], &version("v9"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
}

async fn refuses_corrupt_input(backend: Backend) {
    let env = Env::new(backend, "corrupt-input");
    let store = env.store();
    let f = env.snapshot("a.snapkv", 20_000, 1);
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&f, bytes).unwrap();
    let e = store.publish("ds", &[f], &version("v1")).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(store.versions("ds").await.unwrap().is_empty());
    let e = store
        .publish("ds", &[env.path("missing.snapkv")], &version("v1"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Io { .. }), "{e}");
}

async fn file_changed_during_publish_is_refused_and_cleaned_up(backend: Backend) {
    let env = Env::new(backend, "changed");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 10_000, 1);
    let b = env.snapshot("b.snapkv", 50_000, 2);
    let replacement = env.snapshot("c.snapkv", 50_000, 3);
    assert_eq!(
        std::fs::metadata(&b).unwrap().len(),
        std::fs::metadata(&replacement).unwrap().len()
    );
    // Once the first file is uploaded, the second is replaced by another valid snapshot of
    // the same size: what would be uploaded is not what was verified.
    let mut options = version("v1");
    let (from, to) = (replacement.clone(), b.clone());
    options.progress = Some(Arc::new(move |_| {
        let _ = std::fs::copy(&from, &to);
    }));
    let e = store.publish("ds", &[&a, &b], &options).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(
        e.to_string().contains("changed while it was published"),
        "{e}"
    );
    // Nothing is left: the same version can be published at once.
    assert!(store.versions("ds").await.unwrap().is_empty());
    publish(&store, &[a, b], "v1").await;
}

async fn rollback_moves_current(backend: Backend) {
    let env = Env::new(backend, "rollback");
    let store = env.store();
    let e = store.rollback("ds", "v1").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    let f = env.snapshot("a.snapkv", 10_000, 1);
    for v in ["v1", "v2", "v3"] {
        publish(&store, &[&f], v).await;
    }
    let p = store.rollback("ds", "v1").await.unwrap().unwrap();
    assert_eq!(
        (p.version.as_str(), p.previous.as_deref()),
        ("v1", Some("v3"))
    );
    assert_eq!(p.reason, "rollback");
    assert_eq!(current_version(&store).await.as_deref(), Some("v1"));
    // Forward again, to a newer complete version.
    store.rollback("ds", "v2").await.unwrap();
    assert_eq!(current_version(&store).await.as_deref(), Some("v2"));
    // Already current: nothing changes.
    let before = store.current("ds").await.unwrap().unwrap();
    assert_eq!(store.rollback("ds", "v2").await.unwrap(), None);
    assert_eq!(store.current("ds").await.unwrap().unwrap(), before);
    let e = store.rollback("ds", "v9").await.unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e}");
    // An incomplete version (no manifest) cannot be made current.
    let (objects, root) = store.raw_objects();
    let manifest = ObjectPath::from(
        format!("{}/ds/versions/v3/MANIFEST.json", root.as_ref()).trim_start_matches('/'),
    );
    objects.delete(&manifest).await.unwrap();
    let e = store.rollback("ds", "v3").await.unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains("incomplete"), "{e}");
    assert_eq!(current_version(&store).await.as_deref(), Some("v2"));
}

async fn gc_keeps_window_and_current(backend: Backend) {
    let env = Env::new(backend, "gc");
    let store = env.store();
    let f = env.snapshot("a.snapkv", 10_000, 1);
    for v in ["v1", "v2", "v3", "v4", "v5", "v6"] {
        publish(&store, &[&f], v).await;
    }
    let mut options = GcOptions::default();
    options.keep = 2;
    options.dry_run = true;
    let report = store.gc("ds", &options).await.unwrap();
    assert_eq!(report.deleted, ["v1", "v2", "v3", "v4"]);
    assert_eq!(
        store.versions("ds").await.unwrap().len(),
        6,
        "dry run deletes nothing"
    );

    // Roll back to v3: kept are the 2 newest (v5, v6), CURRENT (v3) and the one before it (v2).
    store.rollback("ds", "v3").await.unwrap();
    options.dry_run = false;
    let report = store.gc("ds", &options).await.unwrap();
    assert_eq!(report.deleted, ["v1", "v4"]);
    assert_eq!(report.kept, ["v2", "v3", "v5", "v6"]);
    let left: Vec<_> = store
        .versions("ds")
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(left, ["v2", "v3", "v5", "v6"]);
    assert!(matches!(
        store.rollback("ds", "v1").await,
        Err(Error::NotFound { .. })
    ));
    if backend == Backend::Local {
        assert!(!env.path("store/ds/versions/v1").exists());
    }

    options.keep = 1;
    let report = store.gc("ds", &options).await.unwrap();
    assert_eq!(report.deleted, ["v2", "v5"]);
    assert_eq!(report.kept, ["v3", "v6"]);
    assert_eq!(current_version(&store).await.as_deref(), Some("v3"));
    options.keep = 0;
    assert!(matches!(
        store.gc("ds", &options).await,
        Err(Error::Invalid { .. })
    ));
}

async fn racing_publishers_of_different_versions(backend: Backend) {
    let env = Env::new(backend, "race");
    let f = env.snapshot("a.snapkv", 10_000, 1);
    publish(&env.store(), &[&f], "v1").await;
    // Both read CURRENT (v1) before either swaps it: their uploads take about a second.
    let g = env.snapshot("b.snapkv", 400_000, 2);
    let (a, b) = (env.store(), env.store());
    let slow = |v: &str| {
        let mut o = version(v);
        o.max_bytes_per_sec = Some(400_000);
        o
    };
    let (oa, ob) = (slow("v2"), slow("v3"));
    let (ra, rb) = tokio::join!(
        a.publish("ds", std::slice::from_ref(&g), &oa),
        b.publish("ds", std::slice::from_ref(&g), &ob),
    );
    let (winner, loser_version, loser) = match (ra, rb) {
        (Ok(_), Err(e)) => ("v2", "v3", e),
        (Err(e), Ok(_)) => ("v3", "v2", e),
        (ra, rb) => panic!("exactly one publisher must win: {ra:?} / {rb:?}"),
    };
    let Error::Conflict { reason, current } = &loser else {
        panic!("the loser gets a conflict: {loser}");
    };
    assert!(
        reason.contains(&format!("{winner} was made current by")),
        "{reason}"
    );
    assert_eq!(current.as_ref().unwrap().version, winner);
    let store = env.store();
    let now = store.current("ds").await.unwrap().unwrap().pointer;
    assert_eq!(
        (now.version.as_str(), now.previous.as_deref()),
        (winner, Some("v1"))
    );
    // The loser's version is complete but not current; it can be rolled back to.
    let versions = store.versions("ds").await.unwrap();
    let lost = versions
        .iter()
        .find(|v| v.version == loser_version)
        .unwrap();
    assert!(lost.manifest.is_some() && !lost.current);
    store.rollback("ds", loser_version).await.unwrap();
}

async fn racing_publishers_of_the_same_version(backend: Backend) {
    let env = Env::new(backend, "race-same");
    let f = env.snapshot("a.snapkv", 200_000, 1);
    let stores: Vec<Store> = (0..3).map(|_| env.store()).collect();
    let mut options = version("v1");
    options.max_bytes_per_sec = Some(1_000_000);
    let results = futures_util::future::join_all(
        stores
            .iter()
            .map(|s| s.publish("ds", std::slice::from_ref(&f), &options)),
    )
    .await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for r in &results {
        if let Err(e) = r {
            assert!(matches!(e, Error::Conflict { .. }), "{e}");
            assert!(
                e.to_string()
                    .contains("already being published by snapkv-store"),
                "{e}"
            );
        }
    }
    assert_eq!(current_version(&env.store()).await.as_deref(), Some("v1"));
}

async fn interrupted_upload_leaves_current_and_gc_cleans_it(backend: Backend) {
    let env = Env::new(backend, "interrupted");
    let store = env.store();
    let small = env.snapshot("a.snapkv", 10_000, 1);
    publish(&store, &[&small], "v1").await;

    // Publish a two-file version and drop it midway through the second (large) file, as a
    // killed process would stop: no cleanup code runs.
    let big = env.snapshot("big.snapkv", 12 << 20, 2);
    let mut options = version("v2");
    options.part_size = 5 << 20;
    options.max_bytes_per_sec = Some(40 << 20);
    let sent = Arc::new(AtomicU64::new(0));
    let midway = Arc::new(tokio::sync::Notify::new());
    let (counter, signal) = (sent.clone(), midway.clone());
    options.progress = Some(Arc::new(move |n| {
        if counter.fetch_add(n, Ordering::Relaxed) + n > 6 << 20 {
            signal.notify_one();
        }
    }));
    let both = [small.clone(), big.clone()];
    tokio::select! {
        r = store.publish("ds", &both, &options) => panic!("finished: {r:?}"),
        () = midway.notified() => {}
    }
    assert_eq!(current_version(&store).await.as_deref(), Some("v1"));
    let versions = store.versions("ds").await.unwrap();
    let v2 = versions
        .iter()
        .find(|v| v.version == "v2")
        .expect("an incomplete v2");
    assert!(v2.manifest.is_none() && !v2.current);
    // Readers never see it; rollback refuses it; a retry under the same version is refused
    // while the claim is fresh.
    assert!(matches!(
        store.manifest("ds", "v2").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        store.rollback("ds", "v2").await,
        Err(Error::Refused { .. })
    ));
    let e = store
        .publish("ds", &[&small], &version("v2"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already being published"), "{e}");

    let mut gc = GcOptions::default();
    gc.keep = 1;
    let report = store.gc("ds", &gc).await.unwrap();
    assert_eq!(report.in_progress, ["v2"], "younger than the grace period");
    gc.grace = Duration::ZERO;
    let report = store.gc("ds", &gc).await.unwrap();
    assert_eq!(report.abandoned, ["v2"]);
    assert_eq!(report.kept, ["v1"]);
    let versions = store.versions("ds").await.unwrap();
    assert_eq!(versions.len(), 1);
    if backend == Backend::Local {
        assert!(
            !env.path("store/ds/versions/v2").exists(),
            "staging files are gone too"
        );
    }
    // The version can now be published for real.
    publish(&store, &[small, big], "v2").await;
    assert_eq!(current_version(&store).await.as_deref(), Some("v2"));
}

async fn poll_current_is_conditional(backend: Backend) {
    let env = Env::new(backend, "poll");
    let store = env.store();
    assert_eq!(store.poll_current("ds", None).await.unwrap(), Poll::Missing);
    let f = env.snapshot("a.snapkv", 10_000, 1);
    publish(&store, &[&f], "v1").await;
    let Poll::Changed(first) = store.poll_current("ds", None).await.unwrap() else {
        panic!("CURRENT exists");
    };
    assert_eq!(first.pointer.version, "v1");
    assert_eq!(
        store.poll_current("ds", Some(&first.tag)).await.unwrap(),
        Poll::Unchanged
    );
    publish(&store, &[f], "v2").await;
    let Poll::Changed(second) = env
        .store()
        .poll_current("ds", Some(&first.tag))
        .await
        .unwrap()
    else {
        panic!("CURRENT changed");
    };
    assert_eq!(second.pointer.version, "v2");
    assert_ne!(second.tag, first.tag);
    // Rolling back to v1 writes new bytes: the old tag does not match it.
    store.rollback("ds", "v1").await.unwrap();
    let Poll::Changed(third) = store.poll_current("ds", Some(&first.tag)).await.unwrap() else {
        panic!("CURRENT changed");
    };
    assert_eq!(third.pointer.version, "v1");
}

async fn fetch_verifies_and_caches(backend: Backend) {
    let env = Env::new(backend, "fetch");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 300_000, 1);
    let b = env.snapshot("b.snapkv", 100_000, 2);
    publish(&store, &[&a, &b], "v1").await;
    let cache = Cache::new(env.path("cache"));
    assert!(cache.versions("ds").unwrap().is_empty());

    let got = Arc::new(AtomicU64::new(0));
    let mut options = FetchOptions::default();
    let counter = got.clone();
    options.progress = Some(Arc::new(move |n| {
        counter.fetch_add(n, Ordering::Relaxed);
    }));
    let local = store.fetch("ds", "v1", &cache, &options).await.unwrap();
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    assert_eq!(got.load(Ordering::Relaxed), size(&a) + size(&b));
    assert_eq!(
        local.paths(),
        [local.path("a.snapkv"), local.path("b.snapkv")]
    );
    for (cached, original) in local.paths().iter().zip([&a, &b]) {
        assert_eq!(
            std::fs::read(cached).unwrap(),
            std::fs::read(original).unwrap()
        );
        assert!(std::fs::metadata(cached).unwrap().permissions().readonly());
    }
    let names: Vec<_> = std::fs::read_dir(&local.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(
        names.len(),
        3,
        "two files and the marker, no leftovers: {names:?}"
    );

    // Cached: a second fetch transfers nothing; the cache lists it without storage.
    let again = store.fetch("ds", "v1", &cache, &options).await.unwrap();
    assert_eq!(again, local);
    assert_eq!(got.load(Ordering::Relaxed), size(&a) + size(&b));
    assert_eq!(cache.versions("ds").unwrap(), std::slice::from_ref(&local));
    assert_eq!(cache.get("ds", "v1").unwrap(), Some(local.clone()));

    // A file lost from the cache makes the version incomplete; fetch repairs it.
    std::fs::remove_file(local.path("b.snapkv")).unwrap();
    assert!(cache.versions("ds").unwrap().is_empty());
    store.fetch("ds", "v1", &cache, &options).await.unwrap();
    assert_eq!(got.load(Ordering::Relaxed), size(&a) + 2 * size(&b));
    cache.remove("ds", "v1").unwrap();
    assert!(!local.dir.exists());
    assert!(matches!(
        store.fetch("ds", "v9", &cache, &options).await,
        Err(Error::NotFound { .. })
    ));
}

async fn fetch_refuses_corrupt_object(backend: Backend) {
    let env = Env::new(backend, "fetch-corrupt");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 100_000, 1);
    publish(&store, &[a], "v1").await;
    tamper(&store, "ds/versions/v1/a.snapkv", |b| b[5000] ^= 1).await;
    let cache = Cache::new(env.path("cache"));
    let e = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("where the manifest says"), "{e}");
    assert!(cache.versions("ds").unwrap().is_empty());
    let dir = env.path("cache/ds/v1");
    assert_eq!(
        std::fs::read_dir(dir).unwrap().count(),
        0,
        "nothing corrupt is kept"
    );

    // A truncated object is refused before its bytes are written.
    tamper(&store, "ds/versions/v1/a.snapkv", |b| b.truncate(1000)).await;
    let e = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    // A manifest that is not one is refused too.
    tamper(&store, "ds/versions/v1/MANIFEST.json", |b| b.truncate(10)).await;
    let e = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
}

async fn fetch_refuses_invalid_snapshot_with_matching_manifest(backend: Backend) {
    let env = Env::new(backend, "fetch-invalid");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 100_000, 1);
    publish(&store, &[&a], "v1").await;
    // Corrupt the object and make the manifest agree with the corrupt bytes: only the
    // snapshot's own verification can tell.
    let mut bad = std::fs::read(&a).unwrap();
    bad[5000] ^= 1;
    let sum = format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bad));
    tamper(&store, "ds/versions/v1/a.snapkv", |b| *b = bad.clone()).await;
    tamper(&store, "ds/versions/v1/MANIFEST.json", |b| {
        let mut m: serde_json::Value = serde_json::from_slice(b).unwrap();
        m["files"][0]["xxh3"] = sum.clone().into();
        *b = serde_json::to_vec(&m).unwrap();
    })
    .await;
    let cache = Cache::new(env.path("cache"));
    let e = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(e.to_string().contains("not a valid snapshot"), "{e}");
    assert!(std::error::Error::source(&e).is_some());
    assert!(!env.path("cache/ds/v1/a.snapkv").exists());
}

async fn fetch_resumes_partial_download(backend: Backend) {
    let env = Env::new(backend, "fetch-resume");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 400_000, 1);
    publish(&store, &[&a], "v1").await;
    let original = std::fs::read(&a).unwrap();
    let size = original.len() as u64;
    let half = original.len() / 2;
    let cache = Cache::new(env.path("cache"));
    let partial = env.path("cache/ds/v1/.a.snapkv.partial");
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();

    let got = Arc::new(AtomicU64::new(0));
    let mut options = FetchOptions::default();
    let counter = got.clone();
    options.progress = Some(Arc::new(move |n| {
        counter.fetch_add(n, Ordering::Relaxed);
    }));
    // An interrupted download: only the rest is transferred.
    std::fs::write(&partial, &original[..half]).unwrap();
    let local = store.fetch("ds", "v1", &cache, &options).await.unwrap();
    assert_eq!(got.load(Ordering::Relaxed), size - half as u64);
    assert_eq!(std::fs::read(local.path("a.snapkv")).unwrap(), original);
    assert!(!partial.exists());

    // A partial file with wrong bytes: the resumed file fails its checksum, and the download
    // starts over once.
    cache.remove("ds", "v1").unwrap();
    std::fs::create_dir_all(partial.parent().unwrap()).unwrap();
    std::fs::write(&partial, vec![7u8; half]).unwrap();
    got.store(0, Ordering::Relaxed);
    let local = store.fetch("ds", "v1", &cache, &options).await.unwrap();
    assert_eq!(got.load(Ordering::Relaxed), size - half as u64 + size);
    assert_eq!(std::fs::read(local.path("a.snapkv")).unwrap(), original);
}

async fn fetch_bandwidth_limit(backend: Backend) {
    let env = Env::new(backend, "fetch-limit");
    let store = env.store();
    let a = env.snapshot("a.snapkv", 600_000, 1);
    publish(&store, &[&a], "v1").await;
    let size = std::fs::metadata(&a).unwrap().len();
    let mut options = FetchOptions::default();
    options.max_bytes_per_sec = Some(500_000);
    let started = Instant::now();
    store
        .fetch("ds", "v1", &Cache::new(env.path("cache")), &options)
        .await
        .unwrap();
    let least = Duration::from_secs_f64(size as f64 / 500_000.0 * 0.9);
    assert!(
        started.elapsed() >= least,
        "{:?} < {least:?}",
        started.elapsed()
    );
}

/// A snapshot of keys `key:{i:08}` for `keys`, each value a JSON object naming the key and
/// `salt(i)`. Compressed with `dict` (the previous version's dictionary, as a daily job that
/// wants unchanged blocks to stay byte-identical writes it), or with one trained on it.
fn versioned(
    env: &Env,
    name: &str,
    keys: std::ops::Range<u64>,
    salt: impl Fn(u64) -> u64,
    dict: Option<&[u8]>,
) -> PathBuf {
    let mut o = WriterOptions::default();
    if let Some(d) = dict {
        o.dictionary = snapkv_format::Dictionary::Use(d.to_vec());
    }
    let mut w = SnapshotWriter::new(Vec::new(), o, Metadata::default()).unwrap();
    for i in keys {
        let v = format!(
            "{{\"id\":{i},\"score\":{},\"segment\":\"s{}\",\"salt\":{}}}",
            xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) % 1_000_000,
            i % 13,
            salt(i)
        );
        w.insert(format!("key:{i:08}").as_bytes(), v.as_bytes())
            .unwrap();
    }
    let path = env.path(name);
    std::fs::write(&path, w.finish().unwrap().0).unwrap();
    path
}

/// Bytes of the block table of the snapshot file at `path`.
fn table_len(path: &std::path::Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let len = bytes.len() as u64;
    let r = snapkv_format::Tail::parse(&bytes[(len - snapkv_format::TAIL_LEN) as usize..], len)
        .unwrap()
        .block_table_range();
    r.end - r.start
}

fn dictionary_of(path: &std::path::Path) -> Vec<u8> {
    let s = Snapshot::open(std::fs::read(path).unwrap()).unwrap();
    assert!(!s.dictionary().is_empty());
    s.dictionary().to_vec()
}

/// A reader holding v1 fetches v2 (1% of values changed in one key range) by copying the
/// blocks it has and reading the rest: the file is byte-identical, most of it reused. Across
/// a gap (v1 → v4) it still reuses what did not change; with delta off it downloads whole.
async fn delta_fetch_reuses_cached_blocks(backend: Backend) {
    let env = Env::new(backend, "delta");
    let store = env.store();
    let n = 60_000;
    let v1 = versioned(&env, "v1.snapkv", 0..n, |_| 0, None);
    let dict = dictionary_of(&v1);
    let edited =
        |from: u64, to: u64, salt: u64| move |i: u64| u64::from((from..to).contains(&i)) * salt;
    let v2 = versioned(
        &env,
        "v2.snapkv",
        0..n,
        edited(30_000, 30_600, 2),
        Some(&dict),
    );
    let v3 = versioned(
        &env,
        "v3.snapkv",
        0..n,
        edited(10_000, 10_600, 3),
        Some(&dict),
    );
    let v4 = versioned(
        &env,
        "v4.snapkv",
        0..n + 600,
        edited(50_000, 50_600, 4),
        Some(&dict),
    );
    let size = |p: &PathBuf| std::fs::metadata(p).unwrap().len();
    for (v, file) in [("v1", &v1), ("v2", &v2), ("v3", &v3), ("v4", &v4)] {
        let name = env.path(&format!("{v}/part.snapkv"));
        std::fs::create_dir_all(name.parent().unwrap()).unwrap();
        std::fs::copy(file, &name).unwrap();
        publish(&store, &[&name], v).await;
    }
    let cache = Cache::new(env.path("cache"));
    let got = Arc::new(AtomicU64::new(0));
    let mut options = FetchOptions::default();
    let counter = got.clone();
    options.progress = Some(Arc::new(move |n| {
        counter.fetch_add(n, Ordering::Relaxed);
    }));
    let first = store.fetch("ds", "v1", &cache, &options).await.unwrap();
    assert_eq!(first.transfer.downloaded, size(&v1));
    assert_eq!((first.transfer.reused, first.transfer.delta_files), (0, 0));

    got.store(0, Ordering::Relaxed);
    let second = store.fetch("ds", "v2", &cache, &options).await.unwrap();
    let t = second.transfer;
    assert_eq!(
        std::fs::read(second.path("part.snapkv")).unwrap(),
        std::fs::read(&v2).unwrap()
    );
    assert_eq!(t.delta_files, 1, "{t:?}");
    // The index, filter and lookup (at 60 bytes a value, a third of this file) are rebuilt
    // from the blocks, the block table from the block list; what is read is the list, the
    // changed blocks, the dictionary, the metadata and the footer.
    assert!(t.reused > size(&v2) / 2, "{t:?} of {}", size(&v2));
    assert!(t.rebuilt > size(&v2) / 5, "{t:?} of {}", size(&v2));
    assert!(t.downloaded < size(&v2) / 8, "{t:?} of {}", size(&v2));
    // Every byte of the file once, plus the list (read, and the table built from it).
    let accounted = t.downloaded + t.reused + t.rebuilt;
    let table = table_len(&v2);
    assert!(
        accounted >= size(&v2) && accounted <= size(&v2) + table / 2,
        "{t:?} for {} bytes, {table} of table",
        size(&v2)
    );
    assert!(t.range_reads >= 5, "{t:?}");
    assert_eq!(got.load(Ordering::Relaxed), size(&v2), "progress adds up");
    assert!(std::fs::metadata(second.path("part.snapkv"))
        .unwrap()
        .permissions()
        .readonly());

    // A gap: a cache holding v1 only fetches v4 (keys added, other values changed).
    let other = Cache::new(env.path("other"));
    store.fetch("ds", "v1", &other, &options).await.unwrap();
    let fourth = store.fetch("ds", "v4", &other, &options).await.unwrap();
    assert_eq!(
        std::fs::read(fourth.path("part.snapkv")).unwrap(),
        std::fs::read(&v4).unwrap()
    );
    assert!(
        fourth.transfer.reused > size(&v4) / 2,
        "{:?}",
        fourth.transfer
    );

    // Without the rebuild, the sections are read.
    let mut read_sections = FetchOptions::default();
    read_sections.rebuild_sections = false;
    let again = Cache::new(env.path("again"));
    store
        .fetch("ds", "v1", &again, &read_sections)
        .await
        .unwrap();
    let t = store
        .fetch("ds", "v2", &again, &read_sections)
        .await
        .unwrap()
        .transfer;
    // Only the table, from the list.
    assert_eq!(t.rebuilt, table, "{t:?}");
    let accounted = t.downloaded + t.reused + t.rebuilt;
    assert!(
        accounted >= size(&v2) && accounted <= size(&v2) + table / 2,
        "{t:?}"
    );
    assert!(t.downloaded > size(&v2) / 5, "{t:?}");

    // Delta off: the whole file.
    let mut whole = FetchOptions::default();
    whole.delta = false;
    let third = store.fetch("ds", "v3", &cache, &whole).await.unwrap();
    assert_eq!(third.transfer.downloaded, size(&v3));
    assert_eq!(third.transfer.reused, 0);
}

/// Blocks move between files (shards whose split key moved): a file is assembled from
/// blocks of every file of the dataset the cache holds.
async fn delta_fetch_reuses_blocks_across_files(backend: Backend) {
    let env = Env::new(backend, "delta-files");
    let store = env.store();
    let a1 = versioned(&env, "a.snapkv", 0..30_000, |_| 0, None);
    let dict = dictionary_of(&a1);
    let b1 = versioned(&env, "b.snapkv", 30_000..60_000, |_| 0, Some(&dict));
    publish(&store, &[&a1, &b1], "v1").await;
    let a2 = env.path("v2/a.snapkv");
    std::fs::create_dir_all(a2.parent().unwrap()).unwrap();
    std::fs::copy(versioned(&env, "a2", 0..40_000, |_| 0, Some(&dict)), &a2).unwrap();
    let b2 = env.path("v2/b.snapkv");
    std::fs::copy(
        versioned(&env, "b2", 40_000..60_000, |_| 0, Some(&dict)),
        &b2,
    )
    .unwrap();
    publish(&store, &[&a2, &b2], "v2").await;
    let cache = Cache::new(env.path("cache"));
    store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap();
    let v2 = store
        .fetch("ds", "v2", &cache, &FetchOptions::default())
        .await
        .unwrap();
    for (cached, original) in v2.paths().iter().zip([&a2, &b2]) {
        assert_eq!(
            std::fs::read(cached).unwrap(),
            std::fs::read(original).unwrap()
        );
    }
    let total = std::fs::metadata(&a2).unwrap().len() + std::fs::metadata(&b2).unwrap().len();
    let t = v2.transfer;
    assert_eq!(t.delta_files, 2, "{t:?}");
    // Keys 30,000..40,000 moved from b to a: their blocks are copied from b, but for the few
    // around the old and the new split.
    assert!(t.reused > total * 6 / 10, "{t:?} of {total}");
}

/// A reused block whose cached bytes went bad makes the assembled file fail its checksum: the
/// file is downloaded whole instead. A changed block that is bad in storage fails the fetch
/// (it fails the full download too), and nothing is cached for it.
async fn delta_fetch_falls_back_on_bad_bytes(backend: Backend) {
    let env = Env::new(backend, "delta-bad");
    let store = env.store();
    let n = 40_000;
    let v1 = versioned(&env, "v1.snapkv", 0..n, |_| 0, None);
    let dict = dictionary_of(&v1);
    let v2 = versioned(
        &env,
        "v2.snapkv",
        0..n,
        |i| u64::from(i % 1000 == 7),
        Some(&dict),
    );
    let v3 = versioned(
        &env,
        "v3.snapkv",
        0..n,
        |i| u64::from(i == 20_000) * 3,
        Some(&dict),
    );
    for (v, file) in [("v1", &v1), ("v2", &v2), ("v3", &v3)] {
        let name = env.path(&format!("{v}/part.snapkv"));
        std::fs::create_dir_all(name.parent().unwrap()).unwrap();
        std::fs::copy(file, &name).unwrap();
        publish(&store, &[&name], v).await;
    }
    let cache = Cache::new(env.path("cache"));
    let first = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap();
    // Bit rot in the cached v1, in the middle of its data.
    let cached = first.path("part.snapkv");
    let mut permissions = std::fs::metadata(&cached).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&cached, permissions).unwrap();
    let mut bytes = std::fs::read(&cached).unwrap();
    let middle = bytes.len() / 3;
    bytes[middle] ^= 0x40;
    std::fs::write(&cached, &bytes).unwrap();
    let second = store
        .fetch("ds", "v2", &cache, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(second.path("part.snapkv")).unwrap(),
        std::fs::read(&v2).unwrap()
    );
    let size = std::fs::metadata(&v2).unwrap().len();
    let t = second.transfer;
    // What the failed assembly read counts as downloaded; nothing of it as reused.
    assert!(t.downloaded >= size, "{t:?}");
    assert_eq!((t.reused, t.rebuilt, t.delta_files), (0, 0, 0), "{t:?}");

    // v3's changed block, damaged in storage.
    let changed = {
        let old = std::fs::read(&v2).unwrap();
        let new = std::fs::read(&v3).unwrap();
        (16..new.len())
            .find(|&i| old.get(i) != Some(&new[i]))
            .unwrap()
    };
    tamper(&store, "ds/versions/v3/part.snapkv", |b| {
        b[changed + 5] ^= 1
    })
    .await;
    let e = store
        .fetch("ds", "v3", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(!env.path("cache/ds/v3/part.snapkv").exists());
    assert_eq!(cache.get("ds", "v2").unwrap(), Some(second));
}

/// Publishing writes each file's block list, and a delta fetch plans from it rather than read
/// the block table: a version without a list (published before them) or with a damaged one is
/// fetched as well, reading the table instead. gc keeps the lists of the versions it keeps.
async fn delta_fetch_plans_from_the_block_list_or_the_table(backend: Backend) {
    let env = Env::new(backend, "delta-list");
    let store = env.store();
    let n = 40_000;
    let v1 = versioned(&env, "v1.snapkv", 0..n, |_| 0, None);
    let dict = dictionary_of(&v1);
    let changed = |v: u64| move |i: u64| u64::from((v * 1000..v * 1000 + 300).contains(&i)) * v;
    for (v, salt) in [("v1", 0), ("v2", 2), ("v3", 3), ("v4", 4)] {
        let file = match salt {
            0 => v1.clone(),
            _ => versioned(
                &env,
                &format!("{v}.snapkv"),
                0..n,
                changed(salt),
                Some(&dict),
            ),
        };
        let name = env.path(&format!("{v}/part.snapkv"));
        std::fs::create_dir_all(name.parent().unwrap()).unwrap();
        std::fs::copy(&file, &name).unwrap();
        publish(&store, &[&name], v).await;
    }
    let (objects, root) = store.raw_objects();
    let at = |v: &str, name: &str| {
        ObjectPath::from(
            format!("{}/ds/versions/{v}/{name}", root.as_ref()).trim_start_matches('/'),
        )
    };
    let list = objects.get(&at("v2", ".part.snapkv.blocks")).await.unwrap();
    let list = list.bytes().await.unwrap();
    let file = std::fs::read(env.path("v2/part.snapkv")).unwrap();
    let len = file.len() as u64;
    let tail =
        snapkv_format::Tail::parse(&file[(len - snapkv_format::TAIL_LEN) as usize..], len).unwrap();
    let r = tail.block_table_range();
    assert_eq!(
        tail.table_from_block_list(&list).unwrap(),
        file[r.start as usize..r.end as usize]
    );
    let table = r.end - r.start;
    assert!(
        (list.len() as u64) < table / 2,
        "{} for {table}",
        list.len()
    );

    let cache = Cache::new(env.path("cache"));
    let plain = Cache::new(env.path("plain"));
    for c in [&cache, &plain] {
        store
            .fetch("ds", "v1", c, &FetchOptions::default())
            .await
            .unwrap();
    }
    let with_list = store
        .fetch("ds", "v2", &cache, &FetchOptions::default())
        .await
        .unwrap();
    // Without the list: the table is read from the file.
    objects
        .delete(&at("v2", ".part.snapkv.blocks"))
        .await
        .unwrap();
    let without = store
        .fetch("ds", "v2", &plain, &FetchOptions::default())
        .await
        .unwrap();
    for got in [&with_list, &without] {
        assert_eq!(got.transfer.delta_files, 1, "{:?}", got.transfer);
        assert_eq!(
            std::fs::read(got.path("part.snapkv")).unwrap(),
            std::fs::read(env.path("v2/part.snapkv")).unwrap()
        );
    }
    let saved = without.transfer.downloaded - with_list.transfer.downloaded;
    assert_eq!(
        saved,
        table - list.len() as u64,
        "{:?} {:?}",
        with_list.transfer,
        without.transfer
    );
    // A damaged list is not trusted: the table is read.
    objects
        .put(
            &at("v3", ".part.snapkv.blocks"),
            PutPayload::from(list.to_vec()),
        )
        .await
        .unwrap();
    let third = store
        .fetch("ds", "v3", &cache, &FetchOptions::default())
        .await
        .unwrap();
    assert_eq!(third.transfer.delta_files, 1, "{:?}", third.transfer);
    assert_eq!(
        std::fs::read(third.path("part.snapkv")).unwrap(),
        std::fs::read(env.path("v3/part.snapkv")).unwrap()
    );
    assert!(third.transfer.downloaded > table, "{:?}", third.transfer);

    // gc keeps the lists of the versions it keeps, and removes the others with them.
    let mut gc = GcOptions::default();
    (gc.keep, gc.grace) = (2, Duration::ZERO);
    let report = store.gc("ds", &gc).await.unwrap();
    assert!(report.unreferenced.is_empty(), "{report:?}");
    assert!(objects.head(&at("v4", ".part.snapkv.blocks")).await.is_ok());
    assert!(objects
        .head(&at("v1", ".part.snapkv.blocks"))
        .await
        .is_err());
}

/// A store with version v1 of dataset `ds` (20,000 keys, one file `v1.snapkv`), and its bytes.
async fn lazy_version(backend: Backend, name: &str) -> (Env, Store, Vec<u8>) {
    let env = Env::new(backend, name);
    let store = env.store();
    let v1 = versioned(&env, "v1.snapkv", 0..20_000, |_| 0, None);
    publish(&store, &[&v1], "v1").await;
    let bytes = std::fs::read(&v1).unwrap();
    (env, store, bytes)
}

/// A version opened lazily: the file is at its full size with only its header and sections
/// in place; a lookup's block arrives by range (waited for without blocking, or by blocking
/// through the `Fill`), byte for byte as stored, and nothing else; `complete` fills in the rest
/// and leaves an ordinary cached version, having read the object about once.
async fn lazy_open_reads_blocks_on_demand_then_completes(backend: Backend) {
    use snapkv_format::Fill;
    let (env, store, original) = lazy_version(backend, "lazy").await;
    let whole = Snapshot::open(original.clone()).unwrap();
    let (cache, options) = (Cache::new(env.path("cache")), FetchOptions::default());
    let lazy = store
        .open_lazy("ds", "v1", &cache, &options, Duration::from_secs(5))
        .await
        .unwrap();
    let f = Arc::clone(&lazy.files()[0]);
    let blocks = f.block_count();
    assert!(blocks > 10);
    assert_eq!(f.blocks_missing(), blocks);
    assert!(f.path().ends_with(".v1.snapkv.lazy"));
    let on_disk = || std::fs::read(f.path()).unwrap();
    assert_eq!(on_disk().len(), original.len());
    let len = original.len() as u64;
    let tail =
        snapkv_format::Tail::parse(&original[(len - snapkv_format::TAIL_LEN) as usize..], len)
            .unwrap();
    let sections = tail.sections_range().start as usize;
    let now = on_disk();
    assert_eq!(now[..16], original[..16], "the header is in place");
    assert_eq!(
        now[sections..],
        original[sections..],
        "the sections are in place"
    );
    assert!(now[16..sections].iter().all(|&x| x == 0), "no block is");
    assert!(
        f.downloaded() < original.len() as u64 / 2,
        "{}",
        f.downloaded()
    );

    let range = |key: &str| {
        let r = whole.bytes_for(key.as_bytes()).unwrap().unwrap();
        r.start as usize..r.end as usize
    };
    // Waited for without blocking.
    let a = range("key:00000042");
    f.ready(a.start as u64..a.end as u64).await.unwrap();
    assert_eq!(on_disk()[a.clone()], original[a.clone()]);
    assert_eq!(f.blocks_missing(), blocks - 1);
    // Through the `Fill`, blocking the thread.
    let b = range("key:00019000");
    let (g, r) = (Arc::clone(&f), b.start as u64..b.end as u64);
    tokio::task::spawn_blocking(move || g.ensure(r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(on_disk()[b.clone()], original[b.clone()]);
    assert_eq!(f.blocks_missing(), blocks - 2);
    // A block between them is still a hole.
    let c = range("key:00010000");
    assert!(on_disk()[c].iter().all(|&x| x == 0));

    let cached = lazy.complete(&cache, &options).await.unwrap();
    assert_eq!(f.blocks_missing(), 0);
    assert_eq!(std::fs::read(cached.path("v1.snapkv")).unwrap(), original);
    assert!(!f.path().exists());
    assert_eq!(cache.get("ds", "v1").unwrap(), Some(cached));
    let size = original.len() as u64;
    assert!(
        (size..size + 4096).contains(&f.downloaded()),
        "{} read for {size}",
        f.downloaded()
    );
}

/// A block damaged in storage is refused by the lookup that needs it (an error naming the
/// checksum, not the bytes) and by the completion; no final file appears.
async fn lazy_open_never_keeps_a_bad_block(backend: Backend) {
    let (env, store, original) = lazy_version(backend, "lazy-bad").await;
    let whole = Snapshot::open(original).unwrap();
    let bad = whole.bytes_for(b"key:00005000").unwrap().unwrap();
    tamper(&store, "ds/versions/v1/v1.snapkv", |b| {
        b[bad.start as usize + 3] ^= 1
    })
    .await;
    let (cache, options) = (Cache::new(env.path("cache")), FetchOptions::default());
    let lazy = store
        .open_lazy("ds", "v1", &cache, &options, Duration::from_secs(5))
        .await
        .unwrap();
    let f = Arc::clone(&lazy.files()[0]);
    let e = f.ready(bad.clone()).await.unwrap_err();
    assert!(
        matches!(e, snapkv_format::Error::Unavailable { .. }) && e.to_string().contains("XXH3"),
        "{e}"
    );
    let good = whole.bytes_for(b"key:00000001").unwrap().unwrap();
    f.ready(good).await.unwrap();
    let e = lazy.complete(&cache, &options).await.unwrap_err();
    assert!(matches!(e, Error::Corrupt { .. }), "{e}");
    assert!(!env.path("cache/ds/v1/v1.snapkv").exists());
    assert_eq!(cache.get("ds", "v1").unwrap(), None);
}

/// Writes `bytes` at `key` under the store's root, through the backend itself.
async fn put_raw(store: &Store, key: &str, bytes: Vec<u8>) {
    let (objects, root) = store.raw_objects();
    let path = ObjectPath::from(format!("{}/{key}", root.as_ref()).trim_start_matches('/'));
    objects.put(&path, PutPayload::from(bytes)).await.unwrap();
}

/// Pads a JSON document with trailing spaces to `len` bytes: still valid JSON, only too big.
fn pad(bytes: &mut Vec<u8>, len: u64) {
    bytes.resize(len as usize, b' ');
}

/// Asserts `e` is the corruption error of an object over its size limit.
fn assert_too_large(e: &Error, object: &str, size: &str, limit: u64) {
    assert!(matches!(e, Error::Corrupt { .. }), "{e:?}");
    let text = e.to_string();
    assert!(text.contains(object), "{text}");
    assert!(
        text.contains(&format!("{size} bytes, over the limit of {limit} bytes")),
        "{text}"
    );
}

async fn datasets_are_the_folders_with_current_or_versions(backend: Backend) {
    let env = Env::new(backend, "datasets");
    let store = env.store();
    assert!(store.datasets().await.unwrap().is_empty());
    let f = env.snapshot("a.snapkv", 10_000, 1);
    for ds in ["scores", "b-2", "A.x"] {
        store.publish(ds, &[&f], &version("v1")).await.unwrap();
    }
    // A first publish under way has a version folder and no CURRENT yet.
    put_raw(&store, "fresh/versions/v1/PUBLISHING.json", b"{}".to_vec()).await;
    // Neither a CURRENT nor a versions/ folder, an invalid name, a loose object: not datasets.
    put_raw(&store, "stray/notes.txt", b"x".to_vec()).await;
    put_raw(&store, "stray/old/versions/v1/a", b"x".to_vec()).await;
    put_raw(&store, "_hidden/CURRENT", b"{}".to_vec()).await;
    put_raw(&store, "README", b"x".to_vec()).await;
    let expected = ["A.x", "b-2", "fresh", "scores"];
    assert_eq!(store.datasets().await.unwrap(), expected);
    assert_eq!(env.store().datasets().await.unwrap(), expected);
    // gc never leaves a dataset without its current version: it stays listed.
    let mut gc = GcOptions::default();
    gc.keep = 1;
    gc.grace = Duration::ZERO;
    store.gc("scores", &gc).await.unwrap();
    store.gc("fresh", &gc).await.unwrap();
    assert_eq!(store.datasets().await.unwrap(), ["A.x", "b-2", "scores"]);
}

async fn oversized_small_objects_are_corrupt(backend: Backend) {
    let env = Env::new(backend, "oversized");
    let store = env.store();
    let f = env.snapshot("a.snapkv", 10_000, 1);
    publish(&store, &[&f], "v1").await;

    // A claim over its limit: the publisher cannot tell who holds the version, and says why.
    let mut claim = br#"{"version":"v2"}"#.to_vec();
    pad(&mut claim, MAX_CLAIM_BYTES + 1);
    put_raw(&store, "ds/versions/v2/PUBLISHING.json", claim).await;
    let e = store
        .publish("ds", &[&f], &version("v2"))
        .await
        .unwrap_err();
    let limit = MAX_CLAIM_BYTES;
    assert_too_large(
        &e,
        "ds/versions/v2/PUBLISHING.json",
        &(limit + 1).to_string(),
        limit,
    );

    // A manifest over its limit: readers, fetch and gc refuse it.
    tamper(&store, "ds/versions/v1/MANIFEST.json", |b| {
        pad(b, MAX_MANIFEST_BYTES + 1)
    })
    .await;
    let size = (MAX_MANIFEST_BYTES + 1).to_string();
    let e = store.manifest("ds", "v1").await.unwrap_err();
    assert_too_large(
        &e,
        "ds/versions/v1/MANIFEST.json",
        &size,
        MAX_MANIFEST_BYTES,
    );
    let cache = Cache::new(env.path("cache"));
    let e = store
        .fetch("ds", "v1", &cache, &FetchOptions::default())
        .await
        .unwrap_err();
    assert_too_large(
        &e,
        "ds/versions/v1/MANIFEST.json",
        &size,
        MAX_MANIFEST_BYTES,
    );
    assert!(cache.versions("ds").unwrap().is_empty());
    let e = store.versions("ds").await.unwrap_err();
    assert_too_large(
        &e,
        "ds/versions/v1/MANIFEST.json",
        &size,
        MAX_MANIFEST_BYTES,
    );

    // CURRENT over its limit: polling refuses it, also after a change.
    let Poll::Changed(before) = store.poll_current("ds", None).await.unwrap() else {
        panic!("CURRENT exists");
    };
    tamper(&store, "ds/CURRENT", |b| pad(b, MAX_CURRENT_BYTES + 1)).await;
    let size = (MAX_CURRENT_BYTES + 1).to_string();
    for known in [None, Some(&before.tag)] {
        let e = store.poll_current("ds", known).await.unwrap_err();
        assert_too_large(&e, "ds/CURRENT", &size, MAX_CURRENT_BYTES);
        assert!(e.to_string().starts_with("CURRENT object "), "{e}");
    }
    // Exactly at the limit is fine.
    tamper(&store, "ds/CURRENT", |b| {
        b.truncate(b.iter().rposition(|c| *c == b'}').unwrap() + 1);
        pad(b, MAX_CURRENT_BYTES);
    })
    .await;
    assert_eq!(current_version(&store).await.as_deref(), Some("v1"));
}

async fn publish_refuses_a_manifest_over_the_limit(backend: Backend) {
    let env = Env::new(backend, "manifest-limit");
    let store = env.store();
    let mut meta = Metadata::default();
    meta.builder.insert(
        "notes".into(),
        "x".repeat(MAX_MANIFEST_BYTES as usize).into(),
    );
    let file = env.path("a.snapkv");
    common::write_snapshot(&file, 10_000, 1, meta);
    let e = store
        .publish("ds", &[&file], &version("v1"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("over the limit of"), "{e}");
    // Refused before anything was written.
    assert!(store.versions("ds").await.unwrap().is_empty());
    assert!(store.datasets().await.unwrap().is_empty());
}

/// On a local directory, huge (sparse) small objects are refused from their size alone: reading
/// any of them whole would need a terabyte of memory.
#[tokio::test]
async fn huge_small_objects_are_not_read() {
    let env = Env::new(Backend::Local, "huge");
    let store = env.store();
    let f = env.snapshot("a.snapkv", 10_000, 1);
    publish(&store, &[&f], "v1").await;
    const HUGE: u64 = 1 << 40;
    let grow = |key: &str| {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(env.path("store").join(key))
            .unwrap();
        file.set_len(HUGE).unwrap();
    };
    let huge = HUGE.to_string();

    std::fs::create_dir_all(env.path("store/ds/versions/v2")).unwrap();
    grow("ds/versions/v2/PUBLISHING.json");
    let e = store
        .publish("ds", &[&f], &version("v2"))
        .await
        .unwrap_err();
    assert_too_large(&e, "ds/versions/v2/PUBLISHING.json", &huge, MAX_CLAIM_BYTES);

    grow("ds/versions/v1/MANIFEST.json");
    let e = store.manifest("ds", "v1").await.unwrap_err();
    assert_too_large(
        &e,
        "ds/versions/v1/MANIFEST.json",
        &huge,
        MAX_MANIFEST_BYTES,
    );
    let mut gc = GcOptions::default();
    gc.keep = 1;
    let e = store.gc("ds", &gc).await.unwrap_err();
    assert_too_large(
        &e,
        "ds/versions/v1/MANIFEST.json",
        &huge,
        MAX_MANIFEST_BYTES,
    );

    grow("ds/CURRENT");
    let e = store.current("ds").await.unwrap_err();
    assert_too_large(&e, "CURRENT object ds/CURRENT", &huge, MAX_CURRENT_BYTES);
}

#[tokio::test]
async fn unreachable_storage_fails_after_bounded_retries() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let endpoint = format!("http://127.0.0.1:{port}");
    let options: Vec<(String, String)> = [
        ("endpoint", endpoint.as_str()),
        ("access_key_id", "x"),
        ("secret_access_key", "x"),
        ("region", "us-east-1"),
        ("max_retries", "2"),
        ("retry_timeout", "10s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let store = Store::open("s3://nowhere/prefix", &options).unwrap();
    let started = Instant::now();
    let e = store.current("ds").await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    let text = format!("{e}");
    assert!(
        text.contains("s3://nowhere/prefix") && text.contains("unavailable"),
        "{text}"
    );
    let chain = format!("{:?}", anyhow_like_chain(&e));
    assert!(chain.contains("retries"), "{chain}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );

    let env = Env::new(Backend::Memory, "unreachable");
    let f = env.snapshot("a.snapkv", 10_000, 1);
    let e = store.publish("ds", &[f], &version("v1")).await.unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
    let e = store
        .fetch(
            "ds",
            "v1",
            &Cache::new(env.path("cache")),
            &FetchOptions::default(),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
}

/// A server that accepts connections and never answers: a request to it stalls, and fails
/// once `read_timeout` passes without a byte, whatever the overall request timeout.
#[tokio::test]
async fn a_stalled_connection_fails_on_lack_of_progress() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().map_while(Result::ok) {
            held.push(c);
        }
    });
    let options: Vec<(String, String)> = [
        ("endpoint", endpoint.as_str()),
        ("access_key_id", "x"),
        ("secret_access_key", "x"),
        ("region", "us-east-1"),
        ("max_retries", "1"),
        ("read_timeout", "1s"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let store = Store::open("s3://stalled/prefix", &options).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(30), store.current("ds"))
        .await
        .expect("the stalled request never failed")
        .unwrap_err();
    assert!(matches!(e, Error::Unavailable { .. }), "{e:?}");
}

/// A download that takes longer than 30 s (held to 34 KB/s) completes in one request: only a
/// stall fails one, not its length.
#[tokio::test]
async fn a_download_longer_than_30_s_completes() {
    let mut env = Env::new(Backend::S3, "slow-download");
    // Without retries: a body cut by a request timeout would otherwise be resumed by a
    // range request, and the download would pass in spite of the cut.
    env.options.push(("max_retries".into(), "0".into()));
    let store = env.store();
    let f = env.snapshot("a.snapkv", 1_200_000, 7);
    publish(&store, &[&f], "v1").await;
    let mut options = FetchOptions::default();
    options.max_bytes_per_sec = Some(34_000);
    let started = Instant::now();
    let cached = store
        .fetch("ds", "v1", &Cache::new(env.path("cache")), &options)
        .await
        .unwrap();
    assert!(
        started.elapsed() > Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        std::fs::read(cached.dir.join("a.snapkv")).unwrap(),
        std::fs::read(&f).unwrap()
    );
}

fn anyhow_like_chain(e: &dyn std::error::Error) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut next = e.source();
    while let Some(s) = next {
        out.push(s.to_string());
        next = s.source();
    }
    out
}
