#!/usr/bin/env python3
"""Two models that are not fed images, and their data, for the tensor-sample tests
(tests/signal_zoo.rs). Made with onnx.helper and NumPy from fixed seeds (no PyTorch needed);
the data are synthetic but learnable, made the way an application computes its inputs:

  kws_conv1d.onnx   a keyword-spotting network on log-mel frames, as torch.onnx.export writes a
                    1-D CNN: input 'logmel' ['batch', 40, 98] (40 mel bands × 98 frames of 10 ms),
                    Conv1d 40→32 (k 3) + BatchNorm + Relu, Conv1d 32→64 (k 3, stride 2) + Relu,
                    GlobalAveragePool over time, Flatten, Gemm head (transB=1) to 6 keywords.
                    The features are the 64 pooled channels.
  imu_mlp.onnx      a gesture classifier on 6-axis IMU windows, as tf2onnx writes a Keras MLP:
                    input 'imu' ['unk__3', 50, 6] (50 samples × ax ay az gx gy gz, time major),
                    Reshape to 300, Dense 300→128 Relu, Dense 128→64 Relu, Dense 64→6 then
                    Softmax, each Dense a MatMul + Add. The features are the 64 hidden values.

  tests/data/signal/kws/{train,test}/<keyword>/*.npy   one log-mel frame set per file,
                    float16 (as a device stores them), shape (40, 98); 20 / 10 per keyword
  tests/data/signal/imu/train.npy       float32 (240, 50, 6); train-labels.npy int64 (240,)
                    numbering the gestures of labels.txt
  tests/data/signal/imu/test.npy        float32 (120, 50, 6); test-labels.txt, one gesture name
                    per line

Untrained, He-initialised weights: the tests check loading, the numbers against onnxruntime and
a NumPy ridge on onnxruntime's features (scripts/reference/make_signal_reference.py), not the
models' quality.

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/make_signal_zoo.py
       (then $PY scripts/reference/make_signal_reference.py)
"""
import os
import shutil

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/signal")
KEYWORDS = ["down", "go", "left", "no", "stop", "yes"]
GESTURES = ["circle", "flick", "idle", "shake", "tap", "wave"]
MELS, FRAMES = 40, 98
STEPS, AXES = 50, 6


def he(rng, shape, fan_in):
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


