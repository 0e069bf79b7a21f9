"""A device's side of the fleet: its data, its local state, what it has sent.

The device keeps, in its ``state-dir``:

- ``local.frs``: its own fastretrain state. Its statistics are exactly the increments the server
  acknowledged, merged in order - the server's copy of this device, bit for bit - and its head
  is the fleet's (imported after each round), so ``fastretrain predict --state local.frs``
  predicts with the fleet's head;
- ``pending.bin``: the increment sent and not yet acknowledged (its exact statistics, and what
  was sent: with differential privacy, the noisy ones). When the next message shows the server
  has it, the exact statistics are merged into ``local.frs``; when it shows the server does not
  (the reply was lost, refused or late), the same bytes are sent again unchanged - a lost
  private release is repeated, never drawn afresh, so it costs no privacy twice.

New data "arrives" as the records of ``data`` up to the count given for the round (node config
``available``, e.g. ``"300,667"``; all of it by default).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import struct
from pathlib import Path

import numpy as np

import fastretrain
import fastretrain.privacy

from .wire import FleetError, write_atomically

CHUNK = 256  # images per forward-pass call: bounds the feature rows held at once


class Samples:
    """The records of an IDX file pair, a sample folder (images or ``.npy`` tensors) or a
    ``.npy`` array of tensor samples, by position, as fastretrain reads them (IDX and integer
    ``.npy`` label names from ``labels.txt`` beside the data, else the label numbers; folders
    sorted by label, then file name; an array's labels in ``<name>-labels.npy`` or
    ``<name>-labels.txt`` beside it)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.images = self.tensors = self.files = None
        if self.path.is_dir():
            files = sorted(
                p for p in self.path.glob("*/*")
                if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".npy") and p.is_file()
            )
            files.sort(key=lambda p: (p.parent.name, p.name))
            self.files = files
            self.labels = [p.parent.name for p in files]
        elif self.path.suffix.lower() == ".npy":
            # Memory-mapped: a round reads only its records.
            self.tensors = np.load(self.path, mmap_mode="r")
            self.labels = _array_labels(self.path, len(self.tensors))
        else:
            self.images = _read_idx(self.path)
            labels_path = Path(str(self.path).replace("images-idx3", "labels-idx1"))
            numbers = _read_idx(labels_path)
            names_path = self.path.parent / "labels.txt"
            names = names_path.read_text().splitlines() if names_path.exists() else None
            self.labels = [names[n] if names else str(n) for n in numbers.tolist()]
        self.count = len(self.labels)

    def batch(self, start: int, end: int) -> dict:
        """The keyword arguments of :meth:`fastretrain.Retrainer.features` for records
        ``start..end``."""
        if self.images is not None:
            return {"images": self.images[start:end]}
        if self.tensors is not None:
            return {"tensors": np.asarray(self.tensors[start:end], dtype=np.float32)}
        return {"paths": [str(p) for p in self.files[start:end]]}


def _array_labels(path: Path, count: int) -> list:
    """The labels of a ``.npy`` array of ``count`` samples, found as fastretrain finds them."""
    for labels_path in (path.with_name(f"{path.stem}-labels.npy"),
                        path.with_name(f"{path.stem}-labels.txt")):
        if not labels_path.exists():
            continue
        if labels_path.suffix == ".npy":
            numbers = np.load(labels_path).reshape(-1)
            names_path = path.parent / "labels.txt"
            names = names_path.read_text().split() if names_path.exists() else None
            labels = [names[n] if names else str(n) for n in numbers.tolist()]
        else:
            labels = labels_path.read_text().splitlines()
        if len(labels) != count:
            raise FleetError(f"{labels_path} holds {len(labels)} labels for {count} samples")
        return labels
    raise FleetError(f"no labels for {path}: put {path.stem}-labels.npy or .txt beside it")


def _read_idx(path: Path) -> np.ndarray:
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise FleetError(f"{path} is not an IDX file of unsigned bytes")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise FleetError(f"{path} is truncated")
    return data.reshape(shape)


def _available(text: str, rnd: int, count: int) -> int:
    if not text:
        return count
    steps = [int(x) for x in str(text).split(",") if x.strip()]
    return min(count, steps[min(rnd, len(steps)) - 1])


