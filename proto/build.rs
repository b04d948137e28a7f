//! Compiles `smesh/**/v1/*.proto` with a vendored `protoc`, so a fresh
//! machine builds without installing protobuf, and writes the file descriptor
//! set that the nodes serve through gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &["smesh/mesh/v1/mesh.proto", "smesh/admin/v1/admin.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    // `PROTOC` in the environment wins, for platforms the vendored crate lacks.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    config.protoc_executable(protoc);
    tonic_prost_build::configure()
        // Event data is passed through the mesh untouched: share, do not copy.
        .bytes(".smesh.mesh.v1.Event.data")
        .file_descriptor_set_path(out_dir.join("smesh_descriptor.bin"))
        .compile_with_config(config, PROTOS, &["."])?;
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
