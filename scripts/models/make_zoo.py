#!/usr/bin/env python3
"""A zoo of ONNX classifiers shaped the way today's exporters write them, and an image-folder
data set, for the "your own model" tests (tests/zoo.rs). Made with onnx.helper (no PyTorch or
TensorFlow needed: their wheels are gigabytes), each model reproducing the traits of one
exporter that a loader has to cope with:

  torch_dynamo_resnet.onnx  torch.onnx.export(..., dynamo=True), opset 18: input 'x' with a
                            symbolic batch 'batch', `value_info` for every tensor keeping that
                            symbolic batch, BatchNormalization nodes, a residual block,
                            GlobalAveragePool then a Shape/Concat/Reshape 'view' before the head
                            Gemm (transB=1), node names 'node_*'. ResNet family.
  torch_legacy_vgg.onnx     the legacy TorchScript exporter, opset 11: initializers also listed
                            as graph inputs, numbered tensor names, input 'input.1' with
                            dynamic_axes batch, MaxPool, Flatten, two dense layers (the features
                            are the hidden dense layer's output). VGG family.
  keras_nhwc.onnx           tf2onnx from Keras, opset 13: NHWC input 'input_1' ['unk__7', 32,
                            32, 3], a Transpose to NCHW, depthwise-separable convolutions with
                            Relu6 (Clip), ReduceMean pooling, a Dense head as MatMul + Add, then
                            Softmax. MobileNet family.
  dynamic_hw.onnx           a fully dynamic input ['N', 3, 'H', 'W'] (any image size), Gemm head
                            with the weight stored inputs × outputs (transB=0).

All at 32×32 (dynamic_hw: chosen with --size 32), 10 outputs, He-initialised weights from fixed
seeds (untrained: the tests check loading and numbers, not the model's quality).

Three of them again, as people shrink or split a model to carry it to a board:

  torch_dynamo_resnet_f16.onnx  onnxconverter-common's convert_float_to_float16(keep_io_types=
                                True): float16 weights and activations, float32 input and output
                                (Cast nodes at both ends), the head Gemm in float16.
  keras_nhwc_int8.onnx          onnxruntime.quantization.quantize_static, QDQ format, int8
                                weights per channel, uint8 activations, calibrated on 100 of the
                                training images (QuantizeLinear/DequantizeLinear pairs around
                                every convolution and the MatMul head).
  torch_legacy_vgg_external.onnx + torch_legacy_vgg_external.onnx.data
                                onnx.save(save_as_external_data=True): every weight of 1 KiB or
                                more in one side file, as PyTorch's exporter writes large models.

  tests/data/zoo/<model>.onnx
  tests/data/zoo/models.json            per model: preset, --size, feature tensor, dims
  tests/data/zoo/fashion/{train,test}/<label>/*.png   the first 50 / 30 images of each class of
                                        the shipped Fashion-MNIST subset (data/fashion-mnist),
                                        28×28 grey PNG, label names with '/' written as '-'

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/make_zoo.py   (then scripts/reference/make_zoo_reference.py)
"""
import json
import os
import shutil
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/zoo")
CLASSES = 10
TRAIN_PER_CLASS, TEST_PER_CLASS = 50, 30


