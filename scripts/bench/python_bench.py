"""RidgeHead (the Python package) against scikit-learn on the 60k Fashion-MNIST feature store.

Each row runs in its own process: `fit_peak_rss_mb` is the peak RSS from the end of loading to
the end of the fit (the high-water mark reset through /proc/self/clear_refs; the 60,000 x 1,280
float32 matrix, 307 MB, stays resident in it; `rss_before_fit_mb` is where it starts; the reset
also resets what /usr/bin/time reports as `peak_rss_mb`, so the two agree; loading the f16
store alone peaks at ~766 MB); time is the fitting alone. Rows:
RidgeHead.fit (lambda by GCV, and fixed), RidgeHead.partial_fit over 60 chunks of 1,000 rows then
one solve, scikit-learn's RidgeClassifier and Ridge (one-hot +-1 targets) at the same lambda, and
SGDClassifier.partial_fit (one pass over the same chunks); with --test, accuracy on a test store.

Usage: python scripts/bench/python_bench.py --train TRAIN_STORE [--test TEST_STORE] [--out JSON]
(stores made by `fastretrain extract`; the wheel installed in this Python).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from store_reader import read_store  # noqa: E402

ROWS = ["ridgehead_fit_gcv", "ridgehead_fit", "ridgehead_partial_fit", "sklearn_ridgeclassifier",
        "sklearn_ridge", "sklearn_sgd_partial_fit"]
CHUNK = 1000


def load(path):
    x, labels, _ = read_store(path)
    return np.ascontiguousarray(x, dtype=np.float32), np.asarray(labels)


def _status_mb(field):
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def one(row, train, test, lam):
    x, y = load(train)
    classes = np.unique(y)
    # Peak RSS of the fit alone (the matrix stays resident in it): reset the high-water mark
    # after loading, which itself peaks higher than most fits (f16 -> f32 conversion).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    extra = {"rss_before_fit_mb": _status_mb("VmRSS")}
    start = time.perf_counter()
    if row.startswith("ridgehead"):
        from fastretrain import RidgeHead
        if row == "ridgehead_partial_fit":
            model = RidgeHead(alpha=lam)
            for i in range(0, len(x), CHUNK):
                model.partial_fit(x[i:i + CHUNK], y[i:i + CHUNK])
            model.coef_  # the one solve
        else:
            model = RidgeHead(alpha=None if row == "ridgehead_fit_gcv" else lam).fit(x, y)
            model.coef_
        extra["alpha"] = model.alpha_
    elif row == "sklearn_ridgeclassifier":
        from sklearn.linear_model import RidgeClassifier
        model = RidgeClassifier(alpha=lam).fit(x, y)
    elif row == "sklearn_ridge":
        from sklearn.linear_model import Ridge
        t = np.where(y[:, None] == classes[None, :], 1.0, -1.0)
        ridge = Ridge(alpha=lam).fit(x, t)
        model = type("M", (), {"predict": lambda self, z: classes[np.argmax(ridge.predict(z), 1)]})()
    elif row == "sklearn_sgd_partial_fit":
        from sklearn.linear_model import SGDClassifier
        model = SGDClassifier(random_state=0)
        for i in range(0, len(x), CHUNK):
            model.partial_fit(x[i:i + CHUNK], y[i:i + CHUNK], classes=classes)
        extra["passes"] = 1
    seconds = time.perf_counter() - start
    extra["fit_peak_rss_mb"] = _status_mb("VmHWM")
    if test:
        xt, yt = load(test)
        extra["test_accuracy"] = float(np.mean(model.predict(xt) == yt))
    print(json.dumps({"row": row, "fit_s": seconds, "rows": len(x), **extra}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", help="test store: adds each row's test accuracy")
    ap.add_argument("--lam", type=float, default=31.6227766, help="the fixed-lambda rows' lambda")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.one:
        return one(args.one, args.train, args.test, args.lam)
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    avx512 = "avx512f" in open("/proc/cpuinfo").read()
    result = {"cpu": cpu, "avx512": avx512, "cores": os.cpu_count(), "python": platform.python_version(),
              "rows": []}
    for row in ROWS:
        with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
            cmd = [sys.executable, __file__, "--train", args.train, "--lam", str(args.lam), "--one", row]
            if args.test:
                cmd += ["--test", args.test]
            out = subprocess.run(["/usr/bin/time", "-o", t.name, "-f", "%M"] + cmd,
                                 capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{row} failed:\n{out.stderr}")
            measured = json.loads(out.stdout.strip().splitlines()[-1])
            measured["peak_rss_mb"] = int(open(t.name).read().split()[-1]) / 1024
        result["rows"].append(measured)
        print(json.dumps(measured), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
