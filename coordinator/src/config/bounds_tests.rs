//! One test per section and per class of absurd value: each names file, line and key (or the variable or
//! flag that set the value), through the `validate()` beside each section's struct.

use std::collections::HashMap;
use std::path::Path;

use super::*;

/// Parses `text` as `/etc/c.toml` and compares the whole error with `expected`.
fn check(text: &str, expected: &str) {
    let error = Config::parse(Path::new("/etc/c.toml"), text).expect_err(text);
    assert!(matches!(error, ConfigError::Source(_)), "a usage error (exit 64): {error:?}");
    assert_eq!(error.to_string(), expected, "for {text:?}");
}

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[test]
fn huge_sizes_and_counts() {
    check(
        "write_queue = 9223372036854775807\n",
        "/etc/c.toml:1:15: key `write_queue`: 9223372036854775807 is out of range; use 16 to 65536",
    );
    check(
        "\nmax_message_bytes = 1099511627776\n",
        "/etc/c.toml:2:21: key `max_message_bytes`: 1099511627776 bytes (1 TiB) is out of range; use 1024 to \
         67108864 bytes (1 KiB to 64 MiB)",
    );
    check(
        "max_message_bytes = 0\n",
        "/etc/c.toml:1:21: key `max_message_bytes`: 0 bytes (0 B) is out of range; use 1024 to 67108864 bytes (1 KiB to 64 MiB)",
    );
    check(
        "history_samples = 4294967295\n",
        "/etc/c.toml:1:19: key `history_samples`: 4294967295 is out of range; use 1 to 1000000",
    );
    check(
        "[health]\nmissed_heartbeats = 0\n",
        "/etc/c.toml:2:21: key `health.missed_heartbeats`: 0 is out of range; use 1 to 1000",
    );
}

#[test]
fn zero_and_sub_millisecond_durations() {
    check(
        "evaluate_every = \"500us\"\n",
        "/etc/c.toml:1:18: key `evaluate_every`: 500us is out of range; use 10ms to 1h",
    );
    check("evaluate_every = \"0s\"\n", "/etc/c.toml:1:18: key `evaluate_every`: 0s is out of range; use 10ms to 1h");
    check(
        "heartbeat_interval = \"1ms\"\n",
        "/etc/c.toml:1:22: key `heartbeat_interval`: 1ms is out of range; use 100ms to 1h",
    );
    check("request_timeout = \"0s\"\n", "/etc/c.toml:1:19: key `request_timeout`: 0s is out of range; use 10ms to 1h");
    check("grace_period = \"2days\"\n", "/etc/c.toml:1:16: key `grace_period`: 2days is out of range; use 100ms to 1h");
}

#[test]
fn every_problem_is_reported_at_once() {
    check(
        "write_queue = 0\nevaluate_every = \"0s\"\n",
        "/etc/c.toml:1:15: key `write_queue`: 0 is out of range; use 16 to 65536\n\
         /etc/c.toml:2:18: key `evaluate_every`: 0s is out of range; use 10ms to 1h",
    );
}

#[test]
fn health_section() {
    check(
        "[health]\nload_per_cpu = nan\n",
        "/etc/c.toml:2:16: key `health.load_per_cpu`: NaN is out of range; use 0.01 to 100000",
    );
    check(
        "[health]\ndisk_used_percent = 101.0\n",
        "/etc/c.toml:2:21: key `health.disk_used_percent`: 101 is out of range; use 0 to 100",
    );
    check(
        "[health]\nmemory_available_percent = -1.0\n",
        "/etc/c.toml:2:28: key `health.memory_available_percent`: -1 is out of range; use 0 to 100",
    );
}

#[test]
fn tls_sans_are_names_or_addresses() {
    check(
        "[tls]\nextra_sans = [\"main.lab\", \"\"]\n",
        "/etc/c.toml:2:27: key `tls.extra_sans[1]`: \"\" is empty; give a DNS name or an IP address",
    );
    check(
        "[tls]\nextra_sans = [\n  \"https://main\",\n  \"main lab\",\n  \"10.0.0.1:7443\",\n]\n",
        "/etc/c.toml:3:3: key `tls.extra_sans[0]`: \"https://main\" is a URL; give only the host name or IP address; \
         give a DNS name or an IP address\n\
         /etc/c.toml:4:3: key `tls.extra_sans[1]`: \"main lab\" contains whitespace; give a DNS name or an IP address\n\
         /etc/c.toml:5:3: key `tls.extra_sans[2]`: \"10.0.0.1:7443\" is not a bare name or address; leave out \
         brackets and the port; give a DNS name or an IP address",
    );
    Config::parse(Path::new("/etc/c.toml"), "[tls]\nextra_sans = [\"172.16.0.3\", \"main.maas\", \"::1\"]\n").unwrap();
}

const MAAS: &str = "[maas]\nurl = \"http://main:5240/MAAS\"\napi_key_file = \"/etc/maas.key\"\n";

#[test]
fn maas_section() {
    check(
        &format!("{MAAS}poll_interval = \"0s\"\n"),
        "/etc/c.toml:4:17: key `maas.poll_interval`: 0s is out of range; use 100ms to 1day",
    );
    check(
        &format!("{MAAS}request_timeout = \"0s\"\nretries = 1000\n"),
        "/etc/c.toml:4:19: key `maas.request_timeout`: 0s is out of range; use 10ms to 1h\n\
         /etc/c.toml:5:11: key `maas.retries`: 1000 is out of range; use 0 to 20",
    );
    check(
        &format!("{MAAS}retry_backoff = \"10s\"\nmax_backoff = \"1s\"\n"),
        "/etc/c.toml:4:17: key `maas.retry_backoff`: is above `max_backoff`; the first delay cannot exceed the cap",
    );
    check(
        "[maas]\nurl = \"ftp://main/MAAS\"\napi_key_file = \"/k\"\n",
        "/etc/c.toml:2:7: key `maas.url`: ftp://main/MAAS is not an http:// or https:// URL with a host",
    );
}

