//! ONNX Runtime latency of our quantized outputs against float and ONNX Runtime's own quantizers, on the real
//! models (fetched into the model cache) and a generated CNN: `tools/ort_latency_bench.py` does the work in the
//! pinned venv with this build's binary; see its docstring for the variants, the session option and the
//! interleaved timing. Figures are ratios to the float model in the same process, never absolute claims.
//!
//!     cargo bench --bench ort_latency [-- --models NAME,... --runs N]

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

fn main() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = Command::new("bash")
        .arg(root.join("tools/venv.sh"))
        .output()?;
    if !venv.status.success() {
        bail!(
            "tools/venv.sh failed: {}",
            String::from_utf8_lossy(&venv.stderr)
        );
    }
    let stdout = String::from_utf8(venv.stdout)?;
    let python = stdout
        .lines()
        .last()
        .context("venv.sh printed nothing")?
        .trim();
    Command::new("python3")
        .arg(root.join("tools/fetch_models.py"))
        .status()?;
    // cargo bench passes `--bench`; the rest is for the script
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let st = Command::new(python)
        .arg(root.join("tools/ort_latency_bench.py"))
        .arg("--bin")
        .arg(env!("CARGO_BIN_EXE_onnx-rewrite"))
        .args(&args)
        .status()?;
    if !st.success() {
        bail!("tools/ort_latency_bench.py failed");
    }
    Ok(())
}
