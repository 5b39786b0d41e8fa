//! Any bytes fed to the legacy-config loader must give a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        match metallb_rs::config::load(text) {
            Ok(l) => {
                // Exercise the derived accessors too.
                for p in &l.config.pools {
                    let _ = p.cidrs().count();
                }
            }
            Err(e) => {
                let _ = e.to_string();
            }
        }
    }
});
