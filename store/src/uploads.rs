//! Multipart uploads left open on S3 by publishers that were killed: listed and aborted by
//! `gc`. Parts of an open upload are stored (and billed) but are not objects, so listings of
//! objects never show them.
//!
//! `object_store` aborts an upload by its id ([`MultipartStore::abort_multipart`]) but has no
//! call that lists them, so the `ListMultipartUploads` request is made here: signed by
//! `object_store`'s own SigV4 authorizer, with the store's own credential chain.

use crate::error::{Error, Result};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjectPath;
use serde::Deserialize;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// An open multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upload {
    /// The object it would create.
    pub key: String,
    /// The upload's id.
    pub id: String,
    /// When it was started.
    pub initiated: chrono::DateTime<chrono::Utc>,
}

/// What lists and aborts the multipart uploads of one S3 bucket.
#[derive(Debug)]
pub(crate) struct S3Uploads {
    s3: Arc<AmazonS3>,
    /// `https://host/bucket` (path style) or `https://bucket.host` (virtual-hosted style).
    bucket_url: String,
    region: String,
    /// Made on first use (by `gc` only), with timeouts of its own (connect 5 s, no byte for
    /// 30 s, 2 min in all: a listing page is small).
    http: OnceLock<reqwest::Client>,
}

/// The answer of `ListMultipartUploads`, the fields read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listing {
    #[serde(default, rename = "Upload")]
    uploads: Vec<Listed>,
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Listed {
    key: String,
    upload_id: String,
    initiated: String,
}

/// Bound on the listing's pages: 1,000 uploads each.
const MAX_PAGES: usize = 100;

impl S3Uploads {
    /// For `bucket` (the store URL's) of the store `builder` configures, built as `s3`.
    pub(crate) fn new(builder: &AmazonS3Builder, bucket: &str, s3: Arc<AmazonS3>) -> S3Uploads {
        let get = |k| builder.get_config_value(&k);
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = get(AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let bucket_url = match get(AmazonS3ConfigKey::Endpoint) {
            // A virtual-hosted endpoint already names the bucket (as object_store takes it).
            Some(e) if virtual_hosted => e.trim_end_matches('/').to_owned(),
            Some(e) => format!("{}/{bucket}", e.trim_end_matches('/')),
            None if virtual_hosted => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            None => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        S3Uploads {
            s3,
            bucket_url,
            region,
            http: OnceLock::new(),
        }
    }

    /// The open uploads of objects under `prefix` (an upload whose start time cannot be read
    /// is left out: nothing says it is old).
    pub(crate) async fn list(&self, prefix: &ObjectPath) -> Result<Vec<Upload>> {
        let prefix = format!("{prefix}/");
        let mut found = Vec::new();
        let mut markers: Option<(String, String)> = None;
        for _ in 0..MAX_PAGES {
            let mut url = url::Url::parse(&format!("{}/", self.bucket_url))
                .map_err(|e| self.failed("LIST UPLOADS", &prefix, e))?;
            {
                let mut q = url.query_pairs_mut();
                q.append_key_only("uploads").append_pair("prefix", &prefix);
                if let Some((key, id)) = &markers {
                    q.append_pair("key-marker", key)
                        .append_pair("upload-id-marker", id);
                }
            }
            let body = self
                .get(&url)
                .await
                .map_err(|e| self.failed("LIST UPLOADS", &prefix, e))?;
            if !body.contains("<ListMultipartUploadsResult") {
                return Err(self.failed(
                    "LIST UPLOADS",
                    &prefix,
                    "not a ListMultipartUploads answer",
                ));
            }
            let page: Listing = quick_xml::de::from_str(&body)
                .map_err(|e| self.failed("LIST UPLOADS", &prefix, e))?;
            for u in page.uploads {
                let Ok(initiated) = chrono::DateTime::parse_from_rfc3339(&u.initiated) else {
                    continue;
                };
                found.push(Upload {
                    key: u.key,
                    id: u.upload_id,
                    initiated: initiated.with_timezone(&chrono::Utc),
                });
            }
            match (
                page.is_truncated,
                page.next_key_marker,
                page.next_upload_id_marker,
            ) {
                (false, ..) => return Ok(found),
                (true, Some(k), Some(i)) => markers = Some((k, i)),
                (true, ..) => {
                    return Err(self.failed(
                        "LIST UPLOADS",
                        &prefix,
                        "a truncated answer without the markers of its next page",
                    ))
                }
            }
        }
        Err(self.failed(
            "LIST UPLOADS",
            &prefix,
            format!("more than {MAX_PAGES} pages of open uploads"),
        ))
    }

    /// Aborts an upload: its parts are deleted.
    pub(crate) async fn abort(&self, upload: &Upload) -> Result<()> {
        // The key as stored: `parse` keeps it byte for byte (`from` would encode it again).
        let path = ObjectPath::parse(&upload.key)
            .map_err(|e| self.failed("ABORT UPLOAD", &upload.key, e))?;
        match self.s3.abort_multipart(&path, &upload.id).await {
            // Completed or aborted meanwhile: gone either way.
            Err(object_store::Error::NotFound { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(self.failed("ABORT UPLOAD", &upload.key, e)),
        }
    }

    /// A signed GET of `url`: its body.
    async fn get(
        &self,
        url: &url::Url,
    ) -> std::result::Result<String, Box<dyn std::error::Error + Send + Sync>> {
        let credential = self.s3.credentials().get_credential().await?;
        let mut request = http::Request::builder()
            .method("GET")
            .uri(url.as_str())
            .body(object_store::client::HttpRequestBody::empty())?;
        AwsAuthorizer::new(&credential, "s3", &self.region).try_authorize(&mut request, None)?;
        let http = match self.http.get() {
            Some(c) => c,
            None => {
                let c = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(30))
                    .timeout(Duration::from_secs(120))
                    .build()?;
                self.http.get_or_init(|| c)
            }
        };
        let mut out = http.get(url.clone());
        for (name, value) in request.headers() {
            out = out.header(name, value);
        }
        let answer = out.send().await?;
        let status = answer.status();
        let body = answer.text().await?;
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", body.trim()).into());
        }
        Ok(body)
    }

    fn failed(
        &self,
        op: &'static str,
        path: &str,
        e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        Error::Storage {
            url: self.bucket_url.clone(),
            op,
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_are_read_with_their_next_page() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker/><UploadIdMarker/>
  <NextKeyMarker>p/d/versions/v2/f.snapkv</NextKeyMarker>
  <NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>2</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/d/versions/v1/f.snapkv</Key><UploadId>id-1</UploadId>
    <Initiated>2026-11-30T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/d/versions/v2/f.snapkv</Key><UploadId>id-2</UploadId>
    <Initiated>2026-11-30T11:00:00.000Z</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page: Listing = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[1].key, "p/d/versions/v2/f.snapkv");
        assert_eq!(page.uploads[0].upload_id, "id-1");
        assert_eq!(page.uploads[0].initiated, "2026-11-30T10:00:00.000Z");
        assert!(page.is_truncated);
        assert_eq!(page.next_upload_id_marker.as_deref(), Some("id-2"));
        let empty: Listing = quick_xml::de::from_str(
            "<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(empty.uploads.is_empty() && !empty.is_truncated);
    }
}
