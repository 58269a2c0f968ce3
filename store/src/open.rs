//! Opening a store from a URL, options and the environment.

use crate::diagnose::{Cloud, Kind};
use crate::error::{Error, Result};
use crate::local::LocalDir;
use crate::Store;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::memory::InMemory;
use object_store::path::Path as ObjectPath;
use object_store::ClientConfigKey;
use object_store::{BackoffConfig, ObjectStore, RetryConfig};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Default bound on retries of one request to a cloud store.
const DEFAULT_MAX_RETRIES: usize = 5;
/// Default bound on the time spent retrying one request.
const DEFAULT_RETRY_TIMEOUT: Duration = Duration::from_secs(60);
/// Client timeouts set unless the options set them. Connect: an address that drops packets
/// fails about as fast as a closed one. Read: a connection that sends nothing for this long
/// has stalled (each read resets it), so a large download fails on lack of progress, not on
/// its length; the overall bound on one request is a day (the client's own default, 30 s, cut
/// every download longer than that).
const DEFAULT_TIMEOUTS: [(ClientConfigKey, &str); 3] = [
    (ClientConfigKey::ConnectTimeout, "5s"),
    (ClientConfigKey::ReadTimeout, "30s"),
    (ClientConfigKey::Timeout, "24h"),
];

/// The entries of [`DEFAULT_TIMEOUTS`] a builder still needs: those no option names and whose
/// value is still the client's own default. A builder reports that default as a value (an
/// overall timeout of 30 s), so "unset" cannot be read from it alone.
fn timeouts_to_set(
    named: &[ClientConfigKey],
    current: impl Fn(ClientConfigKey) -> Option<String>,
) -> Vec<(ClientConfigKey, &'static str)> {
    let defaults = object_store::ClientOptions::default();
    DEFAULT_TIMEOUTS
        .into_iter()
        .filter(|(key, _)| !named.contains(key) && current(*key) == defaults.get_config_value(key))
        .collect()
}

impl Store {
    /// Opens a storage location.
    ///
    /// - `s3://bucket[/prefix]`, `gs://bucket[/prefix]`, `az://container[/prefix]` (also
    ///   `azure://`, `abfs://`, `abfss://`): credentials, region and endpoint from the usual
    ///   environment variables (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and `options`, which take
    ///   precedence. Option keys are those of the [`object_store`] builders (`endpoint`,
    ///   `region`, `access_key_id`, `allow_http`, `connect_timeout`, …; with or without the
    ///   `aws_`/`google_`/`azure_` prefix), plus `max_retries` (default 5) and `retry_timeout`
    ///   (default `60s`), which bound the retries of each request. An `http://` endpoint
    ///   implies `allow_http=true`.
    /// - `file:///dir`, or a path without a scheme: a local directory. It is created by the
    ///   first write, never by opening or reading; until then it reads as an empty store.
    ///   Writes are fsynced; `CURRENT` is swapped under an exclusive `flock` of
    ///   `<dataset>/CURRENT.lock`, so the directory must be on a local file system.
    /// - `memory://name`: an in-process store, shared by every `Store` opened with the same
    ///   name in this process (for tests and demos).
    ///
    /// Unknown option keys are an [`Error::Invalid`]; local and memory stores take none.
    /// Opening does no I/O on cloud stores (errors show on first use).
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Store> {
        let bad = |detail: String| Error::invalid("store URL", detail);
        let Some((scheme, rest)) = url.split_once("://") else {
            if let Some(scheme) = url_like_scheme(url) {
                return Err(bad(format!(
                    "{url:?} looks like a {scheme}: URL but is not one: write {scheme}://…; \
                     for a local directory with a colon in its name, write ./{url}"
                )));
            }
            return open_local(url, Path::new(url), options);
        };
        let no_options = |kind: &str| -> Result<()> {
            match options.first() {
                None => Ok(()),
                Some((k, _)) => Err(Error::invalid(
                    "store option",
                    format!("{k:?}: {kind} stores take no options"),
                )),
            }
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => {
                let parsed = url::Url::parse(url).map_err(|e| bad(format!("{url}: {e}")))?;
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad(format!("{url}: not an absolute local path")))?;
                open_local(url, &path, options)
            }
            "memory" => {
                no_options("memory")?;
                static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let mut registry = REGISTRY.get_or_init(Default::default).lock().unwrap();
                let objects = registry.entry(name.to_owned()).or_default().clone();
                Ok(Store {
                    objects,
                    root: object_path(prefix, url)?,
                    local_dir: None,
                    url: url.to_owned(),
                    cloud: None,
                    uploads: None,
                    options: Arc::new([]),
                })
            }
            "s3" | "s3a" | "gs" | "az" | "azure" | "abfs" | "abfss" => {
                let parsed = url::Url::parse(url).map_err(|e| bad(format!("{url}: {e}")))?;
                if parsed.host_str().is_none_or(str::is_empty) {
                    return Err(bad(format!("{url}: no bucket or container")));
                }
                let root = object_path(parsed.path(), url)?;
                let (objects, cloud, uploads) = open_cloud(scheme, url, options)?;
                Ok(Store {
                    objects,
                    root,
                    local_dir: None,
                    url: url.to_owned(),
                    cloud: Some(Arc::new(cloud)),
                    uploads: uploads.map(Arc::new),
                    options: options.into(),
                })
            }
            other => Err(bad(format!(
                "{url}: unknown scheme {other:?} (use s3://, gs://, az://, file://, memory:// \
                 or a directory path)"
            ))),
        }
    }
}

