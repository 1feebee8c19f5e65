//! Every file we write passes `onnx.checker.check_model(full_check=True)` and loads in ONNX Runtime (pinned
//! Python packages in the project venv), and `inspect` counts parameters as `onnx` in Python does.

mod common;

use std::path::PathBuf;

use onnx_rewrite::io::{self, ExternalMode, SaveOptions};
use onnx_rewrite::passes::{run_pipeline, PipelineOptions};

#[test]
fn saved_outputs_pass_checker_and_load_in_ort() {
    let dir = common::tempdir();
    let mut ort_ok = Vec::new();
    let mut checker_only = Vec::new();
    let mut sources: Vec<PathBuf> = common::fixtures();
    sources.extend(common::real_models().into_iter().map(|(_, p)| p));
    for (k, src) in sources.iter().enumerate() {
        let stem = src.file_stem().unwrap().to_string_lossy().to_string();
        let mut model = io::load(src).unwrap();
        // plain re-save, and the cleanup pipeline with data moved out to an external file
        let plain = dir.path().join(format!("{k}_{stem}.onnx"));
        io::save(&model, &plain, &SaveOptions::default()).unwrap();
        run_pipeline(
            &mut model,
            &["dce", "dedup-initializers", "topo-sort"],
            &PipelineOptions::default(),
        )
        .unwrap();
        let sub = dir.path().join(format!("ext{k}"));
        std::fs::create_dir_all(&sub).unwrap();
        let ext = sub.join(format!("{stem}.onnx"));
        io::save(
            &model,
            &ext,
            &SaveOptions {
                external: ExternalMode::Threshold {
                    min_bytes: 256,
                    location: None,
                },
            },
        )
        .unwrap();
        let target = if stem == "rich_metadata" {
            &mut checker_only
        } else {
            &mut ort_ok
        };
        target.push(plain);
        target.push(ext);
    }
    common::check_models(&ort_ok, &[]);
    // custom-domain op: ONNX Runtime cannot run it, the checker still checks the file
    common::check_models(&checker_only, &["--no-ort"]);
}

#[test]
fn inspect_counts_parameters_like_onnx_python() {
    for (m, path) in common::real_models() {
        let model = io::load(&path).unwrap();
        let s = onnx_rewrite::dump::stats::stats(&model);
        assert_eq!(
            s.initializer_params, m.params,
            "{}: initializer params",
            m.name
        );
        assert_eq!(
            s.constant_params, m.constant_params,
            "{}: Constant-node params",
            m.name
        );
    }
}
