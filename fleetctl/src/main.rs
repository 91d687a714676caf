//! `fleetctl`: the operators' command line over the coordinator's services. All logic is in the library
//! (`fleetctl::app`); this only parses the flags, starts the runtime and telemetry, and exits with the code.
#![forbid(unsafe_code)]

use clap::Parser;
use fleetctl::app::{self, Cli};
use fleetctl::output;
use metalfleet_common::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let code = if error.use_stderr() { exit::USAGE } else { exit::OK };
            let _ = error.print(); // clap ignores a closed stream
            std::process::exit(code);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::note(format!("error: cannot start the async runtime: {error}"));
            std::process::exit(exit::UNAVAILABLE);
        }
    };
    let code = runtime.block_on(async {
        let _telemetry = metalfleet_common::telemetry::init("fleetctl", "warn");
        app::exit_code(app::run(cli).await)
    });
    std::process::exit(code);
}
