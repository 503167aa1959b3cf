//! Memory sizes as operators write and read them: `16GiB`, `512MiB`, `1073741824`.

/// Parses a size: an integer of bytes or a number with a binary (`KiB`..`TiB`, also `K`..`T`,
/// `KB`..`TB` meaning the same) unit.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad = || format!("invalid size {s:?}: write e.g. 16GiB, 512MiB or 1073741824");
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" | "kb" => 1 << 10,
        "m" | "mib" | "mb" => 1 << 20,
        "g" | "gib" | "gb" => 1 << 30,
        "t" | "tib" | "tb" => 1 << 40,
        _ => return Err(bad()),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult).ok_or_else(bad);
    }
    let f: f64 = num.parse().map_err(|_| bad())?;
    let v = f * mult as f64;
    if !v.is_finite() || v < 0.0 || v >= u64::MAX as f64 {
        return Err(bad());
    }
    Ok(v as u64)
}

/// Formats a size with the largest binary unit that keeps it readable: `16 GiB`, `1.5 GiB`.
pub fn fmt_size(n: u64) -> String {
    const UNITS: [(&str, u64); 4] = [
        ("TiB", 1 << 40),
        ("GiB", 1 << 30),
        ("MiB", 1 << 20),
        ("KiB", 1 << 10),
    ];
    for (u, m) in UNITS {
        if n >= m {
            return if n % m == 0 {
                format!("{} {u}", n / m)
            } else {
                format!("{:.1} {u}", n as f64 / m as f64)
            };
        }
    }
    format!("{n} B")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_in_binary_units() {
        assert_eq!(parse_size("16GiB").unwrap(), 16 << 30);
        assert_eq!(parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1234").unwrap(), 1234);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("99999999999999999999T").is_err());
        assert!(parse_size("").is_err());
        assert_eq!(fmt_size(16 << 30), "16 GiB");
        assert_eq!(fmt_size(3 << 29), "1.5 GiB");
        assert_eq!(fmt_size(100), "100 B");
    }
}
