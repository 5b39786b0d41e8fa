//! BFD Control packets (RFC 5880 §4.1): the byte-exact wire format. PURE.
//!
//! ```text
//!   0                   1                   2                   3
//!   0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//!  +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//!  |Vers |  Diag   |Sta|P|F|C|A|D|M|  Detect Mult  |    Length     |
//!  |                       My Discriminator                        |
//!  |                      Your Discriminator                       |
//!  |                    Desired Min TX Interval                    |
//!  |                   Required Min RX Interval                    |
//!  |                 Required Min Echo RX Interval                 |
//!  |   Auth Type   |   Auth Len    |    Authentication Data...     |
//! ```
//!
//! [`decode`] applies every reception check of RFC 5880 §6.8.6 that is about the packet alone
//! (version, length, detect multiplier, multipoint bit, discriminators) plus the §6.5 rule that
//! Poll and Final are never set together, and the length rules of the authentication section
//! (§4.2–§4.4). Whether a packet belongs to a session, and whether authentication is in use, is
//! the session's business ([`super::fsm`]); this speaker never uses authentication, so a packet
//! with the A bit is decoded (so it can be counted and named) and then discarded there.

use std::fmt;

/// The protocol version spoken (RFC 5880).
pub const VERSION: u8 = 1;
/// Length of a Control packet without authentication.
pub const HEADER_LEN: usize = 24;

/// `Sta`: the transmitting system's session state (RFC 5880 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// 0: administratively down.
    AdminDown,
    /// 1: down.
    Down,
    /// 2: init.
    Init,
    /// 3: up.
    Up,
}

impl State {
    fn from_bits(b: u8) -> Self {
        match b & 3 {
            0 => Self::AdminDown,
            1 => Self::Down,
            2 => Self::Init,
            _ => Self::Up,
        }
    }

    fn bits(self) -> u8 {
        match self {
            Self::AdminDown => 0,
            Self::Down => 1,
            Self::Init => 2,
            Self::Up => 3,
        }
    }

    /// Lower-case name as routers print it ("admin_down", "down", "init", "up").
    pub fn name(self) -> &'static str {
        match self {
            Self::AdminDown => "admin_down",
            Self::Down => "down",
            Self::Init => "init",
            Self::Up => "up",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Diagnostic codes (RFC 5880 §4.1; the 5-bit field, values 9–31 reserved).
pub mod diag {
    /// No Diagnostic.
    pub const NONE: u8 = 0;
    /// Control Detection Time Expired.
    pub const DETECTION_TIME_EXPIRED: u8 = 1;
    /// Echo Function Failed.
    pub const ECHO_FAILED: u8 = 2;
    /// Neighbor Signaled Session Down.
    pub const NEIGHBOR_DOWN: u8 = 3;
    /// Forwarding Plane Reset.
    pub const FORWARDING_RESET: u8 = 4;
    /// Path Down.
    pub const PATH_DOWN: u8 = 5;
    /// Concatenated Path Down.
    pub const CONCATENATED_PATH_DOWN: u8 = 6;
    /// Administratively Down.
    pub const ADMIN_DOWN: u8 = 7;
    /// Reverse Concatenated Path Down.
    pub const REVERSE_CONCATENATED_PATH_DOWN: u8 = 8;

    /// Short name for logs.
    pub fn name(d: u8) -> &'static str {
        match d {
            NONE => "none",
            DETECTION_TIME_EXPIRED => "detection time expired",
            ECHO_FAILED => "echo function failed",
            NEIGHBOR_DOWN => "neighbor signaled session down",
            FORWARDING_RESET => "forwarding plane reset",
            PATH_DOWN => "path down",
            CONCATENATED_PATH_DOWN => "concatenated path down",
            ADMIN_DOWN => "administratively down",
            REVERSE_CONCATENATED_PATH_DOWN => "reverse concatenated path down",
            _ => "reserved",
        }
    }
}

/// Authentication types (RFC 5880 §4.1).
pub mod auth_type {
    /// Simple Password.
    pub const SIMPLE_PASSWORD: u8 = 1;
    /// Keyed MD5.
    pub const KEYED_MD5: u8 = 2;
    /// Meticulous Keyed MD5.
    pub const METICULOUS_KEYED_MD5: u8 = 3;
    /// Keyed SHA1.
    pub const KEYED_SHA1: u8 = 4;
    /// Meticulous Keyed SHA1.
    pub const METICULOUS_KEYED_SHA1: u8 = 5;
}

/// The authentication section, kept as bytes (this speaker authenticates nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// Auth Type (1–5).
    pub kind: u8,
    /// Everything after Auth Type and Auth Len (`Auth Len - 2` bytes: key ID, reserved,
    /// sequence number, password or digest, depending on the type).
    pub data: Vec<u8>,
}

