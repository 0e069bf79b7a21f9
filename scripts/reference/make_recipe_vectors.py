#!/usr/bin/env python3
"""Independent references for feature recipes (tests/recipe_reference.rs), from PIL +
onnxruntime + NumPy only, never from fastretrain.

For the shipped MobileNetV2 (its spec's float resize filter) and the 8 PNG photos in
tests/data/images, with the tensors of the automatic recipe (the penultimate `features` and the
outputs of the last four stages, docs/SPEC.md):
  - `raw`: each tensor global-average-pooled (mean over H, W in float64), concatenated;
  - for the first 3 photos, `ssqrt` (sign(x)·sqrt|x|), `ssqrt_l2` (then divided by its norm) and
    `ssqrt_tta` (the mean of ssqrt of the photo's features and of its mirror's: the model's input
    tensor reversed along its width, as `--tta hflip` and `--augment hflip` mirror).
For the zoo's Keras model (tf2onnx, NHWC input) a 4-D inner tensor and its pooled penultimate,
signed square root, on 2 photos: pooling of a tensor laid out as the graph has it.
For λ by K-fold cross-validation (`fit --folds`), on the 2,000 committed Fashion-MNIST features
(tests/data/fashion_features_f32.bin): each row's fold is splitmix64(row) mod 5; for each fold and
each λ of the default grid, ridge solved on the other folds' rows (np.linalg.solve on the rows,
no statistics) scores the held-out rows; the mean squared error per λ, and its best λ.
For the demo (`fastretrain demo`: the shipped spec's recipe, 5 tensors pooled, untransformed, on
the 2,000/1,000 shipped Fashion-MNIST images): NumPy ridge with λ by GCV on the onnxruntime
features, its λ and test accuracy.

  tests/data/recipe_reference.json

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/reference/make_recipe_vectors.py
"""
import json
import os
import sys

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_zoo_reference as zoo  # noqa: E402
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOBILENET_TENSORS = ["features", "conv_257", "add_243", "add_197", "add_151"]
KERAS_TENSORS = ["model/global_average_pooling2d/Mean", "model/pw1_relu/Relu6"]
PHOTOS = ["imagenet_00_243", "imagenet_01_559", "imagenet_02_438", "imagenet_03_990",
          "imagenet_04_949", "imagenet_05_853", "imagenet_08_915", "imagenet_09_455"]


def session(path, tensors):
    proto = onnx.load(path)
    for t in tensors:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def pooled(outputs, channels_last):
    """Each output global-average-pooled if 4-D (float64 sums), flattened otherwise; concatenated."""
    parts = []
    for x in outputs:
        x = x[0].astype(np.float64)
        if x.ndim == 3:
            x = x.mean(axis=(0, 1)) if channels_last else x.mean(axis=(1, 2))
        parts.append(x.ravel())
    return np.concatenate(parts)


def ssqrt(x):
    return np.sign(x) * np.sqrt(np.abs(x))


def l2(x):
    n = np.linalg.norm(x)
    return x / n if n > 0 else x


def rounded(x):
    return [float(f"{v:.7g}") for v in x]


def mobilenet():
    model = os.path.join(ROOT, "models/mobilenetv2.onnx")
    spec = ref.load_spec(os.path.join(ROOT, "models/mobilenetv2.json"))
    sess = session(model, MOBILENET_TENSORS)

    def features(img, mirror=False):
        x = ref.preprocess(img, spec)[None]
        if mirror:  # the model's input reversed along its width
            x = np.ascontiguousarray(x[..., ::-1])
        return pooled(sess.run(MOBILENET_TENSORS, {"input": x}), False)

    records = []
    # The first 3 photos have an even crop margin (mirroring the image or the input is the same);
    # the TTA reference takes photos of odd margins too.
    for i, name in enumerate(PHOTOS):
        img = Image.open(os.path.join(ROOT, f"tests/data/images/{name}.png")).convert("RGB")
        raw = features(img)
        record = {"file": f"images/{name}.png", "raw": rounded(raw)}
        if i < 3 or name == "imagenet_08_915":
            mirror = features(img, mirror=True)
            record["ssqrt"] = rounded(ssqrt(raw))
            record["ssqrt_l2"] = rounded(l2(ssqrt(raw)))
            record["ssqrt_tta"] = rounded((ssqrt(raw) + ssqrt(mirror)) / 2)
        records.append(record)
    return {"model": "models/mobilenetv2.onnx", "tensors": MOBILENET_TENSORS, "photos": records}


