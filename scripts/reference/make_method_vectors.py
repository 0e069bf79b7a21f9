#!/usr/bin/env python3
"""Reference vectors for the fitting methods (the closed-form head and the recomputation of hidden layers, Yang et al., TPAMI 2019), computed with NumPy alone, in the
papers' own matrix forms on the whole sample matrix (no Gram streaming, no Woodbury tricks), so
that they check fastretrain's streamed implementations independently.

Input: the onnxruntime features of the 2,000 shipped training images
(tests/data/fashion_features_f32.bin, labels in tests/data/fashion_reference.json).
Outputs:
  tests/data/methods_reference.bin   float64 little endian, matrices one after another (row major)
  tests/data/methods_reference.json  name -> {offset (in float64s), rows, cols} and the settings

Usage: scripts/reference/make_method_vectors.py  (needs only NumPy: scripts/ci/venv.sh makes .venv)
"""
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DATA = os.path.join(ROOT, "tests", "data")
LAMBDA = 1.0
STEP = {"eta": 0.5, "batch": 64, "passes": 2}
# (name, hidden widths, activation, iterations, seed)
RECOMPUTE = [
    ("rc_bsig_it0", [32], "bsig", 0, 7),
    ("rc_bsig_it1", [32], "bsig", 1, 7),
    ("rc_bsig_it2", [32], "bsig", 2, 7),
    ("rc_sin_2layers", [32, 16], "sin", 1, 11),
    ("rc_identity", [24], "identity", 1, 5),
]
RANGE = 0.9  # pulled-back targets are min-max scaled per unit into [-RANGE, RANGE]
MASK = (1 << 64) - 1


def load():
    meta = json.load(open(os.path.join(DATA, "fashion_reference.json")))
    dim = meta["dim"]
    h = np.fromfile(os.path.join(DATA, "fashion_features_f32.bin"), dtype="<f4")
    h = h.reshape(-1, dim).astype(np.float64)
    y = np.array(meta["train_labels"])
    t = -np.ones((len(y), 10))
    t[np.arange(len(y)), y] = 1.0
    return h, t


def aug(h):
    return np.hstack([h, np.ones((h.shape[0], 1))])


def ridge(h, t, lam):
    x = aug(h)
    return np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ t)


def step_form(h, t, lam, eta, batch, passes):
    """W <- W + eta (Xb'Xb + lam I)^-1 Xb' (Tb - Xb W), literally (a (d+1)^2 solve per batch)."""
    x = aug(h)
    w = np.zeros((x.shape[1], t.shape[1]))
    snapshots = {}
    for p in range(passes):
        for b, start in enumerate(range(0, len(x), batch)):
            xb, tb = x[start:start + batch], t[start:start + batch]
            a = xb.T @ xb + lam * np.eye(x.shape[1])
            w = w + eta * np.linalg.solve(a, xb.T @ (tb - xb @ w))
            if p == 0 and b == 0:
                snapshots["step_after_batch1"] = w.copy()
        snapshots[f"step_after_pass{p + 1}"] = w.copy()
    return snapshots


def splitmix64(seed):
    state = seed
    while True:
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        yield z ^ (z >> 31)


def initial_layers(dim, widths, seed):
    rng = splitmix64(seed)
    layers, inputs = [], dim
    for m in widths:
        a = (3.0 / (inputs + 1)) ** 0.5
        w = [a * (2.0 * ((next(rng) >> 11) / float(1 << 53)) - 1.0) for _ in range((inputs + 1) * m)]
        layers.append(np.array(w).reshape(inputs + 1, m))
        inputs = m
    return layers


def act(z, a):
    return {"bsig": lambda: 2.0 / (1.0 + np.exp(-z)) - 1.0, "sin": lambda: np.sin(z),
            "identity": lambda: z}[a]()


def inverse(p, a):
    return {"bsig": lambda: np.log((1.0 + p) / (1.0 - p)), "sin": lambda: np.arcsin(p),
            "identity": lambda: p}[a]()


def recompute(h0, t, widths, a, iterations, lam, seed):
    """Yang et al. 2019 pull-back, on the full per-sample matrices."""
    layers = initial_layers(h0.shape[1], widths, seed)
    for it in range(iterations + 1):
        hs = [h0]
        for w in layers:
            hs.append(act(aug(hs[-1]) @ w, a))
        out = ridge(hs[-1], t, lam)
        if it == iterations:
            return layers, out
        target, nxt = t, out
        for l in reversed(range(len(layers))):
            m = widths[l]
            wp, bias = nxt[:m], nxt[m]
            # the paper's form: P = (T - 1b') Wp' (Wp Wp' + lam I)^-1
            p = (target - bias) @ wp.T @ np.linalg.inv(wp @ wp.T + lam * np.eye(m))
            if a != "identity":
                lo, hi = p.min(axis=0), p.max(axis=0)
                span = np.where(hi - lo > 1e-12 * np.maximum(np.abs(hi), 1.0), hi - lo, np.inf)
                p = np.where(np.isfinite(span), RANGE * (2.0 * (p - lo) / span - 1.0), 0.0)
            z = inverse(p, a)
            layers[l] = ridge(hs[l], z, lam)
            target, nxt = z, layers[l]
    raise AssertionError("unreachable")


def main():
    h, t = load()
    out = {}
    out["ridge_lambda1"] = ridge(h, t, LAMBDA)
    out["ridge_first640_lambda1"] = ridge(h[:640], t[:640], LAMBDA)
    out.update(step_form(h, t, LAMBDA, **STEP))
    for name, widths, a, iterations, seed in RECOMPUTE:
        layers, w_out = recompute(h, t, widths, a, iterations, LAMBDA, seed)
        for i, w in enumerate(layers):
            out[f"{name}_hidden{i}"] = w
        out[f"{name}_out"] = w_out
    index, blobs, offset = {}, [], 0
    for name, m in out.items():
        m = np.ascontiguousarray(m, dtype="<f8")
        index[name] = {"offset": offset, "rows": m.shape[0], "cols": m.shape[1]}
        blobs.append(m.tobytes())
        offset += m.size
    with open(os.path.join(DATA, "methods_reference.bin"), "wb") as f:
        f.write(b"".join(blobs))
    settings = {"lambda": LAMBDA, "step": STEP, "pull_back_range": RANGE,
                "recompute": [{"name": n, "hidden": w, "activation": a, "iterations": i, "seed": s}
                              for n, w, a, i, s in RECOMPUTE]}
    with open(os.path.join(DATA, "methods_reference.json"), "w") as f:
        json.dump({"settings": settings, "matrices": index}, f, indent=1)
    print(f"wrote {len(index)} matrices ({offset * 8} bytes)")


if __name__ == "__main__":
    main()
