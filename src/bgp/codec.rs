//! BGP-4 wire codec: [`Message`] values to bytes and back. Pure: no I/O, no clock, no
//! logging; [`decode`] takes any `&[u8]` and returns a message or the [`DecodeError`] whose
//! NOTIFICATION answers it, never panics (fuzzed by `fuzz/fuzz_targets/bgp_decode.rs`).
//!
//! - Header (RFC 4271 §4.1, checks §6.1): [`frame_len`] delimits messages in a TCP stream.
//! - OPEN (RFC 4271 §4.2) with the Capabilities optional parameter (RFC 5492): multiprotocol
//!   (RFC 4760 §8), route refresh (RFC 2918), graceful restart (RFC 4724 §3), 4-octet AS
//!   (RFC 6793). Capabilities from several parameters are decoded in order; encoding puts them
//!   all in one parameter, as MetalLB 0.9–0.12 does.
//! - UPDATE (RFC 4271 §4.3, checks §6.3) with ORIGIN, AS_PATH (2- or 4-octet ASNs per
//!   [`Ctx`], RFC 6793 §4), NEXT_HOP, MULTI_EXIT_DISC, LOCAL_PREF, COMMUNITIES (RFC 1997),
//!   MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760 §3–4, IPv6 next hops RFC 2545 §3) for IPv4 and
//!   IPv6 unicast. Other attributes, and MP attributes of other families, are kept as
//!   [`RawAttr`] in `other` and re-encoded as received.
//! - NOTIFICATION (RFC 4271 §4.5), KEEPALIVE (§4.4), ROUTE-REFRESH (RFC 2918 §3; the RFC 7313
//!   subtype in the reserved octet is ignored: we never advertise enhanced route refresh).
//!
//! Error handling is the session-reset style of RFC 4271 §6 (not RFC 7606's treat-as-withdraw):
//! every malformed message yields (code, subcode, data) for the NOTIFICATION, and a short fixed
//! `what` usable as a metrics label.
//!
//! Decoding canonicalises what carries no meaning, so a decoded message re-encodes to bytes that
//! decode to the same value (and are never longer): host bits after a prefix length are cleared,
//! reserved octets and unassigned flag bits are dropped, capabilities are merged into one
//! optional parameter, attributes are put in type-code order, and the Extended Length flag of
//! modelled attributes is recomputed. Unmodelled attributes keep their flags, Extended Length
//! included.
//!
//! Encoding assumes a message BGP can carry: `encoded_len <= MAX_LEN` (the caller splits
//! UPDATEs, [`prefix_len_bytes`] helps), at most 253 octets of capabilities, every capability
//! and attribute value within its length field. Length fields of oversized parts saturate (the
//! peer will reject the message); [`encode`] never panics.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::message::*;

const MARKER: [u8; 16] = [0xff; 16];

const TYPE_OPEN: u8 = 1;
const TYPE_UPDATE: u8 = 2;
const TYPE_NOTIFICATION: u8 = 3;
const TYPE_KEEPALIVE: u8 = 4;
const TYPE_ROUTE_REFRESH: u8 = 5;

/// Fixed part of an OPEN body: version, my AS, hold time, BGP identifier, opt. params length.
const OPEN_FIXED_LEN: usize = 10;
const OPT_PARAM_CAPABILITIES: u8 = 2;

const CAP_MULTIPROTOCOL: u8 = 1;
const CAP_ROUTE_REFRESH: u8 = 2;
const CAP_GRACEFUL_RESTART: u8 = 64;
const CAP_FOUR_OCTET_AS: u8 = 65;
/// Graceful restart: Restart State bit, and the 12-bit Restart Time.
const GR_RESTARTING: u16 = 0x8000;
const GR_TIME_MASK: u16 = 0x0fff;
/// Graceful restart, per family: Forwarding State bit.
const GR_FORWARDING: u8 = 0x80;

const FLAG_OPTIONAL: u8 = 0x80;
const FLAG_TRANSITIVE: u8 = 0x40;
const FLAG_PARTIAL: u8 = 0x20;
const FLAG_EXTENDED: u8 = 0x10;
const WELL_KNOWN: u8 = FLAG_TRANSITIVE;
const OPTIONAL_NON_TRANSITIVE: u8 = FLAG_OPTIONAL;
const OPTIONAL_TRANSITIVE: u8 = FLAG_OPTIONAL | FLAG_TRANSITIVE;

const ATTR_ORIGIN: u8 = 1;
const ATTR_AS_PATH: u8 = 2;
const ATTR_NEXT_HOP: u8 = 3;
const ATTR_MED: u8 = 4;
const ATTR_LOCAL_PREF: u8 = 5;
const ATTR_ATOMIC_AGGREGATE: u8 = 6;
const ATTR_COMMUNITIES: u8 = 8;
const ATTR_MP_REACH: u8 = 14;
const ATTR_MP_UNREACH: u8 = 15;

const AS_SET: u8 = 1;
const AS_SEQUENCE: u8 = 2;
/// Most ASNs one AS_PATH segment holds (its count is one octet).
const MAX_SEGMENT_ASNS: usize = 255;

// ---------------------------------------------------------------------------------------------
// Framing

/// Checks the header of the message at the start of `buf` (RFC 4271 §6.1): marker all ones
/// (else 1/1), length 19..=4096 (else 1/2, data = the 2-byte length field), known type 1..=5
/// (else 1/3, data = the type byte), and the per-type minimum length (OPEN 29, UPDATE 23,
/// NOTIFICATION 21, KEEPALIVE exactly 19, ROUTE-REFRESH exactly 23; else 1/2).
/// `Ok(None)` while fewer than 19 bytes, or fewer than `length` bytes, are buffered;
/// `Ok(Some(len))` = the whole message is in `buf[..len]`.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    Ok(match check_header(buf)? {
        Some((len, _)) if buf.len() >= len => Some(len),
        _ => None,
    })
}

/// The header checks of [`frame_len`]: `Some((length, type))`, or `None` before 19 bytes.
fn check_header(buf: &[u8]) -> Result<Option<(usize, u8)>, DecodeError> {
    let mut r = Reader::new(buf);
    let (Some(marker), Some(len_field), Some(kind)) = (r.array::<16>(), r.array::<2>(), r.u8())
    else {
        return Ok(None);
    };
    if marker != MARKER {
        return Err(bad_marker());
    }
    let len = usize::from(u16::from_be_bytes(len_field));
    let bad_length = || {
        error(
            code::HEADER,
            code::HEADER_BAD_LENGTH,
            &len_field,
            "bad length",
        )
    };
    if !(HEADER_LEN..=MAX_LEN).contains(&len) {
        return Err(bad_length());
    }
    let fits = match kind {
        TYPE_OPEN => len >= HEADER_LEN + OPEN_FIXED_LEN,
        TYPE_UPDATE => len >= HEADER_LEN + 4,
        TYPE_NOTIFICATION => len >= HEADER_LEN + 2,
        TYPE_KEEPALIVE => len == HEADER_LEN,
        TYPE_ROUTE_REFRESH => len == HEADER_LEN + 4,
        _ => {
            return Err(error(
                code::HEADER,
                code::HEADER_BAD_TYPE,
                &[kind],
                "bad type",
            ));
        }
    };
    if !fits {
        return Err(bad_length());
    }
    Ok(Some((len, kind)))
}

/// Bytes one prefix of this length takes in NLRI / withdrawn routes (1 + ceil(len/8)).
pub fn prefix_len_bytes(prefix_len: u8) -> usize {
    1 + usize::from(prefix_len).div_ceil(8)
}

// ---------------------------------------------------------------------------------------------
// Decoding

/// Decodes one whole message (header included, as delimited by [`frame_len`]). Never panics on
/// any input. A `msg` that is not exactly one message (shorter than its header or its length
/// field, or with bytes after it) is a Bad Message Length (1/2).
pub fn decode(msg: &[u8], ctx: Ctx) -> Result<Message, DecodeError> {
    let bad_length = || {
        let field = msg.get(16..18).unwrap_or_default();
        error(code::HEADER, code::HEADER_BAD_LENGTH, field, "bad length")
    };
    let Some((len, kind)) = check_header(msg)? else {
        if msg.iter().take(MARKER.len()).any(|&b| b != 0xff) {
            return Err(bad_marker());
        }
        return Err(bad_length());
    };
    if msg.len() != len {
        return Err(bad_length());
    }
    let body = msg.get(HEADER_LEN..).unwrap_or_default();
    let mut r = Reader::new(body);
    Ok(match kind {
        TYPE_OPEN => Message::Open(decode_open(body).ok_or_else(bad_length)??),
        TYPE_UPDATE => Message::Update(decode_update(body, ctx)?),
        TYPE_NOTIFICATION => {
            let (Some(code), Some(subcode)) = (r.u8(), r.u8()) else {
                return Err(bad_length());
            };
            Message::Notification(Notification {
                code,
                subcode,
                data: r.rest().to_vec(),
            })
        }
        TYPE_KEEPALIVE => Message::Keepalive,
        _ => {
            let (Some(afi), Some(_reserved), Some(safi)) = (r.u16(), r.u8(), r.u8()) else {
                return Err(bad_length());
            };
            Message::RouteRefresh(RouteRefresh { afi, safi })
        }
    })
}

/// OPEN body. `None` when the fixed part or the optional parameters length does not match the
/// message length (Bad Message Length).
fn decode_open(body: &[u8]) -> Option<Result<Open, DecodeError>> {
    let mut r = Reader::new(body);
    let version = r.u8()?;
    let my_as = r.u16()?;
    let hold_time = r.u16()?;
    let router_id = Ipv4Addr::from(r.array::<4>()?);
    let params_len = usize::from(r.u8()?);
    let params = r.rest();
    if params.len() != params_len {
        return None;
    }
    Some(decode_capabilities(params).map(|capabilities| Open {
        version,
        my_as,
        hold_time,
        router_id,
        capabilities,
    }))
}

/// Optional parameters (RFC 4271 §4.2): only Capabilities (RFC 5492 §4), each holding any
/// number of capabilities.
fn decode_capabilities(params: &[u8]) -> Result<Vec<Capability>, DecodeError> {
    let malformed_param = || error(code::OPEN, 0, &[], "malformed optional parameter");
    let malformed_cap = || error(code::OPEN, 0, &[], "malformed capability");
    let mut caps = Vec::new();
    let mut r = Reader::new(params);
    while !r.is_empty() {
        let (Some(kind), Some(len)) = (r.u8(), r.u8()) else {
            return Err(malformed_param());
        };
        let value = r.take(usize::from(len)).ok_or_else(malformed_param)?;
        if kind != OPT_PARAM_CAPABILITIES {
            return Err(error(
                code::OPEN,
                code::OPEN_UNSUPPORTED_PARAM,
                &[],
                "unsupported optional parameter",
            ));
        }
        let mut c = Reader::new(value);
        while !c.is_empty() {
            let (Some(code), Some(len)) = (c.u8(), c.u8()) else {
                return Err(malformed_cap());
            };
            let value = c.take(usize::from(len)).ok_or_else(malformed_cap)?;
            caps.push(decode_capability(code, value).ok_or_else(malformed_cap)?);
        }
    }
    Ok(caps)
}

