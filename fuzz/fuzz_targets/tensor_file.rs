//! Fuzz the input-file readers: any bytes given as a `.npy` or a `.pb` (ONNX TensorProto) either parse or fail
//! with an error, never panic, hang or allocate what the file does not hold. A tensor that parses must write
//! back as `.npy` and read again to the same tensor (tests/hostile_inputs.rs runs this same body over a
//! deterministic random corpus).
#![no_main]

use libfuzzer_sys::fuzz_target;
use onnx_rewrite::validate::{self, npy};

fuzz_target!(|data: &[u8]| {
    let tensors = [
        npy::parse_npy("x", data).ok(),
        validate::parse_tensor_pb(data).ok().map(|(_, t)| t),
    ];
    for t in tensors.into_iter().flatten() {
        if let Ok(b) = npy::to_npy(&t) {
            let back = npy::parse_npy("x", &b).expect("a tensor we wrote reads back");
            assert!(back.same_content(&t), "round trip changed the tensor");
        }
    }
});
