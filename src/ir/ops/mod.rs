//! Typed views of standard operators: attribute names, spec defaults and opset differences live here, one file
//! per op, so passes never read attributes by string key.

mod arity;
mod batchnorm;
mod conv;
mod gemm;
mod matmul;
mod qdq;

pub use arity::check_arity;
pub use batchnorm::BatchNormView;
pub use conv::ConvView;
pub use gemm::GemmView;
pub use matmul::MatMulView;
pub use qdq::{QdqKind, QdqView};

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
            .filter_map(|(_, n)| BatchNormView::of(n).unwrap())
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
            .filter_map(|(_, n)| QdqView::of(n).unwrap())
            .collect();
        assert!(dq
            .iter()
            .any(|v| v.kind == QdqKind::Dequantize && v.axis == 0));
    }
}
