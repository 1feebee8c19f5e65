//! Reading a recipe (TOML) into checked steps: every pass built through the registry, every budget parsed, and
//! every mistake a usage error naming the recipe's line.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::passes::registry;
use crate::recipe::{Budget, Cmp, Metric, Recipe, Step};

/// The keys of a node filter; a pass supports a filter key when its options struct has a field of that name.
pub const FILTER_KEYS: &[&str] = &["include", "exclude", "ops"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecipe {
    #[serde(default)]
    filter: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default, rename = "pass")]
    passes: Vec<Spanned<RawPass>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPass {
    name: Spanned<String>,
    #[serde(default)]
    options: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    filter: Option<Spanned<BTreeMap<String, Spanned<toml::Value>>>>,
    #[serde(default)]
    budget: Option<Spanned<OneOrMany>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

struct Ctx<'a> {
    text: &'a str,
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, span: Range<usize>, msg: impl std::fmt::Display) -> Error {
        Error::Usage(format!(
            "recipe {} line {}: {msg}",
            self.file,
            line_of(self.text, span.start)
        ))
    }
}

fn to_json(v: &toml::Value) -> serde_json::Value {
    match v {
        toml::Value::String(s) => serde_json::Value::String(s.clone()),
        toml::Value::Integer(i) => serde_json::Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        toml::Value::Boolean(b) => serde_json::Value::Bool(*b),
        toml::Value::Datetime(d) => serde_json::Value::String(d.to_string()),
        toml::Value::Array(a) => serde_json::Value::Array(a.iter().map(to_json).collect()),
        toml::Value::Table(t) => {
            serde_json::Value::Object(t.iter().map(|(k, v)| (k.clone(), to_json(v))).collect())
        }
    }
}

/// Parse a recipe's text. `file` names it in messages.
pub fn parse(text: &str, file: &str) -> Result<Recipe> {
    let cx = Ctx { text, file };
    let raw: RawRecipe = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().replace('\n', "; ");
        match e.span() {
            Some(s) => cx.err(s, msg),
            None => Error::Usage(format!("recipe {file}: {msg}")),
        }
    })?;
    if raw.passes.is_empty() {
        return Err(Error::Usage(format!(
            "recipe {file}: no [[pass]] entries (a recipe is an ordered list of [[pass]] tables)"
        )));
    }
    let global_filter = match &raw.filter {
        Some(f) => {
            for (k, v) in f.get_ref() {
                if !FILTER_KEYS.contains(&k.as_str()) {
                    return Err(cx.err(
                        v.span(),
                        format!(
                            "unknown filter key '{k}'; valid keys: {}",
                            FILTER_KEYS.join(", ")
                        ),
                    ));
                }
            }
            Some(f.get_ref())
        }
        None => None,
    };
    let mut steps = Vec::new();
    for p in &raw.passes {
        let p_span = p.span();
        let p = p.get_ref();
        let name = p.name.get_ref().clone();
        let info = registry::lookup(&name).map_err(|e| cx.err(p.name.span(), e))?;
        let known: Vec<String> = (info.options)()
            .map_err(|e| cx.err(p.name.span(), e))?
            .iter()
            .map(|o| o.name.to_string())
            .collect();
        let mut options = serde_json::Map::new();
        let mut where_key: BTreeMap<String, Range<usize>> = BTreeMap::new();
        if let Some(o) = &p.options {
            for (k, v) in o.get_ref() {
                let key = k.replace('-', "_");
                where_key.insert(key.clone(), v.span());
                options.insert(key, to_json(v.get_ref()));
            }
        }
        let mut remarks = Vec::new();
        if let Some(f) = &p.filter {
            for (k, v) in f.get_ref() {
                if !FILTER_KEYS.contains(&k.as_str()) {
                    return Err(cx.err(
                        v.span(),
                        format!(
                            "unknown filter key '{k}'; valid keys: {}",
                            FILTER_KEYS.join(", ")
                        ),
                    ));
                }
                if !known.iter().any(|o| o == k) {
                    return Err(cx.err(
                        v.span(),
                        format!("pass '{name}' takes no node filter '{k}'"),
                    ));
                }
                if options.contains_key(k) {
                    return Err(cx.err(
                        v.span(),
                        format!("'{k}' given both as an option and as a filter"),
                    ));
                }
                where_key.insert(k.clone(), v.span());
                options.insert(k.clone(), to_json(v.get_ref()));
            }
        }
        if let Some(g) = global_filter {
            for (k, v) in g {
                if options.contains_key(k) {
                    continue; // the pass's own setting wins
                }
                if known.iter().any(|o| o == k) {
                    where_key.insert(k.clone(), v.span());
                    options.insert(k.clone(), to_json(v.get_ref()));
                    remarks.push(format!("recipe filter {k} applied"));
                }
            }
        }
        let opts = serde_json::Value::Object(options);
        registry::make(&name, opts.clone()).map_err(|e| {
            // name the line of the option the message is about, else the pass's name
            let msg = e.to_string();
            let span = where_key
                .iter()
                .find(|(k, _)| msg.contains(&format!("`{k}`")) || msg.contains(&format!("'{k}")))
                .map(|(_, s)| s.clone())
                .unwrap_or_else(|| p.name.span());
            cx.err(span, msg)
        })?;
        let mut budget = Vec::new();
        if let Some(b) = &p.budget {
            let list = match b.get_ref() {
                OneOrMany::One(s) => vec![s.clone()],
                OneOrMany::Many(v) => v.clone(),
            };
            let line = line_of(text, b.span().start);
            for s in list {
                budget.push(
                    parse_budget(&s, line)
                        .map_err(|m| cx.err(b.span(), format!("budget '{s}': {m}")))?,
                );
            }
        }
        steps.push(Step {
            name,
            options: opts,
            budget,
            line: line_of(text, p_span.start),
            remarks,
        });
    }
    Ok(Recipe {
        source: file.to_string(),
        sha256: crate::recipe::sha256_hex(text.as_bytes()),
        steps,
    })
}