def keras():
    path = os.path.join(ROOT, "tests/data/zoo/keras_nhwc.onnx")
    info = json.load(open(os.path.join(ROOT, "tests/data/zoo/models.json")))["keras_nhwc"]
    p = zoo.PRESETS[info["preset"]]
    proto = onnx.load(path)
    size = proto.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    spec = {"input": {"layout": "NHWC", "channels": "RGB"},
            "preprocess": {"resize_short_side": int(round(size * p["ratio"])), "crop": size,
                           "scale": p["scale"], "mean": p["mean"], "std": p["std"]}}
    sess = session(path, KERAS_TENSORS)
    inner = sess.run([KERAS_TENSORS[1]], {"input_1": ref.preprocess_u8(
        Image.open(os.path.join(ROOT, f"tests/data/images/{PHOTOS[0]}.png")).convert("RGB"), spec)[None]})[0]
    # The inner tensor as the graph lays it out: channels last if its last axis is not square
    # with the one before it (inputs are square, so spatial axes are equal).
    channels_last = inner.shape[1] == inner.shape[2] and inner.shape[3] != inner.shape[2]
    records = []
    for name in PHOTOS[:2]:
        img = Image.open(os.path.join(ROOT, f"tests/data/images/{name}.png")).convert("RGB")
        x = ref.preprocess_u8(img, spec)[None]
        raw = pooled(sess.run(KERAS_TENSORS, {"input_1": x}), channels_last)
        records.append({"file": f"images/{name}.png", "ssqrt": rounded(ssqrt(raw))})
    return {"model": "tests/data/zoo/keras_nhwc.onnx", "preset": info["preset"],
            "tensors": KERAS_TENSORS, "inner_shape": list(inner.shape),
            "photos": records}


MASK = (1 << 64) - 1


def fold_of(row, folds):
    z = (row + 0x9E3779B97F4A7C15) & MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
    return (z ^ (z >> 31)) % folds


def kfold(folds=5):
    meta = json.load(open(os.path.join(ROOT, "tests/data/fashion_reference.json")))
    x = np.fromfile(os.path.join(ROOT, "tests/data/fashion_features_f32.bin"), "<f4").reshape(-1, meta["dim"])
    labels = np.array(meta["train_labels"])
    x, t = ref.with_bias(x), ref.targets(labels, 10)
    fold = np.array([fold_of(i, folds) for i in range(len(x))])
    error = np.zeros(len(ref.LAMBDA_GRID))
    for k in range(folds):
        train, held = fold != k, fold == k
        for i, lam in enumerate(ref.LAMBDA_GRID):
            w = ref.ridge(x[train], t[train], lam)
            error[i] += ((t[held] - x[held] @ w) ** 2).sum()
    error /= t.size
    return {"folds": folds, "fold_samples": [int((fold == k).sum()) for k in range(folds)],
            "grid": ref.LAMBDA_GRID, "error": error.tolist(),
            "best": ref.LAMBDA_GRID[int(np.argmin(error))]}


def demo():
    model = os.path.join(ROOT, "models/mobilenetv2.onnx")
    spec = ref.load_spec(os.path.join(ROOT, "models/mobilenetv2.json"))
    assert spec["feature_tensors"] == MOBILENET_TENSORS and spec.get("feature_transform", "none") == "none"
    sess = session(model, MOBILENET_TENSORS)
    sets = {}
    for split, n in (("train", 2000), ("t10k", 1000)):
        images = ref.read_idx(os.path.join(ROOT, f"data/fashion-mnist/{split}-images-idx3-ubyte.gz"))[:n]
        labels = ref.read_idx(os.path.join(ROOT, f"data/fashion-mnist/{split}-labels-idx1-ubyte.gz"))[:n]
        rows = []
        for i in range(0, n, 50):
            batch = np.stack([ref.preprocess(Image.fromarray(im, mode="L"), spec) for im in images[i:i + 50]])
            outputs = sess.run(MOBILENET_TENSORS, {"input": batch})
            for j in range(len(batch)):
                rows.append(pooled([o[j:j + 1] for o in outputs], False))
        sets[split] = (np.array(rows), labels.astype(np.int64))
    (ftr, ltr), (fte, lte) = sets["train"], sets["t10k"]
    x, t = ref.with_bias(ftr), ref.targets(ltr, 10)
    scores = ref.gcv_scores(x, t)
    lam = ref.LAMBDA_GRID[int(np.argmin(scores))]
    acc = float(((ref.with_bias(fte) @ ref.ridge(x, t, lam)).argmax(1) == lte).mean())
    return {"train": 2000, "test": 1000, "dim": int(ftr.shape[1]), "gcv_lambda": lam, "test_accuracy_gcv": acc}


def main():
    out = {"runtime": f"onnxruntime {ort.__version__}", "mobilenetv2": mobilenet(), "keras_nhwc": keras(),
           "kfold": kfold(), "demo": demo()}
    print("demo", out["demo"])
    with open(os.path.join(ROOT, "tests/data/recipe_reference.json"), "w") as f:
        json.dump(out, f)
    print("wrote tests/data/recipe_reference.json; keras inner shape", out["keras_nhwc"]["inner_shape"])


if __name__ == "__main__":
    main()
