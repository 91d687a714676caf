//! `router-shim`: the binary; everything happens in `router_shim::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    router_shim::cli::main()
}