/// One capability value; `None` when its length is wrong for its code.
fn decode_capability(code: u8, value: &[u8]) -> Option<Capability> {
    let mut r = Reader::new(value);
    let cap = match code {
        CAP_MULTIPROTOCOL => {
            let afi = r.u16()?;
            let _reserved = r.u8()?;
            let safi = r.u8()?;
            Capability::Multiprotocol { afi, safi }
        }
        CAP_ROUTE_REFRESH => Capability::RouteRefresh,
        CAP_GRACEFUL_RESTART => {
            let flags_time = r.u16()?;
            let mut families = Vec::new();
            while !r.is_empty() {
                let afi = r.u16()?;
                let safi = r.u8()?;
                let flags = r.u8()?;
                families.push((afi, safi, flags & GR_FORWARDING != 0));
            }
            Capability::GracefulRestart(GracefulRestart {
                restarting: flags_time & GR_RESTARTING != 0,
                restart_time: flags_time & GR_TIME_MASK,
                families,
            })
        }
        CAP_FOUR_OCTET_AS => Capability::FourOctetAs(r.u32()?),
        _ => {
            return Some(Capability::Unknown {
                code,
                value: value.to_vec(),
            });
        }
    };
    // Every byte accounted for: a longer value is as wrong as a shorter one.
    r.is_empty().then_some(cap)
}

/// UPDATE body (RFC 4271 §4.3): lengths first, then attributes, then the prefixes, then the
/// mandatory attributes (§6.3).
fn decode_update(body: &[u8], ctx: Ctx) -> Result<Update, DecodeError> {
    let malformed = || {
        error(
            code::UPDATE,
            code::UPDATE_MALFORMED_ATTR_LIST,
            &[],
            "malformed attribute list",
        )
    };
    let mut r = Reader::new(body);
    let withdrawn_len = r.u16().ok_or_else(malformed)?;
    let withdrawn = r.take(usize::from(withdrawn_len)).ok_or_else(malformed)?;
    let attrs_len = r.u16().ok_or_else(malformed)?;
    let attrs = r.take(usize::from(attrs_len)).ok_or_else(malformed)?;
    let nlri = r.rest();

    let (attrs, seen) = decode_attrs(attrs, ctx)?;
    let invalid_network = || {
        error(
            code::UPDATE,
            code::UPDATE_INVALID_NETWORK,
            &[],
            "invalid network field",
        )
    };
    let withdrawn = v4_prefixes(withdrawn).ok_or_else(invalid_network)?;
    let nlri = v4_prefixes(nlri).ok_or_else(invalid_network)?;

    let mandatory: &[u8] = if !nlri.is_empty() {
        &[ATTR_ORIGIN, ATTR_AS_PATH, ATTR_NEXT_HOP]
    } else if seen.contains(ATTR_MP_REACH) {
        // RFC 4760 §3: ORIGIN and AS_PATH come with MP_REACH_NLRI; the next hop is inside.
        &[ATTR_ORIGIN, ATTR_AS_PATH]
    } else {
        &[]
    };
    if let Some(&missing) = mandatory.iter().find(|&&c| !seen.contains(c)) {
        return Err(error(
            code::UPDATE,
            code::UPDATE_MISSING_WELL_KNOWN,
            &[missing],
            "missing well-known attribute",
        ));
    }
    Ok(Update {
        withdrawn,
        attrs,
        nlri,
    })
}

/// Set of attribute type codes seen in one UPDATE.
struct Seen([u64; 4]);

impl Seen {
    fn contains(&self, code: u8) -> bool {
        self.0
            .get(usize::from(code / 64))
            .is_some_and(|w| w & (1 << (code % 64)) != 0)
    }

    /// Adds `code`; false when it was already there.
    fn insert(&mut self, code: u8) -> bool {
        let fresh = !self.contains(code);
        if let Some(w) = self.0.get_mut(usize::from(code / 64)) {
            *w |= 1 << (code % 64);
        }
        fresh
    }
}

/// One path attribute as found on the wire.
struct WireAttr<'a> {
    flags: u8,
    code: u8,
    value: &'a [u8],
    /// Flags, type, length and value: the data of the attribute errors (RFC 4271 §6.3).
    whole: &'a [u8],
}

impl WireAttr<'_> {
    fn err(&self, subcode: u8, what: &'static str) -> DecodeError {
        error(code::UPDATE, subcode, self.whole, what)
    }

    fn length_error(&self) -> DecodeError {
        self.err(code::UPDATE_ATTR_LENGTH, "attribute length")
    }

    /// Attribute Flags Error unless the Optional and Transitive bits are `expected`; the
    /// Partial bit may only be set on optional transitive attributes (RFC 4271 §4.3).
    fn check_flags(&self, expected: u8) -> Result<(), DecodeError> {
        let category = self.flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE);
        let partial_ok = expected == OPTIONAL_TRANSITIVE || self.flags & FLAG_PARTIAL == 0;
        if category == expected && partial_ok {
            Ok(())
        } else {
            Err(self.err(code::UPDATE_ATTR_FLAGS, "attribute flags"))
        }
    }

    fn u32(&self) -> Result<u32, DecodeError> {
        <[u8; 4]>::try_from(self.value)
            .map(u32::from_be_bytes)
            .map_err(|_| self.length_error())
    }

    fn raw(&self) -> RawAttr {
        RawAttr {
            flags: self.flags,
            code: self.code,
            value: self.value.to_vec(),
        }
    }
}

/// The path attributes area (RFC 4271 §4.3, §6.3), and the type codes it held.
fn decode_attrs(bytes: &[u8], ctx: Ctx) -> Result<(PathAttrs, Seen), DecodeError> {
    let mut attrs = PathAttrs::default();
    let mut seen = Seen([0; 4]);
    let mut r = Reader::new(bytes);
    while !r.is_empty() {
        let start = r.remaining();
        let malformed = || {
            error(
                code::UPDATE,
                code::UPDATE_MALFORMED_ATTR_LIST,
                &[],
                "malformed attribute list",
            )
        };
        let (Some(flags), Some(code)) = (r.u8(), r.u8()) else {
            return Err(malformed());
        };
        let len = if flags & FLAG_EXTENDED != 0 {
            r.u16()
        } else {
            r.u8().map(u16::from)
        };
        let value = len
            .and_then(|len| r.take(usize::from(len)))
            .ok_or_else(malformed)?;
        let whole = start
            .get(..start.len() - r.remaining().len())
            .unwrap_or_default();
        if !seen.insert(code) {
            return Err(error(
                code::UPDATE,
                code::UPDATE_MALFORMED_ATTR_LIST,
                &[],
                "duplicate attribute",
            ));
        }
        decode_attr(
            &mut attrs,
            &WireAttr {
                flags,
                code,
                value,
                whole,
            },
            ctx,
        )?;
    }
    Ok((attrs, seen))
}

fn decode_attr(attrs: &mut PathAttrs, a: &WireAttr<'_>, ctx: Ctx) -> Result<(), DecodeError> {
    match a.code {
        ATTR_ORIGIN => {
            a.check_flags(WELL_KNOWN)?;
            let &[v] = a.value else {
                return Err(a.length_error());
            };
            attrs.origin = Some(match v {
                0 => Origin::Igp,
                1 => Origin::Egp,
                2 => Origin::Incomplete,
                _ => return Err(a.err(code::UPDATE_INVALID_ORIGIN, "invalid origin")),
            });
        }
        ATTR_AS_PATH => {
            a.check_flags(WELL_KNOWN)?;
            let path = decode_as_path(a.value, ctx).ok_or_else(|| {
                error(
                    code::UPDATE,
                    code::UPDATE_MALFORMED_AS_PATH,
                    &[],
                    "malformed as_path",
                )
            })?;
            attrs.as_path = Some(path);
        }
        ATTR_NEXT_HOP => {
            a.check_flags(WELL_KNOWN)?;
            attrs.next_hop = Some(Ipv4Addr::from(a.u32()?));
        }
        ATTR_MED => {
            a.check_flags(OPTIONAL_NON_TRANSITIVE)?;
            attrs.med = Some(a.u32()?);
        }
        ATTR_LOCAL_PREF => {
            a.check_flags(WELL_KNOWN)?;
            attrs.local_pref = Some(a.u32()?);
        }
        ATTR_ATOMIC_AGGREGATE => {
            // Well-known (RFC 4271 §5.1.6), so recognised, but not modelled.
            a.check_flags(WELL_KNOWN)?;
            if !a.value.is_empty() {
                return Err(a.length_error());
            }
            attrs.other.push(a.raw());
        }
        ATTR_COMMUNITIES => {
            a.check_flags(OPTIONAL_TRANSITIVE)?;
            if !a.value.len().is_multiple_of(4) {
                return Err(a.length_error());
            }
            attrs.communities = a.value.chunks_exact(4).map(be_uint).collect();
        }
        ATTR_MP_REACH => {
            a.check_flags(OPTIONAL_NON_TRANSITIVE)?;
            // AFI, SAFI, next hop length, reserved at least.
            if a.value.len() < 5 {
                return Err(a.length_error());
            }
            let mut r = Reader::new(a.value);
            let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
                return Err(a.length_error());
            };
            if !known_family(afi, safi) {
                attrs.other.push(a.raw());
                return Ok(());
            }
            let bad = || a.err(code::UPDATE_OPTIONAL_ATTR, "malformed mp_reach_nlri");
            let next_hops = r
                .u8()
                .and_then(|len| r.take(usize::from(len)))
                .and_then(next_hops)
                .ok_or_else(bad)?;
            let _reserved = r.u8().ok_or_else(bad)?;
            let nlri = prefixes(afi, r.rest()).ok_or_else(bad)?;
            attrs.mp_reach = Some(MpReach {
                afi,
                safi,
                next_hops,
                nlri,
            });
        }
        ATTR_MP_UNREACH => {
            a.check_flags(OPTIONAL_NON_TRANSITIVE)?;
            let mut r = Reader::new(a.value);
            let (Some(afi), Some(safi)) = (r.u16(), r.u8()) else {
                return Err(a.length_error());
            };
            if !known_family(afi, safi) {
                attrs.other.push(a.raw());
                return Ok(());
            }
            let withdrawn = prefixes(afi, r.rest())
                .ok_or_else(|| a.err(code::UPDATE_OPTIONAL_ATTR, "malformed mp_unreach_nlri"))?;
            attrs.mp_unreach = Some(MpUnreach {
                afi,
                safi,
                withdrawn,
            });
        }
        _ if a.flags & FLAG_OPTIONAL == 0 => {
            return Err(a.err(
                code::UPDATE_UNRECOGNIZED_WELL_KNOWN,
                "unrecognized well-known attribute",
            ));
        }
        _ => attrs.other.push(a.raw()),
    }
    Ok(())
}