#[test]
fn operations_section() {
    check(
        "[operations]\npoll_interval = \"0s\"\n",
        "/etc/c.toml:2:17: key `operations.poll_interval`: 0s is out of range; use 100ms to 1h",
    );
    check(
        "[operations]\ndeploy_timeout = \"0s\"\ndefault_distro = \"\"\n",
        "/etc/c.toml:2:18: key `operations.deploy_timeout`: 0s is out of range; use 1s to 1day\n\
         /etc/c.toml:3:18: key `operations.default_distro`: \"\" is not a series name such as jammy",
    );
    check(
        "[operations]\ncoordinator_url = \" \"\n",
        "/etc/c.toml:2:19: key `operations.coordinator_url`: \" \" is not an address; give e.g. https://main.maas:7443",
    );
}

#[test]
fn verify_section() {
    check(
        "[verify]\ninterval = \"0s\"\n",
        "/etc/c.toml:2:12: key `verify.interval`: 0s is out of range; use 100ms to 1day",
    );
    check(
        "[verify.tolerance]\nmemory_percent = 150.0\n",
        "/etc/c.toml:2:18: key `verify.tolerance.memory_percent`: 150 is out of range; use 0 to 100",
    );
    check(
        "[verify.reachability]\nport = 0\ntimeout = \"0s\"\n",
        "/etc/c.toml:2:8: key `verify.reachability.port`: 0 is out of range; use 1 to 65535\n\
         /etc/c.toml:3:11: key `verify.reachability.timeout`: 0s is out of range; use 10ms to 1m",
    );
    check(
        "[verify.reachability.targets]\n\"server1.lab\" = \"127.0.0.1:0\"\n",
        "/etc/c.toml:2:17: key `verify.reachability.targets.server1.lab`: 127.0.0.1:0 cannot be connected to; give \
         the host's address and port",
    );
}

#[test]
fn lab_section() {
    check("[lab]\nwait_poll = \"0s\"\n", "/etc/c.toml:2:13: key `lab.wait_poll`: 0s is out of range; use 100ms to 1h");
    check(
        "[lab]\nreconcile_interval = \"10ms\"\n",
        "/etc/c.toml:2:22: key `lab.reconcile_interval`: 10ms is out of range; use 1s to 1day",
    );
    check(
        "[lab]\nwait_timeout = \"1s\"\nwait_poll = \"2s\"\n",
        "/etc/c.toml:3:13: key `lab.wait_poll`: is above `wait_timeout`; a wait would end before its first poll",
    );
}

#[test]
fn artifacts_section() {
    check("[artifacts]\nagent_binary = \"\"\n", "/etc/c.toml:2:16: key `artifacts.agent_binary`: must not be empty");
}

#[test]
fn enroll_section() {
    check(
        "[enroll]\ncert_lifetime = \"0s\"\nenroll_per_minute = 0\n",
        "/etc/c.toml:2:17: key `enroll.cert_lifetime`: 0s is out of range; use 1h to 10years\n\
         /etc/c.toml:3:21: key `enroll.enroll_per_minute`: 0 is out of range; use 1 to 100000",
    );
    check(
        "[enroll]\ntoken_ttl = \"1s\"\n",
        "/etc/c.toml:2:13: key `enroll.token_ttl`: 1s is out of range; use 1m to 1year",
    );
}

#[test]
fn empty_environment_variables_are_named() {
    let error = Config::from_sources(None, &env(&[("METALFLEET_STATE_DIR", "")]), &Overrides::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "environment variable METALFLEET_STATE_DIR: is set but empty; unset it or give it a value"
    );
    let error = Config::from_sources(None, &env(&[("METALFLEET_ANYTHING", " ")]), &Overrides::default()).unwrap_err();
    assert!(error.to_string().starts_with("environment variable METALFLEET_ANYTHING: is set but empty"), "{error}");
}

#[test]
fn values_from_variables_and_flags_name_them() {
    let vars = env(&[("METALFLEET_MAAS_URL", "ftp://main/MAAS"), ("METALFLEET_MAAS_API_KEY_FILE", "/k")]);
    let error = Config::from_sources(None, &vars, &Overrides::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        "environment variable METALFLEET_MAAS_URL (key `maas.url`): ftp://main/MAAS is not an http:// or https:// \
         URL with a host"
    );
    let flags = Overrides { state_dir: Some(PathBuf::from(" ")), ..Overrides::default() };
    let error = Config::from_sources(None, &env(&[]), &flags).unwrap_err();
    assert_eq!(error.to_string(), "flag --state-dir (key `state_dir`): must not be empty");
}

#[test]
fn a_default_that_does_not_fit_a_written_value_names_the_key() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "[lab]\nwait_timeout = \"1s\"\n").unwrap();
    let error = Config::from_sources(Some(file.path()), &env(&[]), &Overrides::default()).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: key `lab.wait_poll`: is above `wait_timeout`; a wait would end before its first poll",
            file.path().display()
        )
    );
}
