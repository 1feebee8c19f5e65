//! Typed views of standard operators: attribute names, spec defaults and opset differences live here, one file
//! per op, so passes never read attributes by string key.

mod arity;
mod axes;
mod batchnorm;
mod conv;
mod gemm;
mod matmul;
mod qdq;
mod reduce;
mod softmax;
mod split;
mod squeeze;

pub use arity::check_arity;
pub use axes::IntsArg;
pub use batchnorm::BatchNormView;
pub use conv::ConvView;
pub use gemm::GemmView;
pub use matmul::MatMulView;
pub use qdq::{QdqKind, QdqView};
pub use reduce::{reduce_axes_input_since, ReduceView, REDUCE_OPS};
pub use softmax::{SoftmaxView, SOFTMAX_ONE_AXIS_SINCE};
pub use split::{SplitView, SPLIT_INPUT_SINCE, SPLIT_NUM_OUTPUTS_SINCE};
pub use squeeze::{SqueezeView, SQUEEZE_AXES_INPUT_SINCE};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io;

    #[test]
    fn views_read_fixture_attributes_with_defaults() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let m = io::load(&root.join("fixtures/conv_bn_relu.onnx")).unwrap();
        let convs: Vec<ConvView> = m
            .graph
            .nodes()
            .filter_map(|(_, n)| ConvView::of(n).unwrap())
            .collect();
        assert_eq!(convs.len(), 2);
        assert_eq!(convs[0].group, 1);
        assert_eq!(convs[1].group, 8, "depthwise");
        let bns = m
            .graph
            .nodes()
            .filter_map(|(_, n)| BatchNormView::of(n, 17).unwrap())
            .count();
        assert_eq!(bns, 2);
        let gemm = m
            .graph
            .nodes()
            .find_map(|(_, n)| GemmView::of(n).unwrap())
            .unwrap();
        assert!(gemm.trans_b && !gemm.trans_a);
        assert_eq!(gemm.alpha, 1.0);
        let q = io::load(&root.join("fixtures/qdq_weight.onnx")).unwrap();
        let dq: Vec<QdqView> = q
            .graph
            .nodes()
            .filter_map(|(_, n)| QdqView::of(n, 13).unwrap())
            .collect();
        assert!(dq
            .iter()
            .any(|v| v.kind == QdqKind::Dequantize && v.axis == Some(0)));
        // the spec default 1 at opset 13+; no axis at all before 13
        assert!(dq.iter().any(|v| v.axis == Some(1)));
        let (_, n) = q.graph.nodes().next().unwrap();
        assert_eq!(QdqView::of(n, 12).unwrap().unwrap().axis, None);
    }

    /// Defaults and argument forms follow the opset the node is read at.
    #[test]
    fn views_follow_the_opset() {
        use crate::ir::builder::GraphBuilder;
        use crate::ir::{Attribute, DataType};
        let mut b = GraphBuilder::new("g");
        let x = b.input("x", DataType::FLOAT, &["2", "3"]);
        let sm = b.node("Softmax", &[x], vec![], 1)[0];
        let sq = b.node("Squeeze", &[sm], vec![Attribute::ints("axes", vec![0])], 1)[0];
        let rs = b.node(
            "ReduceMean",
            &[sq],
            vec![Attribute::ints("axes", vec![0])],
            1,
        )[0];
        b.node(
            "Split",
            &[rs],
            vec![Attribute::ints("split", vec![1, 2])],
            2,
        );
        let g = b.build();
        let n: Vec<&crate::ir::Node> = g.nodes().map(|(_, n)| n).collect();
        let s11 = SoftmaxView::of(n[0], 11).unwrap().unwrap();
        assert!(s11.flattens && s11.axis == 1);
        let s13 = SoftmaxView::of(n[0], 13).unwrap().unwrap();
        assert!(!s13.flattens && s13.axis == -1);
        let q12 = SqueezeView::of(n[1], 12).unwrap().unwrap();
        assert_eq!(q12.axes, IntsArg::Attr(vec![0]));
        // at 13 the attribute is not part of the op any more: the (absent) input is what counts
        assert_eq!(
            SqueezeView::of(n[1], 13).unwrap().unwrap().axes,
            IntsArg::Absent
        );
        assert_eq!(
            ReduceView::of(n[2], 17).unwrap().unwrap().axes,
            IntsArg::Attr(vec![0])
        );
        assert_eq!(
            ReduceView::of(n[2], 18).unwrap().unwrap().axes,
            IntsArg::Absent
        );
        let sp = SplitView::of(n[3], 12).unwrap().unwrap();
        assert_eq!((sp.axis, sp.split), (0, IntsArg::Attr(vec![1, 2])));
    }
}
