"""What travels between devices and the server, and the server's saved state.

A device's reply to a ``train`` message (a ConfigRecord ``reply``):

- ``device`` (str): the device's own name (node config ``device-id``), stable across restarts;
- ``fingerprint`` (str, JSON): the backbone's ``{"model_sha256", "feature_tensor", "feature_dim"}``;
- ``start``, ``end`` (int): the samples of its data these statistics hold (``start`` is what the
  server acknowledged; nothing is sent twice or skipped);
- ``statistics`` (bytes): :meth:`fastretrain.Statistics.to_bytes` of those samples alone, or
  empty when the device has nothing new;
- ``privacy`` (str, JSON): the differential-privacy settings applied on the device, if any.

The server's ``head`` message carries the weights (an ArrayRecord ``head`` with ``weights``,
(dim + 1) x labels, the last row the bias) and a ConfigRecord ``fleet`` with ``labels`` (JSON),
``lambda``, ``samples``, ``round`` and ``acked`` (JSON ``{device: samples acknowledged}``).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from pathlib import Path

import fastretrain

MAGIC = b"FRFLEET\x00"


class FleetError(Exception):
    """A reply or a saved server state that cannot be used."""


def fingerprint_text(fingerprint: dict) -> str:
    return json.dumps(fingerprint, sort_keys=True)


def write_atomically(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that a crash leaves the old file or the new one, whole:
    a temporary file in the same folder, fsynced, renamed over, then the folder fsynced."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ServerState:
    """The fleet as the server holds it between rounds: the last round done, the backbone, and
    for each device the samples acknowledged and their statistics (exactly the device's own)."""

    def __init__(self):
        self.round = 0
        self.fingerprint: dict | None = None
        # The noise in the fleet's statistics (differential privacy): the variance per entry,
        # the devices' σ² added up. GCV then searches λ above the noise (privacy.lambda_grid).
        self.noise_variance = 0.0
        self.acked: dict[str, int] = {}
        self.statistics: dict[str, fastretrain.Statistics] = {}

    def total(self) -> fastretrain.Statistics:
        """The fleet's statistics: every device's added in sorted device order, starting from
        empty statistics - the arithmetic of ``fastretrain merge`` over the devices' states."""
        if not self.statistics:
            raise FleetError("no device has sent statistics yet")
        total = fastretrain.Statistics(self.fingerprint["feature_dim"])
        for device in sorted(self.statistics):
            total.merge(self.statistics[device])
        return total

    def to_bytes(self) -> bytes:
        devices = sorted(self.statistics)
        blobs = [self.statistics[d].to_bytes() for d in devices]
        meta = json.dumps({
            "round": self.round,
            "fingerprint": self.fingerprint,
            "noise_variance": self.noise_variance,
            "acked": self.acked,
            "devices": devices,
            "lengths": [len(b) for b in blobs],
        }).encode()
        body = MAGIC + struct.pack("<Q", len(meta)) + meta + b"".join(blobs)
        return body + hashlib.sha256(body).digest()

    @classmethod
    def from_bytes(cls, data: bytes, path) -> "ServerState":
        def bad(reason):
            return FleetError(f"server state {path} {reason}; move it away to start a new fleet")

        if len(data) < len(MAGIC) + 8 + 32 or not data.startswith(MAGIC):
            raise bad("is not a fleet server state (or is truncated)")
        body, digest = data[:-32], data[-32:]
        if hashlib.sha256(body).digest() != digest:
            raise bad("is damaged (checksum mismatch)")
        (length,) = struct.unpack("<Q", body[len(MAGIC):len(MAGIC) + 8])
        at = len(MAGIC) + 8
        meta = json.loads(body[at:at + length])
        at += length
        state = cls()
        state.round = int(meta["round"])
        state.fingerprint = meta["fingerprint"]
        state.noise_variance = float(meta.get("noise_variance", 0.0))
        state.acked = {str(k): int(v) for k, v in meta["acked"].items()}
        for device, n in zip(meta["devices"], meta["lengths"]):
            state.statistics[device] = fastretrain.Statistics.from_bytes(body[at:at + n])
            at += n
        if at != len(body):
            raise bad("has unexpected bytes")
        return state

    @classmethod
    def load(cls, path: Path) -> "ServerState":
        path = Path(path)
        if not path.exists():
            return cls()
        return cls.from_bytes(path.read_bytes(), path)

    def save(self, path: Path) -> None:
        write_atomically(Path(path), self.to_bytes())
