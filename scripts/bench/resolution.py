#!/usr/bin/env python3
"""Input resolution vs accuracy and speed: writes docs/RESOLUTION.md (+ .json).
Run through scripts/bench/resolution.sh (builds, makes the venv).

For each input size, `fastretrain resize-input` writes a copy of MobileNetV2 with that input
(224 = the shipped file), `extract` turns the shipped Fashion-MNIST subset (2,000 train /
1,000 test; 28×28 images, upscaled by the spec's resize) into feature stores, `fit` (gram,
λ by GCV) and `eval --store` give the test accuracy, and `fastretrain bench` / onnxruntime
give the forward time per image (alternating, medians over rounds).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))

from bench import ort_forward, run_json  # noqa: E402
from reference import load_spec  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--sizes", default="224,160,128,96")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=16)
    p.add_argument("--train-n", type=int, default=2000)
    p.add_argument("--test-n", type=int, default=1000)
    p.add_argument("--out", default=os.path.join(ROOT, "docs"))
    p.add_argument("--command", default="scripts/bench/resolution.sh")
    a = p.parse_args()
    work = tempfile.mkdtemp(prefix="resolution-")
    original = os.path.join(ROOT, "models/mobilenetv2.onnx")
    data = os.path.join(ROOT, "data/fashion-mnist")
    rows = []
    started = time.time()
    for size in [int(s) for s in a.sizes.split(",")]:
        model = original
        if size != load_spec(os.path.splitext(original)[0] + ".json")["input"]["height"]:
            model = os.path.join(work, f"mobilenetv2-{size}.onnx")
            run_json([a.bin, "resize-input", "--json", "--model", original, "--size", str(size),
                      "--out", model])
        spec = load_spec(os.path.splitext(model)[0] + ".json")
        stores = {}
        for split, images, n in (("train", "train-images-idx3-ubyte.gz", a.train_n),
                                 ("test", "t10k-images-idx3-ubyte.gz", a.test_n)):
            stores[split] = os.path.join(work, f"{split}-{size}.frf")
            ex = run_json([a.bin, "--threads", "2", "extract", "--json", "--store", stores[split],
                           "--model", model, "--data", os.path.join(data, images),
                           "--limit", str(n), "--precision", "f32"])
            if split == "train":
                extract_rate = ex["extract"]["images_per_second"]
        state = os.path.join(work, f"fit-{size}.frs")
        fit = run_json([a.bin, "fit", "--json", "--state", state, "--store", stores["train"]])
        ev = run_json([a.bin, "eval", "--json", "--state", state, "--store", stores["test"]])
        times = {"ours_1": [], "ours_2": [], "ort_1": [], "ort_2": []}
        for _ in range(a.rounds):
            for threads in (1, 2):
                times[f"ours_{threads}"].append(run_json(
                    [a.bin, "--threads", str(threads), "bench", "--json", "--model", model,
                     "--runs", str(a.runs)])["ms_per_image"])
                times[f"ort_{threads}"].append(
                    ort_forward(model, spec, threads, 1, 2, a.runs, "features"))
        row = {"size": size, "accuracy": ev["accuracy"], "lambda": fit["lambda"],
               "extract_images_per_second": extract_rate,
               **{k: statistics.median(v) for k, v in times.items()}}
        rows.append(row)
        print(row, file=sys.stderr, flush=True)
    base = rows[0]
    lines = [
        "# Input resolution: accuracy and speed", "",
        f"Produced by `{a.command}` ({time.strftime('%Y-%m-%d')}, {time.time() - started:.0f} s); "
        f"raw numbers in `docs/RESOLUTION.json`. MobileNetV2 with its input resized by "
        "`fastretrain resize-input --size N` (a new file and spec: the preprocessing keeps the "
        "resize/crop ratio 256/224), Fashion-MNIST shipped subset "
        f"({a.train_n:,} train / {a.test_n:,} test, 28×28 images upscaled), gram head with λ "
        f"by GCV, forward time = median of {a.rounds} alternating rounds of {a.runs} images "
        "(batch 1). With 1,000 test images one standard error of an accuracy near 0.88 is "
        "about 1 pt, so differences under 1 pt are within noise.", "",
        "| input | test accuracy | Δ vs first row | tract ms/img 1 thread | 2 threads | "
        "onnxruntime ms/img 1 thread | 2 threads | tract speed-up vs first row (2 threads) | "
        "extract images/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']}×{r['size']} | {r['accuracy']:.4f} | "
            f"{100 * (r['accuracy'] - base['accuracy']):+.1f} pt | {r['ours_1']:.1f} | "
            f"{r['ours_2']:.1f} | {r['ort_1']:.1f} | {r['ort_2']:.1f} | "
            f"{base['ours_2'] / r['ours_2']:.2f}× | {r['extract_images_per_second']:.1f} |")
    lines.append("")
    with open(os.path.join(a.out, "RESOLUTION.md"), "w") as f:
        f.write("\n".join(lines))
    with open(os.path.join(a.out, "RESOLUTION.json"), "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
