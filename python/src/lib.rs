//! `onnx_rewrite._native`: the Python extension over the onnx-rewrite library. A thin layer: Python values in
//! (bytes or a path, option tables as JSON text), one library call with the GIL released, bytes and JSON text
//! out. The user-facing API (ModelProto / numpy handling, keyword options, exceptions) lives in
//! `onnx_rewrite/__init__.py`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use onnx_rewrite::error::{Error, Exit, Result};
use onnx_rewrite::ir::Model;
use onnx_rewrite::passes::{self, PipelineOptions};
use onnx_rewrite::validate::{self, Tolerances, ValidateOptions};
use onnx_rewrite::{io, recipe};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use serde::Deserialize;

/// A model argument: serialized bytes, or a file path (external data resolved against its folder).
enum Source {
    Bytes(Vec<u8>),
    Path(PathBuf),
}

impl Source {
    fn from_py(obj: &Bound<'_, PyAny>) -> PyResult<Source> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            return Ok(Source::Bytes(b.as_bytes().to_vec()));
        }
        Ok(Source::Path(obj.extract::<PathBuf>()?))
    }

    fn load(&self) -> Result<Model> {
        match self {
            Source::Bytes(b) => io::load_bytes(bytes::Bytes::copy_from_slice(b), None),
            Source::Path(p) => io::load(p),
        }
    }

    /// sha256 of the model's bytes as the CLI records it (of the file for a path).
    fn sha256(&self) -> Result<String> {
        match self {
            Source::Bytes(b) => Ok(recipe::sha256_hex(b)),
            Source::Path(p) => {
                let bytes = std::fs::read(p).map_err(|source| Error::Read {
                    path: p.clone(),
                    source,
                })?;
                Ok(recipe::sha256_hex(&bytes))
            }
        }
    }
}

/// The sample and tolerance options of `validate`, `run` and the pass shortcuts, as JSON from Python (keys named
/// like the CLI's flags; an absent key keeps the CLI's default).
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Samples {
    seed: Option<u64>,
    samples: Option<usize>,
    dims: BTreeMap<String, i64>,
    default_dim: Option<i64>,
    float_range: Option<(f64, f64)>,
    int_range: Option<(i64, i64)>,
    inputs: Vec<PathBuf>,
    labels: Option<PathBuf>,
    optimize: bool,
    no_attribution: bool,
    latency: Option<usize>,
    tolerances: serde_json::Map<String, serde_json::Value>,
    no_default_tolerances: bool,
}

fn usage(msg: impl std::fmt::Display) -> Error {
    Error::Usage(msg.to_string())
}

impl Samples {
    fn parse(json: Option<&str>) -> Result<Samples> {
        match json {
            None => Ok(Samples::default()),
            Some(j) => serde_json::from_str(j).map_err(usage),
        }
    }

    fn options(&self) -> Result<ValidateOptions> {
        let d = ValidateOptions::default();
        // tolerances: the keys given override the defaults (or no limits with no_default_tolerances)
        let base = if self.no_default_tolerances {
            Tolerances::none()
        } else {
            Tolerances::default()
        };
        let mut t = serde_json::to_value(base).map_err(usage)?;
        if let Some(obj) = t.as_object_mut() {
            for (k, v) in &self.tolerances {
                obj.insert(k.clone(), v.clone());
            }
        }
        let tolerances: Tolerances =
            serde_json::from_value(t).map_err(|e| usage(format!("tolerances: {e}")))?;
        Ok(ValidateOptions {
            seed: self.seed.unwrap_or(d.seed),
            samples: self.samples.unwrap_or(d.samples),
            dims: self.dims.clone(),
            default_dim: self.default_dim.unwrap_or(d.default_dim),
            // as on the CLI: an explicit default dim is used as it is, with no other sizes tried
            auto_dims: self.default_dim.is_none(),
            float_range: self.float_range.unwrap_or(d.float_range),
            int_range: self.int_range.or(d.int_range),
            inputs: self.inputs.clone(),
            labels: self.labels.clone(),
            optimize: self.optimize,
            attribution: !self.no_attribution,
            latency_runs: self.latency,
            tolerances,
            ..d
        })
    }
}

/// Raise the Python exception of an error's exit code (classes in `onnx_rewrite._errors`), message unchanged.
fn raise(py: Python<'_>, e: Error) -> PyErr {
    let class = match e.exit() {
        Exit::Usage => "UsageError",
        Exit::BadFile => "BadModelError",
        Exit::Drift => "DriftError",
        Exit::CannotValidate => "CannotValidateError",
        Exit::Ok | Exit::Unexpected => "OnnxRewriteError",
    };
    let made = py
        .import("onnx_rewrite._errors")
        .and_then(|m| m.getattr(class))
        .and_then(|c| c.call1((e.to_string(),)));
    match made {
        Ok(v) => PyErr::from_value(v),
        Err(err) => err,
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| Error::Refused(e.to_string()))
}

