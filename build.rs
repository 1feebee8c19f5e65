//! Generates the ONNX protobuf types from `proto/onnx.proto` with prost-build, parsing the schema with
//! protox (pure Rust), so no machine ever needs a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/onnx.proto");
    let fds = protox::compile(["proto/onnx.proto"], ["proto"])?;
    let mut config = prost_build::Config::new();
    // Every `bytes` field (raw tensor data above all) decodes as a zero-copy slice of the input buffer.
    config.bytes(["."]);
    config.compile_fds(fds)?;
    Ok(())
}
