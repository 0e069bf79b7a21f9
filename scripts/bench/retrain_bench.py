#!/usr/bin/env python3
"""`fastretrain retrain` against PyTorch on the CPU: the same architecture, input size, batch,
optimiser (SGD, momentum 0.9) and Fashion-MNIST images, run alternately (ours, then PyTorch,
per configuration and round) so that the VM's drift hits both alike.

  ours sgd      images/s of one SGD epoch with every conv layer trained (`--mode sgd`,
                the epoch's `seconds_sgd`: preprocessing, forward, backward, update)
  ours fast     the same with --ra 0.5: half the conv layers frozen (`--mode fast`)
  ours forward  images/s of the refit's feature pass (epoch 0's `seconds_refit`: forward over
                every image, no gradients, plus a solve of milliseconds)
  torch sgd     torchvision's model, train mode, SGD step per batch on tensors prepared
                beforehand (so PyTorch is not charged for preprocessing), torch.set_num_threads
  torch forward the same model in eval mode under torch.no_grad()

Models: the shipped MobileNetV2 (torchvision's, converted: scripts/models/convert_mobilenetv2.py) and
a ResNet-18 of torchvision's layout (scripts/models/make_resnet18.py, seeded weights); PyTorch runs
torchvision.models.mobilenet_v2() and resnet18() (same layers; weights do not change speed).

Usage (the torch venv of scripts/models/make_train_zoo.py):
  /var/tmp/torch-venv/bin/python scripts/bench/retrain_bench.py --bin target/release/fastretrain \\
      [--images 256] [--rounds 2] [--sizes 64 128] [--threads 2]
Writes docs/TRAINING-bench.json and docs/TRAINING-bench.md (the table in docs/TRAINING.md).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
import torchvision

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "scripts", "bench"))
import machine  # noqa: E402

TRAIN = os.path.join(ROOT, "data/fashion-mnist/train-images-idx3-ubyte.gz")
TEST = os.path.join(ROOT, "data/fashion-mnist/t10k-images-idx3-ubyte.gz")


def idx_images(path, n):
    with gzip.open(path) as f:
        data = f.read()
    count, rows, cols = (int.from_bytes(data[i:i + 4], "big") for i in (4, 8, 12))
    pixels = np.frombuffer(data, np.uint8, offset=16).reshape(count, rows, cols)
    return pixels[:n]


def torch_batches(n, size, batch):
    """The first n training images as normalised 3-channel tensors at size, in batches."""
    x = torch.from_numpy(idx_images(TRAIN, n).astype(np.float32) / 255.0)[:, None]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                        antialias=True, align_corners=False)
    x = (x.repeat(1, 3, 1, 1) - 0.45) / 0.226
    y = torch.from_numpy(np.arange(n) % 10)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def torch_epoch(model_name, n, size, batch, threads):
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = getattr(torchvision.models, model_name)(num_classes=10)
    batches = torch_batches(n, size, batch)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = time.perf_counter()
    for x, y in batches:
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    sgd = time.perf_counter() - start
    model.eval()
    start = time.perf_counter()
    with torch.no_grad():
        for x, _ in batches:
            model(x)
    forward = time.perf_counter() - start
    return n / sgd, n / forward


def ours(binary, model, n, size, batch, mode, threads):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.onnx")
        args = [binary, "--threads", str(threads), "retrain", "--model", model, "--data", TRAIN,
                "--limit", str(n), "--test-data", TEST, "--test-limit", "32", "--size",
                str(size), "--epochs", "1", "--batch", str(batch), "--lr", "1e-3",
                "--lambda", "10", "--mode", mode, "--out", out, "--json"]
        if mode == "fast":
            args += ["--ra", "0.5"]
        report = json.loads(subprocess.run(args, check=True, capture_output=True,
                                           text=True).stdout)
    m = report["metrics"]
    return n / m[1]["seconds_sgd"], n / m[0]["seconds_refit"], m[1]["trained_convs"], \
        m[1]["frozen_convs"]


def median(v):
    return float(np.median(v))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/fastretrain"))
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--models", nargs="+", default=["mobilenetv2", "resnet18"])
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    onnx_of = {"mobilenetv2": os.path.join(ROOT, "models/mobilenetv2.onnx")}
    if "resnet18" in args.models:
        path = os.path.join(tmp, "resnet18.onnx")
        subprocess.run([sys.executable, os.path.join(ROOT, "scripts/models/make_resnet18.py"), path],
                       check=True, capture_output=True)
        subprocess.run([args.bin, "spec", "--model", path, "--preset", "imagenet"], check=True,
                       capture_output=True)
        onnx_of["resnet18"] = path
    torch_name = {"mobilenetv2": "mobilenet_v2", "resnet18": "resnet18"}
    rows = []
    for model in args.models:
        for size in args.sizes:
            runs = {k: [] for k in ["sgd", "fast", "forward", "torch_sgd", "torch_forward"]}
            layers = None
            for _ in range(args.rounds):
                sgd, forward, trained, frozen = ours(args.bin, onnx_of[model], args.images, size,
                                                     args.batch, "sgd", args.threads)
                fast, _, f_trained, f_frozen = ours(args.bin, onnx_of[model], args.images, size,
                                                    args.batch, "fast", args.threads)
                t_sgd, t_forward = torch_epoch(torch_name[model], args.images, size, args.batch,
                                               args.threads)
                runs["sgd"].append(sgd)
                runs["fast"].append(fast)
                runs["forward"].append(forward)
                runs["torch_sgd"].append(t_sgd)
                runs["torch_forward"].append(t_forward)
                layers = {"convs": trained + frozen, "fast_frozen": f_frozen}
            row = {"model": model, "size": size, "images": args.images, "batch": args.batch,
                   **{k: median(v) for k, v in runs.items()}, "runs": runs, **layers}
            row["sgd_ratio"] = row["sgd"] / row["torch_sgd"]
            row["forward_ratio"] = row["forward"] / row["torch_forward"]
            row["fast_speedup"] = row["fast"] / row["sgd"]
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "runs"}), flush=True)
    result = {"machine": machine.cpu_description(), "torch": torch.__version__,
              "threads": args.threads, "rounds": args.rounds, "rows": rows,
              "command": "scripts/bench/retrain_bench.py " + " ".join(sys.argv[1:])}
    with open(os.path.join(ROOT, "docs/TRAINING-bench.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    lines = [
        f"Images/s, medians of {args.rounds} alternating rounds, {args.images} Fashion-MNIST "
        f"images, batch {args.batch}, {args.threads} threads; PyTorch {torch.__version__} "
        f"(CPU); {result['machine']}.",
        "",
        "| model | size | ours sgd | ours fast (ra 0.5) | torch sgd | sgd ratio | fast / sgd "
        "| ours forward | torch forward | forward ratio |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['size']} | {r['sgd']:.1f} | {r['fast']:.1f} "
            f"({r['fast_frozen']} of {r['convs']} frozen) | {r['torch_sgd']:.1f} | "
            f"**{r['sgd_ratio']:.2f}×** | {r['fast_speedup']:.2f}× | {r['forward']:.1f} | "
            f"{r['torch_forward']:.1f} | {r['forward_ratio']:.2f}× |")
    with open(os.path.join(ROOT, "docs/TRAINING-bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
