#!/usr/bin/env python3
"""fastretrain vs its peers, in one run: writes docs/BENCHMARKS.md, docs/BENCHMARKS.json and
docs/benchmarks.svg. Run it through scripts/bench.sh (builds, makes the venv).

Sections (each alternates us and the peer, round by round; medians over rounds):
  1. backbone forward ms/image (to the feature tensor): `fastretrain bench` (tract) vs
     onnxruntime, same model file, threads 1 and 2, batch 1 and 8, and two images at once
     (single-threaded each: how `learn` streams data);
  2. end-to-end `learn` images/s (decode + preprocess + forward + accumulate) vs an onnxruntime +
     PIL + NumPy pipeline doing the same work, with the time split per stage;
  3. head fitting on the same features (onnxruntime's, of the shipped Fashion-MNIST subset,
     written as a feature store): our fitting methods vs scikit-learn LogisticRegression,
     RidgeClassifier and SGDClassifier: fit time and test accuracy;
  4. peak RSS vs number of training rows: `fastretrain fit` (streams the store) vs the peer that
     holds the feature matrix (NumPy + RidgeClassifier). Rows beyond the 2,000 real ones repeat
     them: memory does not depend on the values.
Nothing here is a pass/fail check; tests/bench_smoke.rs runs it on tiny inputs.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from machine import cpu_description  # noqa: E402
from reference import load_spec, preprocess, read_idx  # noqa: E402
from methods_table import timed  # noqa: E402
from store_reader import read_store, write_store  # noqa: E402


def run_json(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(map(str, cmd))} failed:\n{out.stderr}")
    return json.loads(out.stdout)


_SESSIONS = {}


def ort_session(model, threads, tensor, reuse=False):
    """onnxruntime session whose output is `tensor` (the features, as our backbone stops
    there), with `threads` intra-op threads. `reuse`: the forward section's sessions are made
    once per configuration (making one is not timed; it saves the run ~10 s)."""
    import onnx
    import onnxruntime as ort
    if reuse and _SESSIONS.get((model, threads, tensor)):
        return _SESSIONS[(model, threads, tensor)].pop()
    proto = onnx.load(model)
    if tensor not in [o.name for o in proto.graph.output]:
        proto.graph.output.insert(0, onnx.helper.make_tensor_value_info(
            tensor, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def feature_tensor(a):
    """The tensor our backbone reads features from (what `bench --json` reports)."""
    return run_json([a.bin, "bench", "--json", "--model", a.model, "--runs", "1",
                     "--warmup", "0"])["feature_tensor"]


# ---------------------------------------------------------------- 1. forward


def ort_forward(model, spec, threads, batch, warmup, runs, tensor, parallel=1):
    """ms per image of onnxruntime; with `parallel` > 1, that many single-threaded sessions
    run a batch each at the same time (Python threads: onnxruntime releases the GIL)."""
    session_threads = 1 if parallel > 1 else threads
    sessions = [ort_session(model, session_threads, tensor, reuse=True) for _ in range(parallel)]
    name = sessions[0].get_inputs()[0].name
    h, w = spec["input"]["height"], spec["input"]["width"]
    x = np.random.default_rng(0).uniform(-1, 1, (batch, 3, h, w)).astype(np.float32)
    pool = ThreadPoolExecutor(parallel) if parallel > 1 else None

    def one_pass():
        if pool is None:
            sessions[0].run([tensor], {name: x})
        else:
            list(pool.map(lambda s: s.run([tensor], {name: x}), sessions))

    for _ in range(warmup):
        one_pass()
    ms = []
    for _ in range(runs):
        t = time.perf_counter()
        one_pass()
        ms.append((time.perf_counter() - t) * 1e3 / (batch * parallel))
    if pool is not None:
        pool.shutdown()
    # Handed back for the next round of the same configuration.
    _SESSIONS.setdefault((model, session_threads, tensor), []).extend(sessions)
    return statistics.median(ms)


# (threads, batch, images at once): the last is how `learn`/`extract`/`eval` stream data.
FORWARD_CONFIGS = [(1, 1, 1), (1, 8, 1), (2, 1, 1), (2, 8, 1), (2, 1, 2)]


def forward_section(a, spec):
    rows = {c: {"ours": [], "ort": []} for c in FORWARD_CONFIGS}
    for r in range(a.rounds):
        for threads, batch, parallel in FORWARD_CONFIGS:
            runs = max(2, a.runs // (batch * parallel))
            cmd = [a.bin, "--threads", str(threads), "bench", "--json", "--model", a.model,
                   "--batch", str(batch), "--parallel", str(parallel), "--runs", str(runs),
                   "--warmup", "2"]
            row = rows[(threads, batch, parallel)]
            row["ours"].append(run_json(cmd)["ms_per_image"])
            row["ort"].append(
                ort_forward(a.model, spec, threads, batch, 2, runs, a.tensor, parallel))
            print(f"forward round {r} t{threads} b{batch} p{parallel}: "
                  f"{ {k: v[-1] for k, v in row.items() if v} }", file=sys.stderr, flush=True)
    return [{"threads": t, "batch": b, "parallel": p,
             **{k: statistics.median(v) for k, v in rows[(t, b, p)].items() if v}}
            for (t, b, p) in FORWARD_CONFIGS]


# ---------------------------------------------------------------- 2. end to end


def peer_learn(model, spec, images_path, n, threads, tensor):
    """The same work as `learn`: decode (IDX), preprocess (PIL antialiased resize, crop,
    normalise), forward (onnxruntime, batch 1), accumulate G = Σ x xᵀ, B = Σ x tᵀ per 64."""
    from PIL import Image
    session = ort_session(model, threads, tensor)
    name = session.get_inputs()[0].name
    stages = {"decode": 0.0, "preprocess": 0.0, "forward": 0.0, "accumulate": 0.0}
    started = time.perf_counter()
    t = time.perf_counter()
    images = read_idx(images_path)[:n]
    labels = read_idx(images_path.replace("images-idx3", "labels-idx1"))[:n]
    stages["decode"] += time.perf_counter() - t
    feats, dim = [], None
    gram = cross = None
    for i, img in enumerate(images):
        t = time.perf_counter()
        x = preprocess(Image.fromarray(img), spec)[None]
        t2 = time.perf_counter()
        f = session.run([tensor], {name: x})[0].reshape(-1)
        t3 = time.perf_counter()
        stages["preprocess"] += t2 - t
        stages["forward"] += t3 - t2
        feats.append(f)
        if len(feats) == 64 or i == len(images) - 1:
            t = time.perf_counter()
            xb = np.hstack([np.array(feats, np.float64), np.ones((len(feats), 1))])
            tb = -np.ones((len(feats), 10))
            tb[np.arange(len(feats)), labels[i + 1 - len(feats):i + 1]] = 1
            if gram is None:
                gram, cross = np.zeros((xb.shape[1],) * 2), np.zeros((xb.shape[1], 10))
            gram += xb.T @ xb
            cross += xb.T @ tb
            feats = []
            stages["accumulate"] += time.perf_counter() - t
    seconds = time.perf_counter() - started
    return {"images_per_second": len(images) / seconds, "seconds": seconds, "stages": stages}


def learn_section(a, spec, work):
    images = os.path.join(ROOT, "data/fashion-mnist/train-images-idx3-ubyte.gz")
    ours, peer = [], []
    for r in range(a.rounds):
        state = os.path.join(work, f"learn{r}.frs")
        out = run_json([a.bin, "--threads", "2", "learn", "--json", "--state", state,
                        "--model", a.model, "--data", images, "--limit", str(a.learn_n),
                        "--lambda", "1"])
        ours.append({"images_per_second": out["images_per_second"],
                     "seconds": out["seconds_features"], "stages": out["stages"]})
        peer.append(peer_learn(a.model, spec, images, a.learn_n, 2, a.tensor))
        print(f"learn round {r}: ours {ours[-1]['images_per_second']:.1f} img/s, "
              f"peer {peer[-1]['images_per_second']:.1f} img/s", file=sys.stderr, flush=True)

    def med(runs):
        best = sorted(runs, key=lambda x: x["images_per_second"])[len(runs) // 2]
        return best

    return {"images": a.learn_n, "ours": med(ours), "peer": med(peer)}


# ---------------------------------------------------------------- 3. heads


def ort_features(model, spec, images_path, n, threads, tensor):
    from PIL import Image
    session = ort_session(model, threads, tensor)
    name = session.get_inputs()[0].name
    images = read_idx(images_path)[:n]
    labels = read_idx(images_path.replace("images-idx3", "labels-idx1"))[:n]
    x = np.stack([session.run([tensor], {name: preprocess(Image.fromarray(i), spec)[None]})[0]
                  .reshape(-1) for i in images])
    return x.astype(np.float32), [int(v) for v in labels]


def feature_stores(a, spec, work):
    """The shipped subset's onnxruntime features as train/test stores (labels by name), under
    the backbone fingerprint our `learn` recorded for this model."""
    backbone = run_json([a.bin, "info", "--json", "--state", os.path.join(work, "learn0.frs")])
    sha, tensor = backbone["backbone"]["model_sha256"], backbone["backbone"]["feature_tensor"]
    names = open(os.path.join(ROOT, "data/fashion-mnist/labels.txt")).read().split("\n")
    stores = {}
    for split, n in (("train", a.train_n), ("test", a.test_n)):
        path = os.path.join(ROOT, f"data/fashion-mnist/{'train' if split == 'train' else 't10k'}"
                                  "-images-idx3-ubyte.gz")
        x, y = ort_features(a.model, spec, path, n, 2, tensor)
        stores[split] = (os.path.join(work, f"{split}.frf"), x, [names[v] for v in y])
        write_store(stores[split][0], x, stores[split][2], sha, a.model, tensor, "f32")
    return stores, (sha, tensor)


OUR_METHODS = [
    ("fastretrain gram", ["--method", "gram"]),
    ("fastretrain block-rls", ["--method", "block-rls"]),
    ("fastretrain step (η 0.5)", ["--method", "step"]),
    ("fastretrain recompute (1024 bsig, 2 it.)",
     ["--method", "recompute", "--hidden", "1024", "--iterations", "2"]),
]


def peer_fit(kind, x, y, xt, yt, alpha):
    from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
    model = {"LogisticRegression (lbfgs, max_iter 1000)": lambda: LogisticRegression(max_iter=1000),
             "RidgeClassifier (alpha = our λ)": lambda: RidgeClassifier(alpha=alpha),
             "SGDClassifier (hinge, defaults)": lambda: SGDClassifier(random_state=0)}[kind]()
    t = time.perf_counter()
    model.fit(x, y)
    seconds = time.perf_counter() - t
    return seconds, float((model.predict(xt) == np.array(yt)).mean())


def heads_section(a, stores, work):
    train, test = stores["train"][0], stores["test"][0]
    rows = {}
    for r in range(a.rounds):
        lam = None
        for name, args in OUR_METHODS:
            state = os.path.join(work, "fit.frs")
            if os.path.exists(state):
                os.remove(state)
            fit = run_json([a.bin, "fit", "--json", "--state", state, "--store", train] + args)
            ev = run_json([a.bin, "eval", "--json", "--state", state, "--store", test])
            lam = lam or fit["lambda"]
            rows.setdefault(name, []).append((fit["seconds"], ev["accuracy"]))
        _, x, y = stores["train"]
        _, xt, yt = stores["test"]
        for kind in ("LogisticRegression (lbfgs, max_iter 1000)", "RidgeClassifier (alpha = our λ)",
                     "SGDClassifier (hinge, defaults)"):
            rows.setdefault("scikit-learn " + kind, []).append(peer_fit(kind, x, y, xt, yt, lam))
        print(f"heads round {r}: { {k: v[-1] for k, v in rows.items()} }", file=sys.stderr,
              flush=True)
    return {"lambda": lam, "rows": {k: {"fit_seconds": statistics.median(s for s, _ in v),
                                        "accuracy": v[0][1]} for k, v in rows.items()}}


# ---------------------------------------------------------------- 4. memory


def peer_memory_main(args):
    """The peer's fit, run as its own process under /usr/bin/time like ours. (Its own
    getrusage would not do: a child spawned from this big process by vfork + exec inherits
    this process's peak RSS as its own.)"""
    from sklearn.linear_model import RidgeClassifier
    x, y, _ = read_store(args.store)
    RidgeClassifier(alpha=1.0).fit(x, y)


