//! The pass table: name -> summary, options, constructor. The CLI, recipes and docs all read it. A pass spec on
//! the command line is `name` or `name{key=value,...}` (see `spec`); the options parse into the pass's options
//! struct (see `options`), whose field docs are what `passes` prints.
//!
//! Adding a pass is one entry in `PASSES`:
//!
//! ```text
//! PassInfo {
//!     name: "my-pass",
//!     summary: "one line saying what it does",
//!     options: describe::<MyPassOptions>,
//!     make: |v| Ok(Box::new(MyPass::new(parse::<MyPassOptions>(v)?))),
//! },
//! ```

use crate::error::{Error, Result};
use crate::passes::cleanup::{
    Dce, DceOptions, DedupInitializers, DedupOptions, TopoSort, TopoSortOptions,
};
use crate::passes::fold::{
    EliminateIdentity, EliminateIdentityOptions, FoldBatchNorm, FoldBatchNormOptions,
};
use crate::passes::lowrank::{LowRank, LowRankOptions};
use crate::passes::options::{describe, parse, OptionInfo};
use crate::passes::{spec, Pass};

pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// The options with their types, defaults and docs, read from the options struct (an error when the
    /// struct's docs and its serde fields disagree; a test checks every entry).
    pub options: fn() -> std::result::Result<Vec<OptionInfo>, String>,
    /// Build the pass from a table of option values (an error names a bad option and lists the valid ones).
    pub make: fn(serde_json::Value) -> Result<Box<dyn Pass>>,
}

pub static PASSES: &[PassInfo] = &[
    PassInfo {
        name: "dce",
        summary:
            "remove nodes whose outputs reach no graph output, then initializers nothing reads",
        options: describe::<DceOptions>,
        make: |v| {
            let _: DceOptions = parse(v)?;
            Ok(Box::new(Dce))
        },
    },
    PassInfo {
        name: "dedup-initializers",
        summary: "merge initializers with identical dtype, shape and content",
        options: describe::<DedupOptions>,
        make: |v| {
            let _: DedupOptions = parse(v)?;
            Ok(Box::new(DedupInitializers))
        },
    },
    PassInfo {
        name: "topo-sort",
        summary: "order nodes topologically, keeping the original order where it is already valid",
        options: describe::<TopoSortOptions>,
        make: |v| {
            let _: TopoSortOptions = parse(v)?;
            Ok(Box::new(TopoSort))
        },
    },
    PassInfo {
        name: "fold-batchnorm",
        summary: "fold inference BatchNormalization into the Conv / ConvTranspose / Gemm / MatMul before it",
        options: describe::<FoldBatchNormOptions>,
        make: |v| {
            let _: FoldBatchNormOptions = parse(v)?;
            Ok(Box::new(FoldBatchNorm))
        },
    },
    PassInfo {
        name: "lowrank",
        summary: "split MatMul / Gemm / 1x1 Conv with a constant weight into two by truncated SVD",
        options: describe::<LowRankOptions>,
        make: |v| Ok(Box::new(LowRank::new(parse(v)?)?)),
    },
    PassInfo {
        name: "eliminate-identity",
        summary: "remove Identity and inference-mode Dropout nodes (readers read the input directly)",
        options: describe::<EliminateIdentityOptions>,
        make: |v| {
            let _: EliminateIdentityOptions = parse(v)?;
            Ok(Box::new(EliminateIdentity))
        },
    },
    PassInfo {
        name: "upgrade-opset",
        summary: "raise the ai.onnx opset (and the IR version) to `to`, converting every operator whose signature changed",
        options: describe::<crate::passes::convert::UpgradeOpsetOptions>,
        make: |v| {
            let o: crate::passes::convert::UpgradeOpsetOptions = parse(v)?;
            Ok(Box::new(crate::passes::convert::UpgradeOpset::new(o)?))
        },
    },
    PassInfo {
        name: "prune",
        summary: "zero weights by magnitude or N:M, or prune whole channels through their dependency groups (zero or remove)",
        options: describe::<crate::passes::prune::PruneOptions>,
        make: |v| {
            let o: crate::passes::prune::PruneOptions = parse(v)?;
            Ok(Box::new(crate::passes::prune::Prune::new(o)?))
        },
    },
    PassInfo {
        name: "quantize",
        summary: "quantize constant weights of Conv / ConvTranspose / Gemm / MatMul / LSTM / GRU / RNN and Gather tables to int8 or uint8 read through DequantizeLinear (mode=weight), or calibrated QDQ on activations too (mode=static)",
        options: describe::<crate::passes::quantize::QuantizeOptions>,
        make: |v| {
            let o: crate::passes::quantize::QuantizeOptions = parse(v)?;
            Ok(Box::new(crate::passes::quantize::Quantize::new(o)?))
        },
    },
];

pub fn lookup(name: &str) -> Result<&'static PassInfo> {
    PASSES.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        Error::Usage(format!(
            "unknown pass '{name}'; valid passes: {}",
            names.join(", ")
        ))
    })
}

/// Build a pass from its name and a table of options (a parsed spec or a recipe entry).
pub fn make(name: &str, options: serde_json::Value) -> Result<Box<dyn Pass>> {
    let info = lookup(name)?;
    (info.make)(options).map_err(|e| match e {
        Error::Usage(m) => Error::Usage(format!("pass '{name}': {m}")),
        e => e,
    })
}

/// Parse `name` or `name{k=v,...}` and build the pass.
pub fn build(spec: &str) -> Result<Box<dyn Pass>> {
    let s = spec::parse(spec)?;
    make(&s.name, serde_json::Value::Object(s.options))
}

