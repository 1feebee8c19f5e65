"""The onnx_rewrite Python package against the CLI, ONNX's checker and ONNX Runtime."""

import hashlib
import json
import subprocess
import threading
import time

import numpy as np
import onnx
import onnx.helper as oh
from onnx import numpy_helper
import pytest

import onnx_rewrite as rw
from conftest import EXAMPLES, FIXTURES, ort_run, seeded

DIGITS = FIXTURES / "digits_resnet"
STAMP_KEYS = {"onnx_rewrite.input_sha256", "onnx_rewrite.recipe_sha256", "onnx_rewrite.passes"}


def strip_stamp(m: onnx.ModelProto) -> onnx.ModelProto:
    """The model without the three provenance entries `run` records in metadata_props."""
    out = onnx.ModelProto()
    out.CopyFrom(m)
    keep = [e for e in out.metadata_props if e.key not in STAMP_KEYS]
    del out.metadata_props[:]
    out.metadata_props.extend(keep)
    return out


def cli_run(cli, *args, check=True):
    p = subprocess.run([cli, *map(str, args)], capture_output=True, text=True)
    if check:
        assert p.returncode == 0, p.stderr
    return p


# ---------------------------------------------------------------------------------------------------------------
# run


@pytest.mark.parametrize("fixture", ["mlp_matmul.onnx", "conv_bn_relu.onnx", "residual_concat.onnx"])
def test_cleanup_recipe_round_trips_a_modelproto(fixture):
    src = onnx.load(str(FIXTURES / fixture))
    out = rw.run(src, EXAMPLES / "cleanup.toml", latency=0)
    assert isinstance(out, onnx.ModelProto)
    # the clean-up passes change nothing on these clean models: the message is equal but for the stamp
    assert strip_stamp(out) == src
    stamp = {e.key: e.value for e in out.metadata_props if e.key in STAMP_KEYS}
    assert stamp["onnx_rewrite.input_sha256"] == hashlib.sha256(src.SerializeToString()).hexdigest()
    text = (EXAMPLES / "cleanup.toml").read_bytes()
    assert stamp["onnx_rewrite.recipe_sha256"] == hashlib.sha256(text).hexdigest()
    assert stamp["onnx_rewrite.passes"] == "eliminate-identity,dedup-initializers,dce,topo-sort"


def test_recipe_as_path_text_and_dict():
    model = FIXTURES / "conv_bn_relu.onnx"
    text = '[[pass]]\nname = "fold-batchnorm"\nbudget = "cosine >= 0.9999"\n'
    as_text, rep = rw.run(model, text, report=True, latency=0)
    as_dict = rw.run(
        model.read_bytes(),
        {"pass": [{"name": "fold-batchnorm", "budget": "cosine >= 0.9999"}]},
        latency=0,
    )
    # same passes, same model; only the recipe's digest (of its text) differs
    assert strip_stamp(as_text) == strip_stamp(as_dict)
    assert [n.op_type for n in as_text.graph.node].count("BatchNormalization") == 0
    assert rep["passes"][0]["pass"] == "fold-batchnorm"
    assert rep["status"] == "ok"
    assert rep["output_sha256"] == hashlib.sha256(as_text.SerializeToString()).hexdigest()


def test_run_is_byte_identical_to_the_cli(cli, tmp_path):
    """The README's first command from Python (numpy inputs and labels) and from the CLI: the same bytes."""
    out = tmp_path / "cli.onnx"
    report = tmp_path / "cli.json"
    cli_run(
        cli, "run", DIGITS / "digits_resnet.onnx", out, "--recipe", EXAMPLES / "default.toml",
        "--input", DIGITS / "test_x.npy", "--labels", DIGITS / "test_y.npy", "--latency", "0",
        "--report", report, "-q",
    )
    data, rep = rw.run(
        DIGITS / "digits_resnet.onnx",
        EXAMPLES / "default.toml",
        inputs=np.load(DIGITS / "test_x.npy"),
        labels=np.load(DIGITS / "test_y.npy"),
        latency=0,
        report=True,
        as_bytes=True,
    )
    assert data == out.read_bytes()
    cli_rep = json.loads(report.read_text())
    assert rep["output_sha256"] == cli_rep["output_sha256"]
    assert len(rep["passes"]) == len(cli_rep["passes"])
    for ours, theirs in zip(rep["passes"], cli_rep["passes"]):
        assert ours["pass"] == theirs["pass"]
        assert ours["drift"] == theirs["drift"]
    assert rep["after"]["accuracy"] == cli_rep["after"]["accuracy"]


