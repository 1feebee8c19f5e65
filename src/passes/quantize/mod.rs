//! Quantization: placement rules, calibration, Q/DQ insertion. So far: the calibration interface and static QDQ.

pub mod calibrate;
pub mod static_qdq;
