//! Human byte sizes (`20GiB`, `64MiB`, `500MB`, `1024`) and durations
//! (`500ms`, `10s`, `5m`, `4h`, `7d`).

/// Parses a size with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1_000,
        "m" | "mb" => 1_000_000,
        "g" | "gb" => 1_000_000_000,
        "t" | "tb" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?}; use e.g. 64MiB, 20GiB or 500MB"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 64MiB, 20GiB or 500MB"))?;
    let bytes = value * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses a duration: a number and a unit (ms, s, m, h, d).
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let secs: f64 = match unit.trim() {
        "ms" => 0.001,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?}; use e.g. 500ms, 10s, 5m, 4h or 7d"
            ));
        }
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration; use e.g. 10s, 5m or 4h"))?;
    std::time::Duration::try_from_secs_f64(value * secs)
        .map_err(|_| format!("duration {s:?} is out of range"))
}

/// A repair policy: `lazy` (the default), `halfway`, `eager`, or a healthy-piece count.
pub fn parse_repair(s: &str) -> Result<cairn_core::repair::Threshold, String> {
    use cairn_core::repair::Threshold;
    match s.trim() {
        "lazy" => Ok(Threshold::Lazy),
        "halfway" => Ok(Threshold::Halfway),
        "eager" => Ok(Threshold::Eager),
        n => n.parse().map(Threshold::AtMost).map_err(|_| {
            format!("{s:?} is not a repair policy; use lazy, halfway, eager or a number of pieces")
        }),
    }
}

/// Formats bytes with a binary unit.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_repair_policies() {
        use std::time::Duration;
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("4h"), Ok(Duration::from_secs(4 * 3600)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("x s").is_err());
        use cairn_core::repair::Threshold;
        assert_eq!(parse_repair("eager"), Ok(Threshold::Eager));
        assert_eq!(parse_repair("20"), Ok(Threshold::AtMost(20)));
        assert!(parse_repair("soon").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("20GiB"), Ok(20 << 30));
        assert_eq!(parse_size("1.5 MiB"), Ok(1_572_864));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("7"), Ok(7));
        assert!(parse_size("5 parsecs").is_err());
        assert!(parse_size("lots").is_err());
        assert_eq!(human(3 << 20), "3.0 MiB");
    }
}
