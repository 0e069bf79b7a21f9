"""Paths shared by the tests: the repository's shipped model and data, and the CLI binary."""

import os
import pathlib
import shutil

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODEL = ROOT / "models" / "mobilenetv2.onnx"
FASHION = ROOT / "data" / "fashion-mnist"
TRAIN = FASHION / "train-images-idx3-ubyte.gz"
TEST = FASHION / "t10k-images-idx3-ubyte.gz"
FEATURES = ROOT / "tests" / "data" / "fashion_features_f32.bin"


@pytest.fixture(scope="session")
def cli():
    """The `fastretrain` binary (FASTRETRAIN_BIN, else the release build beside the sources)."""
    candidates = [os.environ.get("FASTRETRAIN_BIN"),
                  os.path.join(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"), "release", "fastretrain"),
                  shutil.which("fastretrain")]
    for c in candidates:
        if c and os.path.isfile(c):
            return c
    pytest.fail("the fastretrain binary was not found: build it (cargo build --release) or set FASTRETRAIN_BIN")
