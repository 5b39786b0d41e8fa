//! Pool address entries: CIDRs and `start-end` ranges, summarized into CIDRs. Pure.
//!
//! Matches MetalLB 0.12: an entry without `-` is a CIDR whose host bits are masked off
//! (`10.20.30.40/24` is `10.20.30.0/24`); an entry with `-` is a range, split at the first `-`
//! with spaces around each side trimmed, summarized into the minimal list of CIDRs in
//! ascending order. A single-address range `a-a` is allowed. Where MetalLB silently produced
//! an empty pool (reversed or mixed-family ranges) we reject the entry (compat/README.md).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::error::ErrorKind;

/// Parse an IP address as Go 1.16's `net.ParseIP` did (MetalLB 0.12.1 was built with Go 1.16,
/// `.circleci/config.yml:22` at v0.12.1): IPv4 parts may carry leading zeros and are read as
/// **decimal** (`010.0.0.1` is 10.0.0.1, never octal), also in an IPv4 tail of an IPv6 address.
/// Go 1.17 and Rust's parser reject such parts; Kubernetes keeps accepting them the same way
/// (`netutils.ParseIPSloppy`), so kube-proxy and we read such an address alike.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if !s.contains(':') {
        return parse_ipv4_go116(s).map(IpAddr::V4);
    }
    // An IPv6 address ending in a dotted IPv4 part: canonicalize that part and retry.
    let (head, tail) = s.rsplit_once(':')?;
    if !tail.contains('.') {
        return None;
    }
    let v4 = parse_ipv4_go116(tail)?;
    format!("{head}:{v4}").parse().ok()
}

/// Go 1.16 `parseIPv4`: four dot-separated parts of one or more decimal digits, each at most
/// 255, nothing else.
fn parse_ipv4_go116(s: &str) -> Option<Ipv4Addr> {
    let mut out = [0u8; 4];
    let mut parts = s.split('.');
    for o in &mut out {
        let p = parts.next()?;
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let digits = p.trim_start_matches('0');
        *o = if digits.is_empty() {
            0
        } else if digits.len() > 3 {
            return None;
        } else {
            digits.parse().ok()?
        };
    }
    parts.next().is_none().then_some(Ipv4Addr::from(out))
}

/// Parse one `addresses[]` entry into its CIDRs (ascending, minimal).
pub fn parse_entry(raw: &str) -> Result<Vec<IpNet>, ErrorKind> {
    if let Some((start, end)) = raw.split_once('-') {
        let s = parse_ip(start.trim())
            .ok_or_else(|| ErrorKind::InvalidRangeStart(start.to_string()))?;
        let e = parse_ip(end.trim()).ok_or_else(|| ErrorKind::InvalidRangeEnd(end.to_string()))?;
        summarize(s, e)
    } else {
        parse_cidr(raw).map(|n| vec![n])
    }
}

/// Parse a CIDR like Go's `net.ParseCIDR` and mask the host bits.
pub fn parse_cidr(raw: &str) -> Result<IpNet, ErrorKind> {
    let Some((ip, len)) = raw.split_once('/') else {
        return Err(ErrorKind::InvalidAddress(
            "a single address needs a prefix length, e.g. /32".to_string(),
        ));
    };
    let ip = parse_ip(ip)
        .ok_or_else(|| ErrorKind::InvalidAddress(format!("{ip:?} is not an IP address")))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len: u8 = if !len.is_empty() && len.len() <= 3 && len.bytes().all(|b| b.is_ascii_digit()) {
        len.parse().unwrap_or(u8::MAX)
    } else {
        u8::MAX
    };
    if len > max {
        return Err(ErrorKind::InvalidAddress(format!(
            "prefix length must be between 0 and {max}"
        )));
    }
    let net = match ip {
        IpAddr::V4(a) => Ipv4Net::new(a, len).map(IpNet::V4),
        IpAddr::V6(a) => Ipv6Net::new(a, len).map(IpNet::V6),
    };
    net.map(|n| n.trunc())
        .map_err(|e| ErrorKind::InvalidAddress(e.to_string()))
}

