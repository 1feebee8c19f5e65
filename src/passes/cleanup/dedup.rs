//! Dedup of identical initializers: initializers with the same dtype, shape and bytes are merged into the first
//! one (file order); readers of the others are rewired and the copies removed. Initializers that are graph
//! inputs or outputs are left alone (they are part of the interface).

use std::collections::HashMap;

use crate::error::Result;
use crate::ir::{Graph, Model, Patch, ValueId};
use crate::passes::{Outcome, Pass, PassContext, PassReport};

crate::pass_options! {
    /// The pass takes no options.
    pub struct DedupOptions {}
}

pub struct DedupInitializers;

impl Pass for DedupInitializers {
    fn name(&self) -> &'static str {
        "dedup-initializers"
    }

    fn run(&self, model: &mut Model, _cx: &mut PassContext) -> Result<PassReport> {
        let mut report = PassReport::new(self.name());
        model.graph.walk_mut(&mut |g| dedup_graph(g, &mut report))?;
        Ok(report)
    }
}

fn dedup_graph(g: &mut Graph, report: &mut PassReport) -> Result<()> {
    let mut first: HashMap<String, Vec<ValueId>> = HashMap::new();
    let mut p = Patch::new("dedup-initializers");
    let mut merged = 0;
    let mut saved = 0;
    for (v, t) in g.initializers() {
        if g.inputs().iter().any(|io| io.value == v) || g.is_output(v) {
            continue;
        }
        let key = t.content_hash();
        let bucket = first.entry(key).or_default();
        match bucket.iter().find(|k| {
            g.value(**k)
                .init
                .as_ref()
                .is_some_and(|kt| kt.same_content(t))
        }) {
            Some(keep) => {
                report.remark(
                    g.value_name(v),
                    Outcome::Applied,
                    format!(
                        "same {} {:?} content as '{}'",
                        t.dtype().name(),
                        t.dims,
                        g.value_name(*keep)
                    ),
                );
                p.replace_all_uses(v, (*keep).into());
                p.remove_initializer(v);
                merged += 1;
                saved += t.byte_size();
            }
            None => bucket.push(v),
        }
    }
    report.stat("initializers_merged", merged);
    report.stat("bytes_saved", saved);
    if !p.is_empty() {
        report.record(g.apply(p)?);
    }
    Ok(())
}
