//! What a quantized model needs from its runtime to run at full speed: the hint the `quantize` command and
//! `inspect` print.
//!
//! The form is read off the graph, whoever wrote it: a DequantizeLinear of a constant feeding a float op with no
//! QuantizeLinear of an activation anywhere is weight-only Q/DQ; a QuantizeLinear of a computed value is static
//! (activation) QDQ. ONNX Runtime does not constant-fold a DequantizeLinear (it keeps Q/DQ groups for its
//! integer fusions), so a weight-only Conv model dequantizes every weight on every run unless the session option
//! `session.disable_quant_qdq=1` is set, which folds them at load; that same option turns the integer fusions of
//! a static model off. Figures: `cargo bench --bench ort_latency` (docs/benchmarks.md, "ONNX Runtime latency").

use crate::ir::{Graph, Model};

/// How a model stores its quantized values, as far as a runtime is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QuantForm {
    /// No Q/DQ node.
    Float,
    /// Constant weights read through DequantizeLinear; activations float.
    WeightOnly,
    /// Activations quantized too (QuantizeLinear of computed values).
    Static,
}

/// The Q/DQ form of `model` (every graph, bodies included).
pub fn form(model: &Model) -> QuantForm {
    let (mut weight_dq, mut activation_q) = (0usize, 0usize);
    model.graph.walk(&mut |g: &Graph| {
        for (_, n) in g.nodes() {
            let constant_input = n.input(0).is_some_and(|v| g.constant(v).is_some());
            if n.op.is("DequantizeLinear") && constant_input {
                weight_dq += 1;
            } else if n.op.is("QuantizeLinear") && !constant_input {
                activation_q += 1;
            }
        }
    });
    match (weight_dq, activation_q) {
        (_, a) if a > 0 => QuantForm::Static,
        (w, _) if w > 0 => QuantForm::WeightOnly,
        _ => QuantForm::Float,
    }
}

/// The runtime setting `form` needs, with its cost, for a person; `None` when there is nothing to say.
pub fn hint(form: QuantForm) -> Option<&'static str> {
    match form {
        QuantForm::Float => None,
        QuantForm::WeightOnly => Some(
            "runtime: ONNX Runtime dequantizes weight-only Q/DQ weights again on every run (CNNs measured \
             1.4-3x slower than float); create the session with the config entry \
             `session.disable_quant_qdq` = \"1\" (SessionOptions.add_session_config_entry) to fold them at \
             load, which runs at float speed but holds the weights as float in memory (the file stays small)",
        ),
        QuantForm::Static => Some(
            "runtime: ONNX Runtime fuses these Q/DQ pairs into integer kernels with its default graph \
             optimisations; do not set `session.disable_quant_qdq` (it turns those fusions off)",
        ),
    }
}
