#!/usr/bin/env python3
"""fastretrain vs its peers, in one run: writes docs/BENCHMARKS.md, docs/BENCHMARKS.json and
docs/benchmarks.svg. Run it through scripts/bench/bench.sh (builds, makes the venv).

Sections (each alternates us and the peer, round by round; medians over rounds):
  1. backbone forward ms/image (to the features: every tensor of the model's recipe, pooled):
     `fastretrain bench` with tract, with our onnxruntime engine (`--engine onnxruntime`), and
     with an earlier build (`--before-bin`, optional) vs onnxruntime from Python, same model
     file, threads 1 and 2, one image per run (batches were slower per image in tract, and the
     option is gone), and two images at once (single-threaded each: how
     `learn` streams data); for MobileNetV2 and a second family (ResNet-18, made by
     scripts/models/make_resnet18.py: speed depends on shapes, not weights);
  2. end-to-end `learn` images/s (decode + preprocess + forward + accumulate) vs an onnxruntime +
     PIL + NumPy pipeline doing the same work (the same tensors, pooled the same way), with the
     time split per stage, for both models;
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
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))

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


def recipe_tensors(descriptor):
    """The tensors of a feature descriptor: a plain tensor name, or a recipe's JSON."""
    return json.loads(descriptor)["tensors"] if descriptor.startswith("{") else [descriptor]


def pooled_features(outputs):
    """One image's feature vector as our recipes make it: 4-D outputs averaged over their two
    spatial axes (NCHW here), all flattened and concatenated."""
    return np.concatenate([o.mean(axis=(2, 3)).reshape(-1) if o.ndim == 4 else o.reshape(-1)
                           for o in outputs])