class Builder:
    """Collects nodes and initializers; names tensors the way the exporter at hand does."""

    def __init__(self, seed, name_node):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.count = [], [], 0
        self.name_node = name_node

    def init(self, name, array):
        self.inits.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    def const_i64(self, name, values):
        self.inits.append(numpy_helper.from_array(np.asarray(values, np.int64), name))
        return name

    def node(self, op, inputs, output, **attrs):
        self.nodes.append(helper.make_node(op, inputs, [output], name=self.name_node(op, self.count), **attrs))
        self.count += 1
        return output

    def he(self, shape, fan_in):
        return self.rng.normal(size=shape) * np.sqrt(2.0 / fan_in)

    def conv(self, x, out, name, cin, cout, k=3, stride=1, groups=1, bias=True):
        w = self.init(f"{name}.weight", self.he((cout, cin // groups, k, k), cin // groups * k * k))
        inputs = [x, w]
        if bias:
            inputs.append(self.init(f"{name}.bias", self.rng.normal(size=cout) * 0.05))
        return self.node("Conv", inputs, out, kernel_shape=[k, k], strides=[stride, stride],
                         pads=[k // 2] * 4, group=groups)

    def bn(self, x, out, name, c):
        scale = self.init(f"{name}.weight", 1.0 + 0.1 * self.rng.normal(size=c))
        bias = self.init(f"{name}.bias", 0.1 * self.rng.normal(size=c))
        mean = self.init(f"{name}.running_mean", 0.1 * self.rng.normal(size=c))
        var = self.init(f"{name}.running_var", 1.0 + 0.1 * np.abs(self.rng.normal(size=c)))
        return self.node("BatchNormalization", [x, scale, bias, mean, var], out, epsilon=1e-5)


def dims_info(name, dims):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def torch_dynamo_resnet():
    b = Builder(11, lambda op, i: f"node_{op}_{i}")
    x = "x"
    h = b.conv(x, "conv2d", "conv1", 3, 16, bias=False)
    h = b.bn(h, "batch_norm", "bn1", 16)
    h = b.node("Relu", [h], "relu")
    r = b.conv(h, "conv2d_1", "layer1.0.conv1", 16, 16, bias=False)
    r = b.bn(r, "batch_norm_1", "layer1.0.bn1", 16)
    r = b.node("Relu", [r], "relu_1")
    r = b.conv(r, "conv2d_2", "layer1.0.conv2", 16, 16, bias=False)
    r = b.bn(r, "batch_norm_2", "layer1.0.bn2", 16)
    h = b.node("Add", [r, h], "add")
    h = b.node("Relu", [h], "relu_2")
    h = b.conv(h, "conv2d_3", "layer2.0.conv1", 16, 32, stride=2, bias=False)
    h = b.bn(h, "batch_norm_3", "layer2.0.bn1", 32)
    h = b.node("Relu", [h], "relu_3")
    h = b.node("GlobalAveragePool", [h], "adaptive_avg_pool2d")
    # x.view(x.size(0), -1) with a symbolic batch: the shape is computed in the graph.
    size0 = b.node("Shape", [h], "sym_size_int", start=0, end=1)
    shape = b.node("Concat", [size0, b.const_i64("val_neg1", [-1])], "val_shape", axis=0)
    h = b.node("Reshape", [h, shape], "view")
    w = b.init("fc.weight", b.he((CLASSES, 32), 32))
    bias = b.init("fc.bias", b.rng.normal(size=CLASSES) * 0.05)
    b.node("Gemm", [h, w, bias], "linear", transB=1)
    batch = "batch"
    value_info = [dims_info(n, [batch, c, s, s]) for n, c, s in
                  [("conv2d", 16, 32), ("batch_norm", 16, 32), ("relu", 16, 32), ("conv2d_1", 16, 32),
                   ("batch_norm_1", 16, 32), ("relu_1", 16, 32), ("conv2d_2", 16, 32),
                   ("batch_norm_2", 16, 32), ("add", 16, 32), ("relu_2", 16, 32), ("conv2d_3", 32, 16),
                   ("batch_norm_3", 32, 16), ("relu_3", 32, 16), ("adaptive_avg_pool2d", 32, 1)]]
    value_info.append(dims_info("view", [batch, 32]))
    value_info.append(helper.make_tensor_value_info("sym_size_int", TensorProto.INT64, [1]))
    value_info.append(helper.make_tensor_value_info("val_shape", TensorProto.INT64, [2]))
    graph = helper.make_graph(b.nodes, "main_graph", [dims_info(x, [batch, 3, 32, 32])],
                              [dims_info("linear", [batch, CLASSES])], b.inits, value_info=value_info)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)],
                          producer_name="pytorch", producer_version="2.15.0")
    m.ir_version = 10
    return m, {"preset": "imagenet", "size": None, "feature_tensor": "view", "feature_dim": 32}


def torch_legacy_vgg():
    counter = iter(range(1000))
    b = Builder(12, lambda op, i: f"{op}_{i}")

    def t():
        return str(next(counter) + 20)

    x = "input.1"
    h = b.conv(x, t(), "features.0", 3, 16)
    h = b.node("Relu", [h], t())
    h = b.conv(h, t(), "features.2", 16, 16)
    h = b.node("Relu", [h], t())
    h = b.node("MaxPool", [h], t(), kernel_shape=[2, 2], strides=[2, 2])
    h = b.conv(h, t(), "features.5", 16, 32)
    h = b.node("Relu", [h], t())
    h = b.node("MaxPool", [h], t(), kernel_shape=[2, 2], strides=[2, 2])
    h = b.node("Flatten", [h], t(), axis=1)
    w1 = b.init("classifier.0.weight", b.he((64, 32 * 8 * 8), 32 * 8 * 8))
    b1 = b.init("classifier.0.bias", b.rng.normal(size=64) * 0.05)
    h = b.node("Gemm", [h, w1, b1], t(), alpha=1.0, beta=1.0, transB=1)
    features = b.node("Relu", [h], t())
    w2 = b.init("classifier.2.weight", b.he((CLASSES, 64), 64))
    b2 = b.init("classifier.2.bias", b.rng.normal(size=CLASSES) * 0.05)
    b.node("Gemm", [features, w2, b2], "output", alpha=1.0, beta=1.0, transB=1)
    inputs = [dims_info(x, ["batch_size", 3, 32, 32])]
    # keep_initializers_as_inputs: every weight is a graph input too.
    inputs += [helper.make_tensor_value_info(i.name, TensorProto.FLOAT, list(i.dims)) for i in b.inits]
    graph = helper.make_graph(b.nodes, "torch_jit", inputs, [dims_info("output", ["batch_size", CLASSES])],
                              b.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)],
                          producer_name="pytorch", producer_version="1.13.1")
    m.ir_version = 6
    return m, {"preset": "imagenet", "size": None, "feature_tensor": features, "feature_dim": 64}