/// Run a recipe; returns (model bytes or None when a budget broke, report JSON).
#[pyfunction]
#[pyo3(signature = (model, recipe_text, recipe_source, recipe_is_json, samples, no_validate, stop_after, latency))]
#[allow(clippy::too_many_arguments)]
fn run<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    recipe_text: String,
    recipe_source: String,
    recipe_is_json: bool,
    samples: Option<String>,
    no_validate: bool,
    stop_after: Option<String>,
    latency: usize,
) -> PyResult<(Option<Bound<'py, PyBytes>>, String)> {
    let src = Source::from_py(model)?;
    let done = py.detach(move || -> Result<(Option<Vec<u8>>, String)> {
        let recipe = if recipe_is_json {
            let v: serde_json::Value = serde_json::from_str(&recipe_text).map_err(usage)?;
            recipe::from_value(&v, &recipe_source)?
        } else {
            recipe::parse(&recipe_text, &recipe_source)?
        };
        let sample_opts = Samples::parse(samples.as_deref())?;
        let opts = recipe::RunOptions {
            validate: if no_validate {
                None
            } else {
                Some(sample_opts.options()?)
            },
            stop_after,
            latency_runs: latency,
            progress: false,
            input_sha256: Some(src.sha256()?),
            // the result comes back as bytes, not as a file beside which tensors could stream
            scratch: None,
        };
        let m = src.load()?;
        drop(src);
        let (out, mut report) = recipe::run_recipe(m, &recipe, &opts)?;
        if !report.passed() {
            return Ok((None, json(&report)?));
        }
        let bytes = io::to_bytes(&out)?;
        report.output_sha256 = Some(recipe::sha256_hex(&bytes));
        Ok((Some(bytes), json(&report)?))
    });
    let (bytes, report) = done.map_err(|e| raise(py, e))?;
    Ok((bytes.map(|b| PyBytes::new(py, &b)), report))
}

/// Run one registered pass (its options as JSON) with calibration and drift services on the samples; with
/// `check`, compare the result with the input. Returns (model bytes, pass report JSON, validation JSON or None,
/// passed).
#[pyfunction]
#[pyo3(signature = (model, name, options, samples, check))]
fn run_pass<'py>(
    py: Python<'py>,
    model: &Bound<'py, PyAny>,
    name: String,
    options: String,
    samples: Option<String>,
    check: bool,
) -> PyResult<(Bound<'py, PyBytes>, String, Option<String>, bool)> {
    let src = Source::from_py(model)?;
    let done = py.detach(move || -> Result<(Vec<u8>, String, Option<String>, bool)> {
        let options: serde_json::Value = serde_json::from_str(&options).map_err(usage)?;
        let pass = passes::registry::make(&name, options)?;
        let sample_opts = Samples::parse(samples.as_deref())?.options()?;
        let mut m = src.load()?;
        drop(src);
        let before = check.then(|| m.clone());
        let mut cx =
            validate::pass_services(&m, sample_opts.clone(), Box::new(passes::NoProgress), None);
        let reports = passes::run_passes(&mut m, vec![pass], &PipelineOptions::default(), &mut cx)?;
        drop(cx);
        let (checked, passed) = match &before {
            Some(b) => {
                let r = validate::compare(b, &m, &sample_opts)?;
                (Some(r.to_json()), r.passed())
            }
            None => (None, true),
        };
        let report = reports
            .first()
            .ok_or_else(|| Error::Pass {
                pass: name.clone(),
                msg: "no report".into(),
            })
            .and_then(json)?;
        Ok((io::to_bytes(&m)?, report, checked, passed))
    });
    let (bytes, report, checked, passed) = done.map_err(|e| raise(py, e))?;
    Ok((PyBytes::new(py, &bytes), report, checked, passed))
}

/// Compare two models through tract; returns (report JSON, passed).
#[pyfunction(name = "validate")]
#[pyo3(signature = (reference, candidate, samples))]
fn validate_models<'py>(
    py: Python<'py>,
    reference: &Bound<'py, PyAny>,
    candidate: &Bound<'py, PyAny>,
    samples: Option<String>,
) -> PyResult<(String, bool)> {
    let (a, b) = (Source::from_py(reference)?, Source::from_py(candidate)?);
    py.detach(move || -> Result<(String, bool)> {
        let opts = Samples::parse(samples.as_deref())?.options()?;
        let r = validate::compare(&a.load()?, &b.load()?, &opts)?;
        Ok((r.to_json(), r.passed()))
    })
    .map_err(|e| raise(py, e))
}

/// The structural diff, as the CLI's `diff` prints it (or its `--json`).
#[pyfunction]
#[pyo3(signature = (a, b, as_json=false))]
fn diff<'py>(
    py: Python<'py>,
    a: &Bound<'py, PyAny>,
    b: &Bound<'py, PyAny>,
    as_json: bool,
) -> PyResult<String> {
    let (a, b) = (Source::from_py(a)?, Source::from_py(b)?);
    py.detach(move || -> Result<String> {
        let d = onnx_rewrite::dump::diff(&a.load()?, &b.load()?);
        if as_json {
            Ok(serde_json::to_string_pretty(&d).map_err(|e| Error::Refused(e.to_string()))? + "\n")
        } else {
            Ok(d.to_string())
        }
    })
    .map_err(|e| raise(py, e))
}

/// The deterministic text dump, as the CLI's `dump` prints it.
#[pyfunction]
fn dump<'py>(py: Python<'py>, model: &Bound<'py, PyAny>) -> PyResult<String> {
    let src = Source::from_py(model)?;
    py.detach(move || -> Result<String> { Ok(onnx_rewrite::dump::render(&src.load()?)) })
        .map_err(|e| raise(py, e))
}

/// The registered passes with their options (what `onnx-rewrite passes --json` prints).
#[pyfunction]
fn passes_json() -> PyResult<String> {
    serde_json::to_string(&passes::registry::to_json())
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(run, m)?)?;
    m.add_function(wrap_pyfunction!(run_pass, m)?)?;
    m.add_function(wrap_pyfunction!(validate_models, m)?)?;
    m.add_function(wrap_pyfunction!(diff, m)?)?;
    m.add_function(wrap_pyfunction!(dump, m)?)?;
    m.add_function(wrap_pyfunction!(passes_json, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
