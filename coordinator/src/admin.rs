//! The coordinator's admin commands that work on the state directory directly (`operators add`,
//! `ca rotate|retire-old`, `router-cert issue`, `backup`, `restore`).

use std::path::{Path, PathBuf};

use ::store::StateDir;
use metalfleet_common::exit;

use crate::operators::{self, OperatorError};

/// `coordinator operators add`: prints where the credential went (and the bearer token, once).
/// Returns the exit code.
pub fn operators_add(state_dir: &Path, name: &str, role: &str, bearer: bool, out: Option<PathBuf>) -> i32 {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return exit::UNAVAILABLE;
        }
    };
    if !StateDir::new(state_dir).ca_key().exists() {
        eprintln!(
            "error: no CA in {}; start `coordinator serve --state-dir {}` once first, or pass --state-dir",
            state_dir.display(),
            state_dir.display()
        );
        return exit::USAGE;
    }
    let result = runtime.block_on(async {
        let store = crate::security_store::SecurityStore::open(state_dir)?;
        operators::add(state_dir, &store, name, role, bearer, out).await
    });
    match result {
        Ok(added) => {
            println!("operator {} ({}) written to {}", added.name, added.role, added.dir.display());
            println!("  certificate: {}", added.cert_file.display());
            println!("  key:         {} (mode 0600)", added.key_file.display());
            println!(
                "  config:      {} (fleetctl --config {})",
                added.client_config.display(),
                added.client_config.display()
            );
            if let Some(token) = &added.bearer {
                println!("bearer token (shown once; also in the 0600 token file next to the key):");
                println!("{}", token.expose());
            }
            exit::OK
        }
        Err(error @ (OperatorError::BadName(_) | OperatorError::BadRole(_))) => {
            eprintln!("error: {error}");
            exit::USAGE
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}

/// `coordinator router-cert issue`: writes the shim's and the coordinator's certificates and prints
/// the `router-shim.toml` lines. Returns the exit code.
pub fn router_cert_issue(state_dir: &Path, out: &Path, sans: &[String]) -> i32 {
    use crate::router_cert::{self, RouterCertError};
    if let Err(error) = router_cert::check_sans(sans) {
        eprintln!("error: {error}");
        return exit::USAGE;
    }
    if !StateDir::new(state_dir).ca_key().exists() {
        eprintln!(
            "error: no CA in {}; start `coordinator serve --state-dir {}` once first, or pass --state-dir",
            state_dir.display(),
            state_dir.display()
        );
        return exit::USAGE;
    }
    match router_cert::issue(state_dir, out, sans) {
        Ok(issued) => {
            println!("# router-shim.toml: the shim serves TLS and requires a client certificate from this CA");
            print!("{}", issued.shim_toml());
            println!(
                "# the coordinator presents {} (key {}, mode 0600) to every https:// shim in [router] shim",
                issued.client_cert.display(),
                issued.client_key.display()
            );
            println!("# after `coordinator ca retire-old`, run `coordinator router-cert issue` again");
            exit::OK
        }
        Err(error @ (RouterCertError::NoSans | RouterCertError::BadSan { .. })) => {
            eprintln!("error: {error}");
            exit::USAGE
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}

/// Prints the outcome of an admin command; returns the exit code.
pub fn report(result: Result<&str, crate::rotation::RotationError>) -> i32 {
    use ::store::backup::BackupError;

    use crate::rotation::RotationError;
    match result {
        Ok(message) => {
            println!("{message}");
            exit::OK
        }
        Err(
            error @ (RotationError::NoCa(_)
            | RotationError::Backup(BackupError::NotEmpty(_) | BackupError::NotABackup(_))),
        ) => {
            eprintln!("error: {error}");
            exit::USAGE
        }
        Err(error) => {
            eprintln!("error: {error}");
            1
        }
    }
}

/// `coordinator backup DIR`: every file of the state directory as `store::StateDir` lists it; what it does not
/// list is named on stderr (not backed up). Returns the exit code.
pub fn backup(state_dir: &Path, dest: &Path) -> i32 {
    let result = crate::rotation::backup(state_dir, dest).map(|summary| warn_unknown("backed up", &summary));
    report(result.map(|()| "backup written"))
}

/// `coordinator restore DIR --state-dir NEW`. Returns the exit code.
pub fn restore(from: &Path, state_dir: &Path) -> i32 {
    let result = crate::rotation::restore(from, state_dir).map(|summary| warn_unknown("restored", &summary));
    report(result.map(|()| "restored"))
}

fn warn_unknown(done: &str, summary: &::store::backup::Summary) {
    for path in &summary.unknown {
        eprintln!("warning: {} is not a file the coordinator keeps; not {done}", path.display());
    }
}
