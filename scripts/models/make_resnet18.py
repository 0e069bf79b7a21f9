#!/usr/bin/env python3
"""A full-size ResNet-18 (torchvision's layout: 7×7 stem, max pool, four stages of two basic
blocks with BatchNormalization and 1×1 downsampling shortcuts, global average pool, a 1000-way
Gemm; 11.7 M parameters, ~45 MB) as ONNX, with seeded He-initialised weights: the second model
family of scripts/bench/footprint.sh. Memory and speed depend on the shapes, not on the weights'
values, so no pretrained file (none is in a registry) is needed; its accuracy means nothing.

Usage: scripts/models/make_resnet18.py OUT.onnx   (then `fastretrain spec --model OUT.onnx --preset imagenet`)
"""
import os
import sys

import onnx
from onnx import helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_zoo import Builder, dims_info  # noqa: E402


def resnet18():
    b = Builder(18, lambda op, i: f"/{op}_{i}")
    h = b.conv("input", "stem.conv", "conv1", 3, 64, k=7, stride=2, bias=False)
    h = b.bn(h, "stem.bn", "bn1", 64)
    h = b.node("Relu", [h], "stem.relu")
    h = b.node("MaxPool", [h], "stem.pool", kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate([64, 128, 256, 512], start=1):
        for block in range(2):
            name = f"layer{stage}.{block}"
            stride = 2 if stage > 1 and block == 0 else 1
            r = b.conv(h, f"{name}.conv1.out", f"{name}.conv1", cin, cout, stride=stride, bias=False)
            r = b.bn(r, f"{name}.bn1.out", f"{name}.bn1", cout)
            r = b.node("Relu", [r], f"{name}.relu1")
            r = b.conv(r, f"{name}.conv2.out", f"{name}.conv2", cout, cout, bias=False)
            r = b.bn(r, f"{name}.bn2.out", f"{name}.bn2", cout)
            shortcut = h
            if stride != 1 or cin != cout:
                shortcut = b.conv(h, f"{name}.down.out", f"{name}.downsample.0", cin, cout, k=1,
                                  stride=stride, bias=False)
                shortcut = b.bn(shortcut, f"{name}.down.bn", f"{name}.downsample.1", cout)
            h = b.node("Add", [r, shortcut], f"{name}.add")
            h = b.node("Relu", [h], f"{name}.out")
            cin = cout
    h = b.node("GlobalAveragePool", [h], "pool")
    h = b.node("Flatten", [h], "features", axis=1)
    w = b.init("fc.weight", b.he((1000, 512), 512))
    bias = b.init("fc.bias", b.rng.normal(size=1000) * 0.05)
    b.node("Gemm", [h, w, bias], "logits", transB=1)
    graph = helper.make_graph(b.nodes, "resnet18", [dims_info("input", ["batch", 3, 224, 224])],
                              [dims_info("logits", ["batch", 1000])], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fastretrain scripts/models/make_resnet18.py")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    onnx.save(resnet18(), sys.argv[1])
