//! Times as RFC 3339 UTC strings (DESIGN.md's output convention), for serde and for tables.

use std::time::SystemTime;

/// Formats `time` as RFC 3339 UTC with millisecond precision, e.g. `2026-11-25T19:43:38.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

/// Serde adapter: `SystemTime` <-> RFC 3339 string.
pub mod serde_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339(*time))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn formats_utc_with_millis_and_parses_back() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_099_818_123);
        let text = rfc3339(time);
        assert_eq!(text, "2025-11-25T19:43:38.123Z");
        assert_eq!(humantime::parse_rfc3339_weak(&text).unwrap(), time);
    }
}