class Device:
    def __init__(self, node_config: dict):
        def need(key):
            if key not in node_config:
                raise FleetError(f"node config lacks '{key}'")
            return node_config[key]

        self.id = str(need("device-id"))
        self.model = Path(str(need("model"))).expanduser()
        self.data_path = Path(str(need("data"))).expanduser()
        self.dir = Path(str(need("state-dir"))).expanduser()
        self.available_text = str(node_config.get("available", ""))
        self.test = str(node_config.get("test", ""))
        self.test_limit = int(node_config.get("test-limit", 0)) or None
        self.threads = int(node_config.get("threads", 0)) or None
        self.privacy = None
        if float(node_config.get("dp-epsilon", 0) or 0) > 0:
            self.privacy = fastretrain.privacy.Privacy(
                epsilon=float(node_config["dp-epsilon"]),
                delta=float(node_config.get("dp-delta", 1e-5)),
                clip=float(node_config.get("dp-clip", 1.0)),
                labels=json.loads(str(need("dp-labels"))),
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.local_path = self.dir / "local.frs"
        self.pending_path = self.dir / "pending.bin"
        self.local = fastretrain.Retrainer(
            model=str(self.model), state=str(self.local_path), threads=self.threads)

    def merged(self) -> int:
        """Samples in the local statistics: those the server acknowledged and the device merged."""
        return int(round(self.local.to_statistics().samples))

    def reconcile(self, acked: int) -> None:
        """Brings the local state level with what the server acknowledged."""
        merged = self.merged()
        pending = self._pending()
        if acked == merged:
            if pending and pending["start"] != merged:
                self.pending_path.unlink()  # left from an older exchange: not usable
            return  # a pending increment from here never reached the server: sent again
        if pending and pending["start"] == merged and pending["end"] == acked:
            exact = fastretrain.Statistics.from_bytes(pending["exact"])
            self.local.merge_statistics(exact)
            self.local.save(str(self.local_path))
            self.pending_path.unlink()
            return
        raise FleetError(
            f"device {self.id} is out of step with the server: the server holds {acked} of its "
            f"samples, the device has merged {merged}"
            + (f" and sent {pending['start']}..{pending['end']}" if pending else "")
            + "; start it with its own state-dir, or the server with a fresh state"
        )

    def increment(self, rnd: int, acked: int) -> dict:
        """The reply to a ``train`` message: the statistics of the samples from ``acked`` to
        what is available this round."""
        self.reconcile(acked)
        reply = {
            "device": self.id,
            "fingerprint": json.dumps(self.local.fingerprint, sort_keys=True),
            "start": acked,
            "end": acked,
            "statistics": b"",
            "privacy": json.dumps(self.privacy.describe()) if self.privacy else "",
        }
        pending = self._pending()
        if pending:
            return {**reply, "end": pending["end"], "statistics": pending["sent"]}
        samples = Samples(self.data_path)
        end = max(acked, _available(self.available_text, rnd, samples.count))
        reply["end"] = end
        if end == acked:
            return reply
        dim = self.local.dim
        exact = fastretrain.Statistics(dim)
        sent = fastretrain.Statistics(dim) if self.privacy else exact
        for at in range(acked, end, CHUNK):
            stop = min(at + CHUNK, end)
            features = self.local.features(**samples.batch(at, stop)).astype(np.float64)
            labels = samples.labels[at:stop]
            exact.accumulate(features, labels)
            if self.privacy:
                sent.accumulate(self.privacy.clip(features), labels)
        if self.privacy:
            sent = self.privacy.noisy(sent)
        reply["statistics"] = sent.to_bytes()
        write_atomically(
            self.pending_path, _pack_pending(acked, end, exact.to_bytes(), reply["statistics"]))
        return reply

    def take_head(self, weights: np.ndarray, fleet: dict) -> dict:
        """Imports the fleet's head into the local state (after merging what the server
        acknowledged), saves it, and evaluates it on the device's test data if it has some."""
        acked = json.loads(fleet["acked"]).get(self.id, 0)
        self.reconcile(acked)
        labels = json.loads(fleet["labels"])
        self.local.set_head(weights, labels, float(fleet["lambda"]), samples=float(fleet["samples"]))
        self.local.save(str(self.local_path))
        result = {"device": self.id, "round": int(fleet["round"])}
        if self.test:
            report = self.local.evaluate(self.test, limit=self.test_limit)
            result["test_accuracy"] = float(report["accuracy"])
            result["test_samples"] = int(report["samples"])
        return result

    def _pending(self):
        if not self.pending_path.exists():
            return None
        return _unpack_pending(self.pending_path.read_bytes())


def _pack_pending(start: int, end: int, exact: bytes, sent: bytes) -> bytes:
    body = struct.pack("<QQQ", start, end, len(exact)) + exact + sent
    return body + hashlib.sha256(body).digest()


def _unpack_pending(data: bytes) -> dict:
    body, digest = data[:-32], data[-32:]
    if len(data) < 56 or hashlib.sha256(body).digest() != digest:
        raise FleetError("the pending increment file is damaged: remove it (its samples are "
                         "sent again)")
    start, end, n = struct.unpack("<QQQ", body[:24])
    return {"start": start, "end": end, "exact": body[24:24 + n], "sent": body[24 + n:]}
