//! Kubernetes object names for legacy pool and BFD profile names. Pure.
//!
//! Legacy pool and profile names are free text (`Prod_Pool 1` parses); metallb.io object names
//! must be what the apiserver accepts for custom resources: a lowercase RFC 1123 subdomain
//! (`[a-z0-9]` and `-`, dot-separated parts that start and end with a letter or digit, at most
//! 253 characters). We rename only names the apiserver would reject, and only as much as
//! needed:
//!
//! 1. ASCII letters are lower-cased; every other character outside `[a-z0-9.-]` (`_`, spaces,
//!    non-ASCII …) becomes `-`;
//! 2. each dot-separated part loses its leading and trailing `-`; empty parts are dropped;
//! 3. the result is cut to 253 bytes and trailing `-`/`.` are trimmed again.
//!
//! A name with no letter or digit left is an error. Unlike configmaptocrs (spec §3.4), valid
//! names such as `01-pool`, `a` or a 100-character lowercase name are kept (each needless
//! rename is one more Service annotation to patch), and characters other than `_` and
//! uppercase letters are handled instead of producing names the apiserver rejects.

/// Longest object name the apiserver accepts.
pub const MAX_LEN: usize = 253;

/// Whether `name` is a valid object name (lowercase RFC 1123 subdomain).
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_LEN
        && name.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

/// What makes `name` invalid, as a short human-readable list (empty if it is valid).
pub fn problems(name: &str) -> String {
    let mut out: Vec<String> = Vec::new();
    if name.chars().any(|c| c.is_ascii_uppercase()) {
        out.push("uppercase letters".into());
    }
    let mut bad: Vec<char> = name
        .chars()
        .filter(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        .collect();
    bad.sort_unstable();
    bad.dedup();
    if !bad.is_empty() {
        let list: Vec<String> = bad.iter().map(|c| format!("{c:?}")).collect();
        out.push(format!(
            "characters not allowed in Kubernetes names ({})",
            list.join(" ")
        ));
    }
    let parts: Vec<&str> = name.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        out.push("an empty dot-separated part".into());
    }
    let edge = |c: Option<char>| c.is_some_and(|c| !c.is_ascii_alphanumeric());
    if parts
        .iter()
        .any(|p| edge(p.chars().next()) || edge(p.chars().last()))
    {
        out.push("a part that does not start or end with a letter or digit".into());
    }
    if name.len() > MAX_LEN {
        out.push(format!("longer than {MAX_LEN} characters"));
    }
    out.join(", ")
}

/// The valid object name for a legacy name: the name itself when valid, else the normalized
/// form; `None` when nothing usable is left.
pub fn normalize(name: &str) -> Option<String> {
    if is_valid(name) {
        return Some(name.to_string());
    }
    let mapped: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut s = mapped
        .split('.')
        .map(|p| p.trim_matches('-'))
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if s.len() > MAX_LEN {
        // Only ASCII is left, so any byte index is a char boundary.
        s.truncate(MAX_LEN);
        let keep = s.trim_end_matches(['-', '.']).len();
        s.truncate(keep);
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_valid_names() {
        for n in [
            "a",
            "01-numbered-addresspool",
            "pool.v4",
            "x1",
            &"a".repeat(253),
        ] {
            assert!(is_valid(n), "{n}");
            assert_eq!(normalize(n).as_deref(), Some(n));
            assert_eq!(problems(n), "");
        }
    }

    #[test]
    fn fixes_what_the_apiserver_rejects() {
        let cases = [
            ("Capitalized-AddressPool", "capitalized-addresspool"),
            ("underscored_bfd_profile", "underscored-bfd-profile"),
            ("Prod_Pool 1", "prod-pool-1"),
            ("-lead", "lead"),
            ("trail-", "trail"),
            ("a..b", "a.b"),
            ("a.-b", "a.b"),
            (".x.", "x"),
            ("pööl", "p--l"),
            ("A", "a"),
            ("_x_", "x"),
        ];
        for (from, to) in cases {
            let got = normalize(from).unwrap();
            assert_eq!(got, to, "{from}");
            assert!(is_valid(&got), "{got}");
            assert!(!problems(from).is_empty(), "{from}");
        }
    }

    #[test]
    fn truncates_without_leaving_a_trailing_dash() {
        let long = format!("{}_{}", "a".repeat(252), "b".repeat(10));
        let got = normalize(&long).unwrap();
        assert_eq!(got, "a".repeat(252));
        let long = format!("{}.{}", "A".repeat(252), "b");
        assert_eq!(normalize(&long).unwrap(), "a".repeat(252));
    }

    #[test]
    fn gives_up_on_names_without_letters_or_digits() {
        assert_eq!(normalize("___"), None);
        assert_eq!(normalize("..."), None);
        assert_eq!(normalize("ÄÖ"), None);
    }

    #[test]
    fn explains_problems() {
        assert_eq!(
            problems("Prod_Pool 1"),
            "uppercase letters, characters not allowed in Kubernetes names (' ' '_')"
        );
        assert_eq!(
            problems("trail-"),
            "a part that does not start or end with a letter or digit"
        );
    }
}
