#!/usr/bin/env python3
"""Independent references for the zoo tests (tests/zoo.rs), from PIL + onnxruntime + NumPy only.

For each zoo model (scripts/models/make_zoo.py: float32, float16, int8 QDQ, external data), with the preprocessing its preset stands for, fed the
way a torchvision user feeds a model (PIL 8-bit resize, then ToTensor/Normalize):
  - features of a few images of the image folder (the tests compare fastretrain's within 1e-4,
    or within the rounding of a float16 or int8 model), and the model's own outputs for them;
  - a NumPy ridge (bias column, ±1 targets, λ = 1) on the features of the whole train folder, and
    its accuracy on the test folder (fastretrain's `learn --lambda 1` + `eval` must be within
    0.5 point).
For the shipped MobileNetV2 and the 10 photos in tests/data/images:
  - features of each PNG with the 8-bit resize filter (`bilinear-antialias-u8`);
  - the model's own top-1 class of each photo, preprocessed as its shipped spec says
    (`predict --model` must agree).

  tests/data/zoo/reference.json

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/reference/make_zoo_reference.py
"""
import glob
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ZOO = os.path.join(ROOT, "tests/data/zoo")
LAMBDA = 1.0
FEATURE_SAMPLES = 4

# What each preset means, written out independently of the Rust code (docs/SPEC.md).
PRESETS = {
    "imagenet": dict(ratio=256 / 224, scale=1 / 255, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], bgr=False),
    "inception": dict(ratio=1 / 0.875, scale=1 / 255, mean=[0.5] * 3, std=[0.5] * 3, bgr=False),
    "raw255": dict(ratio=1.0, scale=1.0, mean=[0.0] * 3, std=[1.0] * 3, bgr=False),
    "unit": dict(ratio=1.0, scale=1 / 255, mean=[0.0] * 3, std=[1.0] * 3, bgr=False),
    "caffe": dict(ratio=256 / 224, scale=1.0, mean=[123.68, 116.779, 103.939], std=[1.0] * 3, bgr=True),
}


def session(path, tensor):
    proto = onnx.load(path)  # with its external data file, if it has one
    if tensor not in [o.name for o in proto.graph.output]:
        # In the type the graph computes it (float16 in a float16 model).
        inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
        elem = next((v.type.tensor_type.elem_type for v in inferred if v.name == tensor), onnx.TensorProto.FLOAT)
        proto.graph.output.append(onnx.helper.make_tensor_value_info(tensor, elem, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    if any(n.op_type == "QuantizeLinear" for n in proto.graph.node):
        # A QDQ model by the ONNX operators' definition (each QuantizeLinear and
        # DequantizeLinear computed as written). onnxruntime's optimised int8 kernels, which
        # it fuses the pairs into, approximate it: on keras_nhwc_int8 their features are up to
        # 0.18 from the definition's (measured 2026-12-07 on an x86 VM), while the
        # definition's are within 0.014 of the float32 model's.
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def folder(split):
    """(relative path, label) in the order fastretrain reads an image folder: sorted."""
    root = os.path.join(ZOO, "fashion", split)
    items = []
    for label in sorted(os.listdir(root)):
        for f in sorted(os.listdir(os.path.join(root, label))):
            items.append((os.path.join("fashion", split, label, f), label))
    return items


def zoo_model(name, info):
    model = os.path.join(ZOO, name + ".onnx")
    proto = onnx.load(model)
    dims = [d.dim_value or None for d in proto.graph.input[0].type.tensor_type.shape.dim]
    nhwc = dims[3] == 3
    size = info["size"] or (dims[1] if nhwc else dims[2])
    p = PRESETS[info["preset"]]
    spec = {"input": {"layout": "NHWC" if nhwc else "NCHW", "channels": "BGR" if p["bgr"] else "RGB"},
            "preprocess": {"resize_short_side": int(round(size * p["ratio"])), "crop": size,
                           "scale": p["scale"], "mean": p["mean"], "std": p["std"]}}
    sess = session(model, info["feature_tensor"])
    input_name = sess.get_inputs()[0].name
    output_name = sess.get_outputs()[0].name

    def features(items):
        out = []
        for rel, _ in items:
            x = ref.preprocess_u8(Image.open(os.path.join(ZOO, rel)), spec)
            f = sess.run([info["feature_tensor"]], {input_name: x[None]})[0]
            out.append(f.reshape(-1).astype(np.float64))
        return np.array(out, np.float64)

    train, test = folder("train"), folder("test")
    labels = sorted({l for _, l in train})
    xtr, xte = features(train), features(test)
    ytr = np.array([labels.index(l) for _, l in train])
    yte = np.array([labels.index(l) for _, l in test])
    w = ref.ridge(ref.with_bias(xtr), ref.targets(ytr, len(labels)), LAMBDA)
    accuracy = float((np.argmax(ref.with_bias(xte) @ w, axis=1) == yte).mean())
    print(f"{name}: {xtr.shape[1]} features, ridge λ={LAMBDA} test accuracy {accuracy:.4f}")
    # The model's own output (its head, in its own precision) for the same few images.
    outputs = {rel: sess.run([output_name], {input_name: ref.preprocess_u8(Image.open(os.path.join(ZOO, rel)), spec)[None]})[0]
               .reshape(-1).astype(np.float64).tolist() for rel, _ in train[:FEATURE_SAMPLES]}
    return {
        "size": int(size),
        "outputs": outputs,
        "lambda": LAMBDA,
        "test_accuracy": accuracy,
        "features": {rel: xtr[i].tolist() for i, (rel, _) in enumerate(train[:FEATURE_SAMPLES])},
    }


def photos():
    spec = ref.load_spec(os.path.join(ROOT, "models/mobilenetv2.json"))
    model = os.path.join(ROOT, "models/mobilenetv2.onnx")
    sess = session(model, "features")
    u8, top1 = {}, {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests/data/images/*"))):
        name = os.path.basename(path)
        img = Image.open(path)
        # The model's own classification, preprocessed as the shipped spec says (float filter).
        logits = sess.run(["output"], {"input": ref.preprocess(img, spec)[None]})[0]
        top1[name] = int(np.argmax(logits))
        if name.endswith(".png"):
            x = ref.preprocess_u8(img, spec)
            u8[name] = sess.run(["features"], {"input": x[None]})[0].reshape(-1).tolist()
    return {"u8_features": u8, "top1": top1}


def main():
    index = json.load(open(os.path.join(ZOO, "models.json")))
    out = {"models": {name: zoo_model(name, info) for name, info in index.items()},
           "mobilenetv2": photos()}
    with open(os.path.join(ZOO, "reference.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")
    print("wrote", os.path.join(ZOO, "reference.json"))


if __name__ == "__main__":
    main()
