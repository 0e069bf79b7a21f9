"""Retrainer on the shipped MobileNetV2 and Fashion-MNIST subset: the README example, equality
with the command line (statistics digest, head, accuracy), NumPy images equal to IDX files,
the statistics against a NumPy computation from the features, export run by onnxruntime, and
bad input raising fastretrain's exceptions."""

import gzip
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import FASHION, MODEL, ROOT, TEST, TRAIN
import fastretrain


def idx(path):
    """An IDX file read with NumPy alone (the independent reader)."""
    data = gzip.open(path).read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


NAMES = [line.strip() for line in (FASHION / "labels.txt").read_text().splitlines() if line.strip()]


def test_readme_example_gives_the_demos_accuracy(tmp_path, cli):
    example = (ROOT / "python" / "README.md").read_text().split("```python\n")[1].split("```")[0]
    # Run from the repository root as the README says; the files it writes go to tmp_path.
    for name in ("fashion.frs", "fashion.onnx"):
        example = example.replace(f'"{name}"', repr(str(tmp_path / name)))
    out = subprocess.run([sys.executable, "-c", example], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    demo = json.loads(subprocess.run([cli, "demo", "--json"], cwd=tmp_path, capture_output=True,
                                     text=True, check=True).stdout)
    assert f"accuracy {demo['eval']['accuracy']:.4f}" in out, out
    assert (tmp_path / "fashion.frs").exists() and (tmp_path / "fashion.onnx").exists()


def test_learn_equals_the_command_line(tmp_path, cli):
    state = tmp_path / "cli.frs"
    subprocess.run([cli, "learn", "--state", str(state), "--model", str(MODEL), "--data",
                    str(TRAIN), "--limit", "300"], check=True, capture_output=True)
    info = json.loads(subprocess.run([cli, "info", "--state", str(state), "--json"], check=True,
                                     capture_output=True, text=True).stdout)
    r = fastretrain.Retrainer(model=MODEL)
    report = r.learn(TRAIN, limit=300)
    assert report["samples"] == 300
    assert r.statistics_digest == info["statistics_sha256"]
    ours, lam = r.head()
    theirs = fastretrain.Retrainer(state=state)
    w, lam2 = theirs.head()
    assert lam == lam2
    np.testing.assert_array_equal(ours, w)
    ev = json.loads(subprocess.run([cli, "eval", "--state", str(state), "--data", str(TEST),
                                    "--limit", "200", "--json"], check=True,
                                   capture_output=True, text=True).stdout)
    assert r.evaluate(TEST, limit=200)["accuracy"] == ev["accuracy"]


def test_numpy_images_equal_the_idx_files_and_the_statistics_equal_numpy():
    images = idx(TRAIN)[:130]
    labels = [NAMES[i] for i in idx(FASHION / "train-labels-idx1-ubyte.gz")[:130]]
    from_idx = fastretrain.Retrainer(model=MODEL, threads=2)
    from_idx.learn(TRAIN, limit=130)
    from_arrays = fastretrain.Retrainer(model=MODEL, threads=1)
    from_arrays.learn(images=images, labels=labels)
    assert from_arrays.statistics_digest == from_idx.statistics_digest
    # G and B from the features, computed in NumPy.
    x = from_arrays.features(images=images).astype(np.float64)
    assert x.shape == (130, 1920)  # the shipped spec's recipe: 5 tensors pooled
    x1 = np.hstack([x, np.ones((130, 1))])
    stats = from_arrays.statistics()
    order = stats["labels"]
    t = np.where(np.array(labels)[:, None] == np.array(order)[None, :], 1.0, -1.0)
    assert np.max(np.abs(stats["gram"] - x1.T @ x1)) <= 1e-9 * np.abs(x1.T @ x1).max()
    assert np.max(np.abs(stats["cross"] - x1.T @ t)) <= 1e-9 * np.abs(x1.T @ t).max()
    np.testing.assert_array_equal(stats["counts"], [labels.count(l) for l in order])
    # Scores are the head applied to the features; predict is their argmax.
    w, _ = from_arrays.head()
    scores = from_arrays.scores(images=images[:20])
    assert np.max(np.abs(scores - (x1[:20] @ w))) <= 1e-6 * np.abs(scores).max()
    assert from_arrays.predict(images=images[:20]) == [from_arrays.labels[i] for i in scores.argmax(1)]
    top = from_arrays.predict(images=images[:2], k=3)
    assert len(top) == 2 and len(top[0]) == 3 and top[0][0][0] == from_arrays.labels[scores[0].argmax()]


def test_forget_merge_save_export(tmp_path):
    images = idx(TRAIN)[:192]
    labels = [NAMES[i] for i in idx(FASHION / "train-labels-idx1-ubyte.gz")[:192]]
    a = fastretrain.Retrainer(model=MODEL, state=tmp_path / "a.frs")
    a.learn(images=images[:128], labels=labels[:128], lam=1.0)
    a.save()
    both = fastretrain.Retrainer(model=MODEL)
    both.learn(images=images[:128], labels=labels[:128])
    both.learn(images=images[128:], labels=labels[128:])
    both.forget(images=images[128:], labels=labels[128:], lam=1.0)
    ga, gb = a.statistics()["gram"], both.statistics()["gram"]
    assert np.max(np.abs(ga - gb)) <= 1e-9 * np.abs(ga).max()
    b = fastretrain.Retrainer(model=MODEL)
    b.learn(images=images[128:], labels=labels[128:])
    b.save(tmp_path / "b.frs")
    a.merge(tmp_path / "b.frs", lam=1.0)
    assert a.statistics()["samples"] == 192
    # b again: its samples would count twice, also where the sources are said to be distinct.
    for distinct_sources in (False, True):
        with pytest.raises(ValueError, match="bit for bit those of .*b.frs"):
            a.merge(tmp_path / "b.frs", distinct_sources=distinct_sources)
    assert a.statistics()["samples"] == 192
    # Another state that learned b's images too.
    c = fastretrain.Retrainer(model=MODEL)
    c.learn(images=images[:10], labels=labels[:10])
    c.learn(images=images[128:], labels=labels[128:])
    with pytest.raises(ValueError, match="both states learned"):
        c.merge(tmp_path / "b.frs")
    out = tmp_path / "adapted.onnx"
    a.export(out)
    import onnxruntime as ort
    from PIL import Image  # noqa: F401  (the venv's; the export is checked on features)
    session = ort.InferenceSession(str(out))
    assert session.get_outputs()[0].shape[-1] == len(a.labels)


def test_bad_input_raises_fastretrains_exceptions(tmp_path):
    with pytest.raises(fastretrain.ModelError):
        fastretrain.Retrainer(model=tmp_path / "missing.onnx")
    for threads in (0, 100000):
        with pytest.raises(ValueError, match="outside 1..=256"):
            fastretrain.Retrainer(model=MODEL, threads=threads)
    broken = tmp_path / "broken.frs"
    broken.write_bytes(b"FRSTATE\0" + b"\x01" * 40)
    with pytest.raises(fastretrain.StateError):
        fastretrain.Retrainer(state=broken)
    assert issubclass(fastretrain.StateError, fastretrain.Error)
    r = fastretrain.Retrainer(model=MODEL)
    with pytest.raises(ValueError, match="uint8"):
        r.learn(images=np.zeros((2, 28, 28), dtype=np.float32), labels=["a", "b"])
    with pytest.raises(ValueError, match="labels"):
        r.learn(images=np.zeros((2, 28, 28), dtype=np.uint8), labels=["a"])
    with pytest.raises(fastretrain.DataError, match="not usable"):
        r.learn(images=np.zeros((2, 28, 28), dtype=np.uint8), labels=["a", ""])
    with pytest.raises(fastretrain.SolverError):
        r.scores(images=np.zeros((1, 28, 28), dtype=np.uint8))
    with pytest.raises(fastretrain.DataError):
        r.learn(paths=[tmp_path / "nope.png"], labels=["x"])
    with pytest.raises(ValueError, match="exactly one"):
        r.learn(TRAIN, images=np.zeros((1, 28, 28), dtype=np.uint8), labels=["a"])


SIGNAL = ROOT / "tests" / "data" / "signal"


def _imu(split):
    x = np.load(SIGNAL / "imu" / f"{split}.npy")
    names = (SIGNAL / "imu" / "labels.txt").read_text().split()
    if split == "train":
        labels = [names[i] for i in np.load(SIGNAL / "imu" / "train-labels.npy")]
    else:
        labels = (SIGNAL / "imu" / "test-labels.txt").read_text().split("\n")[: len(x)]
    return x, labels


def test_tensors_learn_like_the_npy_array_and_match_the_reference():
    """A model fed with sensor windows: float32 arrays in, the onnxruntime + NumPy ridge's
    accuracy out (tests/data/signal/reference.json), the same statistics as the .npy file."""

    reference = json.loads((SIGNAL / "reference.json").read_text())["models"]["imu_mlp"]
    x, labels = _imu("train")
    xt, labels_t = _imu("test")
    r = fastretrain.Retrainer(model=SIGNAL / "imu_mlp.onnx")
    r.learn(tensors=x, labels=labels, lam=reference["lambda"])
    accuracy = r.evaluate(tensors=xt, labels=labels_t)["accuracy"]
    assert abs(accuracy - reference["test_accuracy"]) <= 0.005
    features = r.features(tensors=x[:4].astype(np.float64))
    for i, expected in enumerate(reference["features"].values()):
        assert np.max(np.abs(features[i] - np.array(expected))) <= 1e-4
    from_file = fastretrain.Retrainer(model=SIGNAL / "imu_mlp.onnx")
    from_file.learn(SIGNAL / "imu" / "train.npy", lam=reference["lambda"])
    ga, gb = r.statistics()["gram"], from_file.statistics()["gram"]
    assert np.max(np.abs(ga - gb)) <= 1e-9 * np.abs(ga).max()
    assert r.predict(tensors=xt[:5]) == from_file.predict(tensors=xt[:5])
    assert r.predict(tensors=xt[:5]) == r.predict(tensors=xt[:5].tolist())


def test_bad_tensors_raise_clear_errors():
    r = fastretrain.Retrainer(model=SIGNAL / "imu_mlp.onnx")
    with pytest.raises(ValueError, match="float32"):
        r.learn(tensors=np.zeros((2, 50, 6), dtype=np.int32), labels=["a", "b"])
    with pytest.raises(fastretrain.DataError, match=r"shape \[50, 5\].*\[50, 6\]"):
        r.learn(tensors=np.zeros((2, 50, 5), dtype=np.float32), labels=["a", "b"])
    bad = np.zeros((2, 50, 6), dtype=np.float32)
    bad[1, 3, 2] = np.nan
    with pytest.raises(fastretrain.DataError, match="tensor 1.*not finite"):
        r.learn(tensors=bad, labels=["a", "b"])
    with pytest.raises(fastretrain.DataError, match="not images"):
        r.learn(images=np.zeros((2, 28, 28), dtype=np.uint8), labels=["a", "b"])
    assert r.statistics()["samples"] == 0