def keras_nhwc():
    b = Builder(13, lambda op, i: f"model/{op.lower()}_{i}")
    x = "input_1"
    h = b.node("Transpose", [x], "model/transpose_nchw", perm=[0, 3, 1, 2])
    six = b.init("model/relu6/max", 6.0)
    zero = b.init("model/relu6/min", 0.0)
    h = b.conv(h, "model/conv1/Conv2D", "model/conv1", 3, 16, stride=2)
    h = b.node("Clip", [h, zero, six], "model/conv1_relu/Relu6")
    h = b.conv(h, "model/dw1/depthwise", "model/dw1", 16, 16, groups=16)
    h = b.node("Clip", [h, zero, six], "model/dw1_relu/Relu6")
    h = b.conv(h, "model/pw1/Conv2D", "model/pw1", 16, 32, k=1)
    h = b.node("Clip", [h, zero, six], "model/pw1_relu/Relu6")
    h = b.conv(h, "model/dw2/depthwise", "model/dw2", 32, 32, stride=2, groups=32)
    h = b.node("Clip", [h, zero, six], "model/dw2_relu/Relu6")
    h = b.conv(h, "model/pw2/Conv2D", "model/pw2", 32, 48, k=1)
    h = b.node("Clip", [h, zero, six], "model/pw2_relu/Relu6")
    features = b.node("ReduceMean", [h], "model/global_average_pooling2d/Mean", axes=[2, 3], keepdims=0)
    w = b.init("model/dense/MatMul/ReadVariableOp:0", b.he((48, CLASSES), 48))
    bias = b.init("model/dense/BiasAdd/ReadVariableOp:0", b.rng.normal(size=CLASSES) * 0.05)
    h = b.node("MatMul", [features, w], "model/dense/MatMul:0")
    h = b.node("Add", [h, bias], "model/dense/BiasAdd:0")
    b.node("Softmax", [h], "dense", axis=-1)
    graph = helper.make_graph(b.nodes, "tf2onnx", [dims_info(x, ["unk__7", 32, 32, 3])],
                              [dims_info("dense", ["unk__8", CLASSES])], b.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                          producer_name="tf2onnx", producer_version="1.17.0")
    m.ir_version = 7
    return m, {"preset": "inception", "size": None, "feature_tensor": features, "feature_dim": 48}


def dynamic_hw():
    b = Builder(14, lambda op, i: f"{op.lower()}{i}")
    x = "images"
    h = b.conv(x, "c1", "c1", 3, 24, stride=2)
    h = b.node("Relu", [h], "r1")
    h = b.conv(h, "c2", "c2", 24, 40, stride=2)
    h = b.node("Relu", [h], "r2")
    h = b.node("GlobalAveragePool", [h], "gap")
    h = b.node("Flatten", [h], "pooled", axis=1)
    w = b.init("head.w", b.he((40, CLASSES), 40))  # inputs × outputs: transB = 0
    bias = b.init("head.b", b.rng.normal(size=CLASSES) * 0.05)
    b.node("Gemm", [h, w, bias], "logits")
    graph = helper.make_graph(b.nodes, "dynamic", [dims_info(x, ["N", 3, "H", "W"])],
                              [dims_info("logits", ["N", CLASSES])], b.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="onnx.helper")
    m.ir_version = 8
    return m, {"preset": "unit", "size": 32, "feature_tensor": "pooled", "feature_dim": 40}


