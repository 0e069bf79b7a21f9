#!/usr/bin/env python3
"""Tiny ONNX models for tests that need "another backbone" or "a model without a dense head".

tests/data/models/tiny_cnn.onnx     Conv(3->4, 3x3) Relu GlobalAveragePool Flatten Gemm(4->3), 16x16 input
tests/data/models/tiny_nohead.onnx  the same without the Gemm: no dense head to replace
tests/data/models/tiny_cnn_b.onnx   the same graph with other weights: "another backbone"
tests/data/models/tiny_nan.onnx     features = log(-1 - relu(.)): NaN for every input
Each gets a spec JSON beside it. Weights come from a fixed seed.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/models")


def model(with_head, seed=7, nan=False):
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "conv.w"),
             numpy_helper.from_array(rng.normal(size=4).astype(np.float32), "conv.b")]
    nodes = [helper.make_node("Conv", ["input", "conv.w", "conv.b"], ["c"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["flat" if nan else "features"], axis=1)]
    if nan:
        inits.append(numpy_helper.from_array(np.array(-1.0, np.float32), "minus_one"))
        nodes += [helper.make_node("Sub", ["minus_one", "flat"], ["negative"]),
                  helper.make_node("Log", ["negative"], ["features"])]
    out = "features"
    if with_head:
        inits += [numpy_helper.from_array(rng.normal(size=(3, 4)).astype(np.float32), "fc.w"),
                  numpy_helper.from_array(rng.normal(size=3).astype(np.float32), "fc.b")]
        nodes.append(helper.make_node("Gemm", ["features", "fc.w", "fc.b"], ["output"], transB=1))
        out = "output"
    graph = helper.make_graph(nodes, "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 16, 16])],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["batch", 3 if with_head else 4])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="fastretrain-tests")
    m.ir_version = 7
    onnx.checker.check_model(m)
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    variants = (("tiny_cnn", True, 7, False), ("tiny_nohead", False, 7, False),
                ("tiny_cnn_b", True, 8, False), ("tiny_nan", True, 7, True))
    for name, head, seed, nan in variants:
        onnx.save(model(head, seed, nan), os.path.join(OUT, name + ".onnx"))
        spec = {"name": name, "file": name + ".onnx",
                "input": {"name": "input", "layout": "NCHW", "channels": "RGB", "height": 16, "width": 16},
                "preprocess": {"resize_short_side": 16, "resize_filter": "bilinear-antialias", "crop": 16,
                               "scale": 1.0 / 255.0, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
                "feature_dim": 4}
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(spec, f, indent=2)
    print("wrote tiny models to", OUT)


if __name__ == "__main__":
    main()
