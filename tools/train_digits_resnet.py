#!/usr/bin/env python3
"""Train the bundled showcase model of fixtures/digits_resnet on scikit-learn's handwritten digits (8x8, 10 classes,
the same pinned data and split as tools/train_digits.py), with numpy only, and write the model and its labelled
test set:

    fixtures/digits_resnet/digits_resnet.onnx  opset 17, input "image" f32[N,1,8,8] (pixels / 16), output
        "logits" f32[N,10]:
        Conv(1->32, 3x3, pad 1, no bias) -> BatchNormalization -> Relu                      = h1
        Conv(depthwise, group 32, 3x3, pad 1) -> Relu                                       = h2
        Add(h1, h2) (residual) -> Flatten -> Dropout (inference: an identity) -> Gemm(2048 -> 128) -> Relu
        -> Gemm(128 -> 10)
        about 264,000 parameters, nearly all in the wide first Gemm of the head.
    fixtures/digits_resnet/test_x.npy          f32[360,1,8,8]  the held-out images (same split as fixtures/digits)
    fixtures/digits_resnet/test_y.npy          i64[360]        their labels

Every layer is there for a pass: fold-batchnorm (Conv+BatchNormalization), eliminate-identity (Dropout), prune and
lowrank (the 2048x128 Gemm), quantize (all of it, the depthwise conv included). The BatchNormalization is trained
as one (batch statistics, running averages exported), so its statistics are real, not an identity.

Deterministic: seed 0 for the split, the initialisation and the minibatch order, and BLAS pinned to one thread
(a threaded BLAS may sum in a different order), so re-running gives the same files on the same numpy build.
Takes well under a minute on 2 cores.

    python3 -m venv target/pyenv-train && target/pyenv-train/bin/pip install -r tools/requirements-train.txt
    target/pyenv-train/bin/python tools/train_digits_resnet.py
"""
import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import helper, numpy_helper, TensorProto  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "digits_resnet")
C = 32          # channels
P = 64          # positions (8x8)
HID = 128       # hidden units of the head
EPS = 1e-5      # BatchNormalization epsilon
EPOCHS = 20
BATCH = 32
LR = 0.05
MOMENTUM = 0.9
BN_MOMENTUM = 0.9
F = np.float32


def patches(x):
    """x [N,8,8,Ch] (NHWC) -> [N,64,9,Ch]: the 3x3 neighbourhood (padding 1) of every position."""
    n, ch = x.shape[0], x.shape[3]
    p = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = np.empty((n, 8, 8, 9, ch), dtype=x.dtype)
    for di in range(3):
        for dj in range(3):
            cols[:, :, :, di * 3 + dj, :] = p[:, di:di + 8, dj:dj + 8, :]
    return cols.reshape(n, P, 9, ch)


def unpatch(g):
    """Adjoint of `patches`: g [N,64,9,Ch] -> [N,64,Ch] (gradients summed back onto the positions)."""
    n, ch = g.shape[0], g.shape[3]
    g = g.reshape(n, 8, 8, 9, ch)
    acc = np.zeros((n, 10, 10, ch), dtype=g.dtype)
    for di in range(3):
        for dj in range(3):
            acc[:, di:di + 8, dj:dj + 8, :] += g[:, :, :, di * 3 + dj, :]
    return acc[:, 1:9, 1:9, :].reshape(n, P, ch)


def init(rng):
    return {
        "w1": (rng.normal(0, np.sqrt(2 / 9), (C, 9))).astype(F),      # conv1 [C, 3*3]
        "gamma": np.ones(C, F),
        "beta": np.zeros(C, F),
        "w2": (rng.normal(0, np.sqrt(2 / 9), (9, C))).astype(F),      # depthwise [3*3, C]
        "b2": np.zeros(C, F),
        "wf1": (rng.normal(0, np.sqrt(2 / (C * P)), (HID, C * P))).astype(F),
        "bf1": np.zeros(HID, F),
        "wf2": (rng.normal(0, np.sqrt(2 / HID), (10, HID))).astype(F),
        "bf2": np.zeros(10, F),
    }


def forward(p, x, stats=None):
    """x [N,1,8,8]. With `stats` (mean, var) BatchNormalization runs in inference mode, else on the batch."""
    n = x.shape[0]
    cols1 = patches(x.transpose(0, 2, 3, 1))[:, :, :, 0]          # [N,64,9]
    z1 = cols1 @ p["w1"].T                                        # [N,64,C]
    if stats is None:
        mu, var = z1.mean((0, 1)), z1.var((0, 1))
    else:
        mu, var = stats
    inv = 1 / np.sqrt(var + EPS)
    xhat = (z1 - mu) * inv
    y1 = p["gamma"] * xhat + p["beta"]
    r1 = np.maximum(y1, 0)
    cols2 = patches(r1.reshape(n, 8, 8, C))                       # [N,64,9,C]
    z2 = np.einsum("npkc,kc->npc", cols2, p["w2"]) + p["b2"]
    r2 = np.maximum(z2, 0)
    h = r1 + r2
    flat = h.transpose(0, 2, 1).reshape(n, C * P)                 # NCHW flatten order
    f1 = flat @ p["wf1"].T + p["bf1"]
    a = np.maximum(f1, 0)
    logits = a @ p["wf2"].T + p["bf2"]
    cache = dict(cols1=cols1, mu=mu, var=var, inv=inv, xhat=xhat, y1=y1, cols2=cols2, z2=z2, flat=flat, f1=f1,
                 a=a)
    return logits, cache