/// `METRIC OP NUMBER`, e.g. `cosine >= 0.999`, `accuracy_drop <= 0.5`.
pub fn parse_budget(s: &str, line: usize) -> std::result::Result<Budget, String> {
    let ops = [(">=", Cmp::Ge), ("<=", Cmp::Le)];
    let (metric_s, cmp, rest) = ops
        .iter()
        .find_map(|(tok, c)| s.split_once(tok).map(|(a, b)| (a.trim(), *c, b.trim())))
        .ok_or_else(|| "expected 'METRIC >= NUMBER' or 'METRIC <= NUMBER'".to_string())?;
    let metric = Metric::from_name(metric_s).ok_or_else(|| {
        format!(
            "unknown metric '{metric_s}'; valid metrics: {}",
            Metric::ALL
                .iter()
                .map(|m| m.name())
                .collect::<Vec<_>>()
                .join(", ")
        )
    })?;
    let limit: f64 = rest
        .trim_end_matches("dB")
        .trim_end_matches("db")
        .trim()
        .parse()
        .map_err(|_| format!("'{rest}' is not a number"))?;
    if !limit.is_finite() {
        return Err(format!("'{rest}' is not a finite number"));
    }
    if cmp != metric.direction() {
        return Err(format!(
            "'{}' is bounded with '{}' (a {} is better)",
            metric.name(),
            if metric.direction() == Cmp::Ge {
                ">="
            } else {
                "<="
            },
            if metric.direction() == Cmp::Ge {
                "higher value"
            } else {
                "lower value"
            }
        ));
    }
    Ok(Budget {
        text: s.trim().to_string(),
        metric,
        cmp,
        limit,
        line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The built-in general recipe parses and needs no labels (it is what `run IN OUT` uses).
    #[test]
    fn the_general_recipe_needs_no_labels() {
        let r = crate::recipe::general();
        let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["fold-batchnorm", "eliminate-identity", "quantize", "dce"]
        );
        assert!(r
            .steps
            .iter()
            .flat_map(|s| &s.budget)
            .all(|b| !b.metric.needs_labels()));
    }

    #[test]
    fn budgets() {
        let b = parse_budget("sqnr >= 25 dB", 4).unwrap();
        assert_eq!(
            (b.metric, b.cmp, b.limit, b.line),
            (Metric::SqnrDb, Cmp::Ge, 25.0, 4)
        );
        let b = parse_budget(" accuracy_drop<=0.5 ", 1).unwrap();
        assert_eq!(
            (b.metric, b.cmp, b.limit),
            (Metric::AccuracyDrop, Cmp::Le, 0.5)
        );
        assert_eq!(b.text, "accuracy_drop<=0.5");
        for bad in [
            "cosine > 0.9",
            "cosine >= nan",
            "max_abs >= 1",
            "top1 <= 1",
            "x >= 1",
            ">= 1",
            "cosine >=",
        ] {
            assert!(parse_budget(bad, 1).is_err(), "{bad}");
        }
    }

    #[test]
    fn recipe_as_data() {
        let text = "[[pass]]\nname = \"upgrade-opset\"\noptions = { to = 13 }\nbudget = [\"cosine >= 0.99\"]\n";
        let from_text = parse(text, "r.toml").unwrap();
        let v = serde_json::json!({"pass": [{"name": "upgrade-opset", "options": {"to": 13}, "budget": ["cosine >= 0.99"]}]});
        let from_data = crate::recipe::from_value(&v, "<dict>").unwrap();
        assert_eq!(from_data.source, "<dict>");
        // the same steps; only the lines differ (those of the generated TOML text)
        let key = |r: &Recipe| -> Vec<(String, serde_json::Value, Vec<String>)> {
            r.steps
                .iter()
                .map(|s| {
                    let b = s.budget.iter().map(|b| b.text.clone()).collect();
                    (s.name.clone(), s.options.clone(), b)
                })
                .collect()
        };
        assert_eq!(key(&from_data), key(&from_text));
        // the same checks as a file: unknown pass, null values, not a table
        let e =
            crate::recipe::from_value(&serde_json::json!({"pass": [{"name": "nope"}]}), "<dict>");
        assert!(
            matches!(e, Err(Error::Usage(m)) if m.starts_with("recipe <dict> line ") && m.contains("nope"))
        );
        let e = crate::recipe::from_value(&serde_json::json!({"pass": [{"name": null}]}), "<dict>");
        assert!(matches!(e, Err(Error::Usage(m)) if m.starts_with("recipe <dict>")));
        let e = crate::recipe::from_value(&serde_json::json!([1]), "<dict>");
        assert!(matches!(e, Err(Error::Usage(m)) if m.contains("got a list")));
    }

    #[test]
    fn lines_and_global_filters() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 99), 3);
        // a global filter key no pass takes is fine; a per-pass one is not
        let r = parse(
            "[filter]\nops = [\"Conv\"]\n[[pass]]\nname = \"dce\"\n",
            "r",
        )
        .unwrap();
        assert_eq!(r.steps[0].options, serde_json::json!({}));
        let e = parse(
            "[[pass]]\nname = \"dce\"\nfilter = { ops = [\"Conv\"] }\n",
            "r",
        )
        .unwrap_err();
        assert!(e.to_string().contains("line 3"), "{e}");
    }
}