def memory_section(a, stores, fingerprint, work):
    _, x, y = stores["train"]
    rows = []
    for n in a.rss_rows:
        reps = -(-n // len(x))
        xn = np.tile(x, (reps, 1))[:n]
        yn = (y * reps)[:n]
        path = os.path.join(work, f"rows{n}.frf")
        write_store(path, xn, yn, fingerprint[0], a.model, fingerprint[1], "f16")
        state = os.path.join(work, f"rows{n}.frs")
        if os.path.exists(state):
            os.remove(state)
        _, wall, ours = timed([a.bin, "fit", "--json", "--state", state, "--store", path,
                               "--lambda", "1"])
        _, _, peer = timed([sys.executable, os.path.abspath(__file__), "peer-memory", "--store",
                            path])
        rows.append({"rows": n, "ours_mb": ours, "peer_mb": peer,
                     "store_mb": os.path.getsize(path) / 2**20})
        os.remove(path)
        print(f"memory {n}: {rows[-1]}", file=sys.stderr, flush=True)
    return rows


# ---------------------------------------------------------------- report


def ratio(peer, ours):
    return peer / ours if ours else float("nan")


def write_report(a, r):
    L = ["# Benchmarks: fastretrain vs its peers, one run", "",
         f"Produced by `{a.command}` on {r['machine']} ({r['date']}); raw numbers in "
         "`docs/BENCHMARKS.json`, plot in `docs/benchmarks.svg`. Each section alternates us and "
         f"the peer, {a.rounds} rounds; figures are medians. Ratio = peer time / our time "
         "(> 1: we are faster). This is a shared 2-core VM: timings vary run to run; compare "
         "rows of the same run, not runs.", "",
         f"## 1. Backbone forward ({r['model']}, ms per image)", "",
         "| threads | batch | images at once | fastretrain (tract) | onnxruntime | ratio |",
         "|---|---|---|---|---|---|"]
    for f in r["forward"]:
        L.append(f"| {f['threads']} | {f['batch']} | {f['parallel']} | {f['ours']:.3g} | "
                 f"{f['ort']:.3g} | {ratio(f['ort'], f['ours']):.2f}× |")
    L += ["", "Images at once = 2: two single-threaded runs side by side (our `learn`, `extract` "
          "and `eval` stream data this way; onnxruntime gets two 1-thread sessions); the time is "
          "per image of throughput."]
    le = r["learn"]
    L += ["", f"## 2. End-to-end `learn` ({le['images']} Fashion-MNIST images, 2 threads)", "",
          "| | images/s | decode s | preprocess s | forward s | accumulate s | accumulate / "
          "forward |", "|---|---|---|---|---|---|---|"]
    for who, key in (("fastretrain learn", "ours"), ("onnxruntime + PIL + NumPy", "peer")):
        s = le[key]["stages"]
        L.append(f"| {who} | {le[key]['images_per_second']:.1f} | {s['decode']:.2f} | "
                 f"{s['preprocess']:.2f} | {s['forward']:.2f} | {s['accumulate']:.3f} | "
                 f"{100 * s['accumulate'] / max(s['forward'], 1e-9):.2f} % |")
    L.append(f"\nRatio (our images/s / peer's): "
             f"{le['ours']['images_per_second'] / le['peer']['images_per_second']:.2f}×.")
    h = r["heads"]
    L += ["", f"## 3. Head fitting on the same features ({a.train_n} train / {a.test_n} test, "
          f"onnxruntime features of the shipped subset; λ by our GCV = {h['lambda']:.3g})", "",
          "| method | fit s | test accuracy | time vs our gram |", "|---|---|---|---|"]
    gram = h["rows"]["fastretrain gram"]["fit_seconds"]
    for name, v in h["rows"].items():
        L.append(f"| {name} | {v['fit_seconds']:.3g} | {v['accuracy']:.4f} | "
                 f"{v['fit_seconds'] / gram:.1f}× |")
    L += ["", "## 4. Peak RSS vs training rows (MB)", "",
          "| rows | fastretrain fit (streams the f16 store) | NumPy + RidgeClassifier (holds the "
          "matrix) | store on disk |", "|---|---|---|---|"]
    for m in r["memory"]:
        L.append(f"| {m['rows']:,} | {m['ours_mb']:.0f} | {m['peer_mb']:.0f} | "
                 f"{m['store_mb']:.0f} |")
    L += ["", f"This run took {r['seconds']:.0f} s: " + ", ".join(
        f"{name} {sec:.0f} s" for name, sec in r["section_seconds"].items()) + ".", ""]
    with open(os.path.join(a.out, "BENCHMARKS.md"), "w") as f:
        f.write("\n".join(L))


def plot(a, r):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    labels = [f"{f['threads']}t b{f['batch']}" + (f" ×{f['parallel']}" if f["parallel"] > 1
                                                   else "") for f in r["forward"]]
    xs = np.arange(len(labels))
    ax1.bar(xs - 0.2, [f["ours"] for f in r["forward"]], 0.4, label="fastretrain (tract)")
    ax1.bar(xs + 0.2, [f["ort"] for f in r["forward"]], 0.4, label="onnxruntime")
    ax1.set_xticks(xs, labels)
    ax1.set_ylabel("ms / image")
    ax1.set_title("MobileNetV2 forward")
    ax1.legend()
    rows = [m["rows"] for m in r["memory"]]
    ax2.plot(rows, [m["ours_mb"] for m in r["memory"]], "o-", label="fastretrain fit")
    ax2.plot(rows, [m["peer_mb"] for m in r["memory"]], "s-", label="NumPy + RidgeClassifier")
    ax2.set_xscale("log")
    ax2.set_xlabel("training rows")
    ax2.set_ylabel("peak RSS MB")
    ax2.set_title("Memory vs samples")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "benchmarks.svg"))


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "peer-memory":
        p = argparse.ArgumentParser()
        p.add_argument("cmd")
        p.add_argument("--store", required=True)
        return peer_memory_main(p.parse_args())
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--model", default=os.path.join(ROOT, "models/mobilenetv2.onnx"))
    p.add_argument("--out", default=os.path.join(ROOT, "docs"))
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--runs", type=int, default=16, help="timed forward images per config")
    p.add_argument("--learn-n", type=int, default=200)
    p.add_argument("--train-n", type=int, default=2000)
    p.add_argument("--test-n", type=int, default=1000)
    p.add_argument("--rss-rows", default="1000,10000,60000")
    p.add_argument("--command", default="scripts/bench.sh")
    a = p.parse_args()
    a.model = os.path.abspath(a.model)
    a.rss_rows = [int(v) for v in a.rss_rows.split(",")]
    a.tensor = feature_tensor(a)
    spec = load_spec(os.path.splitext(a.model)[0] + ".json")
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-")
    started = time.time()
    r = {"machine": cpu_description(),
         "date": time.strftime("%Y-%m-%d"),
         "model": f"{os.path.basename(a.model)} {spec['input']['height']}×{spec['input']['width']}"}
    r["section_seconds"] = {}

    def section(name, run):
        t = time.time()
        value = run()
        r["section_seconds"][name] = time.time() - t
        return value

    r["forward"] = section("forward", lambda: forward_section(a, spec))
    r["learn"] = section("learn", lambda: learn_section(a, spec, work))
    stores, fingerprint = section("feature stores", lambda: feature_stores(a, spec, work))
    r["heads"] = section("heads", lambda: heads_section(a, stores, work))
    r["memory"] = section("memory", lambda: memory_section(a, stores, fingerprint, work))
    r["seconds"] = time.time() - started
    with open(os.path.join(a.out, "BENCHMARKS.json"), "w") as f:
        json.dump(r, f, indent=1)
    write_report(a, r)
    plot(a, r)
    print(f"benchmarks written to {a.out} in {r['seconds']:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
