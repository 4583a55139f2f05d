// Generates the gRPC code with the protoc shipped by protoc-bin-vendored, so a fresh
// machine needs nothing but cargo.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let files = [
        "proto/meta.proto",
        "proto/chunk.proto",
        "proto/registry.proto",
        "proto/admin.proto",
        "proto/changelog.proto",
        "proto/feed.proto",
        "proto/standby.proto",
    ];
    tonic_prost_build::configure()
        // Payloads are passed along without copying (chain forwarding, read replies).
        .bytes(".elkfs.chunk")
        .compile_protos(&files, &["proto"])?;
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    Ok(())
}
