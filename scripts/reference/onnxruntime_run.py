"""Runs ONNX models with onnxruntime on images (or .npy tensors) and prints their outputs as JSON.

Independent of fastretrain: preprocessing is scripts/reference/reference.py's (PIL + NumPy): the float
resize (`--pipeline float`, PIL mode 'F') or the 8-bit one a torchvision user has
(`--pipeline torchvision`: PIL resize on 8-bit pixels, ToTensor, Normalize; NHWC and BGR as the
spec says). Used by tests/export_onnxruntime.rs to check exported models.

    python scripts/reference/onnxruntime_run.py --spec models/mobilenetv2.json \
        --models adapted.onnx models/mobilenetv2.onnx --images a.png b.jpg
    python scripts/reference/onnxruntime_run.py --models adapted.onnx --tensors a.npy b.npy
    python scripts/reference/onnxruntime_run.py --spec s.json --models m.onnx --tensor features \
        --images a.png

--tensor reads an inner tensor (in whatever float type the model computes it) instead of the
first output.

With --tensors each .npy file is one sample fed as it is (float32), no spec: a model that is not
fed images.

Prints {"models": [{"path", "output", "labels" (metadata fastretrain.labels or null),
"scores": [[...] per image]}]}.
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
from PIL import Image

from reference import load_spec, preprocess, preprocess_u8


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--spec")
    ap.add_argument("--models", nargs="+", required=True)
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--images", nargs="+")
    group.add_argument("--tensors", nargs="+")
    ap.add_argument("--pipeline", choices=["float", "torchvision"], default="float")
    ap.add_argument("--tensor", help="read this tensor instead of the first output (any float type)")
    ap.add_argument("--no-optimization", action="store_true",
                    help="run each operator as ONNX defines it (a QDQ model's QuantizeLinear and "
                         "DequantizeLinear as written, not fused into onnxruntime's int8 kernels)")
    args = ap.parse_args()
    if args.tensors:
        batch = np.stack([np.load(p).astype(np.float32) for p in args.tensors])
    else:
        if not args.spec:
            ap.error("--images needs --spec")
        spec = load_spec(args.spec)
        prepare = preprocess_u8 if args.pipeline == "torchvision" else preprocess
        batch = np.stack([prepare(Image.open(p), spec) for p in args.images])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    if args.no_optimization:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    result = []
    for path in args.models:
        model = path
        if args.tensor:
            import onnx
            proto = onnx.load(path)
            inferred = onnx.shape_inference.infer_shapes(proto).graph.value_info
            elem = next((v.type.tensor_type.elem_type for v in inferred if v.name == args.tensor),
                        onnx.TensorProto.FLOAT)
            proto.graph.output.insert(0, onnx.helper.make_tensor_value_info(args.tensor, elem, None))
            model = proto.SerializeToString()
        session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        meta = session.get_modelmeta().custom_metadata_map
        labels = json.loads(meta["fastretrain.labels"]) if "fastretrain.labels" in meta else None
        name = session.get_inputs()[0].name
        output = session.get_outputs()[0].name
        # A model converted with a float16 input takes the same values rounded to float16.
        feed = batch.astype(np.float16) if session.get_inputs()[0].type == "tensor(float16)" else batch
        # One image at a time: the exported batch dimension is whatever the original had.
        scores = [session.run([output], {name: x[None]})[0][0].astype(float).tolist() for x in feed]
        result.append({"path": path, "output": output, "labels": labels, "scores": scores})
    print(json.dumps({"models": result}))


if __name__ == "__main__":
    main()