def test_shortcut_is_byte_identical_to_the_cli(cli, model_cache, tmp_path):
    src = model_cache / "ppocr_mobile_v2_cls.onnx"
    out = tmp_path / "q.onnx"
    cli_run(cli, "quantize", src, out, "--per-tensor", "--symmetric")
    assert rw.quantize(src, per_tensor=True, symmetric=True, as_bytes=True) == out.read_bytes()


def test_static_plan_rebuilds_the_same_bytes(model_cache, tmp_path):
    src = model_cache / "ppocr_mobile_v2_cls.onnx"
    plan = tmp_path / "plan.json"
    calibrated = rw.quantize(src, mode="static", samples=2, default_dim=48, plan=plan, as_bytes=True)
    assert '"tensors"' in plan.read_text()
    # the plan carries every parameter: loaded, it builds the same model without calibrating
    assert rw.quantize(src, mode="static", load_plan=str(plan), as_bytes=True) == calibrated


def test_matmulnbits_format(cli, tmp_path):
    # MatMul weights as ONNX Runtime's MatMulNBits, the same bytes as the CLI, and the report says so
    src = FIXTURES / "mlp_matmul.onnx"
    out = tmp_path / "q.onnx"
    cli_run(cli, "quantize", src, out, "--format", "matmulnbits", "--block-size", "16")
    data, report = rw.quantize(src, format="matmulnbits", block_size=16, report=True, as_bytes=True)
    assert data == out.read_bytes()
    model = onnx.load_from_string(data)
    assert report["stats"]["matmulnbits"] == 2
    assert sum(n.op_type == "MatMulNBits" and n.domain == "com.microsoft" for n in model.graph.node) == 2
    with pytest.raises(rw.UsageError, match="power of two"):
        rw.quantize(src, format="matmulnbits", block_size=48)


# ---------------------------------------------------------------------------------------------------------------
# shortcuts on a real model: onnx.checker full_check and ONNX Runtime


@pytest.mark.parametrize(
    "name,call",
    [
        ("quantize weight", lambda m: rw.quantize(m)),
        ("quantize static", lambda m: rw.quantize(m, mode="static", samples=2, default_dim=48)),
        ("prune magnitude", lambda m: rw.prune(m, sparsity=0.3)),
        ("prune channel", lambda m: rw.prune(m, method="channel", ratio=0.25, mode="remove")),
        ("lowrank", lambda m: rw.lowrank(m, ratio=0.25, min_saving=0.0)),
    ],
)
def test_shortcuts_on_a_real_model(name, call, model_cache):
    path = model_cache / "ppocr_mobile_v2_cls.onnx"
    src = onnx.load(str(path))
    out = call(path)
    assert isinstance(out, onnx.ModelProto)
    assert out != src, f"{name} changed nothing"
    onnx.checker.check_model(out, full_check=True)
    x = seeded((1, 3, 48, 192))
    (want,) = ort_run(src, {"x": x})
    (got,) = ort_run(out, {"x": x})
    assert got.shape == want.shape and np.isfinite(got).all()


def test_shortcut_report_and_validation(model_cache):
    path = model_cache / "ppocr_mobile_v2_cls.onnx"
    out, rep = rw.quantize(path, validate=True, report=True, default_dim=48)
    assert rep["pass"] == "quantize" and rep["validation"]["outputs"]
    # a limit no int8 model meets: DriftError with the validation report
    with pytest.raises(rw.DriftError) as e:
        rw.quantize(path, validate=True, default_dim=48, tolerances={"max_abs": 0.0})
    assert e.value.exit_code == 4
    assert e.value.report["validation"]["outputs"]


