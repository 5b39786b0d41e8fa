//! Any bytes fed to the ARP frame decoder must give a frame or an error, never a panic; a
//! decoded frame must survive encode → decode unchanged, and so must the answers built from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metallb_rs::l2::packet::{ArpFrame, ArpOperation, ArpPacket, MacAddr};

const OUR_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0xaa]);

fuzz_target!(|data: &[u8]| {
    let _ = ArpPacket::decode(data);
    match ArpFrame::decode(data) {
        Ok(f) => {
            assert_eq!(ArpFrame::decode(&f.encode()), Ok(f));
            let _ = f.is_request_for(f.arp.target_ip, OUR_MAC);
            let reply = f.reply(OUR_MAC);
            assert_eq!(ArpFrame::decode(&reply.encode()), Ok(reply));
            let garp = ArpFrame::gratuitous(ArpOperation::Reply, OUR_MAC, f.arp.target_ip);
            assert_eq!(ArpFrame::decode(&garp.encode()), Ok(garp));
        }
        Err(e) => {
            let _ = (e.to_string(), e.reason(), e.is_malformed());
        }
    }
});
