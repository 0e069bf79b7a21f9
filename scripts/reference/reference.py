"""Independent reference implementation (PIL + NumPy + onnxruntime) shared by the scripts.

Nothing here calls fastretrain: these functions define what the Rust code must reproduce.
"""
import gzip
import json
import struct

import numpy as np
from PIL import Image


def load_spec(path):
    with open(path) as f:
        return json.load(f)


def resize_and_crop_boxes(w, h, short, crop):
    """torchvision's Resize(short) size (long side truncated) and CenterCrop(crop) offsets
    (rounded half to even, Python's round())."""
    if w <= h:
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    return nw, nh, int(round((nh - crop) / 2.0)), int(round((nw - crop) / 2.0))


def preprocess(img, spec):
    """PIL image -> (3, crop, crop) float32 NCHW slice, per models/<model>.json.

    Resize: short side to `resize_short_side` (long side = int(size * long / short), as
    torchvision), bilinear with PIL's antialiasing triangle filter evaluated in float
    (mode 'F', one channel at a time), then a centre crop (offsets rounded half-to-even, as
    torchvision's round()), then x / 255, minus mean, over std.
    """
    pre = spec["preprocess"]
    crop = pre["crop"]
    img = img.convert("RGB")
    nw, nh, top, left = resize_and_crop_boxes(*img.size, pre["resize_short_side"], crop)
    arr = np.asarray(img, dtype=np.float32)
    chans = [np.asarray(Image.fromarray(arr[:, :, c].copy(), mode="F").resize((nw, nh), Image.BILINEAR))
             for c in range(3)]
    x = np.stack(chans)[:, top:top + crop, left:left + crop]
    mean = np.array(pre["mean"], np.float32)[:, None, None]
    std = np.array(pre["std"], np.float32)[:, None, None]
    return ((x / np.float32(255.0) - mean) / std).astype(np.float32)


def preprocess_u8(img, spec):
    """PIL image -> the model's input for one image, as a torchvision user makes it:
    Resize(resize_short_side) on the PIL image (8-bit pixels out), CenterCrop(crop), then
    (x · scale − mean) / std in float32 (ToTensor + Normalize for scale = 1/255), channels in
    the spec's order and layout ((3, crop, crop) for NCHW, (crop, crop, 3) for NHWC)."""
    pre, inp = spec["preprocess"], spec["input"]
    crop = pre["crop"]
    img = img.convert("RGB")
    nw, nh, top, left = resize_and_crop_boxes(*img.size, pre["resize_short_side"], crop)
    img = img.resize((nw, nh), Image.BILINEAR)
    img = img.crop((left, top, left + crop, top + crop))
    x = np.asarray(img, dtype=np.float32).transpose(2, 0, 1) * np.float32(pre["scale"])
    x = (x - np.array(pre["mean"], np.float32)[:, None, None]) / np.array(pre["std"], np.float32)[:, None, None]
    if inp["channels"] == "BGR":
        x = x[::-1]
    if inp["layout"] == "NHWC":
        x = x.transpose(1, 2, 0)
    return np.ascontiguousarray(x, dtype=np.float32)


def read_idx(path):
    """IDX (MNIST format) file, optionally gzip-compressed -> numpy array."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    assert zero == 0 and dtype == 0x08
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim:], dtype=np.uint8).reshape(dims)


def write_idx_gz(path, arr):
    header = struct.pack(">HBB", 0, 0x08, arr.ndim) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def targets(labels, classes):
    """One-hot codes in {-1, +1}, as the papers use."""
    t = -np.ones((len(labels), classes))
    t[np.arange(len(labels)), labels] = 1.0
    return t


def with_bias(features):
    return np.hstack([features.astype(np.float64), np.ones((features.shape[0], 1))])


def ridge(x, t, lam):
    """W = (X^T X + lam I)^-1 X^T T on the full matrix (no streaming)."""
    g = x.T @ x
    return np.linalg.solve(g + lam * np.eye(g.shape[0]), x.T @ t)


LAMBDA_GRID = [10.0 ** (e / 2.0) for e in range(-6, 9)]  # 1e-3 ... 1e4, half-decade steps


def gcv_scores(x, t, grid=LAMBDA_GRID):
    """Generalised cross-validation, computed directly from residuals and the hat matrix trace.

    GCV(lam) = (RSS / (n c)) / (1 - df / n)^2, df = tr(X (X^T X + lam I)^-1 X^T).
    """
    n, c = t.shape
    g = x.T @ x
    sv = np.linalg.svd(x, compute_uv=False) ** 2
    scores = []
    for lam in grid:
        w = np.linalg.solve(g + lam * np.eye(g.shape[0]), x.T @ t)
        rss = float(((x @ w - t) ** 2).sum())
        df = float((sv / (sv + lam)).sum())
        scores.append((rss / (n * c)) / (1.0 - df / n) ** 2)
    return scores