/// The scheme of a store argument that starts like a URL (`s3:/bucket`, `gs:bucket`), which
/// must not be taken for a local directory name.
fn url_like_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once(':')?;
    let mut chars = scheme.chars();
    let starts = chars.next()?.is_ascii_alphabetic();
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    (starts && rest).then_some(scheme)
}

fn object_path(prefix: &str, url: &str) -> Result<ObjectPath> {
    ObjectPath::parse(prefix.trim_matches('/'))
        .map_err(|e| Error::invalid("store URL", format!("{url}: {e}")))
}

fn open_local(url: &str, dir: &Path, options: &[(String, String)]) -> Result<Store> {
    if let Some((k, _)) = options.first() {
        return Err(Error::invalid(
            "store option",
            format!("{k:?}: local directory stores take no options"),
        ));
    }
    if dir.as_os_str().is_empty() {
        return Err(Error::invalid("store URL", "empty path"));
    }
    // The directory is created by the first write (see `LocalDir`), so commands that only
    // read leave nothing behind. An existing one is resolved through its symlinks.
    let dir: PathBuf = match std::fs::canonicalize(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::path::absolute(dir).map_err(|e| Error::io("resolve", dir, e))?
        }
        Err(e) => return Err(Error::io("resolve", dir, e)),
    };
    let objects = LocalDir::new(dir.clone()).map_err(|e| Error::io("open", &dir, e))?;
    Ok(Store {
        objects: Arc::new(objects),
        root: ObjectPath::default(),
        local_dir: Some(dir),
        url: url.to_owned(),
        cloud: None,
        uploads: None,
        options: Arc::new([]),
    })
}

/// The options snapkv handles itself, on top of the builders' keys.
struct Retry {
    max_retries: usize,
    retry_timeout: Duration,
}

fn take_retry(options: &[(String, String)]) -> Result<(Retry, Vec<(String, String)>)> {
    let mut retry = Retry {
        max_retries: DEFAULT_MAX_RETRIES,
        retry_timeout: DEFAULT_RETRY_TIMEOUT,
    };
    let mut rest = Vec::new();
    for (k, v) in options {
        match k.to_ascii_lowercase().as_str() {
            "max_retries" => {
                retry.max_retries = v.parse().map_err(|_| {
                    Error::invalid("store option", format!("max_retries={v:?}: not a count"))
                })?
            }
            "retry_timeout" => {
                retry.retry_timeout = humantime::parse_duration(v).map_err(|e| {
                    Error::invalid("store option", format!("retry_timeout={v:?}: {e}"))
                })?
            }
            _ => rest.push((k.to_ascii_lowercase(), v.clone())),
        }
    }
    Ok((retry, rest))
}

