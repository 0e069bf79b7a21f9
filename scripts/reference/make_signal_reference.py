#!/usr/bin/env python3
"""Independent references for the tensor-sample tests (tests/signal_zoo.rs), from onnxruntime and
NumPy only: for each model of scripts/models/make_signal_zoo.py, fed its samples as they are
stored (float16 log-mel files widened to float32, float32 IMU windows):
  - the features of the first few training samples (fastretrain's within 1e-4);
  - a NumPy ridge (bias column, ±1 targets, λ = 1) on the features of the whole training set
    and its accuracy on the test set (fastretrain's `learn --lambda 1` + `eval` within 0.5 pt).

  tests/data/signal/reference.json

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/reference/make_signal_reference.py
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIGNAL = os.path.join(ROOT, "tests/data/signal")
LAMBDA = 1.0
FEATURE_SAMPLES = 4
# The input of each model's last dense layer (what `spec --preset tensor` finds).
FEATURES = {"kws_conv1d": "flatten", "imu_mlp": "sequential/dense_1/Relu:0"}


def session(name):
    proto = onnx.load(os.path.join(SIGNAL, name + ".onnx"))
    proto.graph.output.append(onnx.helper.make_tensor_value_info(FEATURES[name], onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def kws_split(split):
    """(relative path, label, sample) in the order fastretrain reads a folder: sorted."""
    root = os.path.join(SIGNAL, "kws", split)
    items = []
    for label in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, label))):
            rel = os.path.join("kws", split, label, f)
            items.append((rel, label, np.load(os.path.join(SIGNAL, rel)).astype(np.float32)))
    return items


def imu_split(split):
    names = open(os.path.join(SIGNAL, "imu/labels.txt")).read().split()
    x = np.load(os.path.join(SIGNAL, f"imu/{split}.npy"))
    if split == "train":
        labels = [names[i] for i in np.load(os.path.join(SIGNAL, "imu/train-labels.npy"))]
    else:
        labels = open(os.path.join(SIGNAL, "imu/test-labels.txt")).read().split("\n")[: len(x)]
    return [(f"imu/{split}.npy#{i}", labels[i], x[i]) for i in range(len(x))]


def model_reference(name, train, test):
    sess = session(name)
    input_name = sess.get_inputs()[0].name

    def features(items):
        return np.array([sess.run([FEATURES[name]], {input_name: x[None]})[0].reshape(-1) for _, _, x in items],
                        np.float64)

    labels = sorted({l for _, l, _ in train})
    xtr, xte = features(train), features(test)
    ytr = np.array([labels.index(l) for _, l, _ in train])
    yte = np.array([labels.index(l) for _, l, _ in test])
    w = ref.ridge(ref.with_bias(xtr), ref.targets(ytr, len(labels)), LAMBDA)
    accuracy = float((np.argmax(ref.with_bias(xte) @ w, axis=1) == yte).mean())
    print(f"{name}: {xtr.shape[1]} features, ridge λ={LAMBDA} test accuracy {accuracy:.4f}")
    return {
        "feature_tensor": FEATURES[name],
        "feature_dim": int(xtr.shape[1]),
        "lambda": LAMBDA,
        "test_accuracy": accuracy,
        "features": {rel: xtr[i].tolist() for i, (rel, _, _) in enumerate(train[:FEATURE_SAMPLES])},
    }


def main():
    out = {"models": {
        "kws_conv1d": model_reference("kws_conv1d", kws_split("train"), kws_split("test")),
        "imu_mlp": model_reference("imu_mlp", imu_split("train"), imu_split("test")),
    }}
    with open(os.path.join(SIGNAL, "reference.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote", os.path.join(SIGNAL, "reference.json"))


if __name__ == "__main__":
    main()
