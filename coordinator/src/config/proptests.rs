//! Property tests for the coordinator's config file: hostile text never panics, and a generated valid config
//! reads back the values it was written with.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn read(text: &str) -> Result<Config, ConfigError> {
    let config: Config = common_config::parse(Path::new("coordinator.toml"), text)?;
    config.validate()?;
    Ok(config)
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = read(&text);
    }

    #[test]
    fn config_like_text_never_panics(
        text in "(listen|state_dir|insecure|heartbeat_interval|health|maas|url|\\[|\\]|=|\"|[0-9]|ms|s|\\.|\n| ){0,40}",
    ) {
        if let Err(ConfigError::Source(error)) = read(&text) {
            prop_assert!(error.to_string().starts_with("coordinator.toml:"), "{}", error);
        }
    }

    #[test]
    fn generated_config_reads_back_the_same_values(
        listen in (any::<std::net::IpAddr>(), any::<u16>()).prop_map(SocketAddr::from),
        state_dir in "/[a-z0-9_/]{0,30}",
        insecure in any::<bool>(),
        heartbeat_ms in 100u64..3_600_000,
        history_samples in 1u32..,
        request_ms in 1u64..1_000_000,
        max_message_bytes in 1024usize..(1 << 30),
        write_queue in 16usize..1_000_000,
        disk in 0.0f64..=100.0,
        load in 0.001f64..1000.0,
        missed in 1u32..100,
        extra_sans in proptest::collection::vec("[a-z0-9.-]{1,20}", 0..3),
        maas_port in 1u16..,
        retries in 0u32..10,
    ) {
        let sans: Vec<String> = extra_sans.iter().map(|s| format!("{s:?}")).collect();
        let text = format!(
            "listen = \"{listen}\"\nstate_dir = {state_dir:?}\ninsecure = {insecure}\n\
heartbeat_interval = \"{heartbeat_ms}ms\"\nhistory_samples = {history_samples}\nrequest_timeout = \"{request_ms}ms\"\n\
max_message_bytes = {max_message_bytes}\nwrite_queue = {write_queue}\n\n\
[health]\ndisk_used_percent = {disk:?}\nload_per_cpu = {load:?}\nmissed_heartbeats = {missed}\n\n\
[tls]\nextra_sans = [{}]\n\n\
[maas]\nurl = \"http://127.0.0.1:{maas_port}/MAAS\"\napi_key_file = \"/run/maas.key\"\nretries = {retries}\n",
            sans.join(", ")
        );
        let config = read(&text).map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
        prop_assert_eq!(config.listen, listen);
        prop_assert_eq!(config.state_dir, PathBuf::from(&state_dir));
        prop_assert_eq!(config.insecure, insecure);
        prop_assert_eq!(config.heartbeat_interval, Duration::from_millis(heartbeat_ms));
        prop_assert_eq!(config.history_samples, history_samples);
        prop_assert_eq!(config.request_timeout, Duration::from_millis(request_ms));
        prop_assert_eq!(config.max_message_bytes, max_message_bytes);
        prop_assert_eq!(config.write_queue, write_queue);
        prop_assert_eq!(config.health.disk_used_percent, disk);
        prop_assert_eq!(config.health.load_per_cpu, load);
        prop_assert_eq!(config.health.missed_heartbeats, missed);
        prop_assert_eq!(config.tls.extra_sans, extra_sans);
        let maas = config.maas.expect("the [maas] table was written");
        let root = maas.api_root();
        prop_assert_eq!(root.path(), "/MAAS/api/2.0/");
        prop_assert_eq!(maas.url.port(), Some(maas_port));
        prop_assert_eq!(maas.retries, retries);
        prop_assert_eq!(maas.api_key_file, PathBuf::from("/run/maas.key"));
    }
}
