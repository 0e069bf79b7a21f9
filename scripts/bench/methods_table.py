#!/usr/bin/env python3
"""Fitting methods on the same stored features: accuracy, fit time and peak memory of gram,
block-rls, step and recompute (fastretrain), f16 vs f32 stores, scikit-learn's
LogisticRegression and RidgeClassifier as peers, and test accuracy vs λ (10^-4 … 10^4).
Writes docs/METHODS.md. Run through scripts/bench/methods-table.sh, which makes the stores.

  methods_table.py --bin target/release/fastretrain --stores DIR --out docs/METHODS.md
  methods_table.py peer --train T.frf --test T.frf --model logreg|ridge   (one peer, JSON)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

TIMING_NOTE = ("Timings on this shared 2-core VM vary by up to about 2× from run to run (up to 50 % CPU steal time was observed during these runs; e.g. the f16 and f32 rows of one method do the same work), so read them as orders of magnitude. Extracting the stores is a one-off cost not included: about 22 images/s for the backbone on this machine.")
LAMBDAS = [10.0 ** e for e in range(-4, 5)]
METHODS = [
    ("gram", ["--method", "gram"]),
    ("block-rls", ["--method", "block-rls"]),
    ("step (η 0.5, 1 pass)", ["--method", "step", "--eta", "0.5", "--passes", "1"]),
    ("recompute (1024 bsig, 2 it.)",
     ["--method", "recompute", "--hidden", "1024", "--activation", "bsig", "--iterations", "2"]),
]


def timed(cmd):
    """Runs cmd under /usr/bin/time; returns (stdout, wall seconds, peak RSS MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        out = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%e %M"] + cmd,
                             capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr}")
        wall, rss_kb = open(t.name).read().split()[-2:]
    return out.stdout, float(wall), int(rss_kb) / 1024.0


def ours(binary, train, test, method_args, lam, workdir):
    state = os.path.join(workdir, "fit.frs")
    if os.path.exists(state):
        os.remove(state)
    cmd = [binary, "fit", "--json", "--state", state, "--store", train] + method_args
    if lam is not None:
        cmd += ["--lambda", repr(lam)]
    out, wall, rss = timed(cmd)
    fit = json.loads(out)
    ev = json.loads(subprocess.run([binary, "eval", "--json", "--state", state, "--store", test],
                                   capture_output=True, text=True, check=True).stdout)
    return {"lambda": fit["lambda"], "fit_seconds": fit["seconds"], "wall_seconds": wall,
            "peak_rss_mb": rss, "accuracy": ev["accuracy"]}


def peer_main(args):
    import numpy as np
    from sklearn.linear_model import LogisticRegression, RidgeClassifier
    from store_reader import read_store

    x, y, _ = read_store(args.train)
    xt, yt, _ = read_store(args.test)
    started = time.perf_counter()
    if args.model == "logreg":
        model = LogisticRegression(max_iter=args.max_iter)
    else:
        model = RidgeClassifier(alpha=args.alpha)
    model.fit(x, np.array(y))
    seconds = time.perf_counter() - started
    accuracy = float((model.predict(xt) == np.array(yt)).mean())
    iters = getattr(model, "n_iter_", None)
    print(json.dumps({"fit_seconds": seconds, "accuracy": accuracy,
                      "iterations": None if iters is None else int(np.max(iters))}))


def peer(train, test, model, extra=()):
    cmd = [sys.executable, os.path.abspath(__file__), "peer", "--train", train, "--test", test,
           "--model", model] + list(extra)
    # Peak RSS from /usr/bin/time, as for ours: the peer's own getrusage would count this
    # process's peak too (vfork + exec hands it over).
    out, _, rss = timed(cmd)
    return {**json.loads(out), "peak_rss_mb": rss}


