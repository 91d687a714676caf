//! The config parser (`metalfleet_common::config::parse`) into each binary's config type, plus validation.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("fuzz.toml");
    if let Ok(config) = metalfleet_common::config::parse::<coordinator::config::Config>(path, text) {
        let _ = config.validate();
        if let Some(maas) = &config.maas {
            let _ = maas.api_root();
        }
    }
    let _ = metalfleet_common::config::parse::<maas_client::Config>(path, text);
    let _ = metalfleet_common::config::parse::<agent::config::FileConfig>(path, text);
    let _ = router_shim::config::Config::parse(path, text);
});
