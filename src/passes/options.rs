//! Pass options: one serde struct per pass, declared with [`pass_options!`](crate::pass_options) so that the
//! field docs written next to the fields are also the text of `onnx-rewrite passes` and the pass table of docs/commands.md.
//!
//! ```
//! onnx_rewrite::pass_options! {
//!     /// Options of an example pass.
//!     pub struct ExampleOptions {
//!         /// Op types to rewrite.
//!         ops: Vec<String> = vec!["Conv".into(), "MatMul".into()],
//!         /// Bits per weight.
//!         bits: u32 = 8,
//!     }
//! }
//! use onnx_rewrite::passes::options::describe;
//! let doc = describe::<ExampleOptions>().unwrap();
//! assert_eq!(doc[0].name, "ops");
//! assert_eq!(doc[0].default, "[Conv,MatMul]");
//! assert_eq!(doc[1].ty, "integer");
//! ```
//!
//! The macro derives `Serialize`/`Deserialize` with `#[serde(deny_unknown_fields, default)]`, writes `Default`
//! from the `= value` of each field and lists the fields in [`PassOptions::FIELDS`]. No proc macro is involved:
//! [`describe`] checks the list against what serde itself reads and writes (by round-tripping the default
//! value through JSON), and a test runs it on every registered pass, so the documentation cannot drift from
//! the struct. A field type shows in the docs through [`OptionType`]; implement it for an option enum.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::passes::spec;

/// One field of an options struct, as declared.
#[derive(Clone, Copy, Debug)]
pub struct OptionDoc {
    pub name: &'static str,
    /// The type as users read it ("list of string").
    pub ty: fn() -> String,
    /// The field's doc comment.
    pub doc: &'static str,
}

/// An options struct declared with [`pass_options!`](crate::pass_options).
pub trait PassOptions: Serialize + DeserializeOwned + Default + 'static {
    /// The fields in declaration order.
    const FIELDS: &'static [OptionDoc];
}

/// How a field type reads in the docs.
pub trait OptionType {
    fn describe() -> String;
}

macro_rules! option_type {
    ($text:literal: $($t:ty),*) => {
        $(impl OptionType for $t {
            fn describe() -> String {
                $text.to_string()
            }
        })*
    };
}
option_type!("bool": bool);
option_type!("integer": u8, u16, u32, u64, usize, i8, i16, i32, i64);
option_type!("number": f32, f64);
option_type!("string": String);
option_type!("path": PathBuf);

impl<T: OptionType> OptionType for Vec<T> {
    fn describe() -> String {
        format!("list of {}", T::describe())
    }
}

impl<T: OptionType> OptionType for Option<T> {
    fn describe() -> String {
        format!("{} (optional)", T::describe())
    }
}

impl<T: OptionType> OptionType for BTreeMap<String, T> {
    fn describe() -> String {
        format!("table of {}", T::describe())
    }
}

/// One option with its default, ready to print.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OptionInfo {
    pub name: &'static str,
    pub ty: String,
    /// The default in pass-spec syntax (`[Conv,MatMul]`), or `unset`.
    pub default: String,
    /// The doc comment on one line.
    pub doc: String,
}