fn options_of(p: &PassInfo) -> Vec<OptionInfo> {
    // a disagreement between docs and struct is a bug caught by the registry test; show what we can
    (p.options)().unwrap_or_default()
}

/// The text `onnx-rewrite passes` prints: each pass with its summary, then its options.
pub fn listing() -> String {
    listing_of(PASSES)
}

fn listing_of(passes: &[PassInfo]) -> String {
    let mut out = String::new();
    for p in passes {
        out.push_str(&format!("{:<20} {}\n", p.name, p.summary));
        let opts = options_of(p);
        if opts.is_empty() {
            out.push_str(&format!("{:<20}   (no options)\n", ""));
        }
        for o in opts {
            out.push_str(&format!(
                "{:<20}   {}: {} = {}\n{:<20}       {}\n",
                "", o.name, o.ty, o.default, "", o.doc
            ));
        }
    }
    out
}

/// The pass table of docs/commands.md (Markdown), generated from the same data.
pub fn markdown() -> String {
    markdown_of(PASSES)
}

fn markdown_of(passes: &[PassInfo]) -> String {
    let cell = |s: &str| s.replace('|', "\\|");
    let mut out =
        String::from("| pass | what it does | options (type, default): meaning |\n|---|---|---|\n");
    for p in passes {
        let opts: Vec<String> = options_of(p)
            .iter()
            .map(|o| {
                format!(
                    "`{}` ({}, `{}`): {}",
                    o.name,
                    o.ty,
                    cell(&o.default),
                    cell(&o.doc)
                )
            })
            .collect();
        let opts = if opts.is_empty() {
            "none".to_string()
        } else {
            opts.join("<br>")
        };
        out.push_str(&format!(
            "| `{}` | {} | {opts} |\n",
            p.name,
            cell(p.summary)
        ));
    }
    out
}

/// Every pass with its options as JSON (`passes --json`).
pub fn to_json() -> serde_json::Value {
    serde_json::Value::Array(
        PASSES
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "summary": p.summary,
                    "options": options_of(p),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pass_documents_exactly_its_options() {
        for p in PASSES {
            (p.options)().unwrap_or_else(|e| panic!("pass '{}': {e}", p.name));
            // the defaults the docs show are accepted back as a spec
            let opts = (p.options)().unwrap();
            let body: Vec<String> = opts
                .iter()
                .filter(|o| o.default != "unset")
                .map(|o| format!("{}={}", o.name, o.default))
                .collect();
            build(&format!("{}{{{}}}", p.name, body.join(",")))
                .unwrap_or_else(|e| panic!("pass '{}': its documented defaults: {e}", p.name));
            assert!(
                p.name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                "{}",
                p.name
            );
        }
        let mut names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), PASSES.len(), "pass names are unique");
    }

    #[test]
    fn bad_specs_are_usage_errors_naming_the_pass_and_option() {
        let usage = |s: &str| match build(s) {
            Err(Error::Usage(m)) => m,
            Err(e) => panic!("{s}: not a usage error: {e}"),
            Ok(_) => panic!("{s}: accepted"),
        };
        let m = usage("dce{aggressive=true}");
        assert!(
            m.contains("pass 'dce'") && m.contains("unknown field `aggressive`"),
            "{m}"
        );
        assert!(m.contains("takes no options"), "{m}");
        let m = usage("nope");
        assert!(
            m.contains("unknown pass 'nope'") && m.contains("dce"),
            "{m}"
        );
        let m = usage("dce{a=[1}");
        assert!(m.contains("expected ',' or ']' at column 9"), "{m}");
        assert!(build("dce{}").is_ok() && build(" topo-sort ").is_ok());
    }

    crate::pass_options! {
        /// Options of the example pass.
        pub struct ExampleOptions {
            /// Op types to rewrite.
            ops: Vec<String> = vec!["Conv".into(), "MatMul".into()],
            /// Node name patterns | left alone.
            exclude: Vec<String> = vec![],
            /// Target opset.
            to: Option<u32> = None,
        }
    }

    static EXAMPLE: &[PassInfo] = &[PassInfo {
        name: "example",
        summary: "an example",
        options: describe::<ExampleOptions>,
        make: |v| {
            let _: ExampleOptions = parse(v)?;
            Ok(Box::new(crate::passes::cleanup::Dce))
        },
    }];

    #[test]
    fn listing_and_markdown_show_options_from_the_struct() {
        assert_eq!(
            listing_of(EXAMPLE),
            "example              an example\n\
             \x20                      ops: list of string = [Conv,MatMul]\n\
             \x20                          Op types to rewrite.\n\
             \x20                      exclude: list of string = []\n\
             \x20                          Node name patterns | left alone.\n\
             \x20                      to: integer (optional) = unset\n\
             \x20                          Target opset.\n"
        );
        let md = markdown_of(EXAMPLE);
        assert!(
            md.ends_with(
                "| `example` | an example | `ops` (list of string, `[Conv,MatMul]`): Op types to rewrite.<br>\
                 `exclude` (list of string, `[]`): Node name patterns \\| left alone.<br>\
                 `to` (integer (optional), `unset`): Target opset. |\n"
            ),
            "{md}"
        );
        let e = match (EXAMPLE[0].make)(serde_json::json!({"ops": "Conv"})) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("a string for a list is accepted"),
        };
        assert!(
            e.contains("option 'ops'") && e.contains("expected a sequence"),
            "{e}"
        );
    }

    #[test]
    fn listing_and_markdown_name_every_pass() {
        let (text, md) = (listing(), markdown());
        for p in PASSES {
            assert!(text.contains(p.name) && md.contains(&format!("`{}`", p.name)));
        }
        assert_eq!(md.lines().count(), PASSES.len() + 2);
    }
}
