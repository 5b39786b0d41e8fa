//! Any bytes a BGP peer sends must be framed and decoded into a message or rejected with a
//! NOTIFICATION, never a panic, with 2- and 4-octet AS numbers; an accepted message must
//! re-encode (to at most as many bytes: decoding only canonicalises) into something that frames
//! and decodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use metallb_rs::bgp::codec::{decode, encode, encoded_len, frame_len};
use metallb_rs::bgp::message::Ctx;

fn check(bytes: &[u8], ctx: Ctx) {
    let Ok(msg) = decode(bytes, ctx) else {
        return;
    };
    let mut again = Vec::new();
    encode(&msg, ctx, &mut again);
    assert_eq!(again.len(), encoded_len(&msg, ctx));
    assert!(again.len() <= bytes.len(), "re-encoding grew: {msg:?}");
    assert_eq!(frame_len(&again), Ok(Some(again.len())));
    assert_eq!(decode(&again, ctx), Ok(msg));
}

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [false, true] {
        let ctx = Ctx { four_octet_as };
        // As a TCP stream, the way the session reads it.
        let mut rest = data;
        while let Ok(Some(len)) = frame_len(rest) {
            let (msg, tail) = rest.split_at_checked(len).expect("frame within the buffer");
            check(msg, ctx);
            rest = tail;
        }
        // As one message, whatever it is.
        check(data, ctx);
    }
});
