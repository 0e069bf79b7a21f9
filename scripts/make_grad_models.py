#!/usr/bin/env python3
"""Small ONNX models for the training interpreter's gradient checks (tests/train_gradients.rs).

Each covers some of the ops `fastretrain retrain` supports; together they cover all of them:
  grad_conv.onnx       Conv(3->4, 3x3, stride 2, pad 1, bias) Relu GlobalAveragePool Flatten
                       Gemm(transB=1)
  grad_depthwise.onnx  Conv(3->6, 1x1) Conv(6->6, 3x3, group 6, pad 1, dilation 1) Clip(0, 6)
                       GlobalAveragePool Flatten Gemm(transB=0, alpha 0.5, beta 2)
  grad_bn.onnx         Conv(3->4, 3x3, pad 1, no bias) BatchNormalization Relu
                       GlobalAveragePool Flatten Gemm
  grad_residual.onnx   Conv(3->4, 3x3, pad 1) + Conv(3->4, 1x1) -> Add MaxPool(2x2, stride 2)
                       Clip(opset-13 bounds -1, 1) GlobalAveragePool Flatten Gemm
  unsupported_op.onnx  Conv then Sigmoid: `retrain` must refuse it naming the op and the node
Input 2x3x8x8 (batch dim symbolic); weights from a fixed seed. Each gets a spec JSON beside it.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests/data/models")
CLASSES = 4


class Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.inits = []
        self.nodes = []

    def weight(self, name, shape, scale=0.5):
        self.inits.append(numpy_helper.from_array(
            (self.rng.normal(size=shape) * scale).astype(np.float32), name))
        return name

    def const(self, name, value):
        self.inits.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=f"{op.lower()}_{output}",
                                           **attrs))
        return output

    def head(self, x, width, trans_b=1, **attrs):
        p = self.node("GlobalAveragePool", [x], "pooled")
        f = self.node("Flatten", [p], "features", axis=1)
        shape = (CLASSES, width) if trans_b else (width, CLASSES)
        return self.node("Gemm", [f, self.weight("fc.w", shape), self.weight("fc.b", CLASSES)],
                         "output", transB=trans_b, **attrs)

    def save(self, name):
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 8, 8])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.checker.check_model(m)
        path = os.path.join(OUT, f"{name}.onnx")
        onnx.save(m, path)
        spec = {
            "name": f"gradient-check model {name}", "file": f"{name}.onnx",
            "input": {"name": "input", "layout": "NCHW", "channels": "RGB", "height": 8,
                      "width": 8},
            "preprocess": {"resize_short_side": 8, "resize_filter": "bilinear-antialias",
                           "crop": 8, "scale": 1 / 255, "mean": [0.5, 0.5, 0.5],
                           "std": [0.25, 0.25, 0.25]},
            "feature_tensor": "features",
        }
        with open(os.path.join(OUT, f"{name}.json"), "w") as f:
            json.dump(spec, f, indent=2)
            f.write("\n")
        print(path)


def main():
    b = Builder(11)
    c = b.node("Conv", ["input", b.weight("c1.w", (4, 3, 3, 3)), b.weight("c1.b", 4)], "c1",
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    b.head(b.node("Relu", [c], "r1"), 4)
    b.save("grad_conv")

    b = Builder(12)
    c = b.node("Conv", ["input", b.weight("pw.w", (6, 3, 1, 1)), b.weight("pw.b", 6)], "pw",
               kernel_shape=[1, 1])
    c = b.node("Conv", [c, b.weight("dw.w", (6, 1, 3, 3)), b.weight("dw.b", 6)], "dw",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=6)
    c = b.node("Clip", [c, b.const("lo", 0.0), b.const("hi", 6.0)], "clipped")
    b.head(c, 6, trans_b=0, alpha=0.5, beta=2.0)
    b.save("grad_depthwise")

    b = Builder(13)
    c = b.node("Conv", ["input", b.weight("c.w", (4, 3, 3, 3))], "c", kernel_shape=[3, 3],
               pads=[1, 1, 1, 1])
    bn = b.node("BatchNormalization",
                [c, b.weight("bn.scale", 4), b.weight("bn.bias", 4), b.weight("bn.mean", 4),
                 b.const("bn.var", [1.5, 0.7, 2.0, 1.1])], "bn", epsilon=1e-5, momentum=0.9)
    b.head(b.node("Relu", [bn], "r"), 4)
    b.save("grad_bn")

    b = Builder(14)
    a = b.node("Conv", ["input", b.weight("a.w", (4, 3, 3, 3)), b.weight("a.b", 4)], "a",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    s = b.node("Conv", ["input", b.weight("s.w", (4, 3, 1, 1)), b.weight("s.b", 4)], "s",
               kernel_shape=[1, 1])
    x = b.node("Add", [a, s], "sum")
    x = b.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("Clip", [x, b.const("lo", -1.0), b.const("hi", 1.0)], "clipped")
    b.head(x, 4)
    b.save("grad_residual")

    b = Builder(15)
    c = b.node("Conv", ["input", b.weight("c.w", (4, 3, 3, 3)), b.weight("c.b", 4)], "c",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    b.head(b.node("Sigmoid", [c], "sig"), 4)
    b.save("unsupported_op")


if __name__ == "__main__":
    main()
