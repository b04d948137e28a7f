//! Numbers for people: `1.2k/s`, `3.4 ms`, `12 MiB`, `5m ago`.

/// A count: `950`, `1.2k`, `3.4M`.
pub fn count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => scaled(n as f64 / 1e3, "k"),
        1_000_000..=999_999_999 => scaled(n as f64 / 1e6, "M"),
        _ => scaled(n as f64 / 1e9, "G"),
    }
}

fn scaled(value: f64, unit: &str) -> String {
    if value < 10.0 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// A rate per second: `0/s`, `12/s`, `1.2k/s`.
pub fn rate(per_second: f64) -> String {
    if per_second < 10.0 && per_second > 0.0 {
        format!("{per_second:.1}/s")
    } else {
        format!("{}/s", count(per_second.round().max(0.0) as u64))
    }
}

/// A round trip in microseconds: `850 µs`, `3.4 ms`, `1.2 s`; `–` when unknown.
pub fn rtt(micros: u64) -> String {
    match micros {
        0 => "–".to_string(),
        1..=999 => format!("{micros} µs"),
        1_000..=9_999 => format!("{:.1} ms", micros as f64 / 1e3),
        10_000..=999_999 => format!("{:.0} ms", micros as f64 / 1e3),
        1_000_000..=59_999_999 => format!("{:.1} s", micros as f64 / 1e6),
        _ => duration_secs(micros / 1_000_000),
    }
}

/// Bytes in binary units: `512 B`, `3.0 KiB`, `12 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if value < 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A duration in seconds, short: `45s`, `12m`, `3h`, `2d`.
pub fn duration_secs(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3_599 => format!("{}m", secs / 60),
        3_600..=86_399 => format!("{}h", secs / 3_600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// How long ago `then` was, seen from `now` (both ns since the epoch); `–` for 0.
pub fn ago(then_unix_nanos: i64, now_unix_nanos: i64) -> String {
    if then_unix_nanos <= 0 {
        return "–".to_string();
    }
    let secs = (now_unix_nanos.saturating_sub(then_unix_nanos)).max(0) / 1_000_000_000;
    format!("{} ago", duration_secs(secs as u64))
}

/// How long since `then`: `for 5m`.
pub fn since(then_unix_nanos: i64, now_unix_nanos: i64) -> String {
    if then_unix_nanos <= 0 {
        return "–".to_string();
    }
    let secs = (now_unix_nanos.saturating_sub(then_unix_nanos)).max(0) / 1_000_000_000;
    duration_secs(secs as u64)
}

/// How long until a certificate expires: `90d`, `5h`, `expired`; `–` for
/// 0 (no TLS).
pub fn expires(not_after_unix_nanos: i64, now_unix_nanos: i64) -> String {
    if not_after_unix_nanos <= 0 {
        return "–".to_string();
    }
    if not_after_unix_nanos <= now_unix_nanos {
        return "expired".to_string();
    }
    duration_secs(((not_after_unix_nanos - now_unix_nanos) / 1_000_000_000) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_a_person_writes_them() {
        assert_eq!(count(950), "950");
        assert_eq!(count(1_234), "1.2k");
        assert_eq!(count(45_600), "46k");
        assert_eq!(count(3_400_000), "3.4M");
        assert_eq!(rate(1_234.0), "1.2k/s");
        assert_eq!(rate(2.5), "2.5/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rtt(0), "–");
        assert_eq!(rtt(850), "850 µs");
        assert_eq!(rtt(3_400), "3.4 ms");
        assert_eq!(rtt(45_000), "45 ms");
        assert_eq!(rtt(1_200_000), "1.2 s");
        assert_eq!(rtt(u64::MAX), "213503982d");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024), "3.0 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12 MiB");
        assert_eq!(duration_secs(45), "45s");
        assert_eq!(duration_secs(725), "12m");
        assert_eq!(duration_secs(3 * 3600 + 5), "3h");
        let now = 1_000 * 1_000_000_000;
        assert_eq!(ago(now - 90 * 1_000_000_000, now), "1m ago");
        assert_eq!(ago(0, now), "–");
    }
}
