#!/usr/bin/env python3
"""Quantizes a float32 image classifier to int8 as onnxruntime documents it: quant_pre_process,
then quantize_static in the QDQ format (int8 weights per channel, uint8 activations, MinMax
calibration) on the images given, preprocessed as the model's spec says (PIL's 8-bit resize, as
a torchvision user feeds it). Used by tests/export_onnxruntime.rs on the shipped MobileNetV2 and
its photos; works on any float32 model with a fastretrain spec.

Usage: PY=$(scripts/ci/venv.sh); $PY scripts/models/quantize_int8.py model.onnx model.json \
           model_int8.onnx image.png [image.png ...]
"""
import os
import sys
import tempfile

from onnxruntime import quantization as q
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "reference"))
from reference import load_spec, preprocess_u8  # noqa: E402


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    model, spec_path, out, images = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    spec = load_spec(spec_path)
    name = spec["input"]["name"]

    class Images(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{name: preprocess_u8(Image.open(p), spec)[None]} for p in images])

        def get_next(self):
            return next(self.items, None)

    with tempfile.TemporaryDirectory() as tmp:
        prepared = os.path.join(tmp, "prepared.onnx")
        q.quant_pre_process(model, prepared, skip_symbolic_shape=True)
        q.quantize_static(prepared, out, Images(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          weight_type=q.QuantType.QInt8, activation_type=q.QuantType.QUInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)


if __name__ == "__main__":
    main()
