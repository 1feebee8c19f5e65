#!/usr/bin/env python3
"""Train the small CNN of fixtures/digits on scikit-learn's handwritten digits (8x8, 10 classes), with numpy only,
and write the model and the labelled test set:

    fixtures/digits/digits_cnn.onnx   opset 17: Conv(8, 3x3, pad 1) -> Relu -> MaxPool 2x2 -> Flatten -> Gemm(10)
                                      input "image" f32[N,1,8,8] (pixels / 16), output "logits" f32[N,10]
    fixtures/digits/test_x.npy        f32[360,1,8,8]  the held-out images
    fixtures/digits/test_y.npy        i64[360]        their labels

Deterministic (seed 0: split, init and minibatch order), so re-running gives the same files.

    python3 -m venv target/pyenv-train && target/pyenv-train/bin/pip install -r tools/requirements-train.txt
    target/pyenv-train/bin/python tools/train_digits.py
"""
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
from sklearn.datasets import load_digits

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "fixtures", "digits")
C = 8  # conv channels


def im2col(x):
    """x [N,1,8,8] -> patches [N,64,9] for a 3x3 conv with padding 1."""
    n = x.shape[0]
    p = np.pad(x[:, 0], ((0, 0), (1, 1), (1, 1)))
    cols = np.empty((n, 8, 8, 9), dtype=x.dtype)
    for di in range(3):
        for dj in range(3):
            cols[:, :, :, di * 3 + dj] = p[:, di:di + 8, dj:dj + 8]
    return cols.reshape(n, 64, 9)


def forward(params, x):
    w, b, fw, fb = params
    cols = im2col(x)                                   # [N,64,9]
    conv = cols @ w.reshape(C, 9).T + b                # [N,64,C]
    relu = np.maximum(conv, 0)
    r = relu.reshape(-1, 4, 2, 4, 2, C)                # [N, i, di, j, dj, C]
    pooled = r.max(axis=(2, 4))                        # [N,4,4,C]
    flat = pooled.transpose(0, 3, 1, 2).reshape(-1, C * 16)  # NCHW flatten order
    logits = flat @ fw.T + fb
    return logits, (cols, conv, relu, r, pooled, flat)


def train():
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(y))
    test, tr = perm[:360], perm[360:]
    w = (rng.normal(0, 0.3, (C, 1, 3, 3))).astype(np.float32)
    b = np.zeros(C, np.float32)
    fw = (rng.normal(0, 0.1, (10, C * 16))).astype(np.float32)
    fb = np.zeros(10, np.float32)
    params = [w, b, fw, fb]
    lr = 0.1
    for epoch in range(40):
        order = rng.permutation(tr)
        for k in range(0, len(order), 32):
            idx = order[k:k + 32]
            xb, yb = x[idx], y[idx]
            logits, (cols, conv, relu, r, pooled, flat) = forward(params, xb)
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)                                  # dL/dlogits
            gfw = g.T @ flat
            gfb = g.sum(0)
            gflat = g @ params[2]
            gpooled = gflat.reshape(-1, C, 4, 4).transpose(0, 2, 3, 1)  # [N,4,4,C]
            mask = (r == pooled[:, :, None, :, None, :])
            mask = mask / mask.sum(axis=(2, 4), keepdims=True)
            grelu = (mask * gpooled[:, :, None, :, None, :]).reshape(relu.shape)
            gconv = grelu * (conv > 0)                    # [N,64,C]
            gw = np.einsum("npc,npk->ck", gconv, cols).reshape(C, 1, 3, 3)
            gb = gconv.sum((0, 1))
            for prm, gr in zip(params, [gw, gb, gfw, gfb]):
                prm -= lr * gr.astype(np.float32)
    logits, _ = forward(params, x[test])
    acc = float((logits.argmax(1) == y[test]).mean())
    return params, x[test], y[test], acc


def export(params, path):
    w, b, fw, fb = params
    n = helper.make_node
    g = helper.make_graph(
        [
            n("Conv", ["image", "conv.weight", "conv.bias"], ["conv_out"], name="conv", kernel_shape=[3, 3],
              pads=[1, 1, 1, 1]),
            n("Relu", ["conv_out"], ["relu_out"], name="relu"),
            n("MaxPool", ["relu_out"], ["pool_out"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
            n("Flatten", ["pool_out"], ["flat_out"], name="flatten", axis=1),
            n("Gemm", ["flat_out", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
        ],
        "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(a.astype(np.float32), nm) for a, nm in
         [(w, "conv.weight"), (b, "conv.bias"), (fw, "fc.weight"), (fb, "fc.bias")]],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx-rewrite-fixtures")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    onnx.save(m, path)


def main():
    os.makedirs(OUT, exist_ok=True)
    params, tx, ty, acc = train()
    export(params, os.path.join(OUT, "digits_cnn.onnx"))
    np.save(os.path.join(OUT, "test_x.npy"), tx.astype(np.float32))
    np.save(os.path.join(OUT, "test_y.npy"), ty.astype(np.int64))
    print(f"test accuracy {acc:.4f} on {len(ty)} images")


if __name__ == "__main__":
    main()
