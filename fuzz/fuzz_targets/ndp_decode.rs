//! Any bytes fed to the NDP frame decoder must give a frame or an error, never a panic; a
//! decoded frame must survive encode → decode unchanged, and so must the answers built from it.
#![no_main]

use std::net::Ipv6Addr;

use libfuzzer_sys::fuzz_target;
use metallb_rs::l2::packet::{MacAddr, NdpFrame, NdpMessage, icmpv6_checksum};

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);
const OUR_LL: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0xaa);

/// Ethernet (14) + IPv6 (40): where the ICMPv6 message starts without extension headers.
const ICMP: usize = 54;

fuzz_target!(|data: &[u8]| {
    // The IPv6 layer alone, as if the Ethernet header had been stripped.
    let _ = NdpMessage::decode_ipv6(data);
    check(data);
    // Random mutations almost never keep the ICMPv6 checksum right, which would hide everything
    // validated after it: also try each input with its checksum fixed up.
    if data.len() >= ICMP + 4 && data[20] == 58 {
        let mut fixed = data.to_vec();
        let plen = usize::from(u16::from_be_bytes([data[18], data[19]]));
        let end = (ICMP + plen).min(fixed.len());
        let src = Ipv6Addr::from(<[u8; 16]>::try_from(&data[22..38]).unwrap());
        let dst = Ipv6Addr::from(<[u8; 16]>::try_from(&data[38..54]).unwrap());
        let c = icmpv6_checksum(src, dst, &fixed[ICMP..end]);
        fixed[ICMP + 2..ICMP + 4].copy_from_slice(&c.to_be_bytes());
        check(&fixed);
    }
});

fn check(data: &[u8]) {
    match NdpFrame::decode(data) {
        Ok(f) => {
            assert_eq!(NdpFrame::decode(&f.encode()), Ok(f));
            if let Some(ns) = f.solicitation() {
                let _ = ns.is_request_for(ns.target);
                let reply = f
                    .reply(OUR_LL, OUR_MAC)
                    .expect("a solicitation has a reply");
                assert_eq!(NdpFrame::decode(&reply.encode()), Ok(reply));
                let una = NdpFrame::unsolicited_advertisement(OUR_LL, ns.target, OUR_MAC);
                assert_eq!(NdpFrame::decode(&una.encode()), Ok(una));
            }
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason(), e.is_malformed());
        }
    }
}
