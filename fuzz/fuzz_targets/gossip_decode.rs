//! Any datagram fed to the speakers' liveness gossip must be accepted or rejected with a
//! reason, never a panic, with and without a secret; an accepted heartbeat must re-encode to
//! something that decodes to the same heartbeat; the membership state must stay consistent.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use metallb_rs::speaker::liveness::{Codec, Membership, Params};

fuzz_target!(|data: &[u8]| {
    for secret in [None, Some("fuzz-secret")] {
        let codec = Codec::new(secret);
        if let Ok(hb) = codec.decode(data) {
            assert_eq!(codec.decode(&codec.encode(&hb)), Ok(hb));
        }
        let params = Params {
            secret: secret.map(str::to_string),
            ..Params::default()
        };
        let Ok(mut m) = Membership::new("me", 1, params) else {
            return;
        };
        let t0 = Instant::now();
        let src = "192.0.2.7:7946".parse().expect("constant address");
        let _ = m.on_datagram(t0, data, src);
        // The same datagram again is a replay or the same rejection, never a new "up".
        let _ = m.on_datagram(t0, data, src);
        let _ = m.tick(t0 + Duration::from_secs(1));
        assert!(m.alive().contains("me"));
        assert_eq!(m.alive().len(), 1, "everyone else expired after 1 s");
    }
});
