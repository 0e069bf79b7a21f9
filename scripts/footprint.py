"""Measures the edge footprint and writes docs/FOOTPRINT.md (+ docs/FOOTPRINT.json).

    scripts/footprint.sh            # builds what is missing, then measures

Measured: stripped binary size per target and profile (the binaries given on the command line),
peak RSS of `learn` at 1k and 10k samples (flat = memory does not grow with samples), peak RSS
of `predict`, and the wall time from start to the first prediction (model load + plan +
one image), median of 5 runs. Peak RSS and wall time come from /usr/bin/time around the
whole process.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from methods_table import timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, help="the x86-64 binary to measure RSS and time with")
    ap.add_argument("--sizes", nargs="*", default=[], help="LABEL=PATH of stripped binaries")
    ap.add_argument("--full-train", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    ap.add_argument("--samples", default="1000,10000")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = ap.parse_args()
    model = os.path.join(ROOT, "models/mobilenetv2.onnx")
    photo = os.path.join(ROOT, "tests/data/images/imagenet_00_243.png")
    work = tempfile.mkdtemp(prefix="footprint-")
    result = {"sizes": {}, "learn": {}, "predict": {}}
    for item in args.sizes:
        label, path = item.split("=", 1)
        result["sizes"][label] = os.path.getsize(path)
    state = None
    for n in [int(x) for x in args.samples.split(",")]:
        state = os.path.join(work, f"learn{n}.frs")
        _, wall, rss = timed([args.binary, "learn", "--state", state, "--model", model,
                           "--data", args.full_train, "--limit", str(n)])
        result["learn"][n] = {"rss_mb": rss, "wall_s": wall}
        print(f"learn {n}: {rss:.1f} MB, {wall:.1f} s", flush=True)
    runs = [timed([args.binary, "predict", "--state", state, photo])[1:] for _ in range(5)]
    result["predict"] = {
        "rss_mb": statistics.median(r[1] for r in runs),
        "first_prediction_s": statistics.median(r[0] for r in runs),
        "model_mb": os.path.getsize(model) / 2**20,
    }
    print(result["predict"], flush=True)
    with open(os.path.join(args.out, "FOOTPRINT.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
