//! Issue 10's absurd configuration values, through the real binaries: each class (huge sizes, zero and
//! sub-millisecond durations, bad TLS names, empty environment variables) stops `coordinator serve`, `agent run`
//! and `router-shim serve` before they bind anything, with exit 64 and the file, line and key, or the variable.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Result;
use metalfleet_tests::{bin, run, stderr};

const DEADLINE: Duration = Duration::from_secs(20);

/// Runs `binary args` with `vars` added to the environment and asserts exit 64 and every one of `expected`
/// in its stderr.
fn refused(binary: &str, args: &[&std::ffi::OsStr], vars: &[(&str, &str)], expected: &[&str]) -> Result<Output> {
    let mut command = Command::new(bin(binary));
    command.args(args).envs(vars.iter().copied());
    let output = run(command, DEADLINE)?;
    let message = stderr(&output);
    assert_eq!(output.status.code(), Some(64), "{binary} {args:?}: {message}");
    for text in expected {
        assert!(message.contains(text), "{binary} {args:?} names {text:?}: {message}");
    }
    Ok(output)
}

/// `coordinator serve` with `text` as its config file: refused, naming `file:line:` and `key`.
fn coordinator_refuses(dir: &Path, text: &str, line: usize, key: &str) -> Result<()> {
    let config = dir.join("coordinator.toml");
    std::fs::write(&config, text)?;
    let state = dir.join("state");
    refused(
        "coordinator",
        &[
            "serve".as_ref(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--state-dir".as_ref(),
            state.as_ref(),
            "--config".as_ref(),
            config.as_ref(),
        ],
        &[],
        &[&format!("{}:{line}:", config.display()), &format!("key `{key}`")],
    )?;
    assert!(!state.exists(), "nothing was started: the state directory was never created");
    Ok(())
}

#[test]
fn coordinator_refuses_huge_sizes_tiny_durations_and_bad_sans() -> Result<()> {
    let dir = tempfile::tempdir()?;
    coordinator_refuses(dir.path(), "# queue\nwrite_queue = 9223372036854775807\n", 2, "write_queue")?;
    coordinator_refuses(dir.path(), "max_message_bytes = 1099511627776\n", 1, "max_message_bytes")?;
    coordinator_refuses(dir.path(), "evaluate_every = \"500us\"\n", 1, "evaluate_every")?;
    coordinator_refuses(
        dir.path(),
        "\n[maas]\nurl = \"http://127.0.0.1:9/MAAS\"\napi_key_file = \"/k\"\npoll_interval = \"0s\"\n",
        5,
        "maas.poll_interval",
    )?;
    coordinator_refuses(dir.path(), "[operations]\npoll_interval = \"0s\"\n", 2, "operations.poll_interval")?;
    coordinator_refuses(dir.path(), "[tls]\nextra_sans = [\"main.lab\", \"\"]\n", 2, "tls.extra_sans[1]")?;
    coordinator_refuses(
        dir.path(),
        "[tls]\nextra_sans = [\n  \"https://main.lab:7443\",\n]\n",
        3,
        "tls.extra_sans[0]",
    )?;
    Ok(())
}

#[test]
fn coordinator_refuses_an_empty_environment_variable_and_a_bad_router_san() -> Result<()> {
    let dir = tempfile::tempdir()?;
    refused(
        "coordinator",
        &["serve".as_ref(), "--listen".as_ref(), "127.0.0.1:0".as_ref()],
        &[("METALFLEET_STATE_DIR", "")],
        &["METALFLEET_STATE_DIR", "empty"],
    )?;
    let out = dir.path().join("out");
    for san in ["", "router lab", "https://router"] {
        refused(
            "coordinator",
            &[
                "router-cert".as_ref(),
                "issue".as_ref(),
                "--out".as_ref(),
                out.as_ref(),
                "--state-dir".as_ref(),
                dir.path().as_ref(),
                "--san".as_ref(),
                san.as_ref(),
            ],
            &[],
            &[&format!("--san {san:?}")],
        )?;
    }
    assert!(!out.exists(), "nothing was written for a refused name");
    Ok(())
}

#[test]
fn agent_refuses_absurd_values_and_empty_variables() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("agent.toml");
    let state = dir.path().join("state");
    let args = |config: &Path| -> Vec<std::ffi::OsString> {
        [
            "run".into(),
            "--state-dir".into(),
            state.clone().into_os_string(),
            "--config".into(),
            config.as_os_str().to_owned(),
        ]
        .into_iter()
        .collect()
    };
    let base = "coordinator = \"127.0.0.1:9\"\ninsecure = true\n";
    for (text, line, key) in [
        ("interval = \"0s\"\n", 3, "interval"),
        ("rpc_timeout = \"100us\"\n", 3, "rpc_timeout"),
        ("memory_budget = \"1024GiB\"\n", 3, "memory_budget"),
        ("buffer_samples = 9223372036854775807\n", 3, "buffer_samples"),
    ] {
        std::fs::write(&config, format!("{base}{text}"))?;
        let args = args(&config);
        let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
        refused("agent", &args, &[], &[&format!("{}:{line}:", config.display()), &format!("key `{key}`")])?;
    }
    std::fs::write(&config, base)?;
    let args = args(&config);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    refused("agent", &args, &[("METALFLEET_COORDINATOR", "")], &["METALFLEET_COORDINATOR", "empty"])?;
    refused("agent", &args, &[("METALFLEET_INTERVAL", "1ms")], &["METALFLEET_INTERVAL", "key `interval`"])?;
    Ok(())
}

#[test]
fn router_shim_refuses_zero_durations_bad_ports_and_an_empty_variable() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("router-shim.toml");
    let base = format!(
        "backend = \"linux\"\nlan_prefix = \"172.16.0.0/20\"\nstate_dir = \"{}\"\n\n[linux]\nlan_interface = \"lan0\"\n\
         wan_interface = \"wan0\"\nsystemd_unit = \"dnsmasq.service\"\n",
        dir.path().join("state").display()
    );
    for (extra, line, key) in [
        ("confirm_timeout = \"0s\"\n", 1, "confirm_timeout"),
        ("\n[serve]\nrpc_timeout = \"500us\"\n", 11, "serve.rpc_timeout"),
    ] {
        let text = if extra.starts_with('\n') { format!("{base}{extra}") } else { format!("{extra}{base}") };
        std::fs::write(&config, text)?;
        refused(
            "router-shim",
            &[
                "--config".as_ref(),
                config.as_ref(),
                "serve".as_ref(),
                "--insecure".as_ref(),
                "--listen".as_ref(),
                "127.0.0.1:0".as_ref(),
            ],
            &[],
            &[&format!("{}:{line}:", config.display()), &format!("key `{key}`")],
        )?;
    }
    std::fs::write(&config, base.replace("lan0\"\n", "lan0\"\nmanagement_ports = [0]\n"))?;
    refused(
        "router-shim",
        &["--config".as_ref(), config.as_ref(), "serve".as_ref(), "--insecure".as_ref()],
        &[],
        &[&format!("{}:7:", config.display()), "key `linux.management_ports[0]`"],
    )?;
    refused(
        "router-shim",
        &["serve".as_ref(), "--insecure".as_ref()],
        &[("METALFLEET_ROUTER_SHIM_CONFIG", "")],
        &["METALFLEET_ROUTER_SHIM_CONFIG", "empty"],
    )?;
    Ok(())
}
