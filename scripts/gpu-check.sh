#!/usr/bin/env bash
# Device check for the GPU machine (no registry access there: nothing is built). Runs a
# prebuilt x86-64 fastretrain (built here with `cargo build --profile edge --features
# train-wgpu`, stripped; pass its path as $BIN) for one short epoch with --device wgpu (and cuda
# if the binary has it), then the same epoch in PyTorch (installed on that machine), and prints
# images/s for each. Sized for well under 5 minutes. Usage:
#   BIN=path/to/fastretrain scripts/gpu-check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:?set BIN to a fastretrain binary built with --features train-wgpu}
N=${N:-512}
SIZE=${SIZE:-224}
OUT=${OUT:-$(mktemp -d)}
DATA=data/fashion-mnist
for device in wgpu cuda; do
  start=$(date +%s.%N)
  if "$BIN" retrain --device "$device" --data "$DATA/train-images-idx3-ubyte.gz" --limit "$N" \
      --test-data "$DATA/t10k-images-idx3-ubyte.gz" --test-limit 64 --size "$SIZE" \
      --epochs 1 --mode sgd --lambda 10 --out "$OUT/$device.onnx" > "$OUT/$device.log" 2>&1; then
    python3 - "$OUT/$device.jsonl" "$N" "$device" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
sgd = lines[-1]["seconds_sgd"]
print(f"fastretrain --device {sys.argv[3]}: {int(sys.argv[2]) / sgd:.1f} images/s (one SGD epoch, {sgd:.1f} s)")
EOF
  else
    echo "fastretrain --device $device: $(tail -1 "$OUT/$device.log")"
  fi
done
python3 - "$N" "$SIZE" <<'EOF'
import sys, time
import torch, torchvision
n, size = int(sys.argv[1]), int(sys.argv[2])
dev = "cuda" if torch.cuda.is_available() else "cpu"
model = torchvision.models.mobilenet_v2(num_classes=10).to(dev)
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(32, 3, size, size, device=dev)
y = torch.randint(0, 10, (32,), device=dev)
def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
step()
if dev == "cuda": torch.cuda.synchronize()
t = time.time()
for _ in range(n // 32):
    step()
if dev == "cuda": torch.cuda.synchronize()
print(f"PyTorch {torch.__version__} on {dev}: {n / (time.time() - t):.1f} images/s (same epoch, batch 32)")
EOF
