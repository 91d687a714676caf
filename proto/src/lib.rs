//! The wire types of metalfleet: generated from `proto/metalfleet/v1/*.proto`, no logic.
//!
//! Other crates convert these into their own domain types at the edge (each crate's
//! `grpc/convert.rs`); nothing else should pass them around.

/// Package `metalfleet.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("metalfleet.v1");

    /// The encoded `FileDescriptorSet` of every metalfleet service, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("metalfleet_descriptor");
}
