//! Dedup of identical initializers: initializers with the same dtype, shape and bytes are merged into the first
//! one (file order); readers of the others are rewired and the copies removed, readers inside subgraph bodies
//! included. Initializers that are graph inputs or outputs are left alone (they are part of the interface).

use std::collections::HashMap;

use crate::error::Result;
use crate::ir::{Graph, Model, Patch, SiteMut, ValueId};
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
        model.visit_graphs_mut(&mut |g, site| dedup_graph(g, site, &mut report))?;
        Ok(report)
    }
}

fn dedup_graph(g: &mut Graph, site: &SiteMut, report: &mut PassReport) -> Result<()> {
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
                // readers inside If/Loop/Scan bodies are rewired too, unless a body defines its own value with
                // the kept name (it would shadow the outer one)
                if let Some(why) = g.rewire_blocker(v, *keep) {
                    report.remark(site.at(g.value_name(v)), Outcome::Skipped, why);
                    continue;
                }
                report.remark(
                    site.at(g.value_name(v)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::builder::{model, GraphBuilder};
    use crate::ir::{Attribute, DataType, OpKey, Tensor};

    /// main: a = x * w1; y = If(c) { then: x * w2 (w2 read from the main graph) } else { x }.
    /// `w2` is the later copy of `w1`, read only inside the then-branch (the case that made dedup exit 1).
    fn if_model(then_defines_w1: bool) -> Model {
        let mut t = GraphBuilder::new("then_branch");
        let (x, w2) = (t.outer("x"), t.outer("w2"));
        if then_defines_w1 {
            // a local value named like the kept initializer: it would shadow it
            t.named_node(
                "shadow",
                OpKey::onnx("Identity"),
                &[Some(x)],
                &["w1"],
                vec![],
            );
        }
        let ty = t.node("Mul", &[x, w2], vec![], 1)[0];
        t.output(ty, DataType::FLOAT, &["2"]);
        let mut e = GraphBuilder::new("else_branch");
        let ex = e.outer("x");
        let ey = e.node("Identity", &[ex], vec![], 1)[0];
        e.output(ey, DataType::FLOAT, &["2"]);

        let mut b = GraphBuilder::new("main");
        let x = b.input("x", DataType::FLOAT, &["2"]);
        let c = b.input("c", DataType::BOOL, &[]);
        let w1 = b.initializer(Tensor::from_f32("w1", vec![2], &[1.5, -2.0]));
        b.initializer(Tensor::from_f32("w2", vec![2], &[1.5, -2.0]));
        let a = b.node("Mul", &[x, w1], vec![], 1)[0];
        let y = b.named_node(
            "if_0",
            OpKey::onnx("If"),
            &[Some(c)],
            &["y"],
            vec![
                Attribute::graph("then_branch", t.build()),
                Attribute::graph("else_branch", e.build()),
            ],
        )[0];
        b.output(a, DataType::FLOAT, &["2"]);
        b.output(y, DataType::FLOAT, &["2"]);
        model(b.build(), 13)
    }

    #[test]
    fn copy_read_inside_a_branch_is_merged_and_the_branch_rewired() {
        let mut m = if_model(false);
        m.graph.verify().unwrap();
        let r = DedupInitializers
            .run(&mut m, &mut PassContext::default())
            .unwrap();
        m.graph.verify().unwrap();
        assert!(r.changed);
        assert_eq!(r.stats["initializers_merged"], 1);
        let names: Vec<&str> = m
            .graph
            .initializers()
            .map(|(v, _)| m.graph.value_name(v))
            .collect();
        assert_eq!(names, ["w1"]);
        let (if_id, then) = m
            .graph
            .subgraphs()
            .find(|(_, g)| g.name() == "then_branch")
            .unwrap();
        assert_eq!(then.free_variables(), ["w1", "x"]);
        let (_, mul) = then.nodes().next().unwrap();
        assert_eq!(then.value_name(mul.input(1).unwrap()), "w1");
        // the If node now captures w1 in the main graph
        let w1 = m.graph.value_by_name("w1").unwrap();
        assert!(m
            .graph
            .uses(w1)
            .iter()
            .any(|u| u.node == if_id && u.slot == crate::ir::UseSlot::Capture));
        assert!(m.graph.value_by_name("w2").is_none());
    }

    #[test]
    fn shadowed_kept_name_is_skipped_with_a_reason() {
        let mut m = if_model(true);
        m.graph.verify().unwrap();
        let r = DedupInitializers
            .run(&mut m, &mut PassContext::default())
            .unwrap();
        m.graph.verify().unwrap();
        assert!(!r.changed);
        let rem = &r.remarks[0];
        assert_eq!(rem.outcome, Outcome::Skipped);
        assert!(
            rem.reason.contains("defined in subgraph 'then_branch'"),
            "{}",
            rem.reason
        );
        assert_eq!(m.graph.initializer_count(), 2);
    }
}