/// Numeric value and bit width of an address.
pub fn to_u128(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn from_u128(v: u128, bits: u8) -> IpAddr {
    if bits == 32 {
        IpAddr::V4(std::net::Ipv4Addr::from(v as u32))
    } else {
        IpAddr::V6(std::net::Ipv6Addr::from(v))
    }
}

/// The first and last address of a network, as numbers.
pub fn bounds(net: &IpNet) -> (u128, u128) {
    let (lo, _) = to_u128(net.network());
    let (hi, _) = to_u128(net.broadcast());
    (lo, hi)
}

/// Summarize the inclusive range `start..=end` into the minimal ascending list of CIDRs.
pub fn summarize(start: IpAddr, end: IpAddr) -> Result<Vec<IpNet>, ErrorKind> {
    let ((mut lo, bits), (hi, ebits)) = (to_u128(start), to_u128(end));
    if bits != ebits {
        return Err(ErrorKind::MixedFamilyRange);
    }
    if lo > hi {
        return Err(ErrorKind::ReversedRange);
    }
    let mut out = Vec::new();
    loop {
        let span_minus_one = hi - lo;
        // Largest block allowed by alignment of `lo` ...
        let align = if lo == 0 {
            u32::from(bits)
        } else {
            lo.trailing_zeros().min(u32::from(bits))
        };
        // ... and by the remaining span (2^k - 1 <= span_minus_one).
        let fit = if span_minus_one == u128::MAX {
            128
        } else {
            127 - (span_minus_one + 1).leading_zeros()
        };
        let k = align.min(fit);
        let prefix = bits - k as u8;
        let ip = from_u128(lo, bits);
        let net = match ip {
            IpAddr::V4(a) => Ipv4Net::new(a, prefix).map(IpNet::V4),
            IpAddr::V6(a) => Ipv6Net::new(a, prefix).map(IpNet::V6),
        }
        .map_err(|e| ErrorKind::InvalidAddress(e.to_string()))?;
        out.push(net);
        let size_minus_one = if k == 128 {
            u128::MAX
        } else {
            (1u128 << k) - 1
        };
        match lo.checked_add(size_minus_one) {
            Some(last) if last < hi => lo = last + 1,
            _ => break,
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(v: &[IpNet]) -> Vec<String> {
        v.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn summarizes_the_upstream_example() {
        let r = parse_entry("40.0.0.150-40.0.0.200").unwrap();
        assert_eq!(
            nets(&r),
            [
                "40.0.0.150/31",
                "40.0.0.152/29",
                "40.0.0.160/27",
                "40.0.0.192/29",
                "40.0.0.200/32"
            ]
        );
    }

    #[test]
    fn trims_spaces_and_allows_single_address() {
        assert_eq!(
            nets(&parse_entry("40.0.0.210 - 40.0.0.211").unwrap()),
            ["40.0.0.210/31"]
        );
        assert_eq!(
            nets(&parse_entry("1.2.3.4-1.2.3.4").unwrap()),
            ["1.2.3.4/32"]
        );
    }

    /// Go 1.16 (MetalLB 0.12.1's toolchain) read leading-zero IPv4 parts as decimal.
    #[test]
    fn leading_zero_ipv4_parts_are_decimal_as_go_1_16() {
        let ip = |s: &str| parse_ip(s).map(|i| i.to_string());
        assert_eq!(ip("010.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(ip("192.168.001.010").as_deref(), Some("192.168.1.10"));
        assert_eq!(ip("0000.0.0.00255").as_deref(), Some("0.0.0.255"));
        assert_eq!(ip("::ffff:010.0.0.1").as_deref(), Some("::ffff:10.0.0.1"));
        for bad in [
            "256.0.0.1",
            "0256.0.0.1",
            "1.2.3",
            "1.2.3.4.5",
            "1..2.3",
            "1.2.3.+4",
            "0x1.2.3.4",
            "1.2.3.4 ",
            "",
        ] {
            assert_eq!(parse_ip(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_cidr("010.020.030.040/024").unwrap().to_string(),
            "10.20.30.0/24"
        );
        assert_eq!(
            nets(&parse_entry("010.0.0.1-010.0.0.2").unwrap()),
            ["10.0.0.1/32", "10.0.0.2/32"]
        );
    }

    #[test]
    fn masks_host_bits() {
        assert_eq!(
            parse_cidr("10.20.30.40/24").unwrap().to_string(),
            "10.20.30.0/24"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/64").unwrap().to_string(),
            "2001:db8::/64"
        );
    }

    #[test]
    fn whole_spaces() {
        assert_eq!(
            nets(&parse_entry("0.0.0.0-255.255.255.255").unwrap()),
            ["0.0.0.0/0"]
        );
        assert_eq!(
            nets(&parse_entry("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap()),
            ["::/0"]
        );
        assert_eq!(
            nets(&parse_entry("255.255.255.255-255.255.255.255").unwrap()),
            ["255.255.255.255/32"]
        );
    }

    #[test]
    fn rejects_bad_entries() {
        assert_eq!(
            parse_entry("1.2.3.10-1.2.3.1"),
            Err(ErrorKind::ReversedRange)
        );
        assert_eq!(
            parse_entry("1.2.3.4-2001:db8::1"),
            Err(ErrorKind::MixedFamilyRange)
        );
        assert!(matches!(
            parse_entry("1.2.3.4"),
            Err(ErrorKind::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_entry("1.2.3.4/33"),
            Err(ErrorKind::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_entry("1.2.3.4/+3"),
            Err(ErrorKind::InvalidAddress(_))
        ));
        assert!(matches!(
            parse_entry("x-1.2.3.4"),
            Err(ErrorKind::InvalidRangeStart(_))
        ));
        assert!(matches!(
            parse_entry("1.2.3.4-"),
            Err(ErrorKind::InvalidRangeEnd(_))
        ));
    }
}
