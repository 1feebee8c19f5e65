//! The pass table: name -> summary, options, constructor. The CLI, recipes and docs all read it. A pass spec on
//! the command line is `name` or `name{key=value,...}`; the options parse into the pass's serde options struct.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::passes::cleanup::{
    Dce, DceOptions, DedupInitializers, DedupOptions, TopoSort, TopoSortOptions,
};
use crate::passes::Pass;

pub struct PassInfo {
    pub name: &'static str,
    pub summary: &'static str,
    /// Option names with their meaning and default, for `passes` and the README.
    pub options: &'static [(&'static str, &'static str)],
    pub make: fn(serde_json::Value) -> Result<Box<dyn Pass>>,
}

fn options<T: DeserializeOwned>(pass: &str, v: serde_json::Value) -> Result<T> {
    serde_json::from_value(v).map_err(|e| Error::Usage(format!("pass '{pass}': {e}")))
}

pub static PASSES: &[PassInfo] = &[
    PassInfo {
        name: "dce",
        summary:
            "remove nodes whose outputs reach no graph output, then initializers nothing reads",
        options: &[],
        make: |v| {
            let _: DceOptions = options("dce", v)?;
            Ok(Box::new(Dce))
        },
    },
    PassInfo {
        name: "dedup-initializers",
        summary: "merge initializers with identical dtype, shape and content",
        options: &[],
        make: |v| {
            let _: DedupOptions = options("dedup-initializers", v)?;
            Ok(Box::new(DedupInitializers))
        },
    },
    PassInfo {
        name: "topo-sort",
        summary: "order nodes topologically, keeping the original order where it is already valid",
        options: &[],
        make: |v| {
            let _: TopoSortOptions = options("topo-sort", v)?;
            Ok(Box::new(TopoSort))
        },
    },
    PassInfo {
        name: "upgrade-opset",
        summary: "raise the ai.onnx opset (and the IR version) to `to`, converting every operator whose signature changed",
        options: &[("to", "target ai.onnx opset, at least the model's and at most 21 (default 21)")],
        make: |v| {
            let o: crate::passes::convert::UpgradeOpsetOptions = options("upgrade-opset", v)?;
            Ok(Box::new(crate::passes::convert::UpgradeOpset::new(o)?))
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

/// Parse `name` or `name{k=v,k2=v2}` and build the pass.
pub fn build(spec: &str) -> Result<Box<dyn Pass>> {
    let spec = spec.trim();
    let (name, opts) = match spec.find('{') {
        Some(i) => {
            let body = spec[i + 1..]
                .strip_suffix('}')
                .ok_or_else(|| Error::Usage(format!("pass spec '{spec}': missing closing '}}'")))?;
            (&spec[..i], body)
        }
        None => (spec, ""),
    };
    let info = lookup(name)?;
    let mut map = serde_json::Map::new();
    for kv in opts.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, v) = kv.split_once('=').ok_or_else(|| {
            Error::Usage(format!("pass '{name}': option '{kv}' is not key=value"))
        })?;
        let v = v.trim();
        let value =
            serde_json::from_str(v).unwrap_or_else(|_| serde_json::Value::String(v.to_string()));
        map.insert(k.trim().to_string(), value);
    }
    (info.make)(serde_json::Value::Object(map))
}
