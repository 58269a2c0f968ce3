//! What the store commands (`publish`, `versions`, `rollback`, `gc`) share: where the store
//! is, which dataset, and how to run the asynchronous store client.

use anyhow::Context;
use snapkv_store::Store;

/// The store and dataset a command works on.
#[derive(clap::Args)]
pub struct StoreArgs {
    /// Store: s3://BUCKET/PREFIX, gs://BUCKET/PREFIX, az://CONTAINER/PREFIX, file:///DIR, or a
    /// local directory path.
    #[arg(long, value_name = "URL", env = "SNAPKV_STORE")]
    pub store: String,
    /// Dataset name (letters, digits, '.', '_', '-').
    #[arg(long, value_name = "NAME")]
    pub dataset: String,
    /// Store option KEY=VALUE, repeatable: endpoint, region, access_key_id, allow_http,
    /// connect_timeout, max_retries, retry_timeout, … (AWS_*, GOOGLE_* and AZURE_* environment
    /// variables are read too; options win).
    #[arg(long = "store-option", value_name = "KEY=VALUE", value_parser = parse_option)]
    pub options: Vec<(String, String)>,
}

impl StoreArgs {
    /// Opens the store.
    pub fn open(&self) -> anyhow::Result<Store> {
        Store::open(&self.store, &self.options)
            .with_context(|| format!("cannot open store {}", self.store))
    }
}

/// `; pinned (reason)` when `pointer` pins its dataset, else nothing.
pub fn pinned_note(pointer: &snapkv_store::Pointer) -> String {
    match &pointer.pin {
        Some(pin) => format!("; pinned ({}); `snapkv unpin` releases it", pin.reason),
        None => String::new(),
    }
}

/// The error for a dataset that has no version in `store`: it names the datasets there are.
pub async fn no_dataset(store: &Store, dataset: &str) -> anyhow::Error {
    let there = store.datasets_there().await;
    anyhow::anyhow!("no dataset {dataset:?} in {} ({there})", store.url())
}

/// Parses one `--store-option KEY=VALUE`.
pub fn parse_option(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

/// A runtime for one command: a single thread for the requests, Tokio's blocking pool for
/// file reads, hashing and verification.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
