//! The smesh wire protocol, generated from the `.proto` files beside this crate.
//!
//! - [`mesh`]: the data plane, one bidirectional stream per hop
//!   (client → sidecar, sidecar → master).
//! - [`admin`]: the master's admin API, used by `smesh-console`.
//!
//! [`FILE_DESCRIPTOR_SET`] feeds gRPC reflection on every server.

/// Generated code, nested as the protobuf packages are (`smesh.mesh.v1`, …)
/// so that cross-package references resolve.
#[allow(
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod smesh {
    pub mod mesh {
        pub mod v1 {
            tonic::include_proto!("smesh.mesh.v1");
        }
    }
    pub mod admin {
        pub mod v1 {
            tonic::include_proto!("smesh.admin.v1");
        }
    }
}

/// `smesh.mesh.v1`: events, stream frames and the `Mesh` service.
pub use smesh::mesh::v1 as mesh;

/// `smesh.admin.v1`: the master's admin API.
pub use smesh::admin::v1 as admin;

/// Encoded descriptors of every smesh service, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("smesh_descriptor");

/// gRPC service name of the data plane, as reported by `grpc.health.v1`.
pub const MESH_SERVICE: &str = "smesh.mesh.v1.Mesh";

/// gRPC service name of the admin API.
pub const ADMIN_SERVICE: &str = "smesh.admin.v1.Admin";
