//! Workable sizes for the symbolic dims a user left unset.
//!
//! Random inputs need a concrete value for every symbolic or unnamed dim. 1 (the `default_dim`) suits batch
//! and sequence dims, but an image detector `[1,3,H,W]` or an audio model `[1,T]` cannot run at H = W = 1 or
//! T = 1 (a strided Conv stack or an STFT window shrinks the tensor to nothing). So when the inputs are random,
//! `auto_dims` is on and some dim is unset, [`choose`] runs the reference once at the default; if tract cannot
//! run it there (or the unset dims include spatial ones, axes 2+ of a rank-4+ input, and the default is below
//! the ladder's first size), it tries a short ladder of sizes for the non-batch dims (axis 0 of an input of rank >= 2 stays
//! at the default), all of them and then each alone, and keeps the first that runs. The sizes used are said in each input's description
//! (`InputSpec::source`) and so in the report. Dims are keyed by their symbolic name, or `INPUT[K]` when the
//! model gives none (the same keys `--dim` takes).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::ir::{DimValue, Model};
use crate::validate::ValidateOptions;

/// Sizes tried, smallest first (the first that runs is the cheapest to validate at). Powers of two cover the
/// strides and window sizes exporters use; 224 and 640 are the usual image sizes between them.
const LADDER: [i64; 8] = [16, 32, 64, 128, 224, 256, 512, 640];

/// One unset dim: its key in `ValidateOptions::dims`, whether it is a batch axis or a spatial one, and the
/// inputs it shapes.
struct Unset {
    key: String,
    batch: bool,
    spatial: bool,
    inputs: Vec<String>,
}

/// The unset symbolic / unnamed dims of `model`'s runtime inputs, each key once (a batch axis anywhere wins).
fn unset_dims(model: &Model, opts: &ValidateOptions) -> Vec<Unset> {
    let g = &model.graph;
    let mut out: Vec<Unset> = Vec::new();
    for io in g.runtime_inputs() {
        let Some((_, Some(shape))) = io.info.ty.as_ref().and_then(|t| t.as_tensor()) else {
            continue;
        };
        let rank = shape.0.len();
        for (k, d) in shape.0.iter().enumerate() {
            let key = match &d.value {
                DimValue::Fixed(v) if *v >= 0 => continue,
                DimValue::Param(p) => p.clone(),
                _ => unnamed_key(g.value_name(io.value), k),
            };
            if opts.dims.contains_key(&key) {
                continue;
            }
            let batch = k == 0 && rank >= 2;
            let spatial = k >= 2 && rank >= 4;
            let input = g.value_name(io.value).to_string();
            match out.iter_mut().find(|u| u.key == key) {
                Some(u) => {
                    u.batch |= batch;
                    u.spatial |= spatial;
                    if !u.inputs.contains(&input) {
                        u.inputs.push(input);
                    }
                }
                None => out.push(Unset {
                    key,
                    batch,
                    spatial,
                    inputs: vec![input],
                }),
            }
        }
    }
    out
}

/// The `dims` key of an unnamed dim: `INPUT[K]`.
pub(crate) fn unnamed_key(input: &str, k: usize) -> String {
    format!("{input}[{k}]")
}

/// The dims chosen, and per input the text that says which of them shape it.
pub(crate) struct Chosen {
    pub dims: BTreeMap<String, i64>,
    pub said: BTreeMap<String, String>,
}

/// When the default leaves the reference unable to run, the first ladder size it runs at: `dims` completed
/// with it, and the texts that say so. `None` when nothing needs choosing (file inputs, `auto_dims` off, every
/// dim set, the default runs) or no size on the ladder runs (the caller's run then fails as before, with its
/// hint).
pub(crate) fn choose(model: &Model, opts: &ValidateOptions) -> Result<Option<Chosen>> {
    if !opts.auto_dims || !opts.inputs.is_empty() {
        return Ok(None);
    }
    let unset = unset_dims(model, opts);
    if unset.is_empty() {
        return Ok(None);
    }
    // An image (or volume) a few pixels wide runs, but to a degenerate output: a detector's score map of one
    // pixel is constant, so no centred measure is defined on it. Spatial dims start on the ladder.
    let spatial_too_small = unset.iter().any(|u| u.spatial) && opts.default_dim < LADDER[0];
    if !spatial_too_small && runs(model, opts)? {
        return Ok(None);
    }
    // Which non-batch dims take the size: all of them first, then each alone (a dim at axis 1 may be a
    // state's batch axis, as in silero's `state[2, N, 128]`, and must stay at the default then).
    let sizable: Vec<usize> = (0..unset.len()).filter(|&i| !unset[i].batch).collect();
    if sizable.is_empty() {
        return Ok(None);
    }
    let mut choices = vec![sizable.clone()];
    if sizable.len() > 1 {
        choices.extend(sizable.iter().map(|&i| vec![i]));
    }
    for size in LADDER {
        for chosen in &choices {
            let mut trial = opts.clone();
            for (i, u) in unset.iter().enumerate() {
                let v = if chosen.contains(&i) {
                    size
                } else {
                    opts.default_dim
                };
                trial.dims.insert(u.key.clone(), v);
            }
            if runs(model, &trial)? {
                let mut said = BTreeMap::new();
                for u in &unset {
                    for input in &u.inputs {
                        let text: &mut String = said.entry(input.clone()).or_default();
                        text.push_str(if text.is_empty() {
                            "dims chosen: "
                        } else {
                            ", "
                        });
                        text.push_str(&format!("{}={}", u.key, trial.dims[&u.key]));
                    }
                }
                for text in said.values_mut() {
                    let why = if spatial_too_small {
                        format!("unset spatial dims start at {}", LADDER[0])
                    } else {
                        format!(
                            "the model does not run with unset dims at {}",
                            opts.default_dim
                        )
                    };
                    text.push_str(&format!(" ({why}; set them with --dim)"));
                }
                return Ok(Some(Chosen {
                    dims: trial.dims,
                    said,
                }));
            }
        }
    }
    Ok(None)
}

/// Does tract run `model` on the first random sample `opts` gives, with every output non-empty? An input that cannot be generated is the
/// caller's error; an engine failure is a "no".
fn runs(model: &Model, opts: &ValidateOptions) -> Result<bool> {
    let mut one = opts.clone();
    one.samples = 1;
    one.auto_dims = false;
    let (_, samples) = crate::validate::prepare_samples(model, None, &one)?;
    let specialised = match crate::validate::specialize::specialise(model, &samples[0]) {
        Ok(s) => s,
        Err(_) => return Ok(false),
    };
    let run = specialised.as_ref().map_or(model, |s| &s.model);
    // an output with no element (a valid Conv over an input smaller than its kernel) compares equal to
    // anything: that size does not count as running
    Ok(
        crate::validate::run_model(run, &samples[0]).is_ok_and(|out| {
            out.outputs
                .iter()
                .all(|(_, t)| t.numel().is_ok_and(|n| n > 0))
        }),
    )
}
