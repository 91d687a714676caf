//! Property tests for the coordinator's config file: hostile text never panics, a generated valid config
//! reads back the values it was written with, and a value out of its bounds is refused naming line and key.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn read(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("coordinator.toml"), text)
}

/// A valid DNS name: letter-led labels of letters, digits and inner hyphens.
const DNS_NAME: &str = "[a-z]([a-z0-9-]{0,8}[a-z0-9])?(\\.[a-z]([a-z0-9-]{0,8}[a-z0-9])?){0,2}";

/// A top-level or sectioned key with a value outside its bounds, and the key as the error names it.
fn out_of_range() -> impl Strategy<Value = (String, String, &'static str)> {
    prop_oneof![
        (65_537u64..=i64::MAX as u64).prop_map(|n| (String::new(), format!("write_queue = {n}"), "write_queue")),
        (0u64..16).prop_map(|n| (String::new(), format!("write_queue = {n}"), "write_queue")),
        ((64u64 << 20) + 1..=i64::MAX as u64).prop_map(|n| (
            String::new(),
            format!("max_message_bytes = {n}"),
            "max_message_bytes"
        )),
        (1_000_001u64..=u32::MAX as u64).prop_map(|n| (
            String::new(),
            format!("history_samples = {n}"),
            "history_samples"
        )),
        (0u64..10_000).prop_map(|us| (String::new(), format!("evaluate_every = \"{us}us\""), "evaluate_every")),
        (0u64..100).prop_map(|ms| (String::new(), format!("heartbeat_interval = \"{ms}ms\""), "heartbeat_interval")),
        (0u64..100).prop_map(|ms| {
            let text = format!("url = \"http://h/MAAS\"\napi_key_file = \"/k\"\npoll_interval = \"{ms}ms\"");
            ("[maas]\n".to_string(), text, "maas.poll_interval")
        }),
        (0u64..100).prop_map(|ms| (
            "[operations]\n".to_string(),
            format!("poll_interval = \"{ms}ms\""),
            "operations.poll_interval"
        )),
        (0u64..100).prop_map(|ms| ("[lab]\n".to_string(), format!("wait_poll = \"{ms}ms\""), "lab.wait_poll")),
        (0u64..100).prop_map(|ms| ("[verify]\n".to_string(), format!("interval = \"{ms}ms\""), "verify.interval")),
        (0u32..1).prop_map(|n| (
            "[enroll]\n".to_string(),
            format!("enroll_per_minute = {n}"),
            "enroll.enroll_per_minute"
        )),
        "[a-z]{0,3}[ /_]{1,2}[a-z]{0,3}".prop_map(|san| (
            "[tls]\n".to_string(),
            format!("extra_sans = [{san:?}]"),
            "tls.extra_sans[0]"
        )),
    ]
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
        history_samples in 1u32..=1_000_000,
        request_ms in 10u64..1_000_000,
        max_message_bytes in 1024usize..=(64 << 20),
        write_queue in 16usize..=65_536,
        disk in 0.0f64..=100.0,
        load in 0.01f64..1000.0,
        missed in 1u32..100,
        extra_sans in proptest::collection::vec(DNS_NAME, 0..3),
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

    #[test]
    fn out_of_range_values_are_refused_naming_line_and_key(
        (header, line, key) in out_of_range(),
        blank_lines in 0usize..4,
    ) {
        let text = format!("listen = \"127.0.0.1:0\"\n{}{header}{line}\n", "\n".repeat(blank_lines));
        let error = read(&text).expect_err("out of range");
        let message = error.to_string();
        let line_number = text.lines().position(|l| line.lines().last() == Some(l)).expect("the line is there") + 1;
        prop_assert!(matches!(error, ConfigError::Source(_)), "{}", message);
        prop_assert!(
            message.starts_with(&format!("coordinator.toml:{line_number}:")),
            "line {} in {}: {}", line_number, text, message
        );
        prop_assert!(message.contains(&format!("key `{key}`")), "{}", message);
    }
}
