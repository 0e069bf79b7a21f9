"""The fleet server's checks and its saved state, without a network: replies are refused with
the reason and change nothing; the state survives a round trip and refuses damage."""

import json

import numpy as np
import pytest
from flwr.app import ConfigRecord, RecordDict

import fastretrain
from fastretrain_fleet.server_app import accept_reply, solve
from fastretrain_fleet.wire import FleetError, ServerState

DIM = 6
FINGERPRINT = {"model_sha256": "ab" * 32, "feature_tensor": "features", "feature_dim": DIM}


def increment(rows, seed):
    rng = np.random.default_rng(seed)
    stats = fastretrain.Statistics(DIM)
    stats.accumulate(rng.normal(size=(rows, DIM)), [["a", "b", "c"][i % 3] for i in range(rows)])
    return stats


def wider(rows):
    stats = fastretrain.Statistics(DIM + 1)
    stats.accumulate(np.ones((rows, DIM + 1)), ["a"] * rows)
    return stats


def reply(device, start, end, stats=None, fingerprint=FINGERPRINT, **override):
    fields = {
        "device": device,
        "fingerprint": json.dumps(fingerprint),
        "start": start,
        "end": end,
        "statistics": stats.to_bytes() if stats is not None else b"",
        "privacy": "",
    }
    fields.update(override)
    return RecordDict({"reply": ConfigRecord(fields)})


def test_increments_add_up_to_merge_and_bad_replies_change_nothing():
    state = ServerState()
    a1, a2, b1 = increment(10, 1), increment(7, 2), increment(12, 3)
    assert accept_reply(state, reply("a", 0, 10, a1)) == {"device": "a", "new_samples": 10}
    assert accept_reply(state, reply("b", 0, 12, b1))["new_samples"] == 12
    assert accept_reply(state, reply("a", 10, 17, a2))["new_samples"] == 7
    before = state.to_bytes()
    cases = {
        "another backbone": reply("a", 17, 20, increment(3, 4),
                                  fingerprint={**FINGERPRINT, "model_sha256": "cd" * 32}),
        "server holds 17": reply("a", 10, 17, a2),  # sent twice
        "unusable statistics": reply("c", 0, 5, statistics=b"\x00garbage"),
        "malformed reply": RecordDict({"reply": ConfigRecord({"device": "c"})}),
        "dimension": reply("c", 0, 5, statistics=wider(5).to_bytes()),
        "samples": reply("c", 0, 9, increment(5, 6)),
    }
    for needle, content in cases.items():
        with pytest.raises(FleetError, match=needle):
            accept_reply(state, content)
        assert state.to_bytes() == before, needle
    # The fleet's statistics are the devices' own, added in device order from empty: exactly
    # `merge` of a's two increments (its local state) and b's.
    local_a = fastretrain.Statistics(DIM)
    local_a.merge(a1)
    local_a.merge(a2)
    local_b = fastretrain.Statistics(DIM)
    local_b.merge(b1)
    merged = fastretrain.Statistics(DIM)
    merged.merge(local_a)
    merged.merge(local_b)
    total = state.total()
    assert np.array_equal(total.gram(), merged.gram())
    assert np.array_equal(total.cross(), merged.cross())
    head = solve(state, 0.0)
    assert head["weights"].shape == (DIM + 1, 3) and head["samples"] == 29


def test_server_state_round_trip_and_damage(tmp_path):
    state = ServerState()
    accept_reply(state, reply("a", 0, 10, increment(10, 1)))
    state.round = 1
    path = tmp_path / "server.state"
    state.save(path)
    loaded = ServerState.load(path)
    assert loaded.round == 1 and loaded.acked == {"a": 10}
    assert loaded.to_bytes() == state.to_bytes()
    data = path.read_bytes()
    for damaged in (data[:-1], data[:20], data[:40] + bytes([data[40] ^ 1]) + data[41:]):
        path.write_bytes(damaged)
        with pytest.raises(FleetError, match="server state"):
            ServerState.load(path)
    assert ServerState.load(tmp_path / "absent").round == 0


def test_device_samples_from_an_image_folder_and_idx(tmp_path):
    """A device's data as the fleet reads it: an image folder (labels from the folder names, a
    fixed order) or IDX files (label names from labels.txt, as `fastretrain` names them)."""
    import shutil
    from pathlib import Path

    from fastretrain_fleet.device import Samples

    root = Path(__file__).resolve().parents[2]
    photos = sorted((root / "tests" / "data" / "images").glob("*.png"))[:5]
    for i, photo in enumerate(photos):
        label = "cat" if i % 2 else "dog"
        (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, tmp_path / "folder" / label / photo.name)
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    folder = Samples(tmp_path / "folder")
    assert folder.count == 5
    assert folder.labels == ["cat", "cat", "dog", "dog", "dog"]
    batch = folder.batch(1, 4)["paths"]
    assert [Path(p).parent.name for p in batch] == folder.labels[1:4]
    assert Samples(tmp_path / "folder").batch(0, 5) == folder.batch(0, 5)  # same order again

    idx = Samples(root / "data" / "fashion-mnist" / "train-images-idx3-ubyte.gz")
    names = (root / "data" / "fashion-mnist" / "labels.txt").read_text().splitlines()
    assert idx.count == 2000 and set(idx.labels) <= set(names)
    assert idx.batch(10, 14)["images"].shape == (4, 28, 28)


def test_device_samples_from_tensors_give_the_statistics_of_learn(tmp_path):
    """A device whose model is fed sensor windows (tests/data/signal/imu_mlp.onnx): its data is a
    .npy array with integer labels beside it; the increment it sends holds the statistics that
    `Retrainer.learn` of the same array gives."""
    from pathlib import Path

    from fastretrain_fleet.device import Device, Samples

    signal = Path(__file__).resolve().parents[2] / "tests" / "data" / "signal"
    samples = Samples(signal / "imu" / "train.npy")
    names = (signal / "imu" / "labels.txt").read_text().split()
    assert samples.count == 240 and set(samples.labels) == set(names)
    assert samples.batch(3, 7)["tensors"].shape == (4, 50, 6)
    device = Device({"device-id": "imu", "model": str(signal / "imu_mlp.onnx"),
                     "data": str(signal / "imu" / "train.npy"), "state-dir": str(tmp_path / "d"),
                     "available": "100"})
    sent = fastretrain.Statistics.from_bytes(bytes(device.increment(1, 0)["statistics"]))
    learned = fastretrain.Retrainer(model=signal / "imu_mlp.onnx")
    learned.learn(signal / "imu" / "train.npy", limit=100, lam=1.0)
    assert sent.samples == 100
    assert np.allclose(sent.gram(), learned.to_statistics().gram(), rtol=1e-9, atol=0)
