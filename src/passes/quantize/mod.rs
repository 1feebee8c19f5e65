//! Quantization: parameter math (`params`), calibration interface (`calibrate`), weight-only quantization.

pub mod calibrate;
pub mod params;
