//! Any UDP payload must decode into a BFD Control packet or be rejected, never panic; an
//! accepted packet must re-encode to exactly its `Length` bytes of input (the format has one
//! encoding per packet) and decode to the same packet. A session fed the packet must not panic
//! either.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use metallb_rs::bfd::fsm::{Config, Fsm, Input, Params, Timer};
use metallb_rs::bfd::packet::{decode, encode, encoded_len};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = decode(data) else {
        return;
    };
    let mut again = Vec::new();
    encode(&p, &mut again);
    assert_eq!(again.len(), encoded_len(&p));
    assert_eq!(&again[..], &data[..again.len()], "not byte-exact: {p:?}");
    assert_eq!(decode(&again), Ok(p.clone()));
    let now = Instant::now();
    let mut fsm = Fsm::new(Config {
        params: Params::default(),
        local_disc: p.your_disc.max(1),
        seed: 1,
    });
    let _ = fsm.process(now, Input::Start);
    let _ = fsm.process(now, Input::Received(p.clone()));
    let _ = fsm.process(now + Duration::from_millis(10), Input::Fired(Timer::Transmit));
    let _ = fsm.process(now, Input::Received(p));
    let _ = fsm.process(now, Input::Fired(Timer::Detect));
});
