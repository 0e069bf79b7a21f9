#!/usr/bin/env python3
"""Plot and table of `fastretrain retrain` metrics: accuracy and training time per epoch, one
line per mode. Reads the JSON-lines metrics files the runs wrote (one per mode); writes an SVG
plot and prints a Markdown table (epoch rows, per-mode accuracy and seconds).

    retrain_plot.py --out docs/retrain.svg fast.jsonl sgd.jsonl sgd-mp.jsonl > table.md
"""
import argparse
import json


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(runs):
    modes = [r[0]["mode"] for r in runs]
    head = "| epoch | " + " | ".join(f"{m} acc | {m} s" for m in modes) + " |"
    lines = [head, "|---|" + "---|---|" * len(modes)]
    epochs = max(len(r) for r in runs)
    for e in range(epochs):
        cells = []
        for r in runs:
            if e < len(r):
                cells += [f"{r[e]['test_accuracy']:.4f}", f"{r[e]['seconds_train']:.1f}"]
            else:
                cells += ["", ""]
        label = "0 (edge refit)" if e == 0 else str(e)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    totals = []
    for r in runs:
        totals += [f"best {max(m['test_accuracy'] for m in r):.4f}",
                   f"{sum(m['seconds_train'] for m in r[1:]):.1f}"]
    lines.append("| total (epochs ≥ 1) | " + " | ".join(totals) + " |")
    return "\n".join(lines)


def plot(runs, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        epochs = [m["epoch"] for m in r]
        ax1.plot(epochs, [m["test_accuracy"] for m in r], "o-", label=r[0]["mode"])
        ax2.plot(epochs[1:], [m["seconds_train"] for m in r[1:]], "o-", label=r[0]["mode"])
    ax1.set_xlabel("epoch (0: edge-only refit)")
    ax1.set_ylabel("test accuracy")
    ax1.legend()
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("training seconds (SGD + refit)")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(out)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True, help="SVG plot")
    p.add_argument("metrics", nargs="+")
    a = p.parse_args()
    runs = [load(m) for m in a.metrics]
    plot(runs, a.out)
    print(table(runs))


if __name__ == "__main__":
    main()
