#!/usr/bin/env python3
"""Halves a model for a board as people usually do: onnxconverter-common's
convert_float_to_float16 with keep_io_types=True (float16 weights and activations, float32
input and output through Cast nodes). Used by tests/export_onnxruntime.rs on the shipped
MobileNetV2; works on any float32 ONNX model.

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/convert_float16.py model.onnx model_f16.onnx
"""
import sys

import onnx
from onnxconverter_common import float16


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    model = float16.convert_float_to_float16(onnx.load(sys.argv[1]), keep_io_types=True)
    onnx.save(model, sys.argv[2])


if __name__ == "__main__":
    main()
