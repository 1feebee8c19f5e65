//! Shared test helpers: fixture paths, the real-model cache, the Python venv for interop checks.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The committed valid fixtures (`fixtures/*.onnx`), sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
        .collect();
    v.sort();
    v
}

#[derive(serde::Deserialize, Clone, Debug)]
pub struct RealModel {
    pub name: String,
    pub kind: String,
    pub params: u64,
    pub constant_params: u64,
    pub sha256: String,
}

pub fn real_model_list() -> Vec<RealModel> {
    let text = std::fs::read_to_string(root().join("tools/real_models.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub fn model_cache() -> PathBuf {
    std::env::var_os("ONNX_REWRITE_MODEL_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/model-cache"))
}

/// The real exported models, fetched (pinned version + sha256) into the cache on first use.
pub fn real_models() -> Vec<(RealModel, PathBuf)> {
    static FETCHED: OnceLock<()> = OnceLock::new();
    FETCHED.get_or_init(|| {
        let st = Command::new("python3")
            .arg(root().join("tools/fetch_models.py"))
            .arg("--cache")
            .arg(model_cache())
            .status()
            .expect("python3 runs");
        assert!(
            st.success(),
            "tools/fetch_models.py failed: the real models could not be fetched"
        );
    });
    real_model_list()
        .into_iter()
        .map(|m| {
            let p = model_cache().join(format!("{}.onnx", m.name));
            (m, p)
        })
        .collect()
}

/// The venv python with the pinned onnx / onnxruntime (created by tools/venv.sh on first use).
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("tools/venv.sh"))
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "tools/venv.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("venv.sh prints the python path")
                .trim(),
        )
    })
    .clone()
}

pub fn sha256(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir_in(root().join("target")).unwrap()
}

/// Run the binary from the repository root: (exit code, stdout, stderr).
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_onnx-rewrite"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Run a tool of `tools/` with the venv python; its stdout (the run must succeed).
pub fn run_tool(tool: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg(root().join("tools").join(tool))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tools/{tool} {args:?} failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// `onnx.checker.check_model(full_check=True)` and an ONNX Runtime session for every file (tools/check_model.py).
pub fn check_models(files: &[PathBuf], extra: &[&str]) {
    if files.is_empty() {
        return;
    }
    let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    args.extend(files.iter().map(|p| p.to_string_lossy().into_owned()));
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let text = run_tool("check_model.py", &args);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("ok ")).count(),
        files.len(),
        "{text}"
    );
}

/// ONNX Runtime outputs of two models on the same seeded inputs (tools/ort_equal.py `outputs`): per output
/// `dtype`, `shape`, `max_abs`, `max_ref`, `rel`, `identical`.
pub fn ort_outputs(a: &Path, b: &Path, input_args: &[&str]) -> serde_json::Value {
    let (a, b) = (a.to_string_lossy(), b.to_string_lossy());
    let mut args = vec!["outputs", a.as_ref(), b.as_ref()];
    args.extend_from_slice(input_args);
    let v: serde_json::Value = serde_json::from_str(&run_tool("ort_equal.py", &args)).unwrap();
    v["outputs"].clone()
}

/// `check_models` with no extra flags: every file passes onnx.checker full_check and loads in ONNX Runtime.
pub fn check_files(files: &[PathBuf]) {
    check_models(files, &[]);
}

/// Save `m` as `<dir>/<name>.onnx` (default save options) and return the path.
pub fn save(m: &onnx_rewrite::ir::Model, dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(format!("{name}.onnx"));
    onnx_rewrite::io::save(m, &p, &Default::default()).unwrap();
    p
}

/// Deterministic test values in [-1, 1) (a splitmix-style hash of the index and a salt); exact multiples of
/// 2^-23, so the same on every machine and in f32 or f64.
pub fn vals(n: usize, salt: u64) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let mut z = (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 30)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// `vals` widened to f64 (exactly: every value is a multiple of 2^-23 below 1 in magnitude).
pub fn vals_f64(n: usize, salt: u64) -> Vec<f64> {
    vals(n, salt).into_iter().map(f64::from).collect()
}

// ---- the canary cases (fixtures/canaries, made by tools/make_canaries.py) -------------------------------------

/// The folder of the committed canary cases: tiny models with ONNX Runtime's outputs recorded beside them.
pub fn canaries_dir() -> PathBuf {
    root().join("fixtures/canaries")
}

/// What tract is expected to do with a canary (`cases.json` "tract").
#[derive(serde::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum CanaryExpect {
    /// Runs it; outputs equal ONNX Runtime's within float32 summation noise; no remark.
    Exact,
    /// Runs it after folding a form it cannot load (int4 / uint4 / blocked) into float weights, with a remark.
    Folded,
    /// Cannot run it: a clear error with exit code 5 (an int4 activation; a float16 DequantizeLinear scale).
    Refused,
}

/// One entry of `fixtures/canaries/cases.json`.
#[derive(serde::Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    pub name: String,
    pub exercises: String,
    pub tract: CanaryExpect,
    pub opset: i64,
    /// For a case tract does not run exactly: a word its remark (folded) or its error (refused) must contain.
    pub mention: Option<String>,
    /// Graph input names in order: `input_K.npy` feeds the K-th.
    pub inputs: Vec<String>,
    /// Graph output names in order: `expected_K.npy` is ONNX Runtime's K-th output.
    pub outputs: Vec<String>,
    /// The generator also checked ONNX Runtime's outputs against a numpy computation of the spec.
    pub numpy_checked: bool,
}

impl Canary {
    pub fn dir(&self) -> PathBuf {
        canaries_dir().join(&self.name)
    }
}

/// `fixtures/canaries/cases.json`.
#[derive(serde::Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct CanaryIndex {
    pub about: String,
    pub onnxruntime: String,
    pub onnx: String,
    pub numpy: String,
    pub cases: Vec<Canary>,
}

impl CanaryIndex {
    pub fn count(&self, expect: CanaryExpect) -> usize {
        self.cases.iter().filter(|c| c.tract == expect).count()
    }
}

pub fn canary_index() -> CanaryIndex {
    let path = canaries_dir().join("cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the canaries are committed; tools/make_canaries.py regenerates them)",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}
