//! Vigil's control-plane API, generated from `proto/vigil/control/v1/control.proto`.
//!
//! Services and clients use these types at the gRPC boundary only; inside, Vigil works on the
//! schema crate's types.

#![allow(missing_docs, missing_debug_implementations, unused_qualifications)]
#![allow(clippy::all, clippy::pedantic)]

/// `vigil.control.v1`.
pub mod control {
    /// Version 1.
    pub mod v1 {
        tonic::include_proto!("vigil.control.v1");
    }
}

/// The encoded file descriptor set of the control API, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/vigil_control_v1_descriptor.bin"));
