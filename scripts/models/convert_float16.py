#!/usr/bin/env python3
"""Halves a model for a board as people usually do: onnxconverter-common's
convert_float_to_float16 with keep_io_types=True (float16 weights and activations, float32
input and output through Cast nodes), or with --float16-io a float16 input and output too.
Used by tests/export_onnxruntime.rs; works on any float32 ONNX model.

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/convert_float16.py [--float16-io] model.onnx model_f16.onnx
"""
import sys

import onnx
from onnxconverter_common import float16


def main():
    args = sys.argv[1:]
    float16_io = "--float16-io" in args
    args = [a for a in args if a != "--float16-io"]
    if len(args) != 2:
        sys.exit(__doc__)
    model = float16.convert_float_to_float16(onnx.load(args[0]), keep_io_types=not float16_io)
    onnx.save(model, args[1])


if __name__ == "__main__":
    main()
