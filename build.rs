//! Generates the `arbor.v1` messages, services and the descriptor set that server
//! reflection serves. protoc comes from `protoc-bin-vendored` unless `PROTOC` is set,
//! so a fresh machine needs nothing but cargo.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts run single-threaded; nothing else reads the environment here.
        #[allow(unsafe_code)]
        unsafe {
            env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?)
        };
    }
    let out = PathBuf::from(env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        // A request that does not decode is INVALID_ARGUMENT (src/api/grpc/codec.rs).
        .codec_path("crate::api::grpc::codec::ArborCodec")
        .file_descriptor_set_path(out.join("arbor_descriptor.bin"))
        .compile_protos(
            &[
                "proto/arbor/v1/tracking.proto",
                "proto/arbor/v1/events.proto",
                "proto/arbor/v1/watch.proto",
                "proto/arbor/v1/hierarchy.proto",
                "proto/arbor/v1/backup.proto",
            ],
            &["proto"],
        )?;
    Ok(())
}
