//! The gRPC edge: the only module that knows the wire types of `proto::v1`.

pub mod convert;