# ---------------------------------------------------------------------------------------------------------------
# numpy calibration inputs


def test_numpy_calibration_inputs_are_used():
    model = DIGITS / "digits_resnet.onnx"
    x = np.load(DIGITS / "test_x.npy")
    name = onnx.load(str(model)).graph.input[0].name
    from_array = rw.quantize(model, mode="static", inputs=x, as_bytes=True)
    from_dict = rw.quantize(model, mode="static", inputs={name: x}, as_bytes=True)
    from_file = rw.quantize(model, mode="static", inputs=DIGITS / "test_x.npy", as_bytes=True)
    assert from_array == from_file == from_dict
    # the samples matter: random inputs calibrate other ranges
    assert rw.quantize(model, mode="static", as_bytes=True) != from_array
    # a list of samples: one per sub-batch
    halves = [x[: len(x) // 2], x[len(x) // 2 :]]
    from_list = rw.quantize(model, mode="static", inputs=[{name: h} for h in halves])
    onnx.checker.check_model(from_list, full_check=True)
    (probs,) = ort_run(from_list, {name: x})
    assert probs.shape[0] == x.shape[0]


def test_numpy_labels_give_accuracy():
    model = DIGITS / "digits_resnet.onnx"
    x, y = np.load(DIGITS / "test_x.npy"), np.load(DIGITS / "test_y.npy")
    rep = rw.validate(model, model, inputs=x, labels=y)
    acc = rep["accuracy"]
    # a model against itself: same accuracy on both sides, and it is the fraction of rows ORT gets right
    (logits,) = ort_run(str(model), {onnx.load(str(model)).graph.input[0].name: x})
    want = float(np.mean(np.argmax(logits, axis=1) == y.reshape(-1)))
    assert acc["reference"] == acc["candidate"]
    assert acc["reference"]["rows"] == len(y)
    assert abs(acc["reference"]["top1"] - want) <= 1.0 / len(y)  # one row may flip on ties between engines


# ---------------------------------------------------------------------------------------------------------------
# validate, diff, dump: the CLI's text


def test_validate_diff_dump_match_the_cli(cli, tmp_path):
    a = FIXTURES / "conv_bn_relu.onnx"
    b = tmp_path / "folded.onnx"
    cli_run(cli, "run", a, b, "-p", "fold-batchnorm", "-q")
    assert rw.dump(a) == cli_run(cli, "dump", a).stdout
    assert rw.dump(onnx.load(str(a))) == cli_run(cli, "dump", a).stdout
    assert rw.diff(a, b) == cli_run(cli, "diff", a, b).stdout
    assert json.loads(rw.diff(a, b, json=True)) == json.loads(cli_run(cli, "diff", a, b, "--json").stdout)
    rep = rw.validate(a, b, seed=3)
    cli_rep = json.loads(cli_run(cli, "validate", a, b, "--seed", "3", "--json").stdout)
    assert rep["passed"] is True
    assert rep["outputs"] == cli_rep["outputs"]


# ---------------------------------------------------------------------------------------------------------------
# errors: the exit code's class, the CLI's message


def test_bad_model(cli, tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\xff\xff not a model")
    with pytest.raises(rw.BadModelError) as e:
        rw.dump(bad)
    p = cli_run(cli, "dump", bad, check=False)
    assert e.value.exit_code == p.returncode == 3
    assert p.stderr.startswith(f"error: {e.value}")
    with pytest.raises(rw.BadModelError):
        rw.run(b"\x08\x07\x12\xff\xff", {"pass": [{"name": "dce"}]})
    with pytest.raises(TypeError):
        rw.dump(42)


def test_usage_errors(cli, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[[pass]]\nname = "no-such-pass"\n')
    model = FIXTURES / "mlp_matmul.onnx"
    with pytest.raises(rw.UsageError) as e:
        rw.run(model, recipe)
    p = cli_run(cli, "run", model, tmp_path / "o.onnx", "--recipe", recipe, check=False)
    assert e.value.exit_code == p.returncode == 2
    assert p.stderr.startswith(f"error: {e.value}")
    assert "line 2" in str(e.value)
    with pytest.raises(rw.UsageError, match="no-such-pass"):
        rw.run(model, {"pass": [{"name": "no-such-pass"}]})
    with pytest.raises(rw.UsageError, match="sparsity"):
        rw.prune(model, sparsity=2.0)
    with pytest.raises(rw.UsageError, match="cannot read recipe"):
        rw.run(model, tmp_path / "missing.toml")
    with pytest.raises(rw.UsageError):
        rw.run(model, {"pass": "dce"})
    # an input that does not fit the model (named like the CLI's, file written from the array)
    with pytest.raises(rw.UsageError, match="holds f64 but input .x. is f32"):
        rw.validate(model, model, inputs=np.zeros((1, 4)))


def test_drift_error_carries_the_report():
    model = DIGITS / "digits_resnet.onnx"
    recipe = {"pass": [{"name": "quantize", "budget": "max_abs <= 0"}]}
    with pytest.raises(rw.DriftError) as e:
        rw.run(model, recipe, latency=0)
    assert e.value.exit_code == 4
    assert e.value.report["status"] == "budget_failed"
    assert e.value.report["failed_pass"].startswith("quantize")
    assert "budget broken by quantize" in str(e.value)


def test_unmet_pass_budget_is_a_drift_error(cli, tmp_path):
    # one 64x64 weight of full, flat rank: no low-rank split keeps a 0.99 output cosine
    w = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 64])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [4, 64])
    g = oh.make_graph([oh.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y],
                      [numpy_helper.from_array(w, "w")])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 13)])
    path = tmp_path / "flat.onnx"
    onnx.save(m, str(path))
    recipe = {"pass": [{"name": "lowrank", "options": {"drift_budget": 0.99}}]}
    with pytest.raises(rw.DriftError, match="drift_budget cannot be met") as e:
        rw.run(m, recipe, latency=0)
    p = cli_run(cli, "run", path, tmp_path / "out.onnx", "-p", "lowrank{drift_budget=0.99}", check=False)
    assert e.value.exit_code == p.returncode == 4
    assert not (tmp_path / "out.onnx").exists()