def ort_session(model, threads, tensor, reuse=False):
    """onnxruntime session whose outputs are the recipe's tensors (`tensor`, a descriptor:
    our backbone stops there), with `threads` intra-op threads. `reuse`: the forward section's
    sessions are made once per configuration (making one is not timed; it saves the run ~10 s)."""
    import onnx
    import onnxruntime as ort
    if reuse and _SESSIONS.get((model, threads, tensor)):
        return _SESSIONS[(model, threads, tensor)].pop()
    proto = onnx.load(model)
    del proto.graph.output[:]
    for name in recipe_tensors(tensor):
        proto.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(proto.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def feature_tensor(a, model):
    """The features our backbone reads (what `bench --json` reports: a tensor name or a
    recipe's descriptor)."""
    return run_json([a.bin, "bench", "--json", "--model", model, "--runs", "1",
                     "--warmup", "0"])["feature_tensor"]


def has_ort_engine(a):
    """Whether --bin was built with the onnxruntime engine (`--features onnxruntime`)."""
    out = subprocess.run([a.bin, "--engine", "onnxruntime", "--onnxruntime-lib", a.ort_lib,
                          "bench", "--json", "--model", a.model, "--runs", "1", "--warmup", "0"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        print(f"no onnxruntime engine column: {out.stderr.strip()}", file=sys.stderr)
    return out.returncode == 0


def our_binaries(a):
    """(column, command prefix) of each build timed: tract, our onnxruntime engine (when the
    build has it), and the earlier build when given."""
    runs = [("tract", [a.bin])]
    if a.ort_engine:
        runs.append(("ort_engine",
                     [a.bin, "--engine", "onnxruntime", "--onnxruntime-lib", a.ort_lib]))
    if a.before_bin:
        runs.insert(0, ("before", [a.before_bin]))
    return runs


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
            sessions[0].run(None, {name: x})
        else:
            list(pool.map(lambda s: s.run(None, {name: x}), sessions))

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
FORWARD_CONFIGS = [(1, 1, 1), (2, 1, 1), (2, 1, 2)]
# The second model: the configurations that tell (one image, and how learn streams).
FORWARD_CONFIGS_SECOND = [(1, 1, 1), (2, 1, 2)]


def forward_section(a, model, spec, tensor, configs):
    rows = {c: {} for c in configs}
    for r in range(a.rounds):
        for threads, batch, parallel in configs:
            runs = max(2, a.runs // (batch * parallel))
            row = rows[(threads, batch, parallel)]
            for column, prefix in our_binaries(a):
                cmd = prefix + ["--threads", str(threads), "bench", "--json", "--model", model,
                                "--parallel", str(parallel), "--runs", str(runs), "--warmup",
                                "2"]
                row.setdefault(column, []).append(run_json(cmd)["ms_per_image"])
            row.setdefault("ort", []).append(
                ort_forward(model, spec, threads, batch, 2, runs, tensor, parallel))
            print(f"forward {os.path.basename(model)} round {r} t{threads} b{batch} "
                  f"p{parallel}: { {k: v[-1] for k, v in row.items() if v} }", file=sys.stderr,
                  flush=True)
    return [{"threads": t, "batch": b, "parallel": p,
             **{k: statistics.median(v) for k, v in rows[(t, b, p)].items() if v}}
            for (t, b, p) in configs]


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
        f = pooled_features(session.run(None, {name: x}))
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


def learn_section(a, model, spec, tensor, work, images):
    """`learn` of each build and the peer, alternating; `images`: an IDX file of grey images
    (every model here takes 3 channels: both pipelines repeat the grey value)."""
    runs = {}
    for r in range(a.rounds):
        for column, prefix in our_binaries(a):
            state = os.path.join(work, f"learn-{column}-{os.path.basename(model)}{r}.frs")
            out = run_json(prefix + ["--threads", "2", "learn", "--json", "--state", state,
                                     "--model", model, "--data", images, "--limit",
                                     str(a.learn_n), "--lambda", "1"])
            runs.setdefault(column, []).append({
                "images_per_second": out["images_per_second"],
                "seconds": out["seconds_features"], "stages": out["stages"]})
        runs.setdefault("peer", []).append(peer_learn(model, spec, images, a.learn_n, 2, tensor))
        print(f"learn {os.path.basename(model)} round {r}: "
              f"{ {k: round(v[-1]['images_per_second'], 1) for k, v in runs.items()} }",
              file=sys.stderr, flush=True)

    def med(runs):
        return sorted(runs, key=lambda x: x["images_per_second"])[len(runs) // 2]

    return {"images": a.learn_n, **{k: med(v) for k, v in runs.items()}}


# ---------------------------------------------------------------- 3. heads


def ort_features(model, spec, images_path, n, threads, tensor):
    from PIL import Image
    session = ort_session(model, threads, tensor)
    name = session.get_inputs()[0].name
    images = read_idx(images_path)[:n]
    labels = read_idx(images_path.replace("images-idx3", "labels-idx1"))[:n]
    x = np.stack([pooled_features(session.run(None, {name: preprocess(Image.fromarray(i), spec)
                                                        [None]})) for i in images])
    return x.astype(np.float32), [int(v) for v in labels]


def feature_stores(a, spec, work):
    """The shipped subset's onnxruntime features as train/test stores (labels by name), under
    the backbone fingerprint our `learn` recorded for this model."""
    state = os.path.join(work, f"learn-tract-{os.path.basename(a.model)}0.frs")
    backbone = run_json([a.bin, "info", "--json", "--state", state])
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


COLUMNS = (("before", "before"), ("tract", "tract"), ("ort_engine", "ort engine"))


def forward_table(rows, title):
    have = [(k, name) for k, name in COLUMNS if k in rows[0]]
    L = ["", f"## {title}", "",
         "| threads | batch | images at once | " + " | ".join(n for _, n in have) +
         " | onnxruntime | ratio tract | ratio ort engine |",
         "|---|---|---|" + "---|" * (len(have) + 3)]
    for f in rows:
        L.append(f"| {f['threads']} | {f['batch']} | {f['parallel']} | " +
                 " | ".join(f"{f[k]:.3g}" for k, _ in have) +
                 f" | {f['ort']:.3g} | {ratio(f['ort'], f['tract']):.2f}× | "
                 f"{ratio(f['ort'], f.get('ort_engine', 0)):.2f}× |")
    return L


def learn_table(le, title):
    L = ["", f"## {title}", "",
         "| | images/s | decode s | preprocess s | forward s | accumulate s | ratio to peer |",
         "|---|---|---|---|---|---|---|"]
    peer = le["peer"]["images_per_second"]
    for key, who in (("before", "fastretrain learn, before"), ("tract", "fastretrain learn (tract)"),
                     ("ort_engine", "fastretrain learn --engine onnxruntime"),
                     ("peer", "onnxruntime + PIL + NumPy")):
        if key not in le:
            continue
        s = le[key]["stages"]
        L.append(f"| {who} | {le[key]['images_per_second']:.1f} | {s['decode']:.2f} | "
                 f"{s['preprocess']:.2f} | {s['forward']:.2f} | {s['accumulate']:.3f} | "
                 f"{le[key]['images_per_second'] / peer:.2f}× |")
    return L


def write_report(a, r):
    L = ["# Benchmarks: fastretrain vs its peers, one run", "",
         f"Produced by `{a.command}` on {r['machine']} ({r['date']}), onnxruntime "
         f"{r['onnxruntime']}; raw numbers in "
         "`docs/BENCHMARKS.json`, plot in `docs/benchmarks.svg`. Each section alternates us and "
         f"the peer, {a.rounds} rounds; figures are medians. Ratio = peer time / our time "
         "(> 1: we are faster). This is a shared 2-core VM: timings vary run to run; compare "
         "rows of the same run, not runs.", "",
         "Columns: **before** = the build before the tract patches (tract 0.23.9 as published); "
         "**tract** = this build's default engine (tract with our patches: x86 depthwise kernel, direct stem, whole-column stores, ReLU6 fused into depthwise, stem tails in vectors; "
         "vendor/README.md); **ort engine** = this build with `--engine onnxruntime` (the same "
         "libonnxruntime.so Python loads); **onnxruntime** = Python's onnxruntime, the peer. "
         "Ratio = peer time / our time (tract and ort engine; > 1: we are faster)."]
    for number, (key, title) in enumerate(r["models"].items(), start=1):
        L += forward_table(r["forward"][key], f"1.{number}. Backbone forward ({title}, ms per "
                           "image)")
    L += ["", "Images at once = 2: two single-threaded runs side by side (our `learn`, `extract` "
          "and `eval` stream data this way; onnxruntime gets two 1-thread sessions); the time is "
          "per image of throughput."]
    for number, (key, title) in enumerate(r["models"].items(), start=1):
        L += learn_table(r["learn"][key], f"2.{number}. End-to-end `learn` ({title}, "
                         f"{r['learn'][key]['images']} Fashion-MNIST images, 2 threads)")
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
    forward = r["forward"]["first"]
    labels = [f"{f['threads']}t b{f['batch']}" + (f" ×{f['parallel']}" if f["parallel"] > 1
                                                   else "") for f in forward]
    xs = np.arange(len(labels))
    ax1.bar(xs - 0.3, [f["tract"] for f in forward], 0.2, label="fastretrain (tract)")
    if "ort_engine" in forward[0]:
        ax1.bar(xs - 0.1, [f["ort_engine"] for f in forward], 0.2,
                label="fastretrain --engine onnxruntime")
    ax1.bar(xs + 0.1, [f["ort"] for f in forward], 0.2, label="onnxruntime (Python)")
    if "before" in forward[0]:
        ax1.bar(xs + 0.3, [f["before"] for f in forward], 0.2, label="before (tract 0.23.9)")
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
    p.add_argument("--command", default="scripts/bench/bench.sh")
    p.add_argument("--ort-lib", help="libonnxruntime.so for --engine onnxruntime (default: "
                   "this venv's onnxruntime wheel's)")
    p.add_argument("--before-bin", help="an earlier fastretrain build, timed as 'before'")
    a = p.parse_args()
    a.model = os.path.abspath(a.model)
    a.rss_rows = [int(v) for v in a.rss_rows.split(",")]
    a.tensor = feature_tensor(a, a.model)
    if not a.ort_lib:
        import onnxruntime
        capi = os.path.join(os.path.dirname(onnxruntime.__file__), "capi")
        a.ort_lib = next(os.path.join(capi, f) for f in sorted(os.listdir(capi))
                         if f.startswith("libonnxruntime.so."))
    a.ort_engine = has_ort_engine(a)
    spec = load_spec(os.path.splitext(a.model)[0] + ".json")
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="bench-")
    started = time.time()
    import onnxruntime
    r = {"machine": cpu_description(),
         "date": time.strftime("%Y-%m-%d"),
         "onnxruntime": onnxruntime.__version__,
         "model": f"{os.path.basename(a.model)} {spec['input']['height']}×{spec['input']['width']}"}
    r["section_seconds"] = {}

    def section(name, run):
        t = time.time()
        value = run()
        r["section_seconds"][name] = time.time() - t
        return value

    # The second family: ResNet-18 (seeded weights; speed depends on shapes only).
    second = os.path.join(work, "resnet18.onnx")
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "models", "make_resnet18.py"), second], check=True,
                   capture_output=True)
    run_json([a.bin, "spec", "--json", "--model", second, "--preset", "imagenet"])
    second_spec = load_spec(os.path.splitext(second)[0] + ".json")
    second_tensor = feature_tensor(a, second)
    r["models"] = {"first": r["model"] + f", {len(recipe_tensors(a.tensor))} tensors",
                   "second": f"ResNet-18 224×224, {len(recipe_tensors(second_tensor))} tensors"}
    images = os.path.join(ROOT, "data/fashion-mnist/train-images-idx3-ubyte.gz")
    r["forward"] = {
        "first": section("forward", lambda: forward_section(a, a.model, spec, a.tensor,
                                                            FORWARD_CONFIGS)),
        "second": section("forward ResNet-18", lambda: forward_section(
            a, second, second_spec, second_tensor, FORWARD_CONFIGS_SECOND))}
    r["learn"] = {
        "first": section("learn", lambda: learn_section(a, a.model, spec, a.tensor, work,
                                                        images)),
        "second": section("learn ResNet-18", lambda: learn_section(
            a, second, second_spec, second_tensor, work, images))}
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
