//! Remarks grouped for a person: one line per kind of outcome instead of one per node.
//!
//! A pass records one remark per node it looked at (`PassReport::remarks`), which is what `--report` JSON and
//! `-v` print. On a real model that is dozens of lines saying the same thing with other names and numbers, so
//! the default output groups them: each reason is reduced to its shape (quoted names become `'…'`, numbers not
//! part of a word become `N`), and each shape is printed once with its count and one node it came from.

use std::collections::BTreeMap;
use std::fmt;

use super::{Outcome, PassReport, Remark};

/// Remarks of one outcome whose reasons share a shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemarkGroup {
    pub outcome: Outcome,
    pub count: usize,
    /// The reason with names and numbers blanked out.
    pub shape: String,
    /// The first node it was said of.
    pub example: String,
}

/// `reason` with each quoted name replaced by `'…'` and each number that is not part of a word (`int8`, `f32`
/// and `min_elements` stay) by `N`; a shape such as `16x3x3x3` or a decimal is one number.
pub fn shape_of(reason: &str) -> String {
    let chars: Vec<char> = reason.chars().collect();
    let mut out = String::with_capacity(reason.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let after_word = i > 0 && (chars[i - 1].is_alphanumeric() || chars[i - 1] == '_');
        if c == '\'' {
            match chars[i + 1..].iter().position(|&d| d == '\'') {
                Some(len) => {
                    out.push_str("'…'");
                    i += len + 2;
                    continue;
                }
                None => out.push(c),
            }
        } else if c.is_ascii_digit() && !after_word {
            let digit_at = |k: usize| chars.get(k).is_some_and(|d| d.is_ascii_digit());
            loop {
                if digit_at(i) {
                    i += 1;
                } else if matches!(chars.get(i), Some('.' | 'x' | 'e')) && digit_at(i + 1) {
                    i += 2;
                } else if chars.get(i) == Some(&'e')
                    && matches!(chars.get(i + 1), Some('+' | '-'))
                    && digit_at(i + 2)
                {
                    i += 3;
                } else {
                    break;
                }
            }
            out.push('N');
            continue;
        } else {
            out.push(c);
        }
        i += 1;
    }
    out
}

/// Group `remarks` by outcome and shape: applied first, then skipped; within each, the largest group first
/// (ties by shape), so the same remarks always print the same lines.
pub fn group(remarks: &[Remark]) -> Vec<RemarkGroup> {
    let mut by: BTreeMap<(u8, String), RemarkGroup> = BTreeMap::new();
    for r in remarks {
        let rank = match r.outcome {
            Outcome::Applied => 0,
            Outcome::Skipped => 1,
        };
        let shape = shape_of(&r.reason);
        by.entry((rank, shape.clone()))
            .or_insert_with(|| RemarkGroup {
                outcome: r.outcome.clone(),
                count: 0,
                shape,
                example: r.at.clone(),
            })
            .count += 1;
    }
    let mut groups: Vec<((u8, String), RemarkGroup)> = by.into_iter().collect();
    groups.sort_by(|(a, ga), (b, gb)| {
        a.0.cmp(&b.0)
            .then(gb.count.cmp(&ga.count))
            .then(a.1.cmp(&b.1))
    });
    groups.into_iter().map(|(_, g)| g).collect()
}

/// Write the groups of `remarks`, one line each, after `indent`.
pub fn write_groups(f: &mut fmt::Formatter<'_>, remarks: &[Remark], indent: &str) -> fmt::Result {
    for g in group(remarks) {
        let o = match g.outcome {
            Outcome::Applied => "applied",
            Outcome::Skipped => "skipped",
        };
        if g.count == 1 {
            writeln!(f, "{indent}{o} {:>4}: {} (at {})", 1, g.shape, g.example)?;
        } else {
            writeln!(
                f,
                "{indent}{o} {:>4}: {} (e.g. at {})",
                g.count, g.shape, g.example
            )?;
        }
    }
    Ok(())
}

/// A pass report as a summary: the header line (changed, stats) and the grouped remarks.
pub struct Summary<'a>(pub &'a PassReport);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        r.write_header(f)?;
        write_groups(f, &r.remarks, "  ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_blank_names_and_numbers_not_words() {
        assert_eq!(
            shape_of("weight 'conv2d_0.w_0' (Constant node, 16x3x3x3 f32) -> int8 per-channel axis 0 (1728 -> 512 bytes)"),
            "weight '…' (Constant node, N f32) -> int8 per-channel axis N (N -> N bytes)"
        );
        assert_eq!(
            shape_of("has 144 elements, fewer than min_elements=256; ratio 0.25, eps 1e-5"),
            "has N elements, fewer than min_elements=N; ratio N, eps N"
        );
        // an unclosed quote stays as it is
        assert_eq!(shape_of("it's 3"), "it's N");
    }

    #[test]
    fn groups_count_and_order() {
        let r = |at: &str, o: Outcome, reason: &str| Remark {
            at: at.into(),
            outcome: o,
            reason: reason.into(),
        };
        let remarks = [
            r("a", Outcome::Skipped, "weight 'w1' has 10 elements"),
            r("b", Outcome::Applied, "folded into 'c1'"),
            r("c", Outcome::Skipped, "weight 'w2' is not a constant"),
            r("d", Outcome::Skipped, "weight 'w3' has 12 elements"),
        ];
        let g = group(&remarks);
        let lines: Vec<(Outcome, usize, &str, &str)> = g
            .iter()
            .map(|g| {
                (
                    g.outcome.clone(),
                    g.count,
                    g.shape.as_str(),
                    g.example.as_str(),
                )
            })
            .collect();
        assert_eq!(
            lines,
            [
                (Outcome::Applied, 1, "folded into '…'", "b"),
                (Outcome::Skipped, 2, "weight '…' has N elements", "a"),
                (Outcome::Skipped, 1, "weight '…' is not a constant", "c"),
            ]
        );
    }
}
