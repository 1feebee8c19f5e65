//! Quantization: placement rules, calibration, Q/DQ insertion. So far: the calibration interface.

pub mod calibrate;
