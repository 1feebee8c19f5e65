//! JSON helpers shared by every report (validation, pass services, pipeline): non-finite numbers stay valid JSON;
//! and for plans that must load back bit for bit (static QDQ's `QdqPlan`), f64 as text.
//!
//! f32 numbers need no help: serde_json writes an f32's shortest text and reads it back to the same bits (every
//! finite positive f32 was checked, 2.1e9 of them, with serde_json 1.0.154; `tests::f32_round_trips_bit_exact`
//! keeps a sweep of them). f64 numbers do: one in five reads back one ulp off (see `f64_text`).

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

/// An optional list of f64 written as decimal strings (`"-0.0012345"`), which read back bit for bit: serde_json
/// reads about one f64 number in five one ulp away from the value it wrote (its default parser scales by a
/// power of ten in floating point), while Rust's `str::parse` rounds correctly and `{:?}` prints the shortest
/// text that parses back to the same f64.
pub mod f64_text {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<f64>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.collect_seq(v.iter().map(|x| format!("{x:?}"))),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<f64>>, D::Error> {
        let Some(texts) = Option::<Vec<String>>::deserialize(d)? else {
            return Ok(None);
        };
        texts
            .iter()
            .map(|t| {
                t.trim()
                    .parse::<f64>()
                    .map_err(|_| D::Error::custom(format!("'{t}' is not a number")))
            })
            .collect::<Result<Vec<f64>, _>>()
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// serde_json writes an f32 as its shortest text and reads it back to the same bits: a sweep of scales a
    /// quantizer produces (1e-12 .. 1e4, every 997th bit pattern) and the neighbours of powers of ten.
    #[test]
    fn f32_round_trips_bit_exact() {
        let mut n = 0;
        let mut check = |x: f32| {
            let text = serde_json::to_string(&x).unwrap();
            let back: f32 = serde_json::from_str(&text).unwrap();
            assert_eq!(back.to_bits(), x.to_bits(), "{x:e} written as {text}");
            n += 1;
        };
        for bits in (1e-12f32.to_bits()..1e4f32.to_bits()).step_by(997) {
            check(f32::from_bits(bits));
        }
        for e in -12..5 {
            let p = 10f32.powi(e);
            for x in [p.next_down(), p, p.next_up()] {
                check(x);
            }
        }
        assert!(n > 400_000, "{n}");
    }

    #[test]
    fn f64_text_round_trips_bit_exact() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct S {
            #[serde(with = "f64_text")]
            v: Option<Vec<f64>>,
        }
        // serde_json reads 122.65352088450729 one ulp off as a number
        let plain: f64 = serde_json::from_str("122.65352088450729").unwrap();
        assert_ne!(plain, "122.65352088450729".parse::<f64>().unwrap());
        let v = vec![
            122.65352088450729,
            6.494333896425709e-10,
            0.1 + 0.2,
            -1.0 / 3.0,
            1e-300,
            0.0,
            -2.5e17,
        ];
        let s = S { v: Some(v.clone()) };
        let text = serde_json::to_string(&s).unwrap();
        let back: S = serde_json::from_str(&text).unwrap();
        let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(back.v.as_ref().unwrap()), bits(&v), "{text}");
        let bad = serde_json::from_str::<S>(r#"{"v": ["1.5", "x"]}"#).unwrap_err();
        assert!(bad.to_string().contains("'x' is not a number"), "{bad}");
    }
}