fn open_cloud(
    scheme: &str,
    url: &str,
    options: &[(String, String)],
) -> Result<(
    Arc<dyn ObjectStore>,
    Cloud,
    Option<crate::uploads::S3Uploads>,
)> {
    install_crypto_provider();
    let (retry, options) = take_retry(options)?;
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: retry.max_retries,
        retry_timeout: retry.retry_timeout,
    };
    let unknown = |k: &str| {
        Error::invalid(
            "store option",
            format!("{k:?} is not an option of {scheme}:// stores"),
        )
    };
    let build_err = |e: object_store::Error| Error::Invalid {
        what: "store configuration",
        detail: format!("{url}: {e}"),
    };
    // The bucket object_store uses: the URL's (it overrides a bucket option at build).
    let url_bucket = url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    let mut cloud = Cloud {
        kind: Kind::S3,
        bucket: url_bucket.clone(),
        endpoint: None,
    };
    let is_http = |endpoint: Option<String>| endpoint.is_some_and(|e| e.starts_with("http://"));
    let mut uploads = None;
    let store: Arc<dyn ObjectStore> = match scheme.to_ascii_lowercase().as_str() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env().with_url(url);
            let mut named = Vec::new();
            for (k, v) in &options {
                let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(k))?;
                if let AmazonS3ConfigKey::Client(c) = key {
                    named.push(c);
                }
                b = b.with_config(key, v);
            }
            for (key, value) in timeouts_to_set(&named, |k| {
                b.get_config_value(&AmazonS3ConfigKey::Client(k))
            }) {
                b = b.with_config(AmazonS3ConfigKey::Client(key), value);
            }
            if is_http(b.get_config_value(&AmazonS3ConfigKey::Endpoint)) {
                b = b.with_config(
                    AmazonS3ConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                    "true",
                );
            }
            cloud.endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
            cloud.bucket = b
                .get_config_value(&AmazonS3ConfigKey::Bucket)
                .unwrap_or(cloud.bucket);
            let s3 = Arc::new(b.clone().with_retry(retry).build().map_err(build_err)?);
            uploads = Some(crate::uploads::S3Uploads::new(
                &b,
                &url_bucket,
                Arc::clone(&s3),
            ));
            s3
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env().with_url(url);
            let mut named = Vec::new();
            for (k, v) in &options {
                let key: GoogleConfigKey = k.parse().map_err(|_| unknown(k))?;
                if let GoogleConfigKey::Client(c) = key {
                    named.push(c);
                }
                b = b.with_config(key, v);
            }
            for (key, value) in
                timeouts_to_set(&named, |k| b.get_config_value(&GoogleConfigKey::Client(k)))
            {
                b = b.with_config(GoogleConfigKey::Client(key), value);
            }
            cloud.kind = Kind::Gcs;
            Arc::new(b.with_retry(retry).build().map_err(build_err)?)
        }
        _ => {
            let mut b = MicrosoftAzureBuilder::from_env().with_url(url);
            let mut named = Vec::new();
            for (k, v) in &options {
                let key: AzureConfigKey = k.parse().map_err(|_| unknown(k))?;
                if let AzureConfigKey::Client(c) = key {
                    named.push(c);
                }
                b = b.with_config(key, v);
            }
            for (key, value) in
                timeouts_to_set(&named, |k| b.get_config_value(&AzureConfigKey::Client(k)))
            {
                b = b.with_config(AzureConfigKey::Client(key), value);
            }
            cloud.kind = Kind::Azure;
            cloud.endpoint = b.get_config_value(&AzureConfigKey::Endpoint);
            if is_http(b.get_config_value(&AzureConfigKey::Endpoint)) {
                b = b.with_config(
                    AzureConfigKey::Client(object_store::ClientConfigKey::AllowHttp),
                    "true",
                );
            }
            Arc::new(b.with_retry(retry).build().map_err(build_err)?)
        }
    };
    Ok((store, cloud, uploads))
}

