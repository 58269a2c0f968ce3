//! The metadata section: a JSON object describing the dataset and how the file was written.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How values are encoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueEncoding {
    /// Opaque bytes, stored as given.
    #[default]
    Raw,
    /// One JSON object per value.
    Json,
}

/// The snapshot's self-description, stored as JSON in the file.
///
/// The caller fills the descriptive fields; the writer fills [`Metadata::key_count`] and
/// [`Metadata::format`]. Nothing here is invented by the writer (no clock reads), so the same
/// input and metadata give the same bytes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Metadata {
    /// Dataset name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<String>,
    /// Version label (by convention a UTC timestamp such as `20261127T031500Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// When the snapshot was built, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// How values are encoded.
    #[serde(default)]
    pub value_encoding: ValueEncoding,
    /// The media type a server should send values with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// Source columns the keys were made of.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_columns: Vec<String>,
    /// The source schema (Arrow schema as JSON), if the snapshot was built from a table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<serde_json::Value>,
    /// Parameters of the program that built the snapshot.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub builder: BTreeMap<String, serde_json::Value>,
    /// Free-form user labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub user: BTreeMap<String, String>,
    /// Number of keys (set by the writer).
    #[serde(default)]
    pub key_count: u64,
    /// How the file was written (set by the writer).
    #[serde(default)]
    pub format: FormatInfo,
}

/// Writer settings recorded in the metadata (set by the writer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct FormatInfo {
    /// `none` or `zstd`.
    pub compression: String,
    /// zstd level (0 when uncompressed).
    pub level: i32,
    /// Target block size in bytes.
    pub block_size: u32,
    /// Dictionary size in bytes (0: none).
    pub dictionary_bytes: u64,
    /// Filter bits per key (0: no filter).
    pub filter_bits_per_key: u32,
}
