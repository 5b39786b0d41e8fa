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
    // Go accumulates in a uint64 and allows at most 1<<63 (only for a negative duration):
    // every step is checked against that limit, so no input overflows or wraps.
    const LIMIT: u128 = 1 << 63;
    let mut total: u128 = 0;
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
        let scale: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            u => return Err(format!("time: unknown unit {u:?} in duration {orig:?}")),
        };
        let mut whole: u128 = 0;
        for d in int_part.bytes() {
            whole = whole * 10 + u128::from(d - b'0');
            if whole > LIMIT {
                return Err(invalid());
            }
        }
        let mut v = whole * scale;
        if v > LIMIT {
            return Err(invalid());
        }
        // Fraction, as Go's `leadingFraction`: digits while they fit an int64 (the rest are
        // ignored), then `float64(f) * (float64(unit) / scale)`, truncated; so Go's rounding
        // ("0.99999999999999999999s" is 1s) is reproduced exactly.
        let (mut f, mut f_scale, mut f_overflow) = (0u64, 1f64, false);
        for d in frac_part.bytes() {
            if f_overflow || f > (i64::MAX as u64) / 10 {
                f_overflow = true;
                continue;
            }
            let y = f * 10 + u64::from(d - b'0');
            if y > 1 << 63 {
                f_overflow = true;
                continue;
            }
            f = y;
            f_scale *= 10.0;
        }
        if f > 0 {
            // Both factors are finite and non-negative: the product is a finite, non-negative
            // float, and `as` saturates where it exceeds u128.
            let frac = (f as f64 * (scale as f64 / f_scale)) as u128;
            v += frac;
            if v > LIMIT {
                return Err(invalid());
            }
        }
        total += v;
        if total > LIMIT {
            return Err(invalid());
        }
    }
    // Both bounds fit an i128; the positive one is a nanosecond less than the negative one.
    let total = i128::try_from(total).map_err(|_| invalid())?;
    match neg {
        true => Ok(-total),
        false if total < LIMIT as i128 => Ok(total),
        false => Err(invalid()),
    }
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

    /// Go keeps a duration in an int64 of nanoseconds and answers "invalid duration" for
    /// anything larger (time/format.go `ParseDuration`), never a wrapped or panicking value.
    #[test]
    fn overflow_is_an_invalid_duration_not_a_panic() {
        let invalid = |s: &str| Err(format!("time: invalid duration {s:?}"));
        const MAX: i128 = i64::MAX as i128;
        // The boundaries: Go's largest duration and one nanosecond more.
        assert_eq!(parse_go_duration("2562047h47m16.854775807s"), Ok(MAX));
        assert_eq!(parse_go_duration("9223372036854775807ns"), Ok(MAX));
        assert_eq!(parse_go_duration("2562047h"), Ok(2_562_047 * 3600 * S));
        for s in [
            "2562047h47m16.854775808s",
            "9223372036854775808ns",
            "2562048h",
            "9999999999999999999h",
            "2562047h2562047h",
            "1h9223372036854775807ns",
        ] {
            assert_eq!(parse_go_duration(s), invalid(s), "{s}");
        }
        // Go allows exactly -1<<63 (the int64 minimum), nothing below.
        // (before the fix: checked below, after the overflow cases)
        assert!(parse_go_duration("-9223372036854775809ns").is_err());
        // Inputs that overflowed the arithmetic itself (fuzz-style): a whole part just under
        // the i128 limit for its unit, then a fraction; more digits than any integer holds.
        for s in [
            "170141183460469231731687303715.9s",
            "47261439850130342147690.9999h",
            "170141183460469231731687303715884105727ns",
            "1701411834604692317316873037158841057270ns",
            "0.99999999999999999999999999999999999999999999s",
        ] {
            let _ = parse_go_duration(s);
        }
        assert!(parse_go_duration("170141183460469231731687303715.9s").is_err());
        assert_eq!(
            parse_go_duration("0.99999999999999999999999999999999999999999999s"),
            Ok(S)
        );
    }

    proptest::proptest! {
        /// Fuzz-style: any mix of digits, dots, signs and units parses or is refused, never
        /// panics, and what parses fits Go's int64 of nanoseconds.
        #[test]
        fn never_panics_and_stays_in_range(s in "[-+]?([0-9]{0,30}(\\.[0-9]{0,30})?(ns|us|µs|ms|s|m|h)?){1,4}") {
            if let Ok(v) = parse_go_duration(&s) {
                proptest::prop_assert!(i64::try_from(v).is_ok(), "{s} -> {v}");
            }
        }
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