/// One BFD Control packet. Intervals are in microseconds, as on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Diagnostic code (5 bits).
    pub diag: u8,
    /// The sender's session state.
    pub state: State,
    /// Poll: the sender asks for verification (a packet with Final in reply).
    pub poll: bool,
    /// Final: answers a Poll.
    pub final_: bool,
    /// Control Plane Independent.
    pub cpi: bool,
    /// Demand mode requested by the sender.
    pub demand: bool,
    /// Detect Mult (never 0 in a valid packet).
    pub detect_mult: u8,
    /// My Discriminator (never 0 in a valid packet).
    pub my_disc: u32,
    /// Your Discriminator (0 while the sender does not know ours).
    pub your_disc: u32,
    /// Desired Min TX Interval, µs.
    pub desired_min_tx: u32,
    /// Required Min RX Interval, µs (0: send me no periodic packets).
    pub required_min_rx: u32,
    /// Required Min Echo RX Interval, µs (0: no echo packets, please).
    pub required_min_echo_rx: u32,
    /// The authentication section (A bit), if any.
    pub auth: Option<Auth>,
}

/// Why a received packet was discarded. Each is one RFC 5880 rule; `what` is a fixed label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct DecodeError {
    /// Short fixed description, usable as a metric label.
    pub what: &'static str,
}

const fn err(what: &'static str) -> DecodeError {
    DecodeError { what }
}

/// §6.8.6: the version is not 1.
pub const BAD_VERSION: DecodeError = err("bad version");
/// §6.8.6: Length shorter than the minimum, or longer than the datagram.
pub const BAD_LENGTH: DecodeError = err("bad length");
/// §6.8.6: Detect Mult is zero.
pub const ZERO_DETECT_MULT: DecodeError = err("zero detect multiplier");
/// §6.8.6: the Multipoint bit is set.
pub const MULTIPOINT: DecodeError = err("multipoint bit set");
/// §6.8.6: My Discriminator is zero.
pub const ZERO_MY_DISC: DecodeError = err("zero my discriminator");
/// §6.8.6: Your Discriminator is zero while the state is neither Down nor AdminDown.
pub const ZERO_YOUR_DISC: DecodeError = err("zero your discriminator");
/// §6.5: Poll and Final both set.
pub const POLL_AND_FINAL: DecodeError = err("poll and final both set");
/// §4.2–§4.4: the authentication section is malformed or of a reserved type.
pub const BAD_AUTH: DecodeError = err("bad authentication section");

/// The encoded length of `p`.
pub fn encoded_len(p: &Packet) -> usize {
    HEADER_LEN + p.auth.as_ref().map_or(0, |a| 2 + a.data.len())
}