MODELS = {"torch_dynamo_resnet": torch_dynamo_resnet, "torch_legacy_vgg": torch_legacy_vgg,
          "keras_nhwc": keras_nhwc, "dynamic_hw": dynamic_hw}


def to_float16(model):
    from onnxconverter_common import float16
    return float16.convert_float_to_float16(model, keep_io_types=True)


def to_int8(model, info):
    """Static QDQ quantization as onnxruntime documents it, calibrated on training images fed as
    the model's preset says (scripts/reference/make_zoo_reference.py writes the same spec)."""
    from onnxruntime import quantization as q
    import tempfile
    spec = {"input": {"layout": "NHWC", "channels": "RGB"},
            "preprocess": {"resize_short_side": int(round(32 / 0.875)), "crop": 32, "scale": 1 / 255,
                           "mean": [0.5] * 3, "std": [0.5] * 3}}
    assert info["preset"] == "inception"
    root = os.path.join(OUT, "fashion", "train")
    files = sorted(os.path.join(root, label, f) for label in sorted(os.listdir(root))
                   for f in sorted(os.listdir(os.path.join(root, label))))[::5]
    name = model.graph.input[0].name

    class Images(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: ref.preprocess_u8(Image.open(f), spec)[None]} for f in files])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f32.onnx"), os.path.join(tmp, "int8.onnx")
        onnx.save(model, src)
        q.quantize_static(src, dst, Images(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          weight_type=q.QuantType.QInt8, activation_type=q.QuantType.QUInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
        return onnx.load(dst)


# name: (the model it is made from, how, how it is saved)
VARIANTS = {
    "torch_dynamo_resnet_f16": ("torch_dynamo_resnet", lambda m, info: to_float16(m), False),
    "keras_nhwc_int8": ("keras_nhwc", to_int8, False),
    "torch_legacy_vgg_external": ("torch_legacy_vgg", lambda m, info: m, True),
}


def image_folder():
    names = [n.strip() for n in open(os.path.join(ROOT, "data/fashion-mnist/labels.txt")) if n.strip()]
    root = os.path.join(OUT, "fashion")
    shutil.rmtree(root, ignore_errors=True)
    for split, idx, per_class in (("train", "train", TRAIN_PER_CLASS), ("test", "t10k", TEST_PER_CLASS)):
        images = ref.read_idx(os.path.join(ROOT, f"data/fashion-mnist/{idx}-images-idx3-ubyte.gz"))
        labels = ref.read_idx(os.path.join(ROOT, f"data/fashion-mnist/{idx}-labels-idx1-ubyte.gz"))
        for c, name in enumerate(names):
            folder = os.path.join(root, split, name.replace("/", "-"))
            os.makedirs(folder)
            for n, i in enumerate(np.flatnonzero(labels == c)[:per_class]):
                Image.fromarray(images[i]).save(os.path.join(folder, f"{split}_{i:05d}.png"), optimize=True)


def main():
    os.makedirs(OUT, exist_ok=True)
    index = {}
    for name, make in MODELS.items():
        model, info = make()
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, os.path.join(OUT, name + ".onnx"))
        index[name] = info
    image_folder()
    for name, (base, make, external) in VARIANTS.items():
        model = make(onnx.load(os.path.join(OUT, base + ".onnx")), index[base])
        onnx.checker.check_model(model, full_check=True)
        path = os.path.join(OUT, name + ".onnx")
        for old in (path, path + ".data"):
            if os.path.exists(old):
                os.remove(old)
        onnx.save(model, path, save_as_external_data=external, all_tensors_to_one_file=True,
                  location=name + ".onnx.data", size_threshold=1024)
        index[name] = dict(index[base], made_from=base)
    with open(os.path.join(OUT, "models.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    print("wrote", ", ".join([*MODELS, *VARIANTS]), "and the image folder to", OUT)


if __name__ == "__main__":
    main()