/// The documented options of `O`, after checking that they are exactly the fields serde reads and writes.
pub fn describe<O: PassOptions>() -> std::result::Result<Vec<OptionInfo>, String> {
    let name = std::any::type_name::<O>();
    let value = serde_json::to_value(O::default())
        .map_err(|e| format!("{name}: default does not serialise: {e}"))?;
    let serde_json::Value::Object(map) = &value else {
        return Err(format!(
            "{name}: options must serialise to a table, not {value}"
        ));
    };
    let serde_names: BTreeSet<&str> = map.keys().map(String::as_str).collect();
    let doc_names: BTreeSet<&str> = O::FIELDS.iter().map(|f| f.name).collect();
    if serde_names != doc_names || doc_names.len() != O::FIELDS.len() {
        return Err(format!(
            "{name}: documented options {doc_names:?} differ from the fields serde writes {serde_names:?}"
        ));
    }
    // what serde writes it must read back unchanged (no field skipped one way only)
    let back: O = serde_json::from_value(value.clone())
        .map_err(|e| format!("{name}: default does not read back: {e}"))?;
    let again = serde_json::to_value(back).map_err(|e| format!("{name}: {e}"))?;
    if again != value {
        return Err(format!(
            "{name}: default changes through serde: {value} -> {again}"
        ));
    }
    // and it must be a table with no field: every field has a default
    serde_json::from_value::<O>(serde_json::Value::Object(Default::default()))
        .map_err(|e| format!("{name}: an empty option table is refused: {e}"))?;
    Ok(O::FIELDS
        .iter()
        .map(|f| OptionInfo {
            name: f.name,
            ty: (f.ty)(),
            default: match &map[f.name] {
                serde_json::Value::Null => "unset".to_string(),
                v => spec::render(v),
            },
            doc: f
                .doc
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect())
}

/// Read options from a table of values (a parsed pass spec or a recipe). A key that is not an option or a
/// value of the wrong type is a usage error naming the option and listing the valid ones.
pub fn parse<O: PassOptions>(value: serde_json::Value) -> Result<O> {
    serde_path_to_error::deserialize::<_, O>(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        let valid = if O::FIELDS.is_empty() {
            "this pass takes no options".to_string()
        } else {
            let list: Vec<String> = O::FIELDS
                .iter()
                .map(|f| format!("{} ({})", f.name, (f.ty)()))
                .collect();
            format!("valid options: {}", list.join(", "))
        };
        if inner.starts_with("unknown field") || path == "." || path.is_empty() {
            Error::Usage(format!("{inner}; {valid}"))
        } else {
            Error::Usage(format!("option '{path}': {inner}; {valid}"))
        }
    })
}

/// Declare a pass's options struct: fields with doc comments and defaults. See the [module docs](crate::passes::options).
#[macro_export]
macro_rules! pass_options {
    (
        $(#[doc = $sdoc:literal])*
        $vis:vis struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $(#[serde($($sattr:tt)*)])*
                $field:ident : $ty:ty = $default:expr
            ),* $(,)?
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(deny_unknown_fields, default)]
        $vis struct $name {
            $(
                $(#[doc = $doc])+
                $(#[serde($($sattr)*)])*
                pub $field: $ty,
            )*
        }

        impl ::core::default::Default for $name {
            fn default() -> Self {
                $name { $($field: $default,)* }
            }
        }

        impl $crate::passes::options::PassOptions for $name {
            const FIELDS: &'static [$crate::passes::options::OptionDoc] = &[
                $($crate::passes::options::OptionDoc {
                    name: stringify!($field),
                    ty: <$ty as $crate::passes::options::OptionType>::describe,
                    doc: concat!($($doc, "\n"),+),
                },)*
            ];
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::pass_options! {
        /// A test struct with every kind of field.
        pub struct Sample {
            /// Op types.
            /// Second line.
            ops: Vec<String> = vec!["Conv".into(), "MatMul".into()],
            /// Bits.
            bits: u32 = 8,
            /// A ratio.
            ratio: f64 = 0.5,
            /// Optional limit.
            limit: Option<u64> = None,
            /// A table.
            per_op: BTreeMap<String, u32> = BTreeMap::new(),
        }
    }

    crate::pass_options! {
        pub struct Empty {}
    }

    #[test]
    fn describe_lists_fields_with_defaults() {
        let d = describe::<Sample>().unwrap();
        let names: Vec<&str> = d.iter().map(|o| o.name).collect();
        assert_eq!(names, ["ops", "bits", "ratio", "limit", "per_op"]);
        assert_eq!(d[0].ty, "list of string");
        assert_eq!(d[0].default, "[Conv,MatMul]");
        assert_eq!(d[0].doc, "Op types. Second line.");
        assert_eq!(d[2].default, "0.5");
        assert_eq!(d[3].ty, "integer (optional)");
        assert_eq!(d[3].default, "unset");
        assert_eq!(d[4].default, "{}");
        assert!(describe::<Empty>().unwrap().is_empty());
    }

    /// A struct whose serde names differ from the documented ones is caught.
    #[derive(Default, Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Drifted {
        #[serde(rename = "other")]
        bits: u32,
    }
    impl PassOptions for Drifted {
        const FIELDS: &'static [OptionDoc] = &[OptionDoc {
            name: "bits",
            ty: <u32 as OptionType>::describe,
            doc: "Bits.",
        }];
    }

    #[test]
    fn drift_between_docs_and_serde_is_an_error() {
        let e = describe::<Drifted>().unwrap_err();
        assert!(e.contains("\"bits\"") && e.contains("\"other\""), "{e}");
    }

    #[test]
    fn parse_errors_name_the_option() {
        let v = serde_json::json!({"bits": "eight"});
        let e = parse::<Sample>(v).unwrap_err().to_string();
        assert!(e.contains("option 'bits'"), "{e}");
        assert!(
            e.contains("valid options: ops (list of string), bits"),
            "{e}"
        );
        let v = serde_json::json!({"ops": ["Conv", 3]});
        let e = parse::<Sample>(v).unwrap_err().to_string();
        assert!(e.contains("option 'ops[1]'"), "{e}");
        let v = serde_json::json!({"nope": 1});
        let e = parse::<Sample>(v).unwrap_err().to_string();
        assert!(e.contains("unknown field `nope`"), "{e}");
        assert!(e.contains("valid options: ops"), "{e}");
        let e = parse::<Empty>(serde_json::json!({"x": 1}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes no options"), "{e}");
        let ok = parse::<Sample>(serde_json::json!({"bits": 4, "per_op": {"Conv": 2}})).unwrap();
        assert_eq!(ok.bits, 4);
        assert_eq!(ok.ops, ["Conv", "MatMul"]);
        assert_eq!(ok.per_op["Conv"], 2);
    }
}
