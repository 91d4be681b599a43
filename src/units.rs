//! Human-written sizes ("256MiB") and durations ("1.5s") in policy files and
//! flags, and the clock in the unit audit entries and confirmations use.

use std::time::Duration;

/// Now, as Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// `"1.5s"` → (1.5, `"s"`): the leading number and what follows it.
fn number_and_unit(s: &str) -> Option<(f64, &str)> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    Some((num.parse().ok()?, unit))
}

/// Parses `"123"`, `"64KiB"`, `"256MiB"`, `"1GiB"`, `"10MB"` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = number_and_unit(s)
        .ok_or_else(|| format!("invalid size {s:?} (e.g. 64KiB, 256MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "kib" => 1 << 10,
        "m" | "mb" => 1_000_000,
        "mib" => 1 << 20,
        "g" | "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?} (B, KiB, MiB, GiB, KB, MB, GB)"
            ));
        }
    };
    let bytes = n * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `"250ms"`, `"2s"`, `"1.5s"`, `"2m"`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) =
        number_and_unit(s).ok_or_else(|| format!("invalid duration {s:?} (e.g. 500ms, 2s, 1m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration {s:?} out of range"))
}

/// Formats bytes the way policies write them, for plans and messages.
pub fn fmt_size(b: u64) -> String {
    for (unit, m) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if b >= m && b.is_multiple_of(m) {
            return format!("{}{unit}", b / m);
        }
    }
    format!("{b}B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_size("64 KiB").unwrap(), 64 << 10);
        assert_eq!(parse_size("10MB").unwrap(), 10_000_000);
        assert_eq!(parse_size("17").unwrap(), 17);
        assert!(parse_size("lots").is_err());
        assert!(parse_size("5 parsecs").is_err());
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("-1s").is_err());
        assert_eq!(fmt_size(256 << 20), "256MiB");
        assert_eq!(fmt_size(1000), "1000B");
    }
}