/// TLS for the cloud stores runs on ring, installed once per process as rustls's default
/// provider (an application that installed another one first keeps it).
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    fn opts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn url_like_paths_are_refused() {
        for bad in ["s3:/bucket/x", "s3:bucket", "gs:/b", "file:/tmp/x", "ftp:x"] {
            let Err(e) = Store::open(bad, &[]) else {
                panic!("{bad} opened as a store")
            };
            let e = e.to_string();
            assert!(e.contains("looks like a"), "{bad}: {e}");
        }
        assert_eq!(url_like_scheme("./s3:x"), None);
        assert_eq!(url_like_scheme("/data/x:y"), None);
        assert_eq!(url_like_scheme("data"), None);
    }

    #[tokio::test]
    async fn local_paths_and_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().canonicalize().unwrap().join("a/b");
        let s = Store::open(nested.to_str().unwrap(), &[]).unwrap();
        // Opening and reading create nothing; the first write creates the directory.
        assert_eq!(s.local_dir.as_deref(), Some(&*nested));
        assert!(s.datasets().await.unwrap().is_empty());
        assert!(s.current("d").await.unwrap().is_none());
        assert!(!dir.path().join("a").exists());
        let at = ObjectPath::from("d/x");
        s.objects.put(&at, "x".into()).await.unwrap();
        assert_eq!(std::fs::read(nested.join("d/x")).unwrap(), b"x");
        let again = Store::open(nested.to_str().unwrap(), &[]).unwrap();
        assert_eq!(
            &*again.objects.get(&at).await.unwrap().bytes().await.unwrap(),
            b"x"
        );
        let url = format!("file://{}", nested.display());
        let s = Store::open(&url, &[]).unwrap();
        assert!(s.local_dir.is_some());
        assert!(matches!(
            Store::open(&url, &opts(&[("region", "x")])),
            Err(Error::Invalid { .. })
        ));
    }

    #[test]
    fn memory_stores_share_by_name() {
        let a = Store::open("memory://shared-name/p", &[]).unwrap();
        let b = Store::open("memory://shared-name", &[]).unwrap();
        assert!(Arc::ptr_eq(&a.objects, &b.objects));
        assert_eq!(a.root.as_ref(), "p");
        let c = Store::open("memory://other-name", &[]).unwrap();
        assert!(!Arc::ptr_eq(&a.objects, &c.objects));
    }

    #[test]
    fn default_timeouts_replace_the_clients_own() {
        let s3 = AmazonS3Builder::new();
        let all = timeouts_to_set(&[], |k| s3.get_config_value(&AmazonS3ConfigKey::Client(k)));
        assert_eq!(all, DEFAULT_TIMEOUTS.to_vec());
        let gcs = GoogleCloudStorageBuilder::new();
        let all = timeouts_to_set(&[], |k| gcs.get_config_value(&GoogleConfigKey::Client(k)));
        assert_eq!(all, DEFAULT_TIMEOUTS.to_vec());
        // An option names a timeout, or sets it to something else: it stays.
        let named = timeouts_to_set(&[ClientConfigKey::Timeout], |k| {
            s3.get_config_value(&AmazonS3ConfigKey::Client(k))
        });
        assert!(!named.iter().any(|(k, _)| *k == ClientConfigKey::Timeout));
        let s3 = s3.with_config(AmazonS3ConfigKey::Client(ClientConfigKey::Timeout), "5m");
        let set = timeouts_to_set(&[], |k| s3.get_config_value(&AmazonS3ConfigKey::Client(k)));
        assert_eq!(set.len(), 2);
        assert!(!set.iter().any(|(k, _)| *k == ClientConfigKey::Timeout));
    }

    #[test]
    fn cloud_urls_and_options() {
        let s = Store::open(
            "s3://bucket/some/prefix/",
            &opts(&[
                ("endpoint", "http://127.0.0.1:9"),
                ("region", "us-east-1"),
                ("max_retries", "1"),
                ("retry_timeout", "2s"),
            ]),
        )
        .unwrap();
        assert_eq!(s.root.as_ref(), "some/prefix");
        let e = Store::open("s3://bucket", &opts(&[("no_such_option", "1")])).unwrap_err();
        assert!(e.to_string().contains("no_such_option"), "{e}");
        let e = Store::open("s3://bucket", &opts(&[("max_retries", "x")])).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(Store::open("ftp://x/y", &[]).is_err());
        assert!(Store::open("s3:///nobucket", &[]).is_err());
    }
}
