//! UTC timestamps in RFC 3339.

use chrono::{DateTime, SecondsFormat, Utc};
use std::time::SystemTime;

/// `2026-11-27T03:15:00Z`.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    DateTime::<Utc>::from(t).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Parses an RFC 3339 time with any offset.
pub(crate) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    DateTime::parse_from_rfc3339(s).ok().map(SystemTime::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn round_trips() {
        for secs in [0u64, 951_782_400, 1_795_000_000, 4_102_444_800] {
            let t = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t), "{}", rfc3339(t));
        }
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-27T03:15:00+02:00"),
            parse_rfc3339("2026-11-27T01:15:00Z")
        );
        assert_eq!(parse_rfc3339("2026-13-27T03:15:00Z"), None);
    }
}
