//! Cloud errors in one line: what is missing (a bucket, credentials, an endpoint) and which
//! option or environment variable sets it, instead of a client's nested error chain with the
//! server's XML repeated at every level.

use crate::error::Error;

/// Which cloud a store is on, and what its messages name.
#[derive(Debug, Clone)]
pub(crate) struct Cloud {
    /// The provider.
    pub(crate) kind: Kind,
    /// The bucket (S3, GCS) or container (Azure).
    pub(crate) bucket: String,
    /// The endpoint, when one was given (an S3-compatible server, an emulator).
    pub(crate) endpoint: Option<String>,
}

/// A cloud provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    S3,
    Gcs,
    Azure,
}

impl Cloud {
    fn bucket_word(&self) -> &'static str {
        match self.kind {
            Kind::Azure => "container",
            Kind::S3 | Kind::Gcs => "bucket",
        }
    }

    fn where_(&self) -> String {
        match &self.endpoint {
            Some(e) => format!(" at {e}"),
            None => String::new(),
        }
    }

    /// How to give credentials to this provider.
    fn credentials_hint(&self) -> &'static str {
        match self.kind {
            Kind::S3 => {
                "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or --store-option \
                 access_key_id=… --store-option secret_access_key=…), or run with an IAM role \
                 (AWS_WEB_IDENTITY_TOKEN_FILE, or the instance metadata service)"
            }
            Kind::Gcs => {
                "set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file (or \
                 --store-option service_account=PATH), or run with a service account \
                 (workload identity, or the metadata server)"
            }
            Kind::Azure => {
                "set AZURE_STORAGE_ACCOUNT_KEY (or --store-option access_key=…), a SAS token \
                 (AZURE_STORAGE_SAS_KEY), or run with a managed identity"
            }
        }
    }

    /// The error for a failure that configuration explains, if this is one.
    pub(crate) fn diagnose(&self, url: &str, e: &object_store::Error) -> Option<Error> {
        let text = chain_text(e);
        let misconfigured = |problem: String, hint: String| {
            Some(Error::Misconfigured {
                url: url.to_owned(),
                problem,
                hint,
            })
        };
        if is_missing_bucket(&text) {
            let word = self.bucket_word();
            return misconfigured(
                format!(
                    "the {word} {:?} does not exist{}",
                    self.bucket,
                    self.where_()
                ),
                format!("create it, or name an existing {word} in the store URL"),
            );
        }
        if asked_metadata_service(&text) {
            return misconfigured(
                "no credentials were found".to_owned(),
                self.credentials_hint().to_owned(),
            );
        }
        if let Some(code) = refusal(&text) {
            return misconfigured(
                format!("the credentials were refused ({code})"),
                format!("check them: {}", self.credentials_hint()),
            );
        }
        None
    }

    /// What to add to an "unavailable" error: the endpoint requests went to.
    pub(crate) fn endpoint_hint(&self) -> Option<&'static str> {
        match (self.kind, &self.endpoint) {
            (Kind::S3, None) => Some(
                "no endpoint is set, so requests go to AWS; for another S3-compatible server \
                 set AWS_ENDPOINT_URL or --store-option endpoint=URL",
            ),
            _ => None,
        }
    }
}

/// True when a not-found answer is about the bucket or container, not the object: a store on
/// a missing bucket must not read as an empty one.
pub(crate) fn is_missing_bucket_error(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. }) && is_missing_bucket(&chain_text(e))
}

fn is_missing_bucket(text: &str) -> bool {
    [
        "NoSuchBucket",
        "ContainerNotFound",
        "The specified bucket does not exist",
    ]
    .iter()
    .any(|s| text.contains(s))
}

/// The client fell back to an instance metadata service for credentials, and it failed: none
/// were configured (or found) anywhere else.
fn asked_metadata_service(text: &str) -> bool {
    text.contains("169.254.169.254")
        || text.contains("metadata.google.internal")
        || text.contains("token request")
}

/// The server's code for refused credentials, if it gave one.
fn refusal(text: &str) -> Option<String> {
    const CODES: &[&str] = &[
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AccessDenied",
        "AuthenticationFailed",
        "AuthorizationFailure",
        "AuthorizationPermissionMismatch",
        "401 Unauthorized",
        "403 Forbidden",
    ];
    let code = CODES.iter().find(|c| text.contains(**c))?;
    Some(match xml_tag(text, "Message") {
        Some(m) => format!("{code}: {m}"),
        None => (*code).to_owned(),
    })
}

/// Every message of an error's chain, joined.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = String::new();
    let mut next = Some(e);
    while let Some(err) = next {
        s.push_str(&err.to_string());
        s.push('\n');
        next = err.source();
    }
    s
}

/// The text between `<tag>` and `</tag>`.
fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
    let len = text[start..].find(&format!("</{tag}>"))?;
    Some(&text[start..start + len])
}

/// One line for an error chain: each level's own words once (a client's error repeats its
/// source's message in its own), and an XML error document as its code and message.
pub(crate) fn summary(e: &(dyn std::error::Error + 'static)) -> String {
    let mut levels = Vec::new();
    let mut next = Some(e);
    while let Some(err) = next {
        levels.push(err.to_string());
        next = err.source();
    }
    let mut parts: Vec<String> = Vec::new();
    for (i, level) in levels.iter().enumerate() {
        let mut own = level.as_str();
        if let Some(inner) = levels.get(i + 1) {
            own = own.strip_suffix(inner.as_str()).unwrap_or(own);
        }
        let own = own.trim().trim_end_matches([':', '-']).trim();
        if !own.is_empty() && !parts.iter().any(|p| p.contains(own)) {
            parts.push(xml_error(own));
        }
    }
    parts.join(": ")
}

/// `…: <?xml …><Error><Code>C</Code><Message>M</Message>…</Error>` → `…: C: M`.
fn xml_error(s: &str) -> String {
    let Some(at) = s.find("<?xml").or_else(|| s.find("<Error>")) else {
        return s.to_owned();
    };
    let head = s[..at].trim_end().trim_end_matches(':');
    let code = xml_tag(s, "Code").unwrap_or("error");
    match xml_tag(s, "Message") {
        Some(m) => format!("{head}: {code}: {m}"),
        None => format!("{head}: {code}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Level(String, Option<Box<Level>>);
    impl std::fmt::Display for Level {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }
    impl std::error::Error for Level {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn a_nested_chain_is_said_once() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The \
                   specified bucket does not exist</Message><RequestId>1</RequestId></Error>";
        let l3 = format!("Server returned non-2xx status code: 404 Not Found: {xml}");
        let l2 = format!("Error performing GET http://h/b in 6ms - {l3}");
        let l1 = format!("Error performing list request: {l2}");
        let l0 = format!("Generic S3 error: {l1}");
        let e = Level(
            l0,
            Some(Box::new(Level(
                l1,
                Some(Box::new(Level(l2, Some(Box::new(Level(l3, None)))))),
            ))),
        );
        assert_eq!(
            summary(&e),
            "Generic S3 error: Error performing list request: Error performing GET http://h/b \
             in 6ms: Server returned non-2xx status code: 404 Not Found: NoSuchBucket: The \
             specified bucket does not exist"
        );
        assert!(is_missing_bucket(&chain_text(&e)));
    }

    #[test]
    fn refusals_name_the_code() {
        let text = "403 Forbidden: <Error><Code>InvalidAccessKeyId</Code><Message>No such key\
                    </Message></Error>";
        assert_eq!(
            refusal(text).as_deref(),
            Some("InvalidAccessKeyId: No such key")
        );
        assert_eq!(refusal("404 Not Found"), None);
    }
}
