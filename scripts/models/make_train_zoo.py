#!/usr/bin/env python3
"""Real PyTorch exports of six CNN families for the retraining tests (tests/retrain_families.rs).

Each family is built from torchvision's own classes (its blocks, its configuration helpers) at a
reduced width and depth so the files stay small (tens to hundreds of KB), with 10 classes and a
fixed seed, untrained (the tests check that every mode retrains and exports, not accuracy), and
exported twice: by the dynamo exporter (`torch.onnx.export(..., dynamo=True)`, opset 18, symbolic
batch) and by the legacy TorchScript one (`dynamo=False`, opset 13, `dynamic_axes` batch; in
eval mode it folds each batch normalisation into its convolution).

  resnet         torchvision BasicBlock x3 (8-16-32 wide, downsampling shortcuts), MaxPool stem
  mobilenetv2    torchvision MobileNetV2(width_mult=0.25), four inverted-residual stages
  mobilenetv3    torchvision MobileNetV3 small conf at width 0.25 (HardSwish, SE with
                 HardSigmoid, two dense layers)
  efficientnet   torchvision EfficientNet-B0 conf at width 0.25, depth 0.34 (SiLU, SE with
                 Sigmoid, stochastic depth)
  regnet         torchvision RegNet from BlockParams (group convs, SE with Sigmoid)
  shufflenetv2   torchvision ShuffleNetV2 with stages [8, 16, 32] (channel split, shuffle,
                 x.mean([2, 3]))

  tests/data/train_zoo/<family>_<dynamo|legacy>.onnx
  tests/data/train_zoo/models.json     per model: family, exporter, opset, ops used, features
  tests/data/train_zoo/reference.json  per model: torch's logits on a fixed 2x3x32x32 input
                                       (the tests check the interpreter and tract against them)

Needs PyTorch, torchvision and onnxscript (PyPI; the CUDA wheel runs on a CPU), in a venv of its
own as they are gigabytes: python3 -m venv /var/tmp/torch-venv && /var/tmp/torch-venv/bin/pip
install torch==2.15.0 torchvision==0.29.2 onnxscript onnx==1.23.2 onnxruntime==1.32.0; then
/var/tmp/torch-venv/bin/python scripts/models/make_train_zoo.py
"""
import json
import os
import warnings
from functools import partial

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn
from torchvision.models import MobileNetV2, ShuffleNetV2
from torchvision.models.efficientnet import EfficientNet, _efficientnet_conf
from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf
from torchvision.models.regnet import BlockParams, RegNet
from torchvision.models.resnet import BasicBlock, conv1x1

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests/data/train_zoo")
CLASSES = 10
SIZE = 32


class TinyResNet(nn.Module):
    """torchvision's ResNet layout (stem, MaxPool, BasicBlock stages, pool, fc) at 8-16-32."""

    def __init__(self, widths=(8, 16, 32), num_classes=CLASSES):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        blocks, inplanes = [], widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or inplanes != w:
                down = nn.Sequential(conv1x1(inplanes, w, stride), nn.BatchNorm2d(w))
            blocks.append(BasicBlock(inplanes, w, stride, down))
            inplanes = w
        self.layers = nn.Sequential(*blocks)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def families():
    mnv3_setting, mnv3_last = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    eff_setting, eff_last = _efficientnet_conf("efficientnet_b0", width_mult=0.25,
                                               depth_mult=0.34)
    return {
        "resnet": lambda: TinyResNet(),
        "mobilenetv2": lambda: MobileNetV2(
            num_classes=CLASSES, width_mult=0.25,
            inverted_residual_setting=[[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 2, 2],
                                       [6, 64, 1, 2]]),
        "mobilenetv3": lambda: MobileNetV3(mnv3_setting[:6], mnv3_last // 4,
                                           num_classes=CLASSES),
        "efficientnet": lambda: EfficientNet(eff_setting, 0.2, num_classes=CLASSES,
                                             last_channel=eff_last),
        "regnet": lambda: RegNet(
            BlockParams.from_init_params(depth=4, w_0=8, w_a=8.0, w_m=2.0, group_width=8,
                                         se_ratio=0.25),
            num_classes=CLASSES, stem_width=8,
            norm_layer=partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1)),
        "shufflenetv2": lambda: ShuffleNetV2([2, 2, 2], [8, 16, 32, 64, 128],
                                             num_classes=CLASSES),
    }


def randomise_batch_norms(model, rng):
    """Running statistics away from (0, 1), so that folding or not folding them matters."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.1, c).astype(np.float32)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c).astype(np.float32)))


def export(model, x, path, exporter):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(
                model, (x,), dynamo=True, opset_version=18, input_names=["input"],
                output_names=["logits"], dynamic_shapes={"x": {0: batch}})
            program.save(path)
        else:
            torch.onnx.export(
                model, (x,), path, dynamo=False, opset_version=13, input_names=["input"],
                output_names=["logits"],
                dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    m = onnx.load(path)
    onnx.checker.check_model(m)
    return m


def main():
    os.makedirs(OUT, exist_ok=True)
    torch.manual_seed(0)
    x = torch.from_numpy(
        np.random.default_rng(7).uniform(-2, 2, (2, 3, SIZE, SIZE)).astype(np.float32))
    models, reference = {}, {"input_seed": 7, "input_shape": [2, 3, SIZE, SIZE],
                             "input": x.numpy().ravel().tolist(), "models": {}}
    for i, (family, make) in enumerate(families().items()):
        torch.manual_seed(100 + i)
        model = make().eval()
        randomise_batch_norms(model, np.random.default_rng(200 + i))
        with torch.no_grad():
            logits = model(x).numpy()
        for exporter in ["dynamo", "legacy"]:
            name = f"{family}_{exporter}"
            path = os.path.join(OUT, f"{name}.onnx")
            m = export(model, x, path, exporter)
            session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
            err = float(np.abs(got - logits).max())
            assert err < 1e-4, f"{name}: onnxruntime differs from torch by {err}"
            ops = sorted({n.op_type for n in m.graph.node})
            models[name] = {
                "family": family, "exporter": exporter,
                "opset": next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                "ops": ops, "bytes": os.path.getsize(path),
                "parameters": int(sum(p.numel() for p in model.parameters())),
            }
            reference["models"][name] = {"logits": logits.ravel().tolist(),
                                         "onnxruntime_max_abs_diff": err}
            print(f"{name}: {os.path.getsize(path)} bytes, ops {ops}")
    with open(os.path.join(OUT, "models.json"), "w") as f:
        json.dump(models, f, indent=2)
        f.write("\n")
    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(reference, f)
        f.write("\n")


if __name__ == "__main__":
    main()
