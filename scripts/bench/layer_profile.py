#!/usr/bin/env python3
"""Where the forward pass goes, per kind of layer, in tract (`fastretrain bench --profile`) and
in onnxruntime (its own profiler), one thread, batch 1, same model, same outputs (the model's
feature recipe): the per-layer-type ceiling of docs/BENCHMARKS.md.

Both runtimes rename and fuse nodes; each timed node is traced back to the ONNX node it comes
from (tract: the node name's prefix; onnxruntime: the tensor its fused node writes), and a
Clip/Relu/Add fused into a convolution counts as that convolution. Kinds: dense k×k convolution
(MobileNetV2's stem, ResNet's 3×3 and 7×7), depthwise convolution, pointwise (1×1) convolution,
activation left unfused, layout changes, and the rest (pooling of the recipe's tensors,
reshapes, max pooling).

A third column times tract's matrix kernels alone (`fastretrain bench --kernels`: each matrix
product of the plan with its operands packed beforehand and nothing fused, with the fastest of
tract's kernels in either orientation): what the convolutions run as matrix products cannot go
below in tract, whatever is done about packing, tiling and fusion around the kernels. The last
line adds up the forward pass that floor allows: the kernels alone for those kinds, depthwise as
measured (its kernel is the whole op), activations fused (free, as in onnxruntime), the rest as
measured.

Usage (the project venv, e.g. scripts/ci/venv.sh's python):
  scripts/bench/layer_profile.py --bin target/release/fastretrain [--model M] [--runs 20] [--out F.json]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)

from machine import cpu_description  # noqa: E402

KINDS = ["dense k×k conv", "depthwise conv", "pointwise conv", "activation (unfused)",
         "layout change", "other"]


class Graph:
    """The ONNX graph's nodes by name and by the tensors they write."""

    def __init__(self, model):
        import onnx
        self.proto = onnx.load(model)
        nodes = self.proto.graph.node
        self.by_name = {n.name: n for n in nodes}
        self.by_output = {o: n for n in nodes for o in n.output}

    def conv_kind(self, node, depth=0):
        """The kind of the convolution `node` is, or is fused into (an activation or a residual
        Add after it); None when it is none."""
        if node is None or depth > 3:
            return None
        if node.op_type == "Conv":
            attrs = {a.name: a for a in node.attribute}
            group = attrs["group"].i if "group" in attrs else 1
            kernel = list(attrs["kernel_shape"].ints) if "kernel_shape" in attrs else []
            if group > 1:
                return "depthwise conv"
            return "pointwise conv" if kernel == [1, 1] else "dense k×k conv"
        if node.op_type in ("Clip", "Relu", "Add", "BatchNormalization"):
            kinds = [self.conv_kind(self.by_output.get(i), depth + 1) for i in node.input]
            # A residual Add is fused into the 1×1 projection that feeds it.
            for preferred in ("pointwise conv", "depthwise conv", "dense k×k conv"):
                if preferred in kinds:
                    return preferred
        return None