def kws_model(path):
    rng = np.random.default_rng(36)
    inits = []

    def init(name, value):
        inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    w1 = init("conv1.weight", he(rng, (32, MELS, 3), MELS * 3))
    b1 = init("conv1.bias", 0.1 * rng.standard_normal(32))
    scale = init("bn1.weight", 1.0 + 0.1 * rng.standard_normal(32))
    bias = init("bn1.bias", 0.1 * rng.standard_normal(32))
    mean = init("bn1.running_mean", 0.1 * rng.standard_normal(32))
    var = init("bn1.running_var", 1.0 + 0.2 * rng.random(32))
    w2 = init("conv2.weight", he(rng, (64, 32, 3), 32 * 3))
    b2 = init("conv2.bias", 0.1 * rng.standard_normal(64))
    wf = init("fc.weight", he(rng, (len(KEYWORDS), 64), 64))
    bf = init("fc.bias", np.zeros(len(KEYWORDS)))
    nodes = [
        helper.make_node("Conv", ["logmel", w1, b1], ["conv1"], name="node_conv1", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("BatchNormalization", ["conv1", scale, bias, mean, var], ["bn1"], name="node_bn1"),
        helper.make_node("Relu", ["bn1"], ["relu1"], name="node_relu1"),
        helper.make_node("Conv", ["relu1", w2, b2], ["conv2"], name="node_conv2", kernel_shape=[3], pads=[1, 1],
                         strides=[2]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="node_relu2"),
        helper.make_node("GlobalAveragePool", ["relu2"], ["pool"], name="node_pool"),
        helper.make_node("Flatten", ["pool"], ["flatten"], name="node_flatten", axis=1),
        helper.make_node("Gemm", ["flatten", wf, bf], ["logits"], name="node_fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "kws_conv1d",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["batch", MELS, FRAMES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", len(KEYWORDS)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="pytorch",
                              producer_version="2.11.0")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def imu_model(path):
    rng = np.random.default_rng(37)
    inits = []

    def init(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    shape = init("const_fold_opt__8", [-1, STEPS * AXES], np.int64)
    w1 = init("sequential/dense/MatMul/ReadVariableOp:0", he(rng, (STEPS * AXES, 128), STEPS * AXES))
    b1 = init("sequential/dense/BiasAdd/ReadVariableOp:0", 0.05 * rng.standard_normal(128))
    w2 = init("sequential/dense_1/MatMul/ReadVariableOp:0", he(rng, (128, 64), 128))
    b2 = init("sequential/dense_1/BiasAdd/ReadVariableOp:0", 0.05 * rng.standard_normal(64))
    w3 = init("sequential/dense_2/MatMul/ReadVariableOp:0", he(rng, (64, len(GESTURES)), 64))
    b3 = init("sequential/dense_2/BiasAdd/ReadVariableOp:0", np.zeros(len(GESTURES)))
    nodes = [
        helper.make_node("Reshape", ["imu", shape], ["sequential/flatten/Reshape:0"], name="sequential/flatten/Reshape"),
        helper.make_node("MatMul", ["sequential/flatten/Reshape:0", w1], ["sequential/dense/MatMul:0"],
                         name="sequential/dense/MatMul"),
        helper.make_node("Add", ["sequential/dense/MatMul:0", b1], ["sequential/dense/BiasAdd:0"],
                         name="sequential/dense/BiasAdd"),
        helper.make_node("Relu", ["sequential/dense/BiasAdd:0"], ["sequential/dense/Relu:0"],
                         name="sequential/dense/Relu"),
        helper.make_node("MatMul", ["sequential/dense/Relu:0", w2], ["sequential/dense_1/MatMul:0"],
                         name="sequential/dense_1/MatMul"),
        helper.make_node("Add", ["sequential/dense_1/MatMul:0", b2], ["sequential/dense_1/BiasAdd:0"],
                         name="sequential/dense_1/BiasAdd"),
        helper.make_node("Relu", ["sequential/dense_1/BiasAdd:0"], ["sequential/dense_1/Relu:0"],
                         name="sequential/dense_1/Relu"),
        helper.make_node("MatMul", ["sequential/dense_1/Relu:0", w3], ["sequential/dense_2/MatMul:0"],
                         name="sequential/dense_2/MatMul"),
        helper.make_node("Add", ["sequential/dense_2/MatMul:0", b3], ["sequential/dense_2/BiasAdd:0"],
                         name="sequential/dense_2/BiasAdd"),
        helper.make_node("Softmax", ["sequential/dense_2/BiasAdd:0"], ["dense_2"], name="sequential/dense_2/Softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tf2onnx",
        [helper.make_tensor_value_info("imu", TensorProto.FLOAT, ["unk__3", STEPS, AXES])],
        [helper.make_tensor_value_info("dense_2", TensorProto.FLOAT, ["unk__4", len(GESTURES)])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx",
                              producer_version="1.16.1")
    model.ir_version = 7
    onnx.checker.check_model(model)
    onnx.save(model, path)


def log_mel(rng, word):
    """A spoken-word-like log-mel image: two formant tracks whose start, slope and timing depend
    on the keyword, with jitter in pitch, timing and loudness, over background noise."""
    k = KEYWORDS.index(word)
    t = np.arange(FRAMES)
    start = 20 + int(rng.integers(-6, 7))
    length = 45 + int(rng.integers(-8, 9))
    on = (t >= start) & (t < start + length)
    phase = np.clip((t - start) / length, 0, 1)
    bands = np.arange(MELS)[:, None]
    image = rng.normal(-4.0, 0.6, (MELS, FRAMES))
    shift = rng.normal(0, 1.0)
    for base, slope, width in [(6 + 3 * k, (-1) ** k * (4 + k), 2.0), (22 + (5 * k) % 14, 3 - k, 2.5)]:
        centre = base + shift + slope * phase
        energy = np.exp(-0.5 * ((bands - centre) / width) ** 2) * (3.0 + rng.normal(0, 0.4))
        image += energy * on
    return image.astype(np.float16)


def imu_window(rng, gesture):
    """A gesture window: axis patterns (frequency, amplitude, which axes) per gesture, with
    random amplitude, timing jitter, sensor bias and noise."""
    g = GESTURES.index(gesture)
    t = np.arange(STEPS) / 50.0  # 50 Hz
    x = rng.normal(0, 0.15, (STEPS, AXES)) + rng.normal(0, 0.05, AXES)
    x[:, 2] += 1.0  # gravity on z
    amp = 1.0 + rng.normal(0, 0.15)
    lag = rng.uniform(0, 0.04)
    if gesture == "circle":
        x[:, 0] += amp * np.sin(2 * np.pi * 1.0 * (t - lag))
        x[:, 1] += amp * np.cos(2 * np.pi * 1.0 * (t - lag))
    elif gesture == "flick":
        x[:, 3] += 3 * amp * np.exp(-((t - 0.5 - lag) / 0.05) ** 2)
    elif gesture == "shake":
        x[:, 0] += amp * np.sin(2 * np.pi * 6.0 * (t - lag))
    elif gesture == "tap":
        x[:, 2] += 2 * amp * np.exp(-((t - 0.3 - lag) / 0.03) ** 2)
    elif gesture == "wave":
        x[:, 4] += amp * np.sin(2 * np.pi * 2.0 * (t - lag))
        x[:, 5] += 0.5 * amp * np.sin(2 * np.pi * 2.0 * (t - lag) + 1.0)
    assert g >= 0
    return x.astype(np.float32)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    kws_model(os.path.join(OUT, "kws_conv1d.onnx"))
    imu_model(os.path.join(OUT, "imu_mlp.onnx"))
    rng = np.random.default_rng(2026)
    for split, per in [("train", 20), ("test", 10)]:
        for word in KEYWORDS:
            folder = os.path.join(OUT, "kws", split, word)
            os.makedirs(folder)
            for i in range(per):
                np.save(os.path.join(folder, f"{word}_{i:02d}.npy"), log_mel(rng, word))
    imu = os.path.join(OUT, "imu")
    os.makedirs(imu)
    with open(os.path.join(imu, "labels.txt"), "w") as f:
        f.write("\n".join(GESTURES) + "\n")
    for split, per in [("train", 40), ("test", 20)]:
        labels = np.array([g for g in range(len(GESTURES)) for _ in range(per)], np.int64)
        rng.shuffle(labels)
        windows = np.stack([imu_window(rng, GESTURES[g]) for g in labels])
        np.save(os.path.join(imu, f"{split}.npy"), windows)
        if split == "train":
            np.save(os.path.join(imu, "train-labels.npy"), labels)
        else:
            with open(os.path.join(imu, "test-labels.txt"), "w") as f:
                f.write("\n".join(GESTURES[g] for g in labels) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
