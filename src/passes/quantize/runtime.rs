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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::{DataType, Tensor};

    /// x -> [QuantizeLinear -> DequantizeLinear ->] MatMul(DequantizeLinear(w_q)) -> y
    fn graph(weight_dq: bool, activation_q: bool) -> Model {
        let mut b = GraphBuilder::new("g");
        let mut x = b.input("x", DataType::FLOAT, &["1", "4"]);
        let s = b.initializer(Tensor::from_f32("s", vec![], &[0.1]));
        if activation_q {
            let q = b.node("QuantizeLinear", &[x, s], vec![], 1)[0];
            x = b.node("DequantizeLinear", &[q, s], vec![], 1)[0];
        }
        let w = if weight_dq {
            let wq = b.initializer(Tensor::from_vec("wq", vec![4, 2], vec![1i8; 8]).unwrap());
            b.node("DequantizeLinear", &[wq, s], vec![], 1)[0]
        } else {
            b.initializer(Tensor::from_f32("w", vec![4, 2], &[0.5; 8]))
        };
        let y = b.node("MatMul", &[x, w], vec![], 1)[0];
        b.output(y, DataType::FLOAT, &["1", "2"]);
        model(b.build(), 13)
    }

    #[test]
    fn the_form_is_read_off_the_graph() {
        assert_eq!(form(&graph(false, false)), QuantForm::Float);
        assert_eq!(form(&graph(true, false)), QuantForm::WeightOnly);
        assert_eq!(form(&graph(true, true)), QuantForm::Static);
        assert!(hint(QuantForm::Float).is_none());
        assert!(hint(QuantForm::WeightOnly)
            .unwrap()
            .contains("session.disable_quant_qdq"));
        assert!(hint(QuantForm::Static).unwrap().contains("do not set"));
    }
}