/// AS_PATH segments (RFC 4271 §4.3, RFC 6793 §4); `None` when malformed: unknown segment type,
/// truncated segment, or an empty one (RFC 7606 §7.2).
fn decode_as_path(value: &[u8], ctx: Ctx) -> Option<Vec<AsSegment>> {
    let width = asn_width(ctx);
    let mut r = Reader::new(value);
    let mut path = Vec::new();
    while !r.is_empty() {
        let kind = r.u8()?;
        let count = usize::from(r.u8()?);
        if count == 0 {
            return None;
        }
        let asns = r
            .take(count * width)?
            .chunks_exact(width)
            .map(be_uint)
            .collect();
        path.push(match kind {
            AS_SET => AsSegment::Set(asns),
            AS_SEQUENCE => AsSegment::Sequence(asns),
            _ => return None,
        });
    }
    Some(path)
}

/// MP_REACH_NLRI next hops by length: one IPv4, one IPv6, or IPv6 global + link-local.
fn next_hops(bytes: &[u8]) -> Option<Vec<IpAddr>> {
    let mut r = Reader::new(bytes);
    Some(match bytes.len() {
        4 => vec![IpAddr::V4(Ipv4Addr::from(r.array::<4>()?))],
        16 => vec![IpAddr::V6(Ipv6Addr::from(r.array::<16>()?))],
        32 => vec![
            IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
            IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
        ],
        _ => return None,
    })
}

/// The families whose MP NLRI is modelled (IPv4 and IPv6 unicast).
fn known_family(afi: u16, safi: u8) -> bool {
    safi == SAFI_UNICAST && (afi == AFI_IPV4 || afi == AFI_IPV6)
}

/// Prefixes of a known family.
fn prefixes(afi: u16, bytes: &[u8]) -> Option<Vec<IpNet>> {
    if afi == AFI_IPV4 {
        Some(v4_prefixes(bytes)?.into_iter().map(IpNet::V4).collect())
    } else {
        read_prefixes(bytes, 128, |a, len| {
            Some(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), len).ok()?.trunc(),
            ))
        })
    }
}

fn v4_prefixes(bytes: &[u8]) -> Option<Vec<Ipv4Net>> {
    read_prefixes(bytes, 32, |[a, b, c, d, ..], len| {
        Some(Ipv4Net::new(Ipv4Addr::new(a, b, c, d), len).ok()?.trunc())
    })
}

/// Prefixes (RFC 4271 §4.3: length in bits, then ceil(length/8) octets) until `bytes` ends;
/// `None` on a length over `max_len` or a truncated prefix.
fn read_prefixes<T>(
    bytes: &[u8],
    max_len: u8,
    make: impl Fn([u8; 16], u8) -> Option<T>,
) -> Option<Vec<T>> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let len = r.u8()?;
        if len > max_len {
            return None;
        }
        let octets = r.take(prefix_len_bytes(len) - 1)?;
        let mut addr = [0; 16];
        addr.get_mut(..octets.len())?.copy_from_slice(octets);
        out.push(make(addr, len)?);
    }
    Some(out)
}

/// Big-endian unsigned integer of up to 4 octets.
fn be_uint(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0, |n, &b| n << 8 | u32::from(b))
}

fn asn_width(ctx: Ctx) -> usize {
    if ctx.four_octet_as { 4 } else { 2 }
}

fn error(code: u8, subcode: u8, data: &[u8], what: &'static str) -> DecodeError {
    DecodeError {
        code,
        subcode,
        data: data.to_vec(),
        what,
    }
}

fn bad_marker() -> DecodeError {
    error(
        code::HEADER,
        code::HEADER_NOT_SYNCHRONIZED,
        &[],
        "bad marker",
    )
}

/// Bounds-checked reading from the front of a byte slice.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    fn remaining(&self) -> &'a [u8] {
        self.buf
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

/// Appends the encoding of `msg` (header included) to `out`. `msg` must fit BGP's limits (see
/// the module doc: `encoded_len <= MAX_LEN`, capabilities within 253 octets); larger values make
/// a message the peer rejects, never a panic.
pub fn encode(msg: &Message, ctx: Ctx, out: &mut Vec<u8>) {
    let len = encoded_len(msg, ctx);
    let start = out.len();
    out.reserve(len);
    out.extend_from_slice(&MARKER);
    put_u16(out, len);
    match msg {
        Message::Open(o) => {
            out.push(TYPE_OPEN);
            out.push(o.version);
            out.extend_from_slice(&o.my_as.to_be_bytes());
            out.extend_from_slice(&o.hold_time.to_be_bytes());
            out.extend_from_slice(&o.router_id.octets());
            let caps_len = capabilities_len(&o.capabilities);
            if caps_len == 0 {
                out.push(0);
            } else {
                put_u8(out, 2 + caps_len);
                out.push(OPT_PARAM_CAPABILITIES);
                put_u8(out, caps_len);
                for c in &o.capabilities {
                    put_capability(out, c);
                }
            }
        }
        Message::Update(u) => {
            out.push(TYPE_UPDATE);
            put_u16(out, v4_prefixes_len(&u.withdrawn));
            for p in &u.withdrawn {
                put_prefix(out, IpNet::V4(*p));
            }
            put_u16(out, attrs_len(&u.attrs, ctx));
            for a in attr_list(&u.attrs) {
                a.put(out, ctx);
            }
            for p in &u.nlri {
                put_prefix(out, IpNet::V4(*p));
            }
        }
        Message::Notification(n) => {
            out.push(TYPE_NOTIFICATION);
            out.push(n.code);
            out.push(n.subcode);
            out.extend_from_slice(&n.data);
        }
        Message::Keepalive => out.push(TYPE_KEEPALIVE),
        Message::RouteRefresh(rr) => {
            out.push(TYPE_ROUTE_REFRESH);
            out.extend_from_slice(&rr.afi.to_be_bytes());
            out.push(0);
            out.push(rr.safi);
        }
    }
    debug_assert_eq!(out.len() - start, len, "encoded_len disagrees with encode");
}

/// Length [`encode`] would produce.
pub fn encoded_len(msg: &Message, ctx: Ctx) -> usize {
    HEADER_LEN
        + match msg {
            Message::Open(o) => {
                let caps_len = capabilities_len(&o.capabilities);
                OPEN_FIXED_LEN + if caps_len == 0 { 0 } else { 2 + caps_len }
            }
            Message::Update(u) => {
                4 + v4_prefixes_len(&u.withdrawn)
                    + attrs_len(&u.attrs, ctx)
                    + v4_prefixes_len(&u.nlri)
            }
            Message::Notification(n) => 2 + n.data.len(),
            Message::Keepalive => 0,
            Message::RouteRefresh(_) => 4,
        }
}

fn capabilities_len(caps: &[Capability]) -> usize {
    caps.iter().map(|c| 2 + capability_value_len(c)).sum()
}

fn capability_value_len(c: &Capability) -> usize {
    match c {
        Capability::Multiprotocol { .. } | Capability::FourOctetAs(_) => 4,
        Capability::RouteRefresh => 0,
        Capability::GracefulRestart(gr) => 2 + 4 * gr.families.len(),
        Capability::Unknown { value, .. } => value.len(),
    }
}

fn put_capability(out: &mut Vec<u8>, c: &Capability) {
    let code = match c {
        Capability::Multiprotocol { .. } => CAP_MULTIPROTOCOL,
        Capability::RouteRefresh => CAP_ROUTE_REFRESH,
        Capability::GracefulRestart(_) => CAP_GRACEFUL_RESTART,
        Capability::FourOctetAs(_) => CAP_FOUR_OCTET_AS,
        Capability::Unknown { code, .. } => *code,
    };
    out.push(code);
    put_u8(out, capability_value_len(c));
    match c {
        Capability::Multiprotocol { afi, safi } => {
            out.extend_from_slice(&afi.to_be_bytes());
            out.push(0);
            out.push(*safi);
        }
        Capability::RouteRefresh => {}
        Capability::GracefulRestart(gr) => {
            let flags = if gr.restarting { GR_RESTARTING } else { 0 };
            out.extend_from_slice(&(flags | (gr.restart_time & GR_TIME_MASK)).to_be_bytes());
            for &(afi, safi, forwarding) in &gr.families {
                out.extend_from_slice(&afi.to_be_bytes());
                out.push(safi);
                out.push(if forwarding { GR_FORWARDING } else { 0 });
            }
        }
        Capability::FourOctetAs(asn) => out.extend_from_slice(&asn.to_be_bytes()),
        Capability::Unknown { value, .. } => out.extend_from_slice(value),
    }
}

fn v4_prefixes_len(prefixes: &[Ipv4Net]) -> usize {
    prefixes
        .iter()
        .map(|p| prefix_len_bytes(p.prefix_len()))
        .sum()
}

fn prefixes_len(prefixes: &[IpNet]) -> usize {
    prefixes
        .iter()
        .map(|p| prefix_len_bytes(p.prefix_len()))
        .sum()
}

/// Length octet, then the network's significant octets (host bits cleared).
fn put_prefix(out: &mut Vec<u8>, p: IpNet) {
    let len = p.prefix_len();
    out.push(len);
    let n = prefix_len_bytes(len) - 1;
    match p.network() {
        IpAddr::V4(a) => out.extend(a.octets().into_iter().take(n)),
        IpAddr::V6(a) => out.extend(a.octets().into_iter().take(n)),
    }
}

fn attrs_len(attrs: &PathAttrs, ctx: Ctx) -> usize {
    attr_list(attrs).map(|a| a.encoded_len(ctx)).sum()
}

/// The attributes of `attrs` in encoding order: modelled ones by type code, then `other`.
fn attr_list(attrs: &PathAttrs) -> impl Iterator<Item = AttrRef<'_>> {
    let communities = (!attrs.communities.is_empty()).then_some(&attrs.communities[..]);
    (attrs.origin.map(AttrRef::Origin).into_iter())
        .chain(attrs.as_path.as_deref().map(AttrRef::AsPath))
        .chain(attrs.next_hop.map(AttrRef::NextHop))
        .chain(attrs.med.map(AttrRef::Med))
        .chain(attrs.local_pref.map(AttrRef::LocalPref))
        .chain(communities.map(AttrRef::Communities))
        .chain(attrs.mp_reach.as_ref().map(AttrRef::MpReach))
        .chain(attrs.mp_unreach.as_ref().map(AttrRef::MpUnreach))
        .chain(attrs.other.iter().map(AttrRef::Raw))
}

