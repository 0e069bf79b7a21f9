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
  grad_silu_se.onnx    opset 11 (attribute forms): Conv, SiLU (Sigmoid * Mul), Split(split
                       attribute), Conv on one part, Concat, squeeze-excitation
                       (GlobalAveragePool Conv Relu Conv Sigmoid, broadcast Mul), Tanh,
                       ReduceMean(axes attribute), Squeeze(axes attribute), Dropout, Gemm.
                       EfficientNet / RegNet family
  grad_hard.onnx       opset 18 (input forms): Conv(stride 2) HardSwish, depthwise Conv,
                       squeeze-excitation gated by HardSigmoid (ReduceMean with an axes input),
                       Pad(pads and value inputs), AveragePool(3x3, stride 2, pad 1, without
                       the pads), Conv + BatchNormalization LeakyRelu, GlobalMaxPool, the
                       dynamo `view` (Shape Gather Cast Unsqueeze Concat Reshape), two dense
                       layers with a HardSwish between (features = its output), Cast to float.
                       MobileNetV3 family
  grad_shuffle.onnx    opset 13: Conv Relu, Split(split input), depthwise Conv, Concat, the
                       channel shuffle (Reshape to 5-d, Transpose, Reshape with 0 and -1),
                       Slice(axes and a step of 2), MaxPool, GlobalAveragePool Flatten, a
                       MatMul + Add head, Softmax then Identity at the output. ShuffleNetV2
  grad_nhwc.onnx       opset 13, as tf2onnx writes Keras: NHWC input, Sub and Div by per-channel
                       constants, Transpose to NCHW, Conv LeakyRelu, ReduceMean(keepdims 0),
                       MatMul + Add, Softmax
  unsupported_op.onnx  Conv then LRN: `retrain` must refuse it naming the op and the node