def tract_profile(a):
    out = subprocess.run([a.bin, "--threads", "1", "bench", "--profile", "--json", "--model",
                          a.model, "--runs", str(a.runs), "--warmup", "3"],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["nodes"], json.loads(subprocess.run(
        [a.bin, "bench", "--json", "--model", a.model, "--runs", "1", "--warmup", "0"],
        capture_output=True, text=True, check=True).stdout)["feature_tensor"]


def tract_kernel_floor(a):
    out = subprocess.run([a.bin, "bench", "--kernels", "--json", "--model", a.model, "--runs",
                          str(max(a.runs // 2, 5))], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["products"]


def floor_kinds(graph, products):
    """tract's matrix kernels alone, per kind: (the plan's kernels, the fastest ones) in ms."""
    totals = {kind: [0.0, 0.0] for kind in KINDS}
    for p in products:
        onnx_node = graph.by_name.get(p["node"].split(".")[0])
        kind = graph.conv_kind(onnx_node) or "other"
        totals[kind][0] += p["kernel_ms"]
        totals[kind][1] += p["best_ms"]
    return totals


def tract_kinds(graph, nodes):
    """tract's ms per kind, and the part of it spent packing the inputs of its matrix products
    (`OptMatMulPack`, lazy im2col), which onnxruntime's blocked-layout kernels do not do."""
    totals = dict.fromkeys(KINDS, 0.0)
    packing = dict.fromkeys(KINDS, 0.0)
    for n in nodes:
        onnx_node = graph.by_name.get(n["node"].split(".")[0])
        if n["op"] == "DepthWiseConv":
            kind = "depthwise conv"
        elif n["op"].startswith("OptBinChain"):
            kind = "activation (unfused)"
        elif n["op"] in ("OptMatMul", "OptMatMulPack", "LazyIm2col", "Pad",
                         "DirectSpatialConv"):
            kind = graph.conv_kind(onnx_node) or "other"
            if n["op"] in ("OptMatMulPack", "LazyIm2col"):
                packing[kind] += n["seconds"]
        elif n["op"] in ("IntoShape", "MoveAxis", "Transpose"):
            kind = "layout change"
        else:
            kind = "other"
        totals[kind] += n["seconds"]
    return totals, packing


def ort_kinds(graph, model, descriptor, runs):
    import onnx
    import onnxruntime as ort
    tensors = json.loads(descriptor)["tensors"] if descriptor.startswith("{") else [descriptor]
    proto = graph.proto
    del proto.graph.output[:]
    for name in tensors:
        proto.graph.output.append(onnx.helper.make_tensor_value_info(
            name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    session = ort.InferenceSession(proto.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    inp = session.get_inputs()[0]
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224)).astype(np.float32)
    warmup = 3
    for _ in range(warmup + runs):
        session.run(None, {inp.name: x})
    events = [e for e in json.load(open(session.end_profiling())) if e.get("cat") == "Node"
              and e["name"].endswith("_kernel_time")]
    # In time order, the same nodes each run: the warm-up runs' events come first.
    events = events[len(events) * warmup // (warmup + runs):]
    totals = dict.fromkeys(KINDS, 0.0)
    for e in events:
        name = e["name"][:-len("_kernel_time")]
        op = e["args"].get("op_name", "")
        if op in ("ReorderInput", "ReorderOutput", "Transpose"):
            kind = "layout change"
        else:
            base = name.removesuffix("_nchwc")
            node = graph.by_output.get(base) or graph.by_name.get(base)
            kind = graph.conv_kind(node) or (
                "activation (unfused)" if op in ("Clip", "Relu") else "other")
        totals[kind] += e["dur"] / 1e3 / runs
    return totals


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--model", default=os.path.join(ROOT, "models/mobilenetv2.onnx"))
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", help="write the figures as JSON here too")
    a = p.parse_args()
    graph = Graph(a.model)
    nodes, descriptor = tract_profile(a)
    tract, packing = tract_kinds(graph, nodes)
    ort = ort_kinds(Graph(a.model), a.model, descriptor, a.runs)
    floor = floor_kinds(graph, tract_kernel_floor(a))
    # The forward pass tract's kernels allow: see the module's docstring.
    allowed = {kind: floor[kind][1] if floor[kind][1] else
               (0.0 if kind == "activation (unfused)" else tract[kind]) for kind in KINDS}
    import onnxruntime
    result = {"machine": cpu_description(), "model": os.path.basename(a.model),
              "onnxruntime": onnxruntime.__version__, "runs": a.runs,
              "tract_ms": tract, "tract_packing_ms": packing, "onnxruntime_ms": ort,
              "tract_kernels_alone_ms": {k: {"plan_kernels": v[0], "fastest_kernels": v[1]}
                                         for k, v in floor.items()},
              "tract_floor_ms": allowed}
    print(f"{result['model']}, 1 thread, batch 1, ms per image ({result['machine']}; "
          f"onnxruntime {result['onnxruntime']}, its profiler's kernel times)")
    print("| layer kind | tract | of which packing | onnxruntime | onnxruntime / tract | "
          "tract's matrix kernels alone: plan's / fastest |")
    print("|---|---|---|---|---|---|")
    for kind in KINDS:
        t, o = tract[kind], ort[kind]
        alone = f"{floor[kind][0]:.2f} / {floor[kind][1]:.2f}" if floor[kind][1] else ""
        packed = f"{packing[kind]:.2f}" if packing[kind] else ""
        ratio = f"{o / t:.2f}×" if t else "—"
        if t or o:
            print(f"| {kind} | {t:.2f} | {packed} | {o:.2f} | {ratio} | {alone} |")
    st, so, sa = sum(tract.values()), sum(ort.values()), sum(allowed.values())
    sp = sum(packing.values())
    print(f"| **all** | **{st:.2f}** | {sp:.2f} | **{so:.2f}** | **{so / st:.2f}×** | |")
    print(f"| what tract's kernels allow | **{sa:.2f}** | | {so:.2f} | **{so / sa:.2f}×** | |")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
