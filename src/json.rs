//! JSON helpers shared by every report (validation, pass services, pipeline): non-finite numbers stay valid JSON.

use serde::Serializer;

/// Serialize an f64 so JSON stays valid and stable: finite numbers as numbers, others as "inf", "-inf", "nan".
pub fn ser_f64<S: Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else if v.is_nan() {
        s.serialize_str("nan")
    } else if *v > 0.0 {
        s.serialize_str("inf")
    } else {
        s.serialize_str("-inf")
    }
}

/// `ser_f64` for an optional value (`null` when absent).
pub fn ser_opt_f64<S: Serializer>(v: &Option<f64>, s: S) -> std::result::Result<S::Ok, S::Error> {
    match v {
        Some(v) => ser_f64(v, s),
        None => s.serialize_none(),
    }
}