def backward(p, c, g):
    """g = dL/dlogits [N,10] -> gradients of every parameter."""
    n = g.shape[0]
    gr = {}
    gr["wf2"] = g.T @ c["a"]
    gr["bf2"] = g.sum(0)
    gf1 = (g @ p["wf2"]) * (c["f1"] > 0)
    gr["wf1"] = gf1.T @ c["flat"]
    gr["bf1"] = gf1.sum(0)
    gh = (gf1 @ p["wf1"]).reshape(n, C, P).transpose(0, 2, 1)    # [N,64,C]
    gz2 = gh * (c["z2"] > 0)
    gr["w2"] = np.einsum("npkc,npc->kc", c["cols2"], gz2)
    gr["b2"] = gz2.sum((0, 1))
    gr1 = gh + unpatch(np.einsum("npc,kc->npkc", gz2, p["w2"]))
    gy1 = gr1 * (c["y1"] > 0)
    gr["gamma"] = (gy1 * c["xhat"]).sum((0, 1))
    gr["beta"] = gy1.sum((0, 1))
    gx = gy1 * p["gamma"]
    m = n * P
    gz1 = c["inv"] / m * (m * gx - gx.sum((0, 1)) - c["xhat"] * (gx * c["xhat"]).sum((0, 1)))
    gr["w1"] = np.einsum("npk,npc->ck", c["cols1"], gz1)
    return gr


def train():
    digits = load_digits()
    x = (digits.images / 16.0).astype(F)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    test, tr = perm[:360], perm[360:]      # the split of tools/train_digits.py
    p = init(rng)
    vel = {k: np.zeros_like(v) for k, v in p.items()}
    run_mu, run_var = np.zeros(C, F), np.ones(C, F)
    steps = EPOCHS * ((len(tr) + BATCH - 1) // BATCH)
    step = 0
    for epoch in range(EPOCHS):
        order = rng.permutation(tr)
        for k in range(0, len(order), BATCH):
            idx = order[k:k + BATCH]
            logits, cache = forward(p, x[idx])
            prob = np.exp(logits - logits.max(1, keepdims=True))
            prob /= prob.sum(1, keepdims=True)
            prob[np.arange(len(idx)), y[idx]] -= 1
            grads = backward(p, cache, (prob / len(idx)).astype(F))
            lr = LR * 0.5 * (1 + np.cos(np.pi * step / steps))    # cosine schedule
            for name in p:
                vel[name] = (MOMENTUM * vel[name] + grads[name]).astype(F)
                p[name] = (p[name] - lr * vel[name]).astype(F)
            run_mu = (BN_MOMENTUM * run_mu + (1 - BN_MOMENTUM) * cache["mu"]).astype(F)
            run_var = (BN_MOMENTUM * run_var + (1 - BN_MOMENTUM) * cache["var"]).astype(F)
            step += 1
    # final running statistics: the exact statistics of the training set under the final weights
    z1 = patches(x[tr].transpose(0, 2, 3, 1))[:, :, :, 0] @ p["w1"].T
    stats = (z1.mean((0, 1)).astype(F), z1.var((0, 1)).astype(F))
    logits, _ = forward(p, x[test], stats)
    acc = float((logits.argmax(1) == y[test]).mean())
    return p, stats, x[test], y[test], acc


def export(p, stats, path):
    mu, var = stats
    n = helper.make_node
    inits = [
        ("conv1.weight", p["w1"].reshape(C, 1, 3, 3)),
        ("bn1.scale", p["gamma"]), ("bn1.bias", p["beta"]), ("bn1.mean", mu), ("bn1.var", var),
        ("dw.weight", p["w2"].T.reshape(C, 1, 3, 3)), ("dw.bias", p["b2"]),
        ("fc1.weight", p["wf1"]), ("fc1.bias", p["bf1"]),
        ("fc2.weight", p["wf2"]), ("fc2.bias", p["bf2"]),
    ]
    g = helper.make_graph(
        [
            n("Conv", ["image", "conv1.weight"], ["conv1_out"], name="conv1", kernel_shape=[3, 3],
              pads=[1, 1, 1, 1]),
            n("BatchNormalization", ["conv1_out", "bn1.scale", "bn1.bias", "bn1.mean", "bn1.var"], ["bn1_out"],
              name="bn1", epsilon=EPS),
            n("Relu", ["bn1_out"], ["h1"], name="relu1"),
            n("Conv", ["h1", "dw.weight", "dw.bias"], ["dw_out"], name="dw", kernel_shape=[3, 3],
              pads=[1, 1, 1, 1], group=C),
            n("Relu", ["dw_out"], ["h2"], name="relu2"),
            n("Add", ["h1", "h2"], ["res"], name="residual"),
            n("Flatten", ["res"], ["flat"], name="flatten", axis=1),
            n("Dropout", ["flat"], ["drop"], name="dropout"),
            n("Gemm", ["drop", "fc1.weight", "fc1.bias"], ["fc1_out"], name="fc1", transB=1),
            n("Relu", ["fc1_out"], ["hidden"], name="relu3"),
            n("Gemm", ["hidden", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
        ],
        "digits_resnet",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(np.ascontiguousarray(a, dtype=F), nm) for nm, a in inits],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx-rewrite-fixtures")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)
    return sum(a.size for _, a in inits)


def main():
    os.makedirs(OUT, exist_ok=True)
    p, stats, tx, ty, acc = train()
    params = export(p, stats, os.path.join(OUT, "digits_resnet.onnx"))
    np.save(os.path.join(OUT, "test_x.npy"), tx.astype(F))
    np.save(os.path.join(OUT, "test_y.npy"), ty.astype(np.int64))
    print(f"{params} parameters; test accuracy {acc:.4f} on {len(ty)} images")


if __name__ == "__main__":
    main()
