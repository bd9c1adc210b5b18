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

/// Every RPC of the control API as `package.Service/Method`, read from the descriptor set:
/// the isolation matrix test fails when an RPC has no row.
pub fn rpc_names() -> Vec<String> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    for file in set.file {
        let package = file.package().to_owned();
        for service in &file.service {
            for method in &service.method {
                names.push(format!("{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    names
}