/// Append the wire form of `p` to `out`. The A bit is set exactly when `p.auth` is present;
/// the Multipoint bit is never set. `p` is expected to be valid (see [`decode`]); an auth
/// section longer than 253 bytes is truncated.
pub fn encode(p: &Packet, out: &mut Vec<u8>) {
    let auth = p
        .auth
        .as_ref()
        .map(|a| (a.kind, &a.data[..a.data.len().min(253)]));
    let len = HEADER_LEN + auth.map_or(0, |(_, d)| 2 + d.len());
    out.push((VERSION << 5) | (p.diag & 0x1f));
    out.push(
        (p.state.bits() << 6)
            | (u8::from(p.poll) << 5)
            | (u8::from(p.final_) << 4)
            | (u8::from(p.cpi) << 3)
            | (u8::from(auth.is_some()) << 2)
            | (u8::from(p.demand) << 1),
    );
    out.push(p.detect_mult);
    out.push(len as u8);
    for v in [
        p.my_disc,
        p.your_disc,
        p.desired_min_tx,
        p.required_min_rx,
        p.required_min_echo_rx,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    if let Some((kind, data)) = auth {
        out.push(kind);
        out.push((2 + data.len()) as u8);
        out.extend_from_slice(data);
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Decode one UDP payload. Bytes after `Length` are ignored (RFC 5880 §6.8.6 only requires
/// Length not to exceed the payload).
pub fn decode(b: &[u8]) -> Result<Packet, DecodeError> {
    let (&b0, &b1) = match (b.first(), b.get(1)) {
        (Some(x), Some(y)) => (x, y),
        _ => return Err(BAD_LENGTH),
    };
    if b0 >> 5 != VERSION {
        return Err(BAD_VERSION);
    }
    let a_bit = b1 & 0x04 != 0;
    let len = usize::from(*b.get(3).ok_or(BAD_LENGTH)?);
    let min = if a_bit { HEADER_LEN + 2 } else { HEADER_LEN };
    if len < min || len > b.len() {
        return Err(BAD_LENGTH);
    }
    let b = &b[..len];
    let p = Packet {
        diag: b0 & 0x1f,
        state: State::from_bits(b1 >> 6),
        poll: b1 & 0x20 != 0,
        final_: b1 & 0x10 != 0,
        cpi: b1 & 0x08 != 0,
        demand: b1 & 0x02 != 0,
        detect_mult: b[2],
        my_disc: be32(b, 4),
        your_disc: be32(b, 8),
        desired_min_tx: be32(b, 12),
        required_min_rx: be32(b, 16),
        required_min_echo_rx: be32(b, 20),
        auth: if a_bit {
            Some(decode_auth(&b[HEADER_LEN..])?)
        } else {
            None
        },
    };
    if p.detect_mult == 0 {
        return Err(ZERO_DETECT_MULT);
    }
    if b1 & 0x01 != 0 {
        return Err(MULTIPOINT);
    }
    if p.my_disc == 0 {
        return Err(ZERO_MY_DISC);
    }
    if p.your_disc == 0 && !matches!(p.state, State::Down | State::AdminDown) {
        return Err(ZERO_YOUR_DISC);
    }
    if p.poll && p.final_ {
        return Err(POLL_AND_FINAL);
    }
    if !a_bit && len != HEADER_LEN {
        // Without authentication the packet is exactly 24 bytes (§4.1: Length is the length
        // of the whole packet; nothing may follow the mandatory section).
        return Err(BAD_LENGTH);
    }
    Ok(p)
}

/// The authentication section: `rest` is everything from Auth Type to Length.
fn decode_auth(rest: &[u8]) -> Result<Auth, DecodeError> {
    let (&kind, &alen) = match (rest.first(), rest.get(1)) {
        (Some(k), Some(l)) => (k, l),
        _ => return Err(BAD_AUTH),
    };
    let alen = usize::from(alen);
    // §4.2: password 1–16 bytes after type, len, key ID; §4.3: 24 bytes; §4.4: 28 bytes.
    let ok = match kind {
        auth_type::SIMPLE_PASSWORD => (4..=19).contains(&alen),
        auth_type::KEYED_MD5 | auth_type::METICULOUS_KEYED_MD5 => alen == 24,
        auth_type::KEYED_SHA1 | auth_type::METICULOUS_KEYED_SHA1 => alen == 28,
        _ => false,
    };
    // The auth section must fill the rest of the packet exactly.
    if !ok || alen != rest.len() {
        return Err(BAD_AUTH);
    }
    Ok(Auth {
        kind,
        data: rest[2..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Packet {
        Packet {
            diag: diag::NONE,
            state: State::Up,
            poll: false,
            final_: false,
            cpi: false,
            demand: false,
            detect_mult: 3,
            my_disc: 0x0102_0304,
            your_disc: 0xa0b0_c0d0,
            desired_min_tx: 300_000,
            required_min_rx: 300_000,
            required_min_echo_rx: 50_000,
            auth: None,
        }
    }

    /// The bytes of `sample()`, written out by hand from RFC 5880 §4.1.
    const SAMPLE: [u8; 24] = [
        0x20, 0xc0, 3, 24, // v1 diag 0 | Up, no flags | mult 3 | len 24
        1, 2, 3, 4, // my disc
        0xa0, 0xb0, 0xc0, 0xd0, // your disc
        0x00, 0x04, 0x93, 0xe0, // 300000
        0x00, 0x04, 0x93, 0xe0, // 300000
        0x00, 0x00, 0xc3, 0x50, // 50000
    ];

    fn enc(p: &Packet) -> Vec<u8> {
        let mut out = Vec::new();
        encode(p, &mut out);
        assert_eq!(out.len(), encoded_len(p));
        out
    }

    #[test]
    fn encodes_byte_exact_and_decodes_back() {
        assert_eq!(enc(&sample()), SAMPLE);
        assert_eq!(decode(&SAMPLE), Ok(sample()));
    }

    #[test]
    fn flags_and_diag_occupy_their_bits() {
        let p = Packet {
            diag: diag::NEIGHBOR_DOWN,
            state: State::Init,
            poll: true,
            cpi: true,
            demand: true,
            ..sample()
        };
        let b = enc(&p);
        assert_eq!(b[0], 0x23);
        assert_eq!(b[1], 0b1010_1010);
        assert_eq!(decode(&b), Ok(p.clone()));
        let f = Packet {
            poll: false,
            final_: true,
            state: State::AdminDown,
            your_disc: 0,
            diag: diag::ADMIN_DOWN,
            cpi: false,
            demand: false,
            ..p
        };
        let b = enc(&f);
        assert_eq!(&b[..2], &[0x27, 0b0001_0000]);
        assert_eq!(decode(&b), Ok(f));
    }

    #[test]
    fn state_values_are_the_rfc_s() {
        for (s, bits) in [
            (State::AdminDown, 0u8),
            (State::Down, 1),
            (State::Init, 2),
            (State::Up, 3),
        ] {
            let p = Packet {
                state: s,
                ..sample()
            };
            assert_eq!(enc(&p)[1] >> 6, bits);
        }
    }

    fn with(f: impl FnOnce(&mut [u8])) -> Vec<u8> {
        let mut b = SAMPLE.to_vec();
        f(&mut b);
        b
    }

    #[test]
    fn every_packet_check_of_6_8_6_rejects() {
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (vec![], BAD_LENGTH),
            (vec![0x20], BAD_LENGTH),
            (with(|b| b[0] = 0x40), BAD_VERSION),
            (with(|b| b[0] = 0x00), BAD_VERSION),
            (SAMPLE[..23].to_vec(), BAD_LENGTH),
            (with(|b| b[3] = 23), BAD_LENGTH),
            (with(|b| b[3] = 25), BAD_LENGTH),
            (with(|b| b[2] = 0), ZERO_DETECT_MULT),
            (with(|b| b[1] |= 0x01), MULTIPOINT),
            (with(|b| b[4..8].fill(0)), ZERO_MY_DISC),
            (with(|b| b[8..12].fill(0)), ZERO_YOUR_DISC),
            (
                with(|b| {
                    b[8..12].fill(0);
                    b[1] = 0x80; // Init
                }),
                ZERO_YOUR_DISC,
            ),
            (with(|b| b[1] |= 0x30), POLL_AND_FINAL),
            // A bit but only 24 bytes.
            (with(|b| b[1] |= 0x04), BAD_LENGTH),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode(&bytes), Err(want), "{bytes:02x?}");
        }
    }

    #[test]
    fn zero_your_discriminator_is_fine_while_down() {
        for state in [0x40u8, 0x00] {
            let b = with(|b| {
                b[8..12].fill(0);
                b[1] = state;
            });
            let p = decode(&b).expect("valid");
            assert_eq!(p.your_disc, 0);
        }
    }

    #[test]
    fn trailing_bytes_after_length_are_ignored() {
        let mut b = SAMPLE.to_vec();
        b.extend_from_slice(&[9, 9, 9]);
        assert_eq!(decode(&b), Ok(sample()));
    }

    fn auth_packet(kind: u8, data: Vec<u8>) -> Packet {
        Packet {
            auth: Some(Auth { kind, data }),
            ..sample()
        }
    }

    #[test]
    fn authentication_sections_decode_by_type_and_length() {
        // Simple password "abc": type 1, len 6, key id 7, "abc".
        let p = auth_packet(auth_type::SIMPLE_PASSWORD, vec![7, b'a', b'b', b'c']);
        let b = enc(&p);
        assert_eq!(b.len(), 30);
        assert_eq!(b[1] & 0x04, 0x04);
        assert_eq!(b[3], 30);
        assert_eq!(&b[24..], &[1, 6, 7, b'a', b'b', b'c']);
        assert_eq!(decode(&b), Ok(p));
        for (kind, n) in [
            (auth_type::KEYED_MD5, 22),
            (auth_type::METICULOUS_KEYED_MD5, 22),
            (auth_type::KEYED_SHA1, 26),
            (auth_type::METICULOUS_KEYED_SHA1, 26),
        ] {
            let p = auth_packet(kind, vec![0x5a; n]);
            assert_eq!(decode(&enc(&p)), Ok(p));
            // One byte short or long is rejected.
            for m in [n - 1, n + 1] {
                let bad = enc(&auth_packet(kind, vec![0x5a; m]));
                assert_eq!(decode(&bad), Err(BAD_AUTH), "type {kind} data {m}");
            }
        }
    }

    #[test]
    fn malformed_authentication_sections_are_rejected() {
        // Empty password (len 3), 17-byte password (len 20), reserved types 0 and 6.
        for p in [
            auth_packet(auth_type::SIMPLE_PASSWORD, vec![1]),
            auth_packet(auth_type::SIMPLE_PASSWORD, vec![1; 18]),
            auth_packet(0, vec![1, 2]),
            auth_packet(6, vec![1, 2]),
        ] {
            assert_eq!(decode(&enc(&p)), Err(BAD_AUTH), "{p:?}");
        }
        // Auth Len disagreeing with Length.
        let mut b = enc(&auth_packet(auth_type::SIMPLE_PASSWORD, vec![7, b'a']));
        b[25] = 5;
        assert_eq!(decode(&b), Err(BAD_AUTH));
        // Length 25 with the A bit: no room for Auth Len.
        let mut b = SAMPLE.to_vec();
        b[1] |= 0x04;
        b[3] = 25;
        b.push(1);
        assert_eq!(decode(&b), Err(BAD_LENGTH));
    }

    #[test]
    fn a_first_packet_with_slow_timers_decodes() {
        // A session's first packet: Down, diag 0, mult 3, your disc 0, 1 s / 1 s / 50 ms.
        let b = [
            0x20, 0x40, 0x03, 0x18, 0x2a, 0x1e, 0x6c, 0x2b, 0, 0, 0, 0, 0x00, 0x0f, 0x42, 0x40,
            0x00, 0x0f, 0x42, 0x40, 0x00, 0x00, 0xc3, 0x50,
        ];
        let p = decode(&b).expect("valid");
        assert_eq!(p.state, State::Down);
        assert_eq!((p.my_disc, p.your_disc), (0x2a1e_6c2b, 0));
        assert_eq!(
            (p.desired_min_tx, p.required_min_rx),
            (1_000_000, 1_000_000)
        );
        assert_eq!(enc(&p), b);
    }
}