Input 2x3x8x8 (2x8x8x3 for grad_nhwc; batch dim symbolic); weights from a fixed seed. Each gets
a spec JSON beside it.
"""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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

    def const(self, name, value, dtype=np.float32):
        self.inits.append(numpy_helper.from_array(np.array(value, dtype), name))
        return name

    def ints(self, name, value):
        return self.const(name, value, np.int64)

    def node(self, op, inputs, output, **attrs):
        outputs = output if isinstance(output, list) else [output]
        self.nodes.append(helper.make_node(op, inputs, outputs,
                                           name=f"{op.lower()}_{outputs[0]}", **attrs))
        return output

    def dense(self, x, inputs, name, output, width=CLASSES):
        """Gemm(transB=1) of `inputs` -> `width` with weights `name`.w and `name`.b."""
        return self.node("Gemm", [x, self.weight(f"{name}.w", (width, inputs)),
                                  self.weight(f"{name}.b", width)], output, transB=1)

    def head(self, x, width, trans_b=1, **attrs):
        p = self.node("GlobalAveragePool", [x], "pooled")
        f = self.node("Flatten", [p], "features", axis=1)
        shape = (CLASSES, width) if trans_b else (width, CLASSES)
        return self.node("Gemm", [f, self.weight("fc.w", shape), self.weight("fc.b", CLASSES)],
                         "output", transB=trans_b, **attrs)

    def save(self, name, opset=13, layout="NCHW"):
        shape = ["batch", 3, 8, 8] if layout == "NCHW" else ["batch", 8, 8, 3]
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", CLASSES])],
            self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.checker.check_model(m)
        path = os.path.join(OUT, f"{name}.onnx")
        onnx.save(m, path)
        spec = {
            "name": f"gradient-check model {name}", "file": f"{name}.onnx",
            "input": {"name": "input", "layout": layout, "channels": "RGB", "height": 8,
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
    b.head(b.node("LRN", [c], "lrn", size=3), 4)
    b.save("unsupported_op")

    silu_se()
    hard()
    shuffle()
    nhwc()


def silu_se():
    b = Builder(16)
    c = b.node("Conv", ["input", b.weight("c1.w", (8, 3, 3, 3)), b.weight("c1.b", 8)], "c1",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.node("Mul", [c, b.node("Sigmoid", [c], "gate")], "silu")
    p1, p2 = b.node("Split", [x], ["part1", "part2"], axis=1, split=[3, 5])
    p2 = b.node("Conv", [p2, b.weight("c2.w", (3, 5, 1, 1)), b.weight("c2.b", 3)], "c2",
                kernel_shape=[1, 1])
    x = b.node("Concat", [p1, p2], "joined", axis=1)
    g = b.node("GlobalAveragePool", [x], "se_pool")
    g = b.node("Conv", [g, b.weight("se1.w", (2, 6, 1, 1)), b.weight("se1.b", 2)], "se1",
               kernel_shape=[1, 1])
    g = b.node("Relu", [g], "se_relu")
    g = b.node("Conv", [g, b.weight("se2.w", (6, 2, 1, 1)), b.weight("se2.b", 6)], "se2",
               kernel_shape=[1, 1])
    x = b.node("Mul", [x, b.node("Sigmoid", [g], "se_gate")], "excited")
    x = b.node("Tanh", [x], "tanh")
    x = b.node("ReduceMean", [x], "mean", axes=[2, 3], keepdims=1)
    x = b.node("Squeeze", [x], "squeezed", axes=[2, 3])
    b.dense(b.node("Dropout", [x], "features"), 6, "fc", "output")
    b.save("grad_silu_se", opset=11)


def hard():
    b = Builder(17)
    c = b.node("Conv", ["input", b.weight("c1.w", (6, 3, 3, 3)), b.weight("c1.b", 6)], "c1",
               kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    x = b.node("HardSwish", [c], "hs1")
    x = b.node("Conv", [x, b.weight("dw.w", (6, 1, 3, 3)), b.weight("dw.b", 6)], "dw",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=6)
    g = b.node("ReduceMean", [x, b.ints("hw", [2, 3])], "se_pool", keepdims=1)
    g = b.node("Conv", [g, b.weight("se1.w", (3, 6, 1, 1)), b.weight("se1.b", 3)], "se1",
               kernel_shape=[1, 1])
    g = b.node("Relu", [g], "se_relu")
    g = b.node("Conv", [g, b.weight("se2.w", (6, 3, 1, 1)), b.weight("se2.b", 6)], "se2",
               kernel_shape=[1, 1])
    g = b.node("HardSigmoid", [g], "se_gate", alpha=1 / 6, beta=0.5)
    x = b.node("Mul", [x, g], "excited")
    x = b.node("Pad", [x, b.ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]), b.const("zero", 0.0)],
               "padded", mode="constant")
    x = b.node("AveragePool", [x], "avg", kernel_shape=[3, 3], strides=[2, 2],
               pads=[1, 1, 1, 1], count_include_pad=0)
    x = b.node("Conv", [x, b.weight("c2.w", (8, 6, 1, 1))], "c2", kernel_shape=[1, 1])
    x = b.node("BatchNormalization",
               [x, b.weight("bn.scale", 8), b.weight("bn.bias", 8), b.weight("bn.mean", 8),
                b.const("bn.var", [1.5, 0.7, 2.0, 1.1, 0.9, 1.3, 0.8, 1.7])], "bn",
               epsilon=1e-5, momentum=0.9)
    x = b.node("LeakyRelu", [x], "leaky", alpha=0.1)
    x = b.node("GlobalMaxPool", [x], "gmp")
    # torch's x.view(x.size(0), -1) as the dynamo exporter writes it.
    n = b.node("Gather", [b.node("Shape", [x], "shape"), b.ints("zero_index", 0)], "batch",
               axis=0)
    n = b.node("Cast", [n], "batch64", to=TensorProto.INT64)
    n = b.node("Unsqueeze", [n, b.ints("axis0", [0])], "batch1")
    target = b.node("Concat", [n, b.ints("minus1", [-1])], "target", axis=0)
    x = b.node("Reshape", [x, target], "flat")
    x = b.node("HardSwish", [b.dense(x, 8, "fc1", "hidden", width=5)], "hs2")
    b.dense(b.node("Cast", [x], "features", to=TensorProto.FLOAT), 5, "fc2", "output")
    b.save("grad_hard", opset=18)


def shuffle():
    b = Builder(18)
    c = b.node("Conv", ["input", b.weight("c1.w", (8, 3, 3, 3)), b.weight("c1.b", 8)], "c1",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.node("Relu", [c], "r1")
    p1, p2 = b.node("Split", [x, b.ints("halves", [4, 4])], ["left", "right"], axis=1)
    p2 = b.node("Conv", [p2, b.weight("dw.w", (4, 1, 3, 3)), b.weight("dw.b", 4)], "dw",
                kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=4)
    p2 = b.node("Relu", [p2], "r2")
    x = b.node("Concat", [p1, p2], "joined", axis=1)
    x = b.node("Reshape", [x, b.ints("groups", [0, 2, 4, 8, 8])], "grouped")
    x = b.node("Transpose", [x], "swapped", perm=[0, 2, 1, 3, 4])
    x = b.node("Reshape", [x, b.ints("merged", [0, -1, 8, 8])], "shuffled")
    x = b.node("Slice", [x, b.ints("starts", [0, 0]), b.ints("ends", [6, 8]),
                         b.ints("axes", [1, 3]), b.ints("steps", [1, 2])], "sliced")
    x = b.node("MaxPool", [x], "pool", kernel_shape=[2, 2], strides=[2, 2])
    x = b.node("GlobalAveragePool", [x], "pooled")
    x = b.node("Flatten", [x], "features", axis=1)
    x = b.node("MatMul", [x, b.weight("fc.w", (6, CLASSES))], "product")
    x = b.node("Add", [x, b.weight("fc.b", CLASSES)], "logits")
    x = b.node("Softmax", [x], "probabilities", axis=1)
    b.node("Identity", [x], "output")
    b.save("grad_shuffle", opset=13)


def nhwc():
    b = Builder(19)
    x = b.node("Sub", ["input", b.const("mean", [0.1, -0.2, 0.3])], "centred")
    x = b.node("Div", [x, b.const("std", [0.9, 1.2, 0.7])], "scaled")
    x = b.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    x = b.node("Conv", [x, b.weight("c.w", (4, 3, 3, 3)), b.weight("c.b", 4)], "c",
               kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    x = b.node("LeakyRelu", [x], "leaky", alpha=0.2)
    x = b.node("ReduceMean", [x], "features", axes=[2, 3], keepdims=0)
    x = b.node("MatMul", [x, b.weight("dense.w", (4, CLASSES))], "product")
    x = b.node("Add", [x, b.weight("dense.b", CLASSES)], "logits")
    b.node("Softmax", [x], "output", axis=-1)
    b.save("grad_nhwc", opset=13, layout="NHWC")


if __name__ == "__main__":
    main()
