//! Generates the Rust types and tonic stubs from `proto/metalfleet/v1/*.proto`.
//!
//! protoc comes from `protoc-bin-vendored`, so a fresh machine needs no install step.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: a build script is single-threaded here, and prost-build reads PROTOC from the environment.
    // The clippy ban on set_var is for tests; a build script has no other way to pass PROTOC.
    #[allow(unsafe_code, clippy::disallowed_methods)]
    unsafe {
        std::env::set_var("PROTOC", protoc)
    };
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Every .proto file of the package, so a new service needs no edit here.
    let dir = "proto/metalfleet/v1";
    println!("cargo:rerun-if-changed={dir}");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("metalfleet_descriptor.bin"))
        .compile_protos(&files, &[PathBuf::from("proto")])?;
    Ok(())
}
