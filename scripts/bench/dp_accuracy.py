#!/usr/bin/env python3
"""Accuracy of the fleet head under differential privacy, and under Flower's SecAgg+ quantisation.

The 60,000 training features (a feature store from `fastretrain extract`) are split over three
devices (20,000 each, in order), each device's statistics made as the fleet's ClientApp makes
them (fastretrain.privacy: rows clipped to --clip, analytic Gaussian noise for (ε, 1e-5)), the
server's sum solved with λ by GCV, and the head scored on the 10,000 test features. Rows:
ε = ∞ without clipping (the exact fleet), ε = ∞ with clipping (what clipping alone costs), then
each ε over --seeds noise draws (mean, min, max).

SecAgg+ rows: each device's exact statistics quantised with Flower's own
`flwr.common.secure_aggregation.quantization` (stochastic rounding to 2^22 levels over
[-R, R], as SecAgg+ does before masking; the masks cancel in the modular sum), summed modulo
2^32, dequantised, solved: R = Flower's default 8.0, and R = the largest |entry| of any
device's G and B (the smallest range that clips nothing). Needs flwr (the integrations' venv).

    python scripts/bench/dp_accuracy.py --train fm60k-train.frfs --test fm10k-test.frfs > dp.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from store_reader import read_store  # noqa: E402

import fastretrain  # noqa: E402
from fastretrain.privacy import Privacy, lambda_grid  # noqa: E402

CHUNK = 4096


def accumulate(x, labels, clip=None):
    stats = fastretrain.Statistics(x.shape[1])
    for at in range(0, len(x), CHUNK):
        rows = x[at:at + CHUNK].astype(np.float64)
        if clip is not None:
            norms = np.linalg.norm(rows, axis=1, keepdims=True)
            rows *= np.minimum(1.0, clip / np.maximum(norms, 1e-300))
        stats.accumulate(rows, labels[at:at + CHUNK])
    return stats


def accuracy(stats, test_x, test_labels, noise_sd=0.0):
    best, _, _ = stats.gcv(lambda_grid(noise_sd, stats.dim))
    w = stats.solve(best)
    scores = test_x.astype(np.float64) @ w[:-1] + w[-1]
    predicted = np.array(stats.labels)[np.argmax(scores, axis=1)]
    return float(np.mean(predicted == np.array(test_labels))), best


def total_of(parts):
    total = fastretrain.Statistics(parts[0].dim)
    for part in parts:
        total.merge(part)
    return total


def secagg(parts, labels, clipping_range):
    from flwr.common.secure_aggregation.quantization import dequantize, quantize

    levels, modulus = 2**22, 2**32
    # Every device's arrays in the fleet's label order (a label it lacks: B column −Σx).
    arrays = []
    for s in parts:
        g, b = s.gram(), s.cross()
        cols = [b[:, s.labels.index(label)] if label in s.labels else -g[:, -1] for label in labels]
        arrays.append([g, np.stack(cols, axis=1)])
    summed = None
    for g, b in arrays:
        q = [a.astype(np.int64) for a in quantize([g, b], clipping_range, levels)]
        summed = q if summed is None else [(x + y) % modulus for x, y in zip(summed, q)]
    g, b = dequantize(summed, clipping_range, levels)
    # dequantize() undoes one shift; the sum holds one per device.
    shift = (len(parts) - 1) * clipping_range
    g, b = g - shift, b - shift
    n = g[-1, -1]
    stats = fastretrain.Statistics.from_arrays(
        g, b, labels, float(n), float(n * len(labels)), [float(v) for v in (b[-1] + n) / 2])
    exact = total_of(parts)
    exact_b = np.stack([exact.cross()[:, exact.labels.index(label)] for label in labels], axis=1)
    return stats, float(max(np.abs(g - exact.gram()).max(), np.abs(b - exact_b).max()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--devices", type=int, default=3)
    ap.add_argument("--epsilons", default="0.5,1,2,8")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--clips", default="4,8,16,24",
                    help="clipping norms C (feature norms here: 13-34, median 24)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--no-secagg", action="store_true")
    a = ap.parse_args()

    x, labels, _ = read_store(a.train)
    test_x, test_labels, _ = read_store(a.test)
    names = sorted(set(labels))
    norms = np.linalg.norm(x, axis=1)
    shards = np.array_split(np.arange(len(x)), a.devices)
    result = {
        "train": len(x), "test": len(test_x), "devices": a.devices, "delta": a.delta,
        "feature_norms": {q: float(np.quantile(norms, p)) for q, p in
                          (("min", 0), ("median", 0.5), ("p90", 0.9), ("max", 1))},
        "rows": [],
    }
    started = time.monotonic()
    exact = [accumulate(x[s], [labels[i] for i in s]) for s in shards]
    acc, lam = accuracy(total_of(exact), test_x, test_labels)
    result["rows"].append({"epsilon": "inf", "clip": None, "accuracy": acc, "lambda": lam})
    print(json.dumps(result["rows"][-1]), file=sys.stderr, flush=True)
    for clip in [float(c) for c in a.clips.split(",")]:
        clipped = [accumulate(x[s], [labels[i] for i in s], clip=clip) for s in shards]
        acc, lam = accuracy(total_of(clipped), test_x, test_labels)
        result["rows"].append({"epsilon": "inf", "clip": clip, "accuracy": acc, "lambda": lam,
                               "fraction_clipped": float(np.mean(norms > clip))})
        print(json.dumps(result["rows"][-1]), file=sys.stderr, flush=True)
        for eps in [float(e) for e in a.epsilons.split(",")]:
            privacy = Privacy(eps, a.delta, clip, names)
            runs = []
            for seed in range(a.seeds):
                noisy = [privacy.noisy(s, seed=1000 * seed + i) for i, s in enumerate(clipped)]
                noise_sd = privacy.sigma * math.sqrt(a.devices)
                runs.append(accuracy(total_of(noisy), test_x, test_labels, noise_sd))
            accs = [r[0] for r in runs]
            row = {"epsilon": eps, "clip": clip, "sigma": privacy.sigma,
                   "accuracy": float(np.mean(accs)), "min": min(accs), "max": max(accs),
                   "lambdas": [r[1] for r in runs]}
            result["rows"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    if not a.no_secagg:
        result["secagg"] = []
        widest = max(max(np.abs(s.gram()).max(), np.abs(s.cross()).max()) for s in exact)
        for r in (8.0, float(math.ceil(widest))):
            stats, err = secagg(exact, names, r)
            try:
                acc, lam = accuracy(stats, test_x, test_labels)
            except fastretrain.Error as e:
                acc, lam = None, str(e)
            row = {"clipping_range": r, "quantization_levels": 2**22, "modulus": 2**32,
                   "max_abs_error": err, "step": 2 * r / 2**22, "accuracy": acc, "lambda": lam}
            result["secagg"].append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
