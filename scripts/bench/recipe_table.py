#!/usr/bin/env python3
"""What each ingredient of the feature recipe is worth on the full Fashion-MNIST (60k/10k):
the table of docs/METHODS.md "Better features".

Input: feature stores written by `fastretrain extract --precision f32` with the shipped
MobileNetV2 and the tensors of its automatic recipe, untransformed
(`--feature-tensor features --feature-tensor conv_257 … --transform none`): the training and
test images, and the same images mirrored left to right (IDX files written by
scripts/bench/recipe-table.sh). The columns are the recipe's tensors in order: `features` (1,280),
then the 320-, 160-, 96- and 64-channel stage outputs.

Each row is the closed-form ridge head fastretrain fits (bias input, ±1 targets, λ by GCV over
10⁻³…10⁴ in half decades, the same formula as crates/core/src/solver.rs), computed here in NumPy from the
stored features: signed square root and flips are applied to the stored values, so a row's
features are exactly what `learn` with that recipe folds in. Also: the best λ of the grid in
hindsight (test accuracy), and λ by 5-fold cross-validation (folds as `fit --folds 5`).

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/bench/recipe_table.py --train T --test E --test-mirror EM
       [--train-mirror TM] [--out docs/recipes.json]
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
import reference as ref  # noqa: E402
from make_recipe_vectors import fold_of  # noqa: E402
from store_reader import read_store  # noqa: E402

PENULTIMATE = 1280


def ssqrt(x):
    return np.sign(x) * np.sqrt(np.abs(x))


def stats(x, labels, classes):
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    t = ref.targets(labels, classes)
    return xb.T @ xb, xb.T @ t, float((t * t).sum()), len(x)


def solve_grid(g, b, grid):
    lam_eig, q = np.linalg.eigh(g)
    qb = q.T @ b
    return lam_eig, q, qb, [q @ (qb / (lam_eig + lam)[:, None]) for lam in grid]


def gcv(g, b, tsq, n, grid):
    lam_eig, q, qb, ws = solve_grid(g, b, grid)
    lam_eig = np.maximum(lam_eig, 0)
    scores = []
    for lam, w in zip(grid, ws):
        rss = max(tsq - (w * b).sum() - lam * (w * w).sum(), 0.0)
        df = (lam_eig / (lam_eig + lam)).sum()
        scores.append(rss / (n * b.shape[1]) / (1 - df / n) ** 2)
    return scores, ws


def kfold_lambda(x, labels, classes, grid, folds=5):
    fold = np.array([fold_of(i, folds) for i in range(len(x))])
    parts = [stats(x[fold == k], labels[fold == k], classes) for k in range(folds)]
    total_g = sum(p[0] for p in parts)
    total_b = sum(p[1] for p in parts)
    error = np.zeros(len(grid))
    for k, (gk, bk, tk, _) in enumerate(parts):
        _, _, _, ws = solve_grid(total_g - gk, total_b - bk, grid)
        for i, w in enumerate(ws):
            error[i] += tk - 2 * (w * bk).sum() + (w * (gk @ w)).sum()
    return grid[int(np.argmin(error))]


def accuracy(w, x, labels):
    xb = np.hstack([x, np.ones((len(x), 1), np.float32)]).astype(np.float64)
    return float(((xb @ w).argmax(1) == labels).mean())


def main():
    ap = argparse.ArgumentParser()
    for name in ("train", "test", "test-mirror"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--train-mirror", help="the training images mirrored (rows with flips)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    loaded = {}
    for name in ("train", "test", "train_mirror", "test_mirror"):
        if getattr(a, name) is None:
            continue
        x, labels, header = read_store(getattr(a, name))
        loaded[name] = (x, np.array([int(v) for v in labels]))
        print(f"{name}: {x.shape} {header.get('tensor', '')[:60]}", flush=True)
    xtr, ltr = loaded["train"]
    xte, lte = loaded["test"]
    xtr_m, ltr_m = loaded.get("train_mirror", (None, None))
    xte_m, _ = loaded["test_mirror"]
    classes = int(ltr.max()) + 1
    grid = ref.LAMBDA_GRID
    rows = []

    def row(name, cols, transform, flips, tta, folds=False):
        started = time.time()
        f = (lambda v: ssqrt(v[:, cols])) if transform else (lambda v: v[:, cols])
        x, labels = f(xtr), ltr
        if flips:
            x, labels = np.vstack([x, f(xtr_m)]), np.concatenate([ltr, ltr_m])
        g, b, tsq, n = stats(x, labels, classes)
        scores, ws = gcv(g, b, tsq, n, grid)
        best = int(np.argmin(scores))
        test = f(xte)
        if tta:
            test = (test + f(xte_m)) / 2
        accs = [accuracy(w, test, lte) for w in ws]
        r = {"features": name, "dim": len(range(*cols.indices(xtr.shape[1]))) if isinstance(cols, slice) else len(cols),
             "transform": "ssqrt" if transform else "none", "train_flips": flips, "test_flip_average": tta,
             "samples": int(n), "gcv_lambda": grid[best], "accuracy": accs[best],
             "best_lambda_in_hindsight": grid[int(np.argmax(accs))], "best_accuracy_in_hindsight": max(accs),
             "accuracy_by_lambda": accs}
        if folds:
            lam = kfold_lambda(x, labels, classes, grid)
            r["cv5_lambda"] = lam
            r["cv5_accuracy"] = accs[grid.index(lam)]
        r["seconds"] = time.time() - started
        rows.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "accuracy_by_lambda"}), flush=True)

    pen, multi = slice(0, PENULTIMATE), slice(0, xtr.shape[1])
    row("penultimate", pen, False, False, False)
    row("penultimate", pen, True, False, False)
    row("penultimate + 4 stages", multi, False, False, False, folds=True)
    row("penultimate + 4 stages", multi, True, False, False, folds=True)
    row("penultimate + 4 stages", multi, False, False, True)
    if xtr_m is not None:
        assert (ltr == ltr_m).all()
        row("penultimate", pen, False, True, False)
        row("penultimate + 4 stages", multi, False, True, False, folds=True)
        row("penultimate + 4 stages", multi, True, True, False)
        row("penultimate + 4 stages", multi, False, True, True)
    if a.out:
        with open(a.out, "w") as fh:
            json.dump({"train": int(len(xtr)), "test": int(len(xte)), "grid": grid, "rows": rows}, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    main()