def fmt_lambda(v):
    return f"{v:.3g}"


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "peer":
        p = argparse.ArgumentParser()
        p.add_argument("peer")
        p.add_argument("--train", required=True)
        p.add_argument("--test", required=True)
        p.add_argument("--model", required=True)
        p.add_argument("--max-iter", type=int, default=1000)
        p.add_argument("--alpha", type=float, default=1.0)
        return peer_main(p.parse_args())
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--stores", required=True, help="folder with train/test .f16.frf and .f32.frf")
    p.add_argument("--out", required=True)
    p.add_argument("--command", default="scripts/bench/methods-table.sh")
    a = p.parse_args()
    s = lambda name: os.path.join(a.stores, name)  # noqa: E731
    stores = {prec: (s(f"train.{prec}.frf"), s(f"test.{prec}.frf")) for prec in ("f16", "f32")}
    results = {"auto": {}, "grid": {}}
    work = tempfile.mkdtemp(prefix="methods-")
    for name, args in METHODS:
        for prec in ("f16", "f32"):
            train, test = stores[prec]
            r = ours(a.bin, train, test, args, None, work)
            results["auto"][(name, prec)] = r
            print(f"{name} {prec} auto: {r}", file=sys.stderr, flush=True)
        train, test = stores["f16"]
        for lam in LAMBDAS:
            r = ours(a.bin, train, test, args, lam, work)
            results["grid"][(name, lam)] = r
            print(f"{name} λ={lam:g}: {r}", file=sys.stderr, flush=True)
    peers = {}
    train, test = stores["f16"]
    peers["scikit-learn LogisticRegression (lbfgs, C=1, max_iter 1000)"] = peer(train, test, "logreg")
    print(f"logreg: {peers}", file=sys.stderr, flush=True)
    gcv = results["auto"][("gram", "f16")]["lambda"]
    peers[f"scikit-learn RidgeClassifier (alpha = our GCV λ {fmt_lambda(gcv)})"] = peer(
        train, test, "ridge", ["--alpha", repr(gcv)])

    from store_reader import read_store
    n_train = len(read_store(stores["f32"][0])[1])
    n_test = len(read_store(stores["f32"][1])[1])
    lines = [
        "# Fitting methods compared",
        "",
        f"Fashion-MNIST, MobileNetV2 penultimate features (1,280) of **{n_train:,} training** and "
        f"**{n_test:,} test** images, extracted once by `fastretrain extract` into feature stores; "
        "every method below fits from the same store and is evaluated on the test store "
        "(`fastretrain eval --store`). Machine: 2 cores. "
        f"Regenerate with `{a.command}` (it extracts the stores if missing, then runs "
        "`scripts/bench/methods_table.py`).",
        "",
        "Fit time is what `fit` reports (reading the store + the method); wall and peak RSS are "
        "from `/usr/bin/time` around the whole `fit` process. The peers run on the same f16 "
        "store's features (as float32, via `scripts/reference/store_reader.py`); their time is "
        "`model.fit` alone and their RSS the whole Python process (which holds the feature "
        "matrix). " + TIMING_NOTE,
        "",
        "The methods (Yang et al., TPAMI 2019, and Zhang, Yang & Wu, 2020; `fastretrain fit --method …`): **gram** solves "
        "`(G + λI)W = B` once from the streamed Gram statistics; **block-rls** keeps "
        "`K = (G + λI)⁻¹` in f64 and updates K and W per batch of 64 (a head after every batch, "
        "no d³ solve; equal to gram after the last batch); **step** is the first paper version's "
        "`W ← W + η (XbᵀXb + λI)⁻¹ Xbᵀ(Tb − XbW)` per batch (approximate); **recompute** is "
        "Yang et al.'s hidden-layer head, refit by pulling the targets back through the output "
        "layer. Exactness against NumPy is tested in `tests/methods_reference.rs` (block-rls vs "
        "one-shot ridge: 2.5e-12 relative; step and recompute vs the same steps in NumPy: "
        "≤ 3e-12).",
        "",
        "## At the automatic λ (GCV on the Gram statistics)",
        "",
        "| method | store | λ | test accuracy | fit s | wall s | peak RSS MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, _ in METHODS:
        for prec in ("f16", "f32"):
            r = results["auto"][(name, prec)]
            lines.append(f"| {name} | {prec} | {fmt_lambda(r['lambda'])} | {r['accuracy']:.4f} | "
                         f"{r['fit_seconds']:.2f} | {r['wall_seconds']:.2f} | {r['peak_rss_mb']:.0f} |")
    for name, r in peers.items():
        it = f" ({r['iterations']} iterations)" if r.get("iterations") else ""
        lines.append(f"| {name}{it} | f16 | – | {r['accuracy']:.4f} | {r['fit_seconds']:.2f} | – | "
                     f"{r['peak_rss_mb']:.0f} |")
    lines += [
        "",
        "## Test accuracy vs λ (f16 store)",
        "",
        "| λ | " + " | ".join(n for n, _ in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for lam in LAMBDAS:
        cells = [f"{results['grid'][(n, lam)]['accuracy']:.4f}" for n, _ in METHODS]
        lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
    auto = [results["auto"][(n, "f16")] for n, _ in METHODS]
    lines.append("| **GCV** | " + " | ".join(
        f"**{r['accuracy']:.4f}** (λ {fmt_lambda(r['lambda'])})" for r in auto) + " |")
    lines += [
        "",
        "Fit seconds per λ (f16 store):",
        "",
        "| λ | " + " | ".join(n for n, _ in METHODS) + " |",
        "|---|" + "---|" * len(METHODS),
    ]
    for lam in LAMBDAS:
        cells = [f"{results['grid'][(n, lam)]['fit_seconds']:.2f}" for n, _ in METHODS]
        lines.append(f"| {lam:g} | " + " | ".join(cells) + " |")
    with open(a.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    raw = {"auto": {f"{k[0]} {k[1]}": v for k, v in results["auto"].items()},
           "grid": {f"{k[0]} {k[1]:g}": v for k, v in results["grid"].items()}, "peers": peers,
           "train": n_train, "test": n_test}
    with open(os.path.splitext(a.out)[0] + ".json", "w") as f:
        json.dump(raw, f, indent=1)
    print(f"wrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
