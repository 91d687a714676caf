//! Property tests for the agent's config file: a generated valid file reads back the values it was written
//! with and passes validation, a value out of its bounds is refused naming line and key, and hostile text never
//! panics the parser or the merge with the environment.

use std::collections::HashMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

fn read(text: &str) -> Result<FileConfig, common_config::Error> {
    common_config::parse(Path::new("agent.toml"), text)
}

proptest! {
    #[test]
    fn generated_file_reads_back_the_same_values(
        coordinator in "[a-z0-9.-]{1,20}:[0-9]{1,5}",
        insecure in any::<bool>(),
        state_dir in "/[a-z0-9_/]{0,30}",
        hostname in "[a-z0-9-]{1,20}",
        interval_ms in 100u64..=3_600_000,
        buffer_samples in 1u32..=1_000_000,
        budget_mib in 4u64..=(16 << 10),
        hide_disks in proptest::collection::vec("[a-z0-9]{1,8}", 0..4),
        connect_secs in 1u64..=300,
        rpc_ms in 10u64..=3_600_000,
    ) {
        let disks: Vec<String> = hide_disks.iter().map(|d| format!("{d:?}")).collect();
        let text = format!(
            "coordinator = {coordinator:?}\ninsecure = {insecure}\nstate_dir = {state_dir:?}\nhostname = {hostname:?}\n\
interval = \"{interval_ms}ms\"\nbuffer_samples = {buffer_samples}\nmemory_budget = \"{budget_mib}MiB\"\n\
hide_disks = [{}]\nconnect_timeout = \"{connect_secs}s\"\nrpc_timeout = \"{rpc_ms}ms\"\n",
            disks.join(", ")
        );
        let file = read(&text).map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
        prop_assert_eq!(file.coordinator.as_deref(), Some(coordinator.as_str()));
        prop_assert_eq!(file.insecure, Some(insecure));
        prop_assert_eq!(file.state_dir.as_ref(), Some(&PathBuf::from(&state_dir)));
        prop_assert_eq!(file.hostname.as_deref(), Some(hostname.as_str()));
        prop_assert_eq!(file.interval, Some(Duration::from_millis(interval_ms)));
        prop_assert_eq!(file.buffer_samples, Some(buffer_samples as usize));
        prop_assert_eq!(file.memory_budget.map(|b| b.0), Some(budget_mib << 20));
        prop_assert_eq!(file.hide_disks.as_ref(), Some(&hide_disks));
        prop_assert_eq!(file.connect_timeout, Some(Duration::from_secs(connect_secs)));
        prop_assert_eq!(file.rpc_timeout, Some(Duration::from_millis(rpc_ms)));
        let args = RunArgs { insecure: true, ..RunArgs::default() };
        let config = Config::from_sources(Some(read(&text).expect("parsed above")), &HashMap::new(), &args)
            .map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
        prop_assert_eq!(config.interval, Duration::from_millis(interval_ms));
    }

    #[test]
    fn out_of_range_values_are_refused_naming_line_and_key(
        (line, key) in prop_oneof![
            (0u64..100).prop_map(|ms| (format!("interval = \"{ms}ms\""), "interval")),
            (3_600_001u64..1_000_000_000).prop_map(|ms| (format!("interval = \"{ms}ms\""), "interval")),
            (1_000_001u64..=i64::MAX as u64).prop_map(|n| (format!("buffer_samples = {n}"), "buffer_samples")),
            (0u64..4).prop_map(|mib| (format!("memory_budget = \"{mib}MiB\""), "memory_budget")),
            ((16u64 << 10) + 1..(1 << 40)).prop_map(|mib| (format!("memory_budget = \"{mib}MiB\""), "memory_budget")),
            (0u64..10_000).prop_map(|us| (format!("connect_timeout = \"{us}us\""), "connect_timeout")),
            (0u64..10).prop_map(|ms| (format!("rpc_timeout = \"{ms}ms\""), "rpc_timeout")),
        ],
        blank_lines in 0usize..4,
    ) {
        let text = format!("coordinator = \"main:7443\"\ninsecure = true\n{}{line}\n", "\n".repeat(blank_lines));
        let source = SourceFile { path: PathBuf::from("agent.toml"), text: text.clone() };
        let file = read(&text).map_err(|e| TestCaseError::fail(format!("{e} in {text}")))?;
        let error = Config::from_file_sources(Some(file), Some(source), &HashMap::new(), &RunArgs::default())
            .expect_err("out of range");
        let message = error.to_string();
        prop_assert!(
            message.contains(&format!("agent.toml:{}:", 3 + blank_lines)) && message.contains(&format!("key `{key}`")),
            "{}", message
        );
    }

    #[test]
    fn hostile_text_and_environment_never_panic(
        text in "\\PC{0,160}",
        coordinator in "\\PC{0,30}",
        interval in "\\PC{0,12}",
        hide in "\\PC{0,30}",
    ) {
        let file = read(&text).ok();
        let env: HashMap<String, String> = [
            ("METALFLEET_COORDINATOR", coordinator),
            ("METALFLEET_INTERVAL", interval),
            ("METALFLEET_INSECURE", "true".to_string()),
            ("METALFLEET_HIDE_DISKS", hide),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let _ = Config::from_sources(file, &env, &RunArgs::default());
    }
}
