#!/usr/bin/env python3
"""A fleet of three devices learns one head through Flower, on 127.0.0.1 only.

Starts a Flower SuperLink and three SuperNodes (deployment engine, insecure loopback, no runtime
dependency installation), gives each device a third of the shipped Fashion-MNIST training
subset (its own IDX files; in round 1 the first half of its third has "arrived", in round 2 all
of it), runs the fleet app (integrations/flower) for two rounds, and prints JSON: the fleet
head's test accuracy on the shipped test subset (evaluated on a device with the imported head,
by the `fastretrain` binary), and its largest difference from `fastretrain merge` of the three
devices' local states (0 expected: the same sums in the same order) and from a single-device
`learn` on all the data (float rounding only).

--kill: one SuperNode is killed while round 1 runs; the round completes with the other two
and reports it; the SuperLink (with the ServerApp) is then killed between the rounds and
restarted with the killed SuperNode, and a new `flwr run` resumes at round 2 from the server's
saved state, with all three devices. The final head must still equal `merge` of the local
states.

--epsilon E: the devices send (E, 1e-5)-differentially private statistics (features clipped to
norm --clip, Gaussian noise; fastretrain.privacy). The difference from `merge` is then the noise.

Run by scripts/ci/fleet.sh, which makes the venv (flwr, the fastretrain wheel). Bounded in time:
every wait has a deadline, and every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "fashion-mnist"
APP = ROOT / "integrations" / "flower"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), mtime=0))


class Fleet:
    def __init__(self, work: Path, binary: Path, model: Path, timeout: float):
        self.work, self.binary, self.model, self.timeout = work, binary, model, timeout
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = free_port()
        self.node_ports = [free_port() for _ in range(3)]
        # Flower starts its helpers (flower-superexec, flwr-serverapp, flwr-clientapp) by name.
        self.env = {**os.environ, "FLWR_HOME": str(work / "flwr-home"),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        (work / "flwr-home").mkdir(parents=True, exist_ok=True)
        (work / "flwr-home" / "config.toml").write_text(
            '[superlink]\ndefault = "fleet"\n\n'
            f'[superlink.fleet]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n'
        )

    def start(self, name: str, args: list[str]) -> None:
        log = open(self.work / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
            start_new_session=True)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name)

    def start_superlink(self) -> None:
        self.start("superlink", [
            str(BIN / "flower-superlink"), "--insecure",
            "--disable-runtime-dependency-installation",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--database", str(self.work / "superlink.db")])

        def listening():
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(listening, 60, "the SuperLink to listen")

    def start_supernode(self, i: int, config: Path) -> None:
        self.start(f"node{i}", [
            str(BIN / "flower-supernode"), "--insecure",
            "--superlink", f"127.0.0.1:{self.port}",
            "--host", "127.0.0.1", "--port", str(self.node_ports[i]),
            "--node-config", str(config)])

    def run_app(self, run_config: dict, name: str) -> subprocess.Popen:
        overrides = " ".join(f"{k}={json.dumps(v)}" for k, v in run_config.items())
        log = open(self.work / f"{name}.log", "ab")
        return subprocess.Popen(
            [str(BIN / "flwr"), "run", str(APP), "fleet", "--stream", "--run-config", overrides],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=self.work,
            start_new_session=True)


def wait_for(condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"timed out after {seconds:.0f} s waiting for {what}")


def run_cli(binary: Path, *args) -> dict:
    out = subprocess.run([str(binary), *map(str, args), "--json"], check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--binary", type=Path, required=True, help="the fastretrain CLI")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "mobilenetv2.onnx")
    ap.add_argument("--work", type=Path, help="working folder (default: a temporary one)")
    ap.add_argument("--kill", action="store_true", help="the failure scenario (see above)")
    ap.add_argument("--epsilon", type=float, default=0.0)
    ap.add_argument("--clip", type=float, default=8.0)
    ap.add_argument("--samples", type=int, default=0,
                    help="use the first N training images (default: all 2,000)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the working folder")
    a = ap.parse_args()

    started = time.monotonic()
    work = a.work or Path(tempfile.mkdtemp(prefix="fastretrain-fleet-"))
    work.mkdir(parents=True, exist_ok=True)
    images = read_idx(DATA / "train-images-idx3-ubyte.gz")
    labels = read_idx(DATA / "train-labels-idx1-ubyte.gz")
    if a.samples:
        images, labels = images[:a.samples], labels[:a.samples]
    names = (DATA / "labels.txt").read_text().splitlines()
    thirds = np.array_split(np.arange(len(labels)), 3)
    configs = []
    for i, rows in enumerate(thirds):
        node = work / f"device{i}"
        (node / "data").mkdir(parents=True, exist_ok=True)
        write_idx(node / "data" / "train-images-idx3-ubyte.gz", images[rows])
        write_idx(node / "data" / "train-labels-idx1-ubyte.gz", labels[rows])
        shutil.copy(DATA / "labels.txt", node / "data" / "labels.txt")
        settings = {
            "device-id": f"device{i}",
            "model": str(a.model.resolve()),
            "data": str(node / "data" / "train-images-idx3-ubyte.gz"),
            "state-dir": str(node / "state"),
            "available": f"{len(rows) // 2},{len(rows)}",
            "threads": 1,
        }
        if i == 0:
            settings["test"] = str(DATA / "t10k-images-idx3-ubyte.gz")
        if a.epsilon > 0:
            settings.update({"dp-epsilon": a.epsilon, "dp-delta": 1e-5, "dp-clip": a.clip,
                             "dp-labels": json.dumps(names)})
        config = node / "node-config.toml"
        config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))
        configs.append(config)

    fleet = Fleet(work, a.binary, a.model, a.timeout)
    run_config = {
        "num-server-rounds": 2,
        "server-state": str(work / "server.state"),
        "out-dir": str(work / "out"),
        "min-devices": 3,
        "wait-devices": 120.0,
        "round-timeout": 300.0 if not a.kill else 90.0,
    }
    left = lambda: max(10.0, a.timeout - (time.monotonic() - started))  # noqa: E731
    rounds_file = work / "out" / "rounds.json"
    try:
        fleet.start_superlink()
        for i, config in enumerate(configs):
            fleet.start_supernode(i, config)
        run = fleet.run_app(run_config, "run1")
        if a.kill:
            # Mid-round: device 2's ClientApp (the process that names its SuperNode's runtime
            # port) has started on round 1; it and its SuperNode are killed.
            pattern = f"flwr-clientapp.*:{fleet.node_ports[2]}"

            def working():
                out = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
                return out.stdout.strip()
            wait_for(working, left(), "device 2's ClientApp to start round 1")
            time.sleep(2.0)
            fleet.kill("node2")
            subprocess.run(["pkill", "-9", "-f", pattern])
            wait_for(lambda: rounds_file.exists(), left(), "round 1 to complete")
            # Between the rounds: the SuperLink (and the ServerApp under it) killed.
            fleet.kill("superlink")
            run.kill()
            run.wait()
            fleet.start_superlink()
            fleet.start_supernode(2, configs[2])
            run = fleet.run_app(run_config, "run2")
        try:
            run.wait(timeout=left())
        except subprocess.TimeoutExpired:
            raise TimeoutError("the fleet run did not finish in time") from None
        rounds = json.loads(rounds_file.read_text()) if rounds_file.exists() else []
        if len(rounds) != 2:
            raise RuntimeError(f"the run ended after {len(rounds)} of 2 rounds; logs in {work}")
    finally:
        fleet.stop_all()

    # References, computed by the CLI on the devices' own state files.
    states = [work / f"device{i}" / "state" / "local.frs" for i in range(3)]
    merged = work / "merged.frs"
    run_cli(a.binary, "merge", "--out", merged, *states)
    single = work / "single.frs"
    run_cli(a.binary, "learn", "--state", single, "--model", a.model,
            "--data", DATA / "train-images-idx3-ubyte.gz", "--threads", "2",
            *(["--limit", a.samples] if a.samples else []))
    sys.path.insert(0, str(APP))
    import fastretrain

    head = np.load(work / "out" / "head.npz")
    fleet_w = head["weights"]
    fleet_labels = [str(x) for x in head["labels"]]

    def head_of(path: Path, lam: float) -> np.ndarray:
        r = fastretrain.Retrainer(state=str(path), model=str(a.model), threads=1)
        r.fit(lam)
        w, _ = r.head()
        order = [r.labels.index(label) for label in fleet_labels]
        return w[:, order]

    lam = float(head["lam"])
    fleet_stats = fastretrain.Statistics.from_bytes((work / "out" / "statistics.bin").read_bytes())
    merged_stats = fastretrain.Retrainer(state=str(merged), model=str(a.model)).to_statistics()
    evaluation = run_cli(a.binary, "eval", "--state", states[0],
                         "--data", DATA / "t10k-images-idx3-ubyte.gz")
    single_eval = run_cli(a.binary, "eval", "--state", single,
                          "--data", DATA / "t10k-images-idx3-ubyte.gz")
    result = {
        "devices": 3,
        "rounds": len(rounds),
        "samples": float(head["samples"]),
        "lambda": lam,
        "fleet_test_accuracy": evaluation["accuracy"],
        "single_device_test_accuracy": single_eval["accuracy"],
        "max_abs_diff_head_vs_merge": float(np.max(np.abs(fleet_w - head_of(merged, lam)))),
        "max_abs_diff_statistics_vs_merge": float(
            np.max(np.abs(fleet_stats.gram() - merged_stats.gram()))),
        "max_abs_diff_head_vs_single_learn": float(np.max(np.abs(fleet_w - head_of(single, lam)))),
        "round_reports": [
            {"round": r["round"], "seconds": r["seconds"],
             "accepted": {x["device"]: x["new_samples"] for x in r["accepted"]},
             "refused": [x["reason"] for x in r["refused"]],
             "failed": [x["error"] for x in r["failed"]],
             "no_reply": len(r["no_reply"])}
            for r in rounds
        ],
        "privacy": None if a.epsilon <= 0 else {"epsilon": a.epsilon, "delta": 1e-5,
                                                 "clip": a.clip},
        "scenario": "kill" if a.kill else "plain",
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(result, indent=1))
    problems = check(result, a)
    for p in problems:
        print(f"fleet check failed: {p}", file=sys.stderr)
    if not a.keep and not a.work and not problems:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if problems else 0


def check(result: dict, a) -> list[str]:
    """What the run must show (the issue's done-means), as messages for what it does not."""
    problems = []
    first, second = result["round_reports"]
    if a.epsilon <= 0 and result["max_abs_diff_head_vs_merge"] != 0.0:
        problems.append("the fleet head differs from merge of the devices' states")
    if a.epsilon <= 0 and result["max_abs_diff_statistics_vs_merge"] != 0.0:
        problems.append("the fleet statistics differ from merge of the devices' states")
    if a.epsilon <= 0 and result["max_abs_diff_head_vs_single_learn"] > 1e-8:
        problems.append("the fleet head is not the single-device head up to rounding")
    if a.kill:
        if "device2" in first["accepted"] or not (first["failed"] or first["no_reply"]):
            problems.append("round 1 did not leave out and report the killed device")
        if len(first["accepted"]) != 2:
            problems.append("round 1 did not complete with the two other devices")
        if second["accepted"].get("device2", 0) <= second["accepted"].get("device0", 0):
            problems.append("round 2 did not take the killed device's samples of both rounds")
    elif len(first["accepted"]) != 3 or len(second["accepted"]) != 3:
        problems.append("a device was left out of a round")
    if a.epsilon <= 0 and result["samples"] != (a.samples or 2000):
        problems.append(f"the fleet holds {result['samples']} samples")
    return problems


if __name__ == "__main__":
    sys.exit(main())
