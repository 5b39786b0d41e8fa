//! Go `time.ParseDuration` / `Duration.String()` compatible helpers.
//!
//! MetalLB reads `hold-time` and `keepalive-time` with Go's `time.ParseDuration` and truncates
//! them to whole seconds; the migrator prints them the way Go's `Duration.String()` does
//! (`1m30s`, `2m0s`). Pure.

/// Parse a Go duration string into nanoseconds (may be negative).
///
/// Accepts what Go accepts: an optional sign, then one or more `<decimal><unit>` terms with
/// units `ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`; the bare string `0` is zero.
pub fn parse_go_duration(s: &str) -> Result<i128, String> {
    let orig = s;
    let invalid = || format!("time: invalid duration {orig:?}");
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total: i128 = 0;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let int_part = &rest[..int_len];
        rest = &rest[int_len..];
        let mut frac_part = "";
        if let Some(r) = rest.strip_prefix('.') {
            let frac_len = r.bytes().take_while(u8::is_ascii_digit).count();
            frac_part = &r[..frac_len];
            rest = &r[frac_len..];
        }
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(invalid());
        }
        let unit_len = rest
            .char_indices()
            .find(|(_, c)| *c == '.' || c.is_ascii_digit())
            .map_or(rest.len(), |(i, _)| i);
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale: i128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {orig:?}")),
        };
        let whole: i128 = if int_part.is_empty() {
            0
        } else {
            int_part.parse::<i128>().map_err(|_| invalid())?
        };
        let mut v = whole.checked_mul(scale).ok_or_else(invalid)?;
        // Fraction: keep nanosecond precision like Go (extra digits are dropped).
        let mut f_scale = scale;
        for d in frac_part.bytes() {
            f_scale /= 10;
            if f_scale == 0 {
                break;
            }
            v += i128::from(d - b'0') * f_scale;
        }
        total = total.checked_add(v).ok_or_else(invalid)?;
        // Go limits durations to an int64 of nanoseconds.
        if total > i128::from(i64::MAX) {
            return Err(invalid());
        }
    }
    Ok(if neg { -total } else { total })
}

/// Format whole seconds like Go's `Duration.String()`: `0s`, `45s`, `1m30s`, `2m0s`, `1h0m0s`.
pub fn format_go_seconds(secs: u64) -> String {
    if secs == 0 {
        return "0s".to_string();
    }
    let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn parses_go_durations() {
        assert_eq!(parse_go_duration("90s"), Ok(90 * S));
        assert_eq!(parse_go_duration("1m30s"), Ok(90 * S));
        assert_eq!(parse_go_duration("1.5s"), Ok(S + S / 2));
        assert_eq!(parse_go_duration("3.9s"), Ok(3 * S + 9 * S / 10));
        assert_eq!(parse_go_duration("-5s"), Ok(-5 * S));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("2h"), Ok(7200 * S));
        assert_eq!(parse_go_duration("500ms"), Ok(S / 2));
        assert_eq!(parse_go_duration(".5s"), Ok(S / 2));
    }

    #[test]
    fn rejects_what_go_rejects() {
        assert_eq!(
            parse_go_duration("90"),
            Err("time: missing unit in duration \"90\"".to_string())
        );
        assert_eq!(
            parse_go_duration("1d"),
            Err("time: unknown unit \"d\" in duration \"1d\"".to_string())
        );
        assert!(parse_go_duration("").is_err());
        assert!(parse_go_duration("s").is_err());
        assert!(parse_go_duration("-").is_err());
        assert!(parse_go_duration("1.s.").is_err());
        assert!(parse_go_duration("99999999999999999999h").is_err());
    }

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_seconds(0), "0s");
        assert_eq!(format_go_seconds(45), "45s");
        assert_eq!(format_go_seconds(90), "1m30s");
        assert_eq!(format_go_seconds(120), "2m0s");
        assert_eq!(format_go_seconds(3600), "1h0m0s");
        assert_eq!(format_go_seconds(3661), "1h1m1s");
    }
}
