"""Measures the edge footprint and writes docs/FOOTPRINT.md (+ docs/FOOTPRINT.json).

    scripts/bench/footprint.sh            # builds what is missing, then measures

Measured: stripped binary size per target and profile (the binaries given on the command line),
peak RSS of `learn` with one worker and with the default (one per core) at 1k samples (and 10k
with --samples 1000,10000: flat = memory does not grow with samples), for MobileNetV2 and
optionally a second model (--model2), peak RSS of `predict`, and the wall time from start to
the first prediction (model load + plan + one image), median of 5 runs. Peak RSS and wall time
come from /usr/bin/time around the whole process.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from machine import cpu_description  # noqa: E402
from methods_table import timed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def learn_rss(binary, model, data, n, threads, work):
    """Peak RSS (MB) and wall time of one `learn` of n samples from scratch."""
    state = os.path.join(work, f"learn-{os.path.basename(model)}-{n}-{threads}.frs")
    cmd = [binary, "learn", "--state", state, "--model", model, "--data", data, "--limit", str(n)]
    if threads:
        cmd += ["--threads", str(threads)]
    _, wall, rss = timed(cmd)
    return state, {"rss_mb": rss, "wall_s": wall, "threads": threads or os.cpu_count()}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--binary", required=True, help="the x86-64 binary to measure RSS and time with")
    ap.add_argument("--sizes", nargs="*", default=[], help="LABEL=PATH of stripped binaries")
    ap.add_argument("--full-train", default="/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    ap.add_argument("--samples", default="1000", help="learn sizes (comma separated; 10000 shows flatness)")
    ap.add_argument("--model2", help="a second model (spec beside it) measured the same way")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"))
    args = ap.parse_args()
    model = os.path.join(ROOT, "models/mobilenetv2.onnx")
    photo = os.path.join(ROOT, "tests/data/images/imagenet_00_243.png")
    work = tempfile.mkdtemp(prefix="footprint-")
    result = {"cpu": cpu_description(), "cores": os.cpu_count(), "sizes": {}, "learn": {}, "predict": {}}
    for item in args.sizes:
        label, path = item.split("=", 1)
        result["sizes"][label] = os.path.getsize(path)
    state = None
    models = [("mobilenetv2", model)] + ([("model2", args.model2)] if args.model2 else [])
    for name, path in models:
        result["learn"][name] = {"model_mb": os.path.getsize(path) / 2**20}
        for n in [int(x) for x in args.samples.split(",")]:
            # One worker, and the default (one per core).
            for threads in (1, 0):
                s, row = learn_rss(args.binary, path, args.full_train, n, threads, work)
                key = f"{n} samples, {'1 thread' if threads else 'default threads'}"
                result["learn"][name][key] = row
                print(f"learn {name} {key}: {row['rss_mb']:.1f} MB, {row['wall_s']:.1f} s", flush=True)
                if name == "mobilenetv2":
                    state = s
        # One worker again with the model packed (`fastretrain pack`): no protobuf at load.
        packed = os.path.join(work, f"{name}.frpack")
        subprocess.run([args.binary, "pack", "--model", path, "--out", packed], check=True,
                       stdout=subprocess.DEVNULL)
        n = int(args.samples.split(",")[0])
        _, row = learn_rss(args.binary, packed, args.full_train, n, 1, work)
        result["learn"][name][f"{n} samples, 1 thread, packed"] = row
        print(f"learn {name} packed {n}, 1 thread: {row['rss_mb']:.1f} MB, {row['wall_s']:.1f} s",
              flush=True)
    runs = [timed([args.binary, "predict", "--state", state, photo])[1:] for _ in range(5)]
    result["predict"] = {
        "rss_mb": statistics.median(r[1] for r in runs),
        "first_prediction_s": statistics.median(r[0] for r in runs),
        "model_mb": os.path.getsize(model) / 2**20,
    }
    # The same with the model packed for boards (`fastretrain pack`): no ONNX parse at start.
    packed = os.path.join(work, "mobilenetv2.frpack")
    subprocess.run([args.binary, "pack", "--model", model, "--out", packed], check=True,
                   stdout=subprocess.DEVNULL)
    runs = [timed([args.binary, "predict", "--state", state, "--model", packed, photo])[1:]
            for _ in range(5)]
    result["predict"]["packed_rss_mb"] = statistics.median(r[1] for r in runs)
    result["predict"]["packed_first_prediction_s"] = statistics.median(r[0] for r in runs)
    result["predict"]["packed_mb"] = os.path.getsize(packed) / 2**20
    print(result["predict"], flush=True)
    with open(os.path.join(args.out, "FOOTPRINT.json"), "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
