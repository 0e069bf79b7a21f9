#!/usr/bin/env python3
"""Writes models/imagenet_classes.txt: the 1,000 ImageNet class names in output order, one per
line, for `fastretrain predict --model models/mobilenetv2.onnx --label-names ...`.

The list is torchvision's `_IMAGENET_CATEGORIES` (torchvision/models/_meta.py, BSD-3-Clause,
see models/LICENSE-torchvision), read from the PyPI wheel without installing or importing it.

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/imagenet_classes.py [--version 0.29.2]
"""
import argparse
import ast
import glob
import os
import subprocess
import sys
import tempfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--version", default="0.29.2")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        f"torchvision=={args.version}", "-d", tmp], check=True)
        wheel = glob.glob(os.path.join(tmp, "torchvision-*.whl"))[0]
        source = zipfile.ZipFile(wheel).read("torchvision/models/_meta.py").decode()
    tree = ast.parse(source)
    names = next(ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "_IMAGENET_CATEGORIES")
    assert len(names) == 1000, len(names)
    with open(os.path.join(ROOT, "models/imagenet_classes.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"wrote {len(names)} class names from torchvision {args.version}")


if __name__ == "__main__":
    main()
