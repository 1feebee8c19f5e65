//! Fuzz the loader: any bytes either load or fail with an error, never panic, hang or blow up memory. A model
//! that loads must also encode back (`to_bytes`) and verify without panicking; their results are ignored.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `None`: no folder to resolve external data against, so external tensors are refused (no file access).
    if let Ok(model) = onnx_rewrite::io::load_bytes(bytes::Bytes::copy_from_slice(data), None) {
        let _ = onnx_rewrite::io::to_bytes(&model);
        let _ = model.graph.verify();
    }
});