def test_cannot_validate(cli, tmp_path):
    # an op from a domain no engine knows: the IR keeps it, tract cannot load it
    x = oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    g = oh.make_graph([oh.make_node("Mystery", ["x"], ["y"], domain="com.example")], "g", [x], [y])
    m = oh.make_model(g, opset_imports=[oh.make_opsetid("", 17), oh.make_opsetid("com.example", 1)])
    path = tmp_path / "mystery.onnx"
    onnx.save(m, str(path))
    with pytest.raises(rw.CannotValidateError) as e:
        rw.validate(m, m)
    p = cli_run(cli, "validate", path, path, check=False)
    assert e.value.exit_code == p.returncode == 5
    assert p.stderr.startswith(f"error: {e.value}")
    # without validation the recipe runs
    out = rw.run(m, {"pass": [{"name": "dce"}]}, no_validate=True)
    assert strip_stamp(out) == m


# ---------------------------------------------------------------------------------------------------------------
# the GIL is released during the Rust work


def test_gil_released(model_cache):
    path = model_cache / "ppocr_mobile_v2_cls.onnx"
    done = {}

    def work():
        t0 = time.perf_counter()
        rw.validate(path, path, samples=4, default_dim=48)
        done["seconds"] = time.perf_counter() - t0

    t = threading.Thread(target=work)
    t.start()
    gap, last = 0.0, time.perf_counter()
    while t.is_alive():
        now = time.perf_counter()
        gap, last = max(gap, now - last), now
    t.join()
    # with the GIL held this thread would stand still for the whole call; released, it keeps running
    assert done["seconds"] > 0.2, done
    assert gap < done["seconds"] / 2, (gap, done)
