//! Wall-clock helpers. Durations are measured with `Instant`; wall-clock
//! time only labels things for people and for Kafka.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds since the Unix epoch, saturating (0 before 1970).
pub fn now_unix_nanos() -> i64 {
    unix_nanos(SystemTime::now())
}

/// A `SystemTime` as nanoseconds since the Unix epoch (0 before 1970).
pub fn unix_nanos(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Nanoseconds since the epoch back to a `SystemTime` (negative clamps to the epoch).
pub fn from_unix_nanos(nanos: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).unwrap_or(0))
}

/// RFC 3339 with nanoseconds in UTC, e.g. `2026-11-24T17:57:10.123456789Z`,
/// the form CloudEvents uses for `time`.
pub fn rfc3339(nanos: i64) -> String {
    humantime::format_rfc3339_nanos(from_unix_nanos(nanos)).to_string()
}

/// RFC 3339 with microseconds in UTC: a node's own clock, to a precision
/// its hops are measured with.
pub fn rfc3339_micros(nanos: i64) -> String {
    humantime::format_rfc3339_micros(from_unix_nanos(nanos)).to_string()
}

/// RFC 3339 with milliseconds in UTC, for reports people read.
pub fn rfc3339_millis(nanos: i64) -> String {
    humantime::format_rfc3339_millis(from_unix_nanos(nanos)).to_string()
}

/// Parses what [`rfc3339`] writes (any RFC 3339 UTC timestamp).
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    humantime::parse_rfc3339_weak(text).ok().map(unix_nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_nanoseconds() {
        let nanos = 1_795_000_000_123_456_789;
        let text = rfc3339(nanos);
        assert_eq!(text, "2026-11-18T11:06:40.123456789Z");
        assert_eq!(parse_rfc3339(&text), Some(nanos));
    }

    #[test]
    fn parse_rejects_garbage() {
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