/// One attribute to encode.
#[derive(Clone, Copy)]
enum AttrRef<'a> {
    Origin(Origin),
    AsPath(&'a [AsSegment]),
    NextHop(Ipv4Addr),
    Med(u32),
    LocalPref(u32),
    Communities(&'a [u32]),
    MpReach(&'a MpReach),
    MpUnreach(&'a MpUnreach),
    Raw(&'a RawAttr),
}

impl AttrRef<'_> {
    /// Flags (without Extended Length) and type code.
    fn flags_code(self) -> (u8, u8) {
        match self {
            Self::Origin(_) => (WELL_KNOWN, ATTR_ORIGIN),
            Self::AsPath(_) => (WELL_KNOWN, ATTR_AS_PATH),
            Self::NextHop(_) => (WELL_KNOWN, ATTR_NEXT_HOP),
            Self::Med(_) => (OPTIONAL_NON_TRANSITIVE, ATTR_MED),
            Self::LocalPref(_) => (WELL_KNOWN, ATTR_LOCAL_PREF),
            Self::Communities(_) => (OPTIONAL_TRANSITIVE, ATTR_COMMUNITIES),
            Self::MpReach(_) => (OPTIONAL_NON_TRANSITIVE, ATTR_MP_REACH),
            Self::MpUnreach(_) => (OPTIONAL_NON_TRANSITIVE, ATTR_MP_UNREACH),
            Self::Raw(r) => (r.flags & !FLAG_EXTENDED, r.code),
        }
    }

    fn value_len(self, ctx: Ctx) -> usize {
        match self {
            Self::Origin(_) => 1,
            Self::AsPath(path) => path
                .iter()
                .flat_map(|s| segment_asns(s).1.chunks(MAX_SEGMENT_ASNS))
                .map(|chunk| 2 + chunk.len() * asn_width(ctx))
                .sum(),
            Self::NextHop(_) | Self::Med(_) | Self::LocalPref(_) => 4,
            Self::Communities(c) => 4 * c.len(),
            Self::MpReach(m) => {
                let next_hops: usize = m
                    .next_hops
                    .iter()
                    .map(|a| if a.is_ipv4() { 4 } else { 16 })
                    .sum();
                5 + next_hops + prefixes_len(&m.nlri)
            }
            Self::MpUnreach(m) => 3 + prefixes_len(&m.withdrawn),
            Self::Raw(r) => r.value.len(),
        }
    }

    /// Extended Length is used for values over 255 octets, and kept on unmodelled attributes
    /// received with it.
    fn extended(self, ctx: Ctx) -> bool {
        self.value_len(ctx) > 255 || matches!(self, Self::Raw(r) if r.flags & FLAG_EXTENDED != 0)
    }

    fn encoded_len(self, ctx: Ctx) -> usize {
        let len_field = if self.extended(ctx) { 2 } else { 1 };
        2 + len_field + self.value_len(ctx)
    }

    fn put(self, out: &mut Vec<u8>, ctx: Ctx) {
        let (flags, code) = self.flags_code();
        let len = self.value_len(ctx);
        if self.extended(ctx) {
            out.push(flags | FLAG_EXTENDED);
            out.push(code);
            put_u16(out, len);
        } else {
            out.push(flags);
            out.push(code);
            put_u8(out, len);
        }
        match self {
            Self::Origin(o) => out.push(match o {
                Origin::Igp => 0,
                Origin::Egp => 1,
                Origin::Incomplete => 2,
            }),
            Self::AsPath(path) => {
                for segment in path {
                    let (kind, asns) = segment_asns(segment);
                    for chunk in asns.chunks(MAX_SEGMENT_ASNS) {
                        out.push(kind);
                        put_u8(out, chunk.len());
                        for &asn in chunk {
                            if ctx.four_octet_as {
                                out.extend_from_slice(&asn.to_be_bytes());
                            } else {
                                // RFC 6793 §4.2.2: AS_TRANS stands in for what does not fit.
                                let asn = u16::try_from(asn).unwrap_or(AS_TRANS);
                                out.extend_from_slice(&asn.to_be_bytes());
                            }
                        }
                    }
                }
            }
            Self::NextHop(a) => out.extend_from_slice(&a.octets()),
            Self::Med(v) | Self::LocalPref(v) => out.extend_from_slice(&v.to_be_bytes()),
            Self::Communities(c) => {
                for v in c {
                    out.extend_from_slice(&v.to_be_bytes());
                }
            }
            Self::MpReach(m) => {
                out.extend_from_slice(&m.afi.to_be_bytes());
                out.push(m.safi);
                let next_hops: Vec<u8> = m.next_hops.iter().flat_map(|a| ip_octets(*a)).collect();
                put_u8(out, next_hops.len());
                out.extend_from_slice(&next_hops);
                out.push(0);
                for p in &m.nlri {
                    put_prefix(out, *p);
                }
            }
            Self::MpUnreach(m) => {
                out.extend_from_slice(&m.afi.to_be_bytes());
                out.push(m.safi);
                for p in &m.withdrawn {
                    put_prefix(out, *p);
                }
            }
            Self::Raw(r) => out.extend_from_slice(&r.value),
        }
    }
}

/// Segment type code and ASNs. Segments longer than 255 ASNs are encoded as several segments
/// of the same type; empty ones are left out (RFC 7606 §7.2 calls them malformed).
fn segment_asns(s: &AsSegment) -> (u8, &[u32]) {
    match s {
        AsSegment::Set(a) => (AS_SET, a),
        AsSegment::Sequence(a) => (AS_SEQUENCE, a),
    }
}

fn ip_octets(a: IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// A one-octet length field (saturating: see the module doc on oversized values).
fn put_u8(out: &mut Vec<u8>, n: usize) {
    out.push(u8::try_from(n).unwrap_or(u8::MAX));
}

/// A two-octet length field (saturating).
fn put_u16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u16::try_from(n).unwrap_or(u16::MAX).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const AS2: Ctx = Ctx {
        four_octet_as: false,
    };
    const AS4: Ctx = Ctx {
        four_octet_as: true,
    };

    const KEEPALIVE_TYPE: &[u8] = &[0x00, 0x13, 0x04];
    // Attributes as MetalLB 0.12 writes them.
    const ORIGIN_INCOMPLETE: &[u8] = &[0x40, 0x01, 0x01, 0x02];
    const AS_PATH_4: &[u8] = &[0x40, 0x02, 0x06, 0x02, 0x01, 0x00, 0x00, 0xfb, 0xf4];
    const NEXT_HOP: &[u8] = &[0x40, 0x03, 0x04, 198, 51, 100, 2];
    const NLRI: &[u8] = &[32, 203, 0, 113, 10];

    fn enc(msg: &Message, ctx: Ctx) -> Vec<u8> {
        let mut out = Vec::new();
        encode(msg, ctx, &mut out);
        out
    }

    /// `msg` encodes to exactly `bytes`, which frame and decode back to `msg`.
    fn assert_wire(msg: &Message, ctx: Ctx, bytes: &[u8]) {
        assert_eq!(enc(msg, ctx), bytes, "encoding of {msg:?}");
        assert_eq!(encoded_len(msg, ctx), bytes.len());
        assert_eq!(frame_len(bytes), Ok(Some(bytes.len())));
        assert_eq!(decode(bytes, ctx).as_ref(), Ok(msg));
    }

    /// Whatever decodes re-encodes (never longer) to bytes that decode to the same value: what
    /// the fuzz target checks.
    fn assert_roundtrip(bytes: &[u8], ctx: Ctx) {
        if let Ok(m) = decode(bytes, ctx) {
            let again = enc(&m, ctx);
            assert_eq!(again.len(), encoded_len(&m, ctx));
            assert!(again.len() <= bytes.len(), "{m:?} grew");
            assert_eq!(frame_len(&again), Ok(Some(again.len())));
            assert_eq!(decode(&again, ctx), Ok(m));
        }
    }

    /// A message of type `kind` with this body, the header written by the test.
    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let len = u16::try_from(HEADER_LEN + body.len()).unwrap();
        [&MARKER[..], &len.to_be_bytes(), &[kind], body].concat()
    }

    fn update_bytes(withdrawn: &[u8], attrs: &[u8], nlri: &[u8]) -> Vec<u8> {
        let w = u16::try_from(withdrawn.len()).unwrap().to_be_bytes();
        let a = u16::try_from(attrs.len()).unwrap().to_be_bytes();
        message(TYPE_UPDATE, &[&w[..], withdrawn, &a, attrs, nlri].concat())
    }

    /// (code, subcode, data, what) of a rejected message.
    fn rejection(bytes: &[u8], ctx: Ctx) -> (u8, u8, Vec<u8>, &'static str) {
        let e = decode(bytes, ctx).expect_err("must be rejected");
        (e.code, e.subcode, e.data, e.what)
    }

    fn v4(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ebgp_update() -> Update {
        Update {
            attrs: PathAttrs {
                origin: Some(Origin::Incomplete),
                as_path: Some(vec![AsSegment::Sequence(vec![64500])]),
                next_hop: Some(Ipv4Addr::new(198, 51, 100, 2)),
                communities: vec![64500 << 16 | 100],
                ..Default::default()
            },
            nlri: vec![v4("203.0.113.10/32")],
            ..Default::default()
        }
    }

    fn metallb_open() -> Open {
        Open {
            version: 4,
            my_as: 64500,
            hold_time: 90,
            router_id: Ipv4Addr::new(192, 0, 2, 1),
            capabilities: vec![
                Capability::Multiprotocol {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                },
                Capability::Multiprotocol {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                },
                Capability::FourOctetAs(64500),
            ],
        }
    }

    #[test]
    fn a_keepalive_is_a_bare_header() {
        assert_wire(
            &Message::Keepalive,
            AS4,
            &[&MARKER[..], KEEPALIVE_TYPE].concat(),
        );
    }

    #[test]
    fn a_cease_notification_is_code_subcode_and_data() {
        let cease = |data: Vec<u8>| {
            Message::Notification(Notification {
                code: code::CEASE,
                subcode: code::CEASE_ADMIN_SHUTDOWN,
                data,
            })
        };
        // Length 21 = 19 + code + subcode.
        assert_wire(
            &cease(vec![]),
            AS4,
            &[&MARKER[..], &[0x00, 0x15, 0x03, 0x06, 0x02]].concat(),
        );
        // RFC 8203 shutdown communication: length octet + "bye".
        assert_wire(
            &cease(b"\x03bye".to_vec()),
            AS2,
            &[
                &MARKER[..],
                &[0x00, 0x19, 0x03, 0x06, 0x02, 3, b'b', b'y', b'e'],
            ]
            .concat(),
        );
    }

    #[test]
    fn a_route_refresh_is_afi_reserved_safi() {
        let rr = |afi| {
            Message::RouteRefresh(RouteRefresh {
                afi,
                safi: SAFI_UNICAST,
            })
        };
        assert_wire(
            &rr(AFI_IPV4),
            AS4,
            &[&MARKER[..], &[0x00, 0x17, 0x05, 0x00, 0x01, 0x00, 0x01]].concat(),
        );
        assert_wire(
            &rr(AFI_IPV6),
            AS4,
            &[&MARKER[..], &[0x00, 0x17, 0x05, 0x00, 0x02, 0x00, 0x01]].concat(),
        );
        // The RFC 7313 subtype in the reserved octet is ignored.
        let borr = [&MARKER[..], &[0x00, 0x17, 0x05, 0x00, 0x01, 0x01, 0x01]].concat();
        assert_eq!(decode(&borr, AS4), Ok(rr(AFI_IPV4)));
    }

    #[test]
    fn metallbs_open_is_byte_identical_to_upstream() {
        // Upstream MetalLB (internal/bgp/messages.go, sendOpen) writes one fixed struct:
        //   header: marker, length 49 = 19 + 10 + 20, type 1
        //   version 4, My AS 64500 = 0xfbf4, hold time 90 = 0x005a, BGP ID 192.0.2.1
        //   Opt Parm Len 20; parameter type 2 (Capabilities), length 18 = 3 x (2 + 4):
        //     MP (1), len 4: AFI 1, reserved 0, SAFI 1
        //     MP (1), len 4: AFI 2, reserved 0, SAFI 1
        //     4-octet AS (65 = 0x41), len 4: 64500 = 0x0000fbf4
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[
            0x00, 0x31, 0x01,
            0x04, 0xfb, 0xf4, 0x00, 0x5a, 192, 0, 2, 1,
            0x14, 0x02, 0x12,
            0x01, 0x04, 0x00, 0x01, 0x00, 0x01,
            0x01, 0x04, 0x00, 0x02, 0x00, 0x01,
            0x41, 0x04, 0x00, 0x00, 0xfb, 0xf4,
        ]].concat();
        assert_eq!(bytes.len(), 49);
        assert_wire(&Message::Open(metallb_open()), AS2, &bytes);
    }

    #[test]
    fn an_open_with_route_refresh_graceful_restart_and_four_octet_as() {
        let open = Open {
            capabilities: vec![
                Capability::RouteRefresh,
                Capability::GracefulRestart(GracefulRestart {
                    restarting: true,
                    restart_time: 120,
                    families: vec![
                        (AFI_IPV4, SAFI_UNICAST, true),
                        (AFI_IPV6, SAFI_UNICAST, true),
                    ],
                }),
                Capability::FourOctetAs(64500),
            ],
            ..metallb_open()
        };
        // Capabilities: 2 (RR) + 12 (GR: 2 + 2 + 2 x 4) + 6 (AS4) = 20; parameter 22;
        // length 19 + 10 + 22 = 51. GR flags/time: R (0x8000) | 120 = 0x8078.
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[
            0x00, 0x33, 0x01,
            0x04, 0xfb, 0xf4, 0x00, 0x5a, 192, 0, 2, 1,
            0x16, 0x02, 0x14,
            0x02, 0x00,
            0x40, 0x0a, 0x80, 0x78, 0x00, 0x01, 0x01, 0x80, 0x00, 0x02, 0x01, 0x80,
            0x41, 0x04, 0x00, 0x00, 0xfb, 0xf4,
        ]].concat();
        assert_wire(&Message::Open(open.clone()), AS4, &bytes);
        assert!(open.four_octet_as());
        assert_eq!(open.asn(), 64500);
    }

    #[test]
    fn capabilities_from_several_parameters_decode_in_order_and_encode_in_one() {
        #[rustfmt::skip]
        let params = [
            // Parameter 1: RR and AS4.
            0x02, 0x08, 0x02, 0x00, 0x41, 0x04, 0x00, 0x01, 0x00, 0x00,
            // Parameter 2: an unknown capability 70 (enhanced route refresh) and MP(2,1).
            0x02, 0x08, 0x46, 0x00, 0x01, 0x04, 0x00, 0x02, 0x00, 0x01,
            // Parameter 3: no capabilities at all.
            0x02, 0x00,
        ];
        let body = [
            &[4, 0x5b, 0xa0, 0x00, 0xb4, 10, 0, 0, 1, params.len() as u8][..],
            &params,
        ]
        .concat();
        let bytes = message(TYPE_OPEN, &body);
        let Ok(Message::Open(open)) = decode(&bytes, AS2) else {
            panic!("rejected")
        };
        assert_eq!(
            open.capabilities,
            vec![
                Capability::RouteRefresh,
                Capability::FourOctetAs(65536),
                Capability::Unknown {
                    code: 70,
                    value: vec![]
                },
                Capability::Multiprotocol { afi: 2, safi: 1 },
            ]
        );
        assert_eq!(
            (open.my_as, open.hold_time, open.asn()),
            (AS_TRANS, 180, 65536)
        );
        // One parameter of 16 octets instead of three (22 octets).
        let again = enc(&Message::Open(open), AS2);
        assert_eq!(again.get(28..31), Some(&[18, 0x02, 16][..]));
        assert_roundtrip(&bytes, AS2);
    }

    #[test]
    fn an_ebgp_update_like_metallb_with_four_octet_asns() {
        // Attributes 4 + 9 + 7 + 7 = 27 (0x1b); length 19 + 2 + 2 + 27 + 5 = 55 (0x37).
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[0x00, 0x37, 0x02, 0x00, 0x00, 0x00, 0x1b],
            ORIGIN_INCOMPLETE,
            AS_PATH_4,
            NEXT_HOP,
            // COMMUNITIES, optional transitive: 64500:100
            &[0xc0, 0x08, 0x04, 0xfb, 0xf4, 0x00, 0x64],
            NLRI,
        ].concat();
        assert_wire(&Message::Update(ebgp_update()), AS4, &bytes);
    }

    #[test]
    fn an_ebgp_update_like_metallb_with_two_octet_asns() {
        // AS_PATH 3 + 2 + 2 = 7; attributes 25 (0x19); length 53 (0x35).
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[0x00, 0x35, 0x02, 0x00, 0x00, 0x00, 0x19],
            ORIGIN_INCOMPLETE,
            &[0x40, 0x02, 0x04, 0x02, 0x01, 0xfb, 0xf4],
            NEXT_HOP,
            &[0xc0, 0x08, 0x04, 0xfb, 0xf4, 0x00, 0x64],
            NLRI,
        ].concat();
        assert_wire(&Message::Update(ebgp_update()), AS2, &bytes);
    }

    #[test]
    fn an_ibgp_update_with_an_empty_as_path_and_local_pref() {
        let u = Update {
            attrs: PathAttrs {
                origin: Some(Origin::Incomplete),
                as_path: Some(vec![]),
                next_hop: Some(Ipv4Addr::new(198, 51, 100, 2)),
                local_pref: Some(50),
                ..Default::default()
            },
            nlri: vec![v4("203.0.113.10/32")],
            ..Default::default()
        };
        // Attributes 4 + 3 + 7 + 7 = 21 (0x15); length 19 + 4 + 21 + 5 = 49 (0x31).
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[0x00, 0x31, 0x02, 0x00, 0x00, 0x00, 0x15],
            ORIGIN_INCOMPLETE,
            &[0x40, 0x02, 0x00],
            NEXT_HOP,
            &[0x40, 0x05, 0x04, 0x00, 0x00, 0x00, 0x32],
            NLRI,
        ].concat();
        assert_wire(&Message::Update(u), AS4, &bytes);
    }

    #[test]
    fn an_ipv6_update_carries_next_hop_and_nlri_in_mp_reach() {
        let nh: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let u = Update {
            attrs: PathAttrs {
                origin: Some(Origin::Incomplete),
                as_path: Some(vec![AsSegment::Sequence(vec![64500])]),
                mp_reach: Some(MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hops: vec![IpAddr::V6(nh)],
                    nlri: vec!["2001:db8:ff::10/128".parse().unwrap()],
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        // MP_REACH value: AFI 2, SAFI 1, NH len 16, next hop, reserved, /128 + 16 octets
        // = 2 + 1 + 1 + 16 + 1 + 17 = 38 (0x26); attributes 4 + 9 + 41 = 54 (0x36);
        // length 19 + 4 + 54 = 77 (0x4d).
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[0x00, 0x4d, 0x02, 0x00, 0x00, 0x00, 0x36],
            ORIGIN_INCOMPLETE,
            AS_PATH_4,
            &[0x80, 0x0e, 0x26, 0x00, 0x02, 0x01, 0x10],
            &nh.octets(),
            &[0x00, 0x80],
            &"2001:db8:ff::10".parse::<Ipv6Addr>().unwrap().octets(),
        ].concat();
        assert_wire(&Message::Update(u), AS4, &bytes);
    }

    #[test]
    fn an_ipv6_next_hop_may_come_with_its_link_local_address() {
        let u = Update {
            attrs: PathAttrs {
                origin: Some(Origin::Igp),
                as_path: Some(vec![]),
                mp_reach: Some(MpReach {
                    afi: AFI_IPV6,
                    safi: SAFI_UNICAST,
                    next_hops: vec!["2001:db8:1::1".parse().unwrap(), "fe80::1".parse().unwrap()],
                    nlri: vec!["2001:db8:ff::/64".parse().unwrap()],
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let bytes = enc(&Message::Update(u.clone()), AS4);
        // ORIGIN 4 + AS_PATH 3, then MP_REACH: flags, type, length, AFI, SAFI, NH length 32.
        assert_eq!(bytes.get(30..37), Some(&[0x80, 0x0e, 46, 0, 2, 1, 32][..]));
        assert_eq!(decode(&bytes, AS4), Ok(Message::Update(u)));
    }

    #[test]
    fn a_withdraw_only_update_has_no_attributes() {
        let u = Update {
            withdrawn: vec![v4("203.0.113.10/32")],
            ..Default::default()
        };
        // Withdrawn length 5, attributes length 0; length 19 + 2 + 5 + 2 = 28 (0x1c).
        #[rustfmt::skip]
        let bytes = [&MARKER[..], &[0x00, 0x1c, 0x02, 0x00, 0x05], NLRI, &[0x00, 0x00]].concat();
        assert_wire(&Message::Update(u.clone()), AS4, &bytes);
        assert_eq!(u.end_of_rib_family(), None);
    }

    #[test]
    fn end_of_rib_markers_for_both_families() {
        let v4_eor = [&MARKER[..], &[0x00, 0x17, 0x02, 0x00, 0x00, 0x00, 0x00]].concat();
        assert_wire(
            &Message::Update(Update::end_of_rib(AFI_IPV4, SAFI_UNICAST)),
            AS4,
            &v4_eor,
        );
        // MP_UNREACH_NLRI with AFI 2, SAFI 1 and nothing withdrawn (RFC 4724 §2).
        #[rustfmt::skip]
        let v6_eor = [&MARKER[..], &[
            0x00, 0x1d, 0x02, 0x00, 0x00, 0x00, 0x06,
            0x80, 0x0f, 0x03, 0x00, 0x02, 0x01,
        ]].concat();
        assert_wire(
            &Message::Update(Update::end_of_rib(AFI_IPV6, SAFI_UNICAST)),
            AS4,
            &v6_eor,
        );
        for (bytes, family) in [(v4_eor, (1, 1)), (v6_eor, (2, 1))] {
            let Ok(Message::Update(u)) = decode(&bytes, AS2) else {
                panic!("rejected")
            };
            assert_eq!(u.end_of_rib_family(), Some(family));
        }
    }

    #[test]
    fn encoded_len_is_the_length_encode_produces() {
        let msgs = [
            Message::Keepalive,
            Message::Open(metallb_open()),
            Message::Update(ebgp_update()),
            Message::Update(Update::end_of_rib(AFI_IPV6, SAFI_UNICAST)),
            Message::RouteRefresh(RouteRefresh { afi: 2, safi: 1 }),
        ];
        for m in &msgs {
            for ctx in [AS2, AS4] {
                assert_eq!(encoded_len(m, ctx), enc(m, ctx).len(), "{m:?}");
            }
        }
        // encode appends.
        let mut out = vec![1, 2, 3];
        encode(&Message::Keepalive, AS4, &mut out);
        assert_eq!(out.len(), 3 + 19);
        assert_eq!(out.get(..3), Some(&[1, 2, 3][..]));
    }

    #[test]
    fn prefix_len_bytes_counts_the_length_octet_and_significant_octets() {
        for (len, bytes) in [
            (0, 1),
            (1, 2),
            (8, 2),
            (9, 3),
            (24, 4),
            (32, 5),
            (64, 9),
            (128, 17),
        ] {
            assert_eq!(prefix_len_bytes(len), bytes, "/{len}");
        }
    }

    #[test]
    fn frame_len_waits_for_a_whole_message() {
        let bytes = message(TYPE_UPDATE, &[0, 0, 0, 0]);
        for n in 0..bytes.len() {
            assert_eq!(frame_len(&bytes[..n]), Ok(None), "{n} bytes");
        }
        assert_eq!(frame_len(&bytes), Ok(Some(23)));
        let two = [&bytes[..], &bytes[..5]].concat();
        assert_eq!(frame_len(&two), Ok(Some(23)));
        // A bad header is reported as soon as the header is in, not when the body is.
        let bad = [&MARKER[..], &[0x10, 0x01, 0x02]].concat();
        assert_eq!(frame_len(&bad).map_err(|e| e.subcode), Err(2));
    }

    /// (code, subcode, data, what).
    type Expected<'a> = (u8, u8, &'a [u8], &'a str);

    #[test]
    fn header_errors_carry_the_rfc_4271_data() {
        let header = |len: u16, kind: u8| [&MARKER[..], &len.to_be_bytes(), &[kind]].concat();
        let mut bad_marker = header(19, TYPE_KEEPALIVE);
        bad_marker[3] = 0xfe;
        let cases: [(Vec<u8>, Expected<'_>); 10] = [
            (bad_marker, (1, 1, &[], "bad marker")),
            (header(18, 4), (1, 2, &[0x00, 0x12], "bad length")),
            (header(4097, 4), (1, 2, &[0x10, 0x01], "bad length")),
            (header(19, 0), (1, 3, &[0], "bad type")),
            (header(19, 6), (1, 3, &[6], "bad type")),
            (header(28, TYPE_OPEN), (1, 2, &[0, 28], "bad length")),
            (header(22, TYPE_UPDATE), (1, 2, &[0, 22], "bad length")),
            (
                header(20, TYPE_NOTIFICATION),
                (1, 2, &[0, 20], "bad length"),
            ),
            (header(20, TYPE_KEEPALIVE), (1, 2, &[0, 20], "bad length")),
            (
                header(24, TYPE_ROUTE_REFRESH),
                (1, 2, &[0, 24], "bad length"),
            ),
        ];
        for (bytes, (code, subcode, data, what)) in cases {
            let e = frame_len(&bytes).expect_err("header error");
            assert_eq!(
                (e.code, e.subcode, &e.data[..], e.what),
                (code, subcode, data, what)
            );
            // decode reports the same error, with or without the body.
            let padded = [&bytes[..], &[0; 8]].concat();
            assert_eq!(decode(&padded, AS4), Err(e.clone()));
        }
        assert_eq!(
            frame_len(&header(22, TYPE_ROUTE_REFRESH)).map_err(|e| e.data),
            Err(vec![0, 22])
        );
    }

    #[test]
    fn decode_rejects_what_is_not_exactly_one_message() {
        let ka = [&MARKER[..], KEEPALIVE_TYPE].concat();
        assert_eq!(
            rejection(&ka[..18], AS4),
            (1, 2, vec![0x00, 0x13], "bad length")
        );
        assert_eq!(rejection(&[], AS4), (1, 2, vec![], "bad length"));
        assert_eq!(rejection(&[0xff, 0x00], AS4).3, "bad marker");
        let long = [&ka[..], &[0]].concat();
        assert_eq!(
            rejection(&long, AS4),
            (1, 2, vec![0x00, 0x13], "bad length")
        );
        let update = update_bytes(&[], &[], &[]);
        assert_eq!(rejection(&update[..22], AS4).3, "bad length");
    }

    #[test]
    fn open_errors() {
        let open = |params: &[u8]| {
            let fixed = [4, 0xfb, 0xf4, 0, 90, 10, 0, 0, 1, params.len() as u8];
            message(TYPE_OPEN, &[&fixed[..], params].concat())
        };
        let malformed_cap = (2, 0, vec![], "malformed capability");
        // Authentication (type 1, deprecated) is not supported.
        assert_eq!(
            rejection(&open(&[0x01, 0x01, 0x00]), AS4),
            (2, 4, vec![], "unsupported optional parameter")
        );
        for caps in [
            &[0x01, 0x03, 0x00, 0x01, 0x01][..],
            &[0x01, 0x05, 0x00, 0x01, 0x00, 0x01, 0x00],
            &[0x02, 0x01, 0x00],
            &[0x41, 0x02, 0xfb, 0xf4],
            &[0x41, 0x05, 0, 0, 0xfb, 0xf4, 0],
            &[0x40, 0x01, 0x00],
            &[0x40, 0x05, 0x00, 0x78, 0x00, 0x01, 0x01],
            // A capability overrunning its parameter.
            &[0x41, 0x04, 0x00, 0x00],
            // Half a capability header.
            &[0x02],
        ] {
            let param = [&[0x02, caps.len() as u8][..], caps].concat();
            assert_eq!(rejection(&open(&param), AS4), malformed_cap, "{caps:x?}");
        }
        // A parameter overrunning the parameters.
        let mut overrun = open(&[0x02, 0x04, 0x02, 0x00]);
        let at = overrun.len() - 3;
        overrun[at] = 0x05;
        assert_eq!(
            rejection(&overrun, AS4),
            (2, 0, vec![], "malformed optional parameter")
        );
        assert_eq!(
            rejection(&open(&[0x02]), AS4),
            (2, 0, vec![], "malformed optional parameter")
        );
        // Optional parameters length disagreeing with the message length.
        let mut short = open(&[0x02, 0x02, 0x02, 0x00]);
        short[28] = 3;
        assert_eq!(rejection(&short, AS4), (1, 2, vec![0, 33], "bad length"));
        short[28] = 5;
        assert_eq!(rejection(&short, AS4), (1, 2, vec![0, 33], "bad length"));
        // The version is the FSM's business.
        let mut v3 = open(&[]);
        v3[19] = 3;
        assert!(matches!(decode(&v3, AS4), Ok(Message::Open(o)) if o.version == 3));
        // A GR capability with no families, and unknown bits (N, reserved, F-less families).
        let gr = open(&[0x02, 0x08, 0x40, 0x06, 0x7f, 0xff, 0x00, 0x02, 0x01, 0x7f]);
        let Ok(Message::Open(o)) = decode(&gr, AS4) else {
            panic!("rejected")
        };
        assert_eq!(
            o.capabilities,
            vec![Capability::GracefulRestart(GracefulRestart {
                restarting: false,
                restart_time: 4095,
                families: vec![(2, 1, false)],
            })]
        );
        assert_roundtrip(&gr, AS4);
    }

    #[test]
    fn update_length_errors_are_malformed_attribute_lists() {
        let malformed = (3, 1, vec![], "malformed attribute list");
        // Withdrawn routes length past the end.
        let bytes = message(TYPE_UPDATE, &[0x00, 0x05, 0, 0]);
        assert_eq!(rejection(&bytes, AS4), malformed);
        // Total path attribute length past the end.
        let bytes = message(TYPE_UPDATE, &[0x00, 0x00, 0x00, 0x05, 0x40]);
        assert_eq!(rejection(&bytes, AS4), malformed);
        // An attribute length overrunning the attributes (the NLRI follows).
        let bytes = update_bytes(&[], &[0x40, 0x01, 0x02, 0x00], NLRI);
        assert_eq!(rejection(&bytes, AS4), malformed);
        // Attribute headers cut short: flags only; extended length with one length octet.
        for attrs in [&[0x40][..], &[0x40, 0x01], &[0x50, 0x01, 0x00]] {
            assert_eq!(rejection(&update_bytes(&[], attrs, &[]), AS4), malformed);
        }
    }

    #[test]
    fn a_repeated_attribute_is_a_malformed_attribute_list() {
        let attrs = [ORIGIN_INCOMPLETE, AS_PATH_4, NEXT_HOP, ORIGIN_INCOMPLETE].concat();
        assert_eq!(
            rejection(&update_bytes(&[], &attrs, NLRI), AS4),
            (3, 1, vec![], "duplicate attribute")
        );
        // Also when the second one is of an unmodelled family.
        let mp = [0x80, 0x0f, 0x03, 0x00, 0x02, 0x01];
        let mp_other = [0x80, 0x0f, 0x03, 0x00, 0x01, 0x80];
        let attrs = [&mp[..], &mp_other].concat();
        assert_eq!(
            rejection(&update_bytes(&[], &attrs, &[]), AS4).3,
            "duplicate attribute"
        );
    }

    #[test]
    fn attribute_flag_errors_carry_the_attribute() {
        for attr in [
            &[0xc0, 0x01, 0x01, 0x02][..],         // ORIGIN marked optional
            &[0x60, 0x01, 0x01, 0x02],             // ORIGIN marked partial
            &[0x00, 0x02, 0x00],                   // AS_PATH non-transitive
            &[0xc0, 0x03, 0x04, 10, 0, 0, 1],      // NEXT_HOP optional
            &[0x40, 0x04, 0x04, 0, 0, 0, 1],       // MED well-known
            &[0xc0, 0x04, 0x04, 0, 0, 0, 1],       // MED transitive
            &[0x80, 0x05, 0x04, 0, 0, 0, 1],       // LOCAL_PREF optional
            &[0x80, 0x06, 0x00],                   // ATOMIC_AGGREGATE optional
            &[0x40, 0x08, 0x04, 0xfb, 0xf4, 0, 1], // COMMUNITIES well-known
            &[0xc0, 0x0e, 0x05, 0, 1, 1, 0, 0],    // MP_REACH transitive
            &[0x40, 0x0f, 0x03, 0, 2, 1],          // MP_UNREACH well-known
        ] {
            assert_eq!(
                rejection(&update_bytes(&[], attr, &[]), AS4),
                (3, 4, attr.to_vec(), "attribute flags"),
                "{attr:x?}"
            );
        }
        // Partial is fine on an optional transitive attribute; low bits are ignored.
        let attrs = [
            0xe0, 0x08, 0x04, 0xfb, 0xf4, 0x00, 0x64, 0x4f, 0x01, 0x01, 0x00,
        ];
        let Ok(Message::Update(u)) = decode(&update_bytes(&[], &attrs, &[]), AS4) else {
            panic!("rejected")
        };
        assert_eq!(u.attrs.communities, vec![64500 << 16 | 100]);
        assert_eq!(u.attrs.origin, Some(Origin::Igp));
    }

    #[test]
    fn attribute_length_errors_carry_the_attribute() {
        for attr in [
            &[0x40, 0x01, 0x02, 0x02, 0x00][..],
            &[0x40, 0x01, 0x00],
            &[0x40, 0x03, 0x05, 10, 0, 0, 1, 0],
            &[0x40, 0x03, 0x03, 10, 0, 0],
            &[0x80, 0x04, 0x03, 0, 0, 1],
            &[0x40, 0x05, 0x05, 0, 0, 0, 0, 50],
            &[0x40, 0x06, 0x01, 0x00],
            &[0xc0, 0x08, 0x06, 0xfb, 0xf4, 0x00, 0x64, 0x00, 0x01],
            &[0x80, 0x0e, 0x04, 0x00, 0x02, 0x01, 0x00],
            &[0x80, 0x0f, 0x02, 0x00, 0x02],
            // Extended length: the data is the attribute as received, 2-octet length included.
            &[0x50, 0x03, 0x00, 0x02, 10, 0],
        ] {
            assert_eq!(
                rejection(&update_bytes(&[], attr, &[]), AS4),
                (3, 5, attr.to_vec(), "attribute length"),
                "{attr:x?}"
            );
        }
    }

    #[test]
    fn an_origin_above_2_is_invalid() {
        let attr = [0x40, 0x01, 0x01, 0x03];
        assert_eq!(
            rejection(&update_bytes(&[], &attr, &[]), AS4),
            (3, 6, attr.to_vec(), "invalid origin")
        );
    }

    #[test]
    fn malformed_as_paths() {
        for (path, ctx) in [
            // AS_CONFED_SEQUENCE (RFC 5065) is not for us.
            (&[0x03, 0x01, 0x00, 0x00, 0xfb, 0xf4][..], AS4),
            // Truncated segment, in both widths.
            (&[0x02, 0x02, 0x00, 0x00, 0xfb, 0xf4], AS4),
            (&[0x02, 0x02, 0xfb, 0xf4], AS2),
            // A 4-octet path read as 2-octet leaves half a segment.
            (&[0x02, 0x01, 0x00, 0x00, 0xfb, 0xf4], AS2),
            // Empty segment; dangling segment type.
            (&[0x02, 0x00], AS4),
            (&[0x02, 0x01, 0x00, 0x00, 0xfb, 0xf4, 0x02], AS4),
        ] {
            let attr = [&[0x40, 0x02, path.len() as u8][..], path].concat();
            assert_eq!(
                rejection(&update_bytes(&[], &attr, &[]), ctx),
                (3, 11, vec![], "malformed as_path"),
                "{path:x?}"
            );
        }
    }

    #[test]
    fn as_path_encoding_splits_long_segments_and_maps_big_asns_to_as_trans() {
        let long: Vec<u32> = (1..=300).collect();
        let u = Update {
            attrs: PathAttrs {
                as_path: Some(vec![
                    AsSegment::Sequence(long.clone()),
                    AsSegment::Set(vec![]),
                    AsSegment::Set(vec![4_200_000_000, 7]),
                ]),
                ..Default::default()
            },
            ..Default::default()
        };
        let Ok(Message::Update(back)) = decode(&enc(&Message::Update(u.clone()), AS4), AS4) else {
            panic!("rejected")
        };
        assert_eq!(
            back.attrs.as_path,
            Some(vec![
                AsSegment::Sequence(long[..255].to_vec()),
                AsSegment::Sequence(long[255..].to_vec()),
                AsSegment::Set(vec![4_200_000_000, 7]),
            ])
        );
        let Ok(Message::Update(back)) = decode(&enc(&Message::Update(u), AS2), AS2) else {
            panic!("rejected")
        };
        assert_eq!(
            back.attrs.as_path.as_ref().and_then(|p| p.last()),
            Some(&AsSegment::Set(vec![u32::from(AS_TRANS), 7]))
        );
    }

    #[test]
    fn an_unrecognized_well_known_attribute_is_rejected_with_the_attribute() {
        let attr = [0x40, 0x63, 0x02, 0xab, 0xcd];
        assert_eq!(
            rejection(&update_bytes(&[], &attr, &[]), AS4),
            (3, 2, attr.to_vec(), "unrecognized well-known attribute")
        );
    }

    #[test]
    fn unrecognized_optional_attributes_are_kept_and_reencoded_as_received() {
        // AGGREGATOR (7, optional transitive, partial) and an extended-length LARGE_COMMUNITY
        // (32) whose length would fit one octet, then ATOMIC_AGGREGATE (well-known, modelled
        // as raw).
        #[rustfmt::skip]
        let attrs = [
            0xe0, 0x07, 0x08, 0x00, 0x00, 0xfb, 0xf4, 10, 0, 0, 1,
            0xd0, 0x20, 0x00, 0x0c, 0, 0, 0xfb, 0xf4, 0, 0, 0, 1, 0, 0, 0, 2,
            0x40, 0x06, 0x00,
        ];
        let bytes = update_bytes(&[], &attrs, &[]);
        let Ok(Message::Update(u)) = decode(&bytes, AS4) else {
            panic!("rejected")
        };
        let codes: Vec<(u8, u8)> = u.attrs.other.iter().map(|a| (a.flags, a.code)).collect();
        assert_eq!(codes, vec![(0xe0, 7), (0xd0, 32), (0x40, 6)]);
        assert_eq!(enc(&Message::Update(u), AS4), bytes);
    }

    #[test]
    fn missing_well_known_attributes_are_named_by_type_code() {
        let mp_reach = [
            &[0x80, 0x0e, 0x1e, 0x00, 0x02, 0x01, 0x10][..],
            &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            &[0x00, 0x40, 0x20, 0x01, 0x0d, 0xb8, 0, 0xff, 0, 0],
        ]
        .concat();
        for (attrs, nlri, missing) in [
            ([AS_PATH_4, NEXT_HOP].concat(), NLRI, 1),
            ([ORIGIN_INCOMPLETE, NEXT_HOP].concat(), NLRI, 2),
            ([ORIGIN_INCOMPLETE, AS_PATH_4].concat(), NLRI, 3),
            (vec![], NLRI, 1),
            ([AS_PATH_4, &mp_reach].concat(), &[][..], 1),
            ([ORIGIN_INCOMPLETE, &mp_reach].concat(), &[], 2),
        ] {
            assert_eq!(
                rejection(&update_bytes(&[], &attrs, nlri), AS4),
                (3, 3, vec![missing], "missing well-known attribute")
            );
        }
        // MP_REACH needs no NEXT_HOP; a withdrawal needs nothing.
        let ok = [ORIGIN_INCOMPLETE, AS_PATH_4, &mp_reach].concat();
        let Ok(Message::Update(u)) = decode(&update_bytes(&[], &ok, &[]), AS4) else {
            panic!("rejected")
        };
        let reach = u.attrs.mp_reach.expect("mp_reach");
        assert_eq!(
            reach.nlri,
            vec!["2001:db8:ff::/64".parse::<IpNet>().unwrap()]
        );
        assert!(decode(&update_bytes(NLRI, &[], &[]), AS4).is_ok());
    }

    #[test]
    fn bad_prefixes_are_an_invalid_network_field() {
        let attrs = [ORIGIN_INCOMPLETE, AS_PATH_4, NEXT_HOP].concat();
        let invalid = (3, 10, vec![], "invalid network field");
        for prefixes in [&[33, 1, 2, 3, 4, 5][..], &[24, 10, 0], &[8], &[255]] {
            let nlri = update_bytes(&[], &attrs, prefixes);
            assert_eq!(rejection(&nlri, AS4), invalid, "nlri {prefixes:?}");
            let withdrawn = update_bytes(prefixes, &[], &[]);
            assert_eq!(
                rejection(&withdrawn, AS4),
                invalid,
                "withdrawn {prefixes:?}"
            );
        }
    }

    #[test]
    fn bad_mp_attributes_are_optional_attribute_errors() {
        let path = [ORIGIN_INCOMPLETE, AS_PATH_4].concat();
        for (attr, what) in [
            // Prefix length 129.
            (
                &[0x80, 0x0e, 0x0a, 0, 2, 1, 4, 10, 0, 0, 1, 0, 129][..],
                "malformed mp_reach_nlri",
            ),
            // IPv4 prefix length 33 in IPv4 MP_REACH.
            (
                &[
                    0x80, 0x0e, 0x0f, 0, 1, 1, 4, 10, 0, 0, 1, 0, 33, 1, 2, 3, 4, 5,
                ],
                "malformed mp_reach_nlri",
            ),
            // Next hop length 8; next hop overrunning; no reserved octet left.
            (
                &[0x80, 0x0e, 0x0d, 0, 2, 1, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                "malformed mp_reach_nlri",
            ),
            (
                &[0x80, 0x0e, 0x06, 0, 2, 1, 16, 0, 0],
                "malformed mp_reach_nlri",
            ),
            (
                &[0x80, 0x0e, 0x08, 0, 1, 1, 4, 10, 0, 0, 1],
                "malformed mp_reach_nlri",
            ),
            // Truncated prefix.
            (
                &[0x80, 0x0e, 0x0b, 0, 1, 1, 4, 10, 0, 0, 1, 0, 24, 10],
                "malformed mp_reach_nlri",
            ),
            (
                &[0x80, 0x0f, 0x05, 0, 2, 1, 64, 0x20],
                "malformed mp_unreach_nlri",
            ),
            (
                &[0x80, 0x0f, 0x04, 0, 2, 1, 200],
                "malformed mp_unreach_nlri",
            ),
        ] {
            let attrs = [&path[..], attr].concat();
            assert_eq!(
                rejection(&update_bytes(&[], &attrs, &[]), AS4),
                (3, 9, attr.to_vec(), what),
                "{attr:x?}"
            );
        }
    }

    #[test]
    fn mp_attributes_of_other_families_are_kept_raw() {
        // L2VPN EVPN (25/70) reach, IPv4 multicast (1/2) unreach.
        let reach = [0x80, 0x0e, 0x09, 0x00, 0x19, 0x46, 0x04, 10, 0, 0, 1, 0];
        let unreach = [0x90, 0x0f, 0x00, 0x04, 0x00, 0x01, 0x02, 0x00];
        let attrs = [ORIGIN_INCOMPLETE, AS_PATH_4, &reach, &unreach].concat();
        let bytes = update_bytes(&[], &attrs, &[]);
        let Ok(Message::Update(u)) = decode(&bytes, AS4) else {
            panic!("rejected")
        };
        assert_eq!(u.attrs.mp_reach, None);
        assert_eq!(u.attrs.mp_unreach, None);
        assert_eq!(
            u.attrs.other,
            vec![
                RawAttr {
                    flags: 0x80,
                    code: 14,
                    value: reach[3..].to_vec()
                },
                RawAttr {
                    flags: 0x90,
                    code: 15,
                    value: unreach[4..].to_vec()
                },
            ]
        );
        assert_eq!(u.end_of_rib_family(), None);
        assert_eq!(enc(&Message::Update(u), AS4), bytes);
    }

    #[test]
    fn host_bits_after_the_prefix_length_are_ignored() {
        let attrs = [ORIGIN_INCOMPLETE, AS_PATH_4, NEXT_HOP].concat();
        // 203.0.113.77/24 and 10.255.0.0/9 on the wire.
        let bytes = update_bytes(&[9, 10, 0xff], &attrs, &[24, 203, 0, 113]);
        let mut sloppy = bytes.clone();
        let last = sloppy.len() - 1;
        sloppy[last] = 113;
        let Ok(Message::Update(u)) = decode(&sloppy, AS4) else {
            panic!("rejected")
        };
        assert_eq!(u.withdrawn, vec![v4("10.128.0.0/9")]);
        assert_eq!(u.nlri, vec![v4("203.0.113.0/24")]);
        let canonical = update_bytes(&[9, 10, 0x80], &attrs, &[24, 203, 0, 113]);
        assert_eq!(enc(&Message::Update(u), AS4), canonical);
        assert_roundtrip(&sloppy, AS4);
    }

    #[test]
    fn attributes_over_255_octets_use_the_extended_length() {
        let communities: Vec<u32> = (0..70).collect();
        let u = Update {
            attrs: PathAttrs {
                communities: communities.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        let bytes = enc(&Message::Update(u.clone()), AS4);
        // Flags 0xc0 | 0x10, type 8, length 280 = 0x0118.
        assert_eq!(bytes.get(23..27), Some(&[0xd0, 0x08, 0x01, 0x18][..]));
        assert_eq!(bytes.len(), 23 + 4 + 280);
        assert_eq!(decode(&bytes, AS4), Ok(Message::Update(u)));
        // Received with Extended Length for a short value: accepted, re-encoded short.
        let attrs = [
            &[0x50, 0x01, 0x00, 0x01, 0x02][..],
            AS_PATH_4,
            &[0x50, 0x03, 0x00, 0x04, 198, 51, 100, 2],
        ]
        .concat();
        let Ok(Message::Update(u)) = decode(&update_bytes(&[], &attrs, NLRI), AS4) else {
            panic!("rejected")
        };
        let short = [ORIGIN_INCOMPLETE, AS_PATH_4, NEXT_HOP].concat();
        assert_eq!(
            enc(&Message::Update(u), AS4),
            update_bytes(&[], &short, NLRI)
        );
    }

    #[test]
    fn what_is_a_metrics_label() {
        let e = decode(&[0; 19], AS4).unwrap_err();
        assert!(
            e.what
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b" _-".contains(&b))
        );
        assert_eq!(e.notification().code, code::HEADER);
    }

    fn arb_v4net() -> impl Strategy<Value = Ipv4Net> {
        (any::<u32>(), 0..=32u8).prop_map(|(a, l)| Ipv4Net::new(a.into(), l).unwrap().trunc())
    }

    fn arb_v6net() -> impl Strategy<Value = Ipv6Net> {
        (any::<u128>(), 0..=128u8).prop_map(|(a, l)| Ipv6Net::new(a.into(), l).unwrap().trunc())
    }

    fn arb_capability() -> impl Strategy<Value = Capability> {
        let family = (any::<u16>(), any::<u8>(), any::<bool>());
        prop_oneof![
            (any::<u16>(), any::<u8>())
                .prop_map(|(afi, safi)| Capability::Multiprotocol { afi, safi }),
            Just(Capability::RouteRefresh),
            (
                any::<bool>(),
                0..=0xfffu16,
                prop::collection::vec(family, 0..4)
            )
                .prop_map(|(restarting, restart_time, families)| {
                    Capability::GracefulRestart(GracefulRestart {
                        restarting,
                        restart_time,
                        families,
                    })
                }),
            any::<u32>().prop_map(Capability::FourOctetAs),
            (
                any::<u8>().prop_filter("unmodelled", |c| ![1, 2, 64, 65].contains(c)),
                prop::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(code, value)| Capability::Unknown { code, value }),
        ]
    }

    fn arb_open() -> impl Strategy<Value = Open> {
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            prop::collection::vec(arb_capability(), 0..10),
        )
            .prop_map(|(version, my_as, hold_time, id, capabilities)| Open {
                version,
                my_as,
                hold_time,
                router_id: id.into(),
                capabilities,
            })
    }

    fn arb_as_path(four: bool) -> impl Strategy<Value = Vec<AsSegment>> {
        let max = if four { u32::MAX } else { u32::from(u16::MAX) };
        let asns = prop::collection::vec(0..=max, 1..8);
        let segment = (any::<bool>(), asns).prop_map(|(set, asns)| {
            if set {
                AsSegment::Set(asns)
            } else {
                AsSegment::Sequence(asns)
            }
        });
        prop::collection::vec(segment, 0..3)
    }

    fn arb_mp_reach() -> impl Strategy<Value = MpReach> {
        let v4 =
            (any::<u32>(), prop::collection::vec(arb_v4net(), 0..20)).prop_map(|(nh, nlri)| {
                MpReach {
                    afi: AFI_IPV4,
                    safi: SAFI_UNICAST,
                    next_hops: vec![IpAddr::V4(nh.into())],
                    nlri: nlri.into_iter().map(IpNet::V4).collect(),
                }
            });
        let v6 = (
            prop::collection::vec(any::<u128>(), 1..=2),
            prop::collection::vec(arb_v6net(), 0..20),
        )
            .prop_map(|(nhs, nlri)| MpReach {
                afi: AFI_IPV6,
                safi: SAFI_UNICAST,
                next_hops: nhs.into_iter().map(|a| IpAddr::V6(a.into())).collect(),
                nlri: nlri.into_iter().map(IpNet::V6).collect(),
            });
        prop_oneof![v4, v6]
    }

    fn arb_mp_unreach() -> impl Strategy<Value = MpUnreach> {
        let v4 = prop::collection::vec(arb_v4net(), 0..20).prop_map(|w| MpUnreach {
            afi: AFI_IPV4,
            safi: SAFI_UNICAST,
            withdrawn: w.into_iter().map(IpNet::V4).collect(),
        });
        let v6 = prop::collection::vec(arb_v6net(), 0..20).prop_map(|w| MpUnreach {
            afi: AFI_IPV6,
            safi: SAFI_UNICAST,
            withdrawn: w.into_iter().map(IpNet::V6).collect(),
        });
        prop_oneof![v4, v6]
    }

    /// Unmodelled optional attributes, distinct codes; Extended Length set when needed.
    fn arb_other() -> impl Strategy<Value = Vec<RawAttr>> {
        let code =
            any::<u8>().prop_filter("unmodelled", |c| ![1, 2, 3, 4, 5, 6, 8, 14, 15].contains(c));
        let attr = (any::<u8>(), prop::collection::vec(any::<u8>(), 0..300));
        prop::collection::btree_map(code, attr, 0..3).prop_map(|m| {
            m.into_iter()
                .map(|(code, (flags, value))| RawAttr {
                    flags: flags
                        | FLAG_OPTIONAL
                        | if value.len() > 255 { FLAG_EXTENDED } else { 0 },
                    code,
                    value,
                })
                .collect()
        })
    }

    fn arb_update(four: bool) -> impl Strategy<Value = Update> {
        let origin = prop_oneof![
            Just(Origin::Igp),
            Just(Origin::Egp),
            Just(Origin::Incomplete)
        ];
        let attrs = (
            (
                prop::option::of(origin),
                prop::option::of(arb_as_path(four)),
                prop::option::of(any::<u32>()),
                prop::option::of(any::<u32>()),
                prop::option::of(any::<u32>()),
            ),
            prop::collection::vec(any::<u32>(), 0..80),
            prop::option::of(arb_mp_reach()),
            prop::option::of(arb_mp_unreach()),
            arb_other(),
        )
            .prop_map(
                |(
                    (origin, as_path, next_hop, med, local_pref),
                    communities,
                    mp_reach,
                    mp_unreach,
                    other,
                )| {
                    PathAttrs {
                        origin,
                        as_path,
                        next_hop: next_hop.map(Ipv4Addr::from),
                        med,
                        local_pref,
                        communities,
                        mp_reach,
                        mp_unreach,
                        other,
                    }
                },
            );
        (
            prop::collection::vec(arb_v4net(), 0..20),
            attrs,
            prop::collection::vec(arb_v4net(), 0..20),
        )
            .prop_map(|(withdrawn, mut attrs, nlri)| {
                // The mandatory attributes (RFC 4271 §6.3, RFC 4760 §3).
                if !nlri.is_empty() || attrs.mp_reach.is_some() {
                    attrs.origin.get_or_insert(Origin::Igp);
                    attrs.as_path.get_or_insert_with(Vec::new);
                }
                if !nlri.is_empty() {
                    attrs.next_hop.get_or_insert(Ipv4Addr::new(192, 0, 2, 1));
                }
                Update {
                    withdrawn,
                    attrs,
                    nlri,
                }
            })
    }

    fn arb_ctx_update() -> impl Strategy<Value = (Ctx, Update)> {
        any::<bool>().prop_flat_map(|four| {
            (
                Just(Ctx {
                    four_octet_as: four,
                }),
                arb_update(four),
            )
        })
    }

    proptest! {
        #[test]
        fn opens_roundtrip(open in arb_open(), four in any::<bool>()) {
            let ctx = Ctx { four_octet_as: four };
            let msg = Message::Open(open);
            let bytes = enc(&msg, ctx);
            prop_assert_eq!(bytes.len(), encoded_len(&msg, ctx));
            prop_assert_eq!(decode(&bytes, ctx), Ok(msg));
        }

        #[test]
        fn updates_roundtrip((ctx, update) in arb_ctx_update()) {
            let msg = Message::Update(update);
            let bytes = enc(&msg, ctx);
            prop_assert_eq!(bytes.len(), encoded_len(&msg, ctx));
            prop_assert!(bytes.len() <= MAX_LEN);
            prop_assert_eq!(frame_len(&bytes), Ok(Some(bytes.len())));
            prop_assert_eq!(decode(&bytes, ctx), Ok(msg));
        }

        #[test]
        fn notifications_roundtrip(
            code in any::<u8>(),
            subcode in any::<u8>(),
            data in prop::collection::vec(any::<u8>(), 0..64),
        ) {
            let msg = Message::Notification(Notification { code, subcode, data });
            let bytes = enc(&msg, AS4);
            prop_assert_eq!(bytes.len(), encoded_len(&msg, AS4));
            prop_assert_eq!(decode(&bytes, AS4), Ok(msg));
        }

        #[test]
        fn arbitrary_bodies_never_panic_and_what_decodes_roundtrips(
            kind in 1..=5u8,
            body in prop::collection::vec(any::<u8>(), 0..120),
        ) {
            let bytes = message(kind, &body);
            for ctx in [AS2, AS4] {
                assert_roundtrip(&bytes, ctx);
            }
        }

        #[test]
        fn mutated_messages_never_panic_and_what_decodes_roundtrips(
            (ctx, update) in arb_ctx_update(),
            idx in any::<prop::sample::Index>(),
            val in any::<u8>(),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut bytes = enc(&Message::Update(update), ctx);
            let i = 19 + idx.index(bytes.len() - 19);
            bytes[i] = val;
            assert_roundtrip(&bytes, ctx);
            assert_roundtrip(&bytes, Ctx { four_octet_as: !ctx.four_octet_as });
            bytes.truncate(cut.index(bytes.len() + 1));
            let _ = decode(&bytes, ctx);
            let _ = frame_len(&bytes);
        }
    }
}
