//! `router-shim`: the binary; everything happens in `router_shim::cli`.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    // One crypto provider for the whole process (rustls, tonic, reqwest); installed once, before any TLS.
    let _ = rustls::crypto::ring::default_provider().install_default();
    router_shim::cli::main()
}
