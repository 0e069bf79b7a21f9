#!/usr/bin/env bash
# The device check for a machine with a real GPU, which has no registry access: nothing is
# built there. Takes the bundle scripts/device/gpu-bundle.sh packs here (.gpu-bundle/: the
# `--features train-wgpu` binary, stripped and xz-compressed, and the Vulkan loader), or a
# binary as BIN, and, in a few minutes on 16 cores:
#   1. runs scripts/device/wgpu-check.sh on the machine's own Vulkan driver (VULKAN=system): the same
#      short retrain on the flex CPU backend and on the GPU, compared within the same
#      tolerances as on lavapipe, the exported model checked in tract and onnxruntime;
#   2. times one SGD epoch of MobileNetV2 at 224×224 (N images, batch 32) with
#      `retrain --device wgpu` (and `--device cuda` where the binary has it), and the same epoch
#      in PyTorch on the GPU (torchvision's MobileNetV2, same batch, same momentum SGD);
# and prints one JSON line: the comparison, images/s of each, and ours over PyTorch's.
#
#   scripts/device/gpu-check.sh                        # the unpacked .gpu-bundle/
#   BIN=path/to/fastretrain scripts/device/gpu-check.sh
#
# The device call (carry and command) is in docs/TRAINING.md ("GPU"). Vulkan loader: if
# `ldconfig -p` has no libvulkan, the bundle's .deb (or those under .gl/, the device README's
# recipe) is unpacked first; NVIDIA's ICD is named from the driver's folder when the loader finds
# none. VULKAN=lavapipe runs it all on Mesa's CPU driver instead (the rehearsal on a machine
# without a GPU; it installs Mesa from the registry). Environment: N (512), SIZE (224), PYTHON
# (python3: PyTorch, torchvision and onnxruntime), STEP_TIMEOUT (300 s per retrain), WORK (a
# temp folder), LOGS (a folder to receive logs.tar.gz of every step's log).
set -euo pipefail
cd "$(dirname "$0")/../.."
START=$(date +%s)
N=${N:-512}
SIZE=${SIZE:-224}
PYTHON=${PYTHON:-python3}
VULKAN=${VULKAN:-system}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$WORK"
DATA=data/fashion-mnist
BUNDLE=${BUNDLE:-.gpu-bundle}

SOURCE=BIN
if [ -z "${BIN:-}" ]; then
  SOURCE=$BUNDLE/fastretrain.xz
  [ -f "$BUNDLE/fastretrain.xz" ] || { echo "no BIN and no $BUNDLE/fastretrain.xz (scripts/device/gpu-bundle.sh packs it)" >&2; exit 2; }
  mkdir -p "$WORK/bin"
  # Python's lzma, not xz(1): the device image is not known to have xz-utils.
  "$PYTHON" -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
    "$BUNDLE/fastretrain.xz" "$WORK/bin/fastretrain"
  sums=$(realpath "$BUNDLE/fastretrain.sha256")
  (cd "$WORK/bin" && sha256sum -c --quiet "$sums") >&2
  chmod +x "$WORK/bin/fastretrain"
  BIN=$WORK/bin/fastretrain
fi
BIN=$(realpath "$BIN")

if [ "$VULKAN" = system ] && ! ldconfig -p | grep -q libvulkan.so.1; then
  for f in "$BUNDLE"/gl/*.deb .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
NVIDIA_ICD=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ "$VULKAN" = system ] && [ -z "${VK_DRIVER_FILES:-}${VK_ICD_FILENAMES:-}" ] && [ -f "$NVIDIA_ICD" ]; then
  export VK_DRIVER_FILES=$NVIDIA_ICD
fi

# 1. wgpu on this GPU against the CPU (exit status kept: the JSON line says what failed).
compare=0
VULKAN=$VULKAN PYTHON="$PYTHON" BIN="$BIN" OUT="$WORK/compare" scripts/device/wgpu-check.sh \
  > "$WORK/compare.json" 2> "$WORK/compare.err" || compare=$?
if [ "$VULKAN" = lavapipe ]; then
  # wgpu-check.sh installed Mesa; the timed epochs below run on it too.
  VK_ICD_FILENAMES=$(ls /usr/share/vulkan/icd.d/lvp_icd.*.json | head -1)
  export VK_ICD_FILENAMES
fi
[ -s "$WORK/compare.json" ] || echo "{\"error\": $(tail -3 "$WORK/compare.err" | "$PYTHON" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}" > "$WORK/compare.json"

# 2. One SGD epoch at full size: ours on each GPU backend the binary has (the second of two
#    epochs: the first compiles the kernels), then PyTorch (after a warm-up epoch).
for device in wgpu cuda; do
  timeout "$STEP_TIMEOUT" "$BIN" retrain --device "$device" --mode sgd --epochs 2 --seed 1 --size "$SIZE" --batch 32 \
    --lr 1e-3x2 --lambda 10 --data "$DATA/train-images-idx3-ubyte.gz" --limit "$N" \
    --test-data "$DATA/t10k-images-idx3-ubyte.gz" --test-limit 32 \
    --out "$WORK/speed-$device.onnx" > "$WORK/speed-$device.log" 2>&1 || true
done
timeout "$STEP_TIMEOUT" "$PYTHON" - "$N" "$SIZE" > "$WORK/pytorch.json" 2> "$WORK/pytorch.err" <<'EOF' || true
import json, sys, time
import torch, torchvision
n, size = int(sys.argv[1]), int(sys.argv[2])
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(1)
model = torchvision.models.mobilenet_v2(num_classes=10).to(dev).train()
opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
x = torch.randn(n, 3, size, size, device=dev)
y = torch.randint(0, 10, (n,), device=dev)
def epoch():
    for i in range(0, n, 32):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i:i + 32]), y[i:i + 32]).backward()
        opt.step()
epoch()  # warm-up: cuDNN's kernel choice
if dev == "cuda":
    torch.cuda.synchronize()
t = time.time()
epoch()
if dev == "cuda":
    torch.cuda.synchronize()
seconds = time.time() - t
print(json.dumps({"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu",
                  "torch": torch.__version__, "seconds": seconds, "images_per_second": n / seconds}))
EOF

if [ -n "${LOGS:-}" ]; then
  mkdir -p "$LOGS"
  (cd "$WORK" && find . \( -name '*.log' -o -name '*.jsonl' -o -name '*.json' -o -name '*.err' \) -print0 \
    | tar -czf "$LOGS/logs.tar.gz" --null -T -)
fi
"$PYTHON" - "$WORK" "$N" "$SIZE" "$compare" "$(($(date +%s) - START))" "$VULKAN" "$SOURCE" <<'EOF'
import json, os, sys
out, n, size, compare, seconds, vulkan, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6], sys.argv[7]
result = {"comparison": json.load(open(f"{out}/compare.json")), "comparison_exit": compare,
          "binary": source, "vulkan": vulkan, "images": n, "size": size, "check_seconds": seconds,
          "images_per_second": {}}
for device in ("wgpu", "cuda"):
    metrics = f"{out}/speed-{device}.jsonl"
    if os.path.exists(metrics) and os.path.getsize(metrics) > 0:
        last = [json.loads(l) for l in open(metrics)][-1]
        result["images_per_second"][f"fastretrain_{device}"] = n / last["seconds_sgd"]
        result[f"seconds_sgd_{device}"] = last["seconds_sgd"]
    else:
        log = open(f"{out}/speed-{device}.log").read().strip().splitlines()
        result["images_per_second"][f"fastretrain_{device}"] = None
        result[f"error_{device}"] = log[-1] if log else "no output"
try:
    torch = json.load(open(f"{out}/pytorch.json"))
except ValueError:
    err = open(f"{out}/pytorch.err").read().strip().splitlines()
    torch = {"error": err[-1] if err else "no output", "images_per_second": None}
result["pytorch"] = torch
result["images_per_second"]["pytorch"] = torch["images_per_second"]
ours = result["images_per_second"]["fastretrain_wgpu"]
result["ratio_wgpu_to_pytorch"] = ours / torch["images_per_second"] if ours and torch["images_per_second"] else None
print(json.dumps(result))
sys.exit(compare)
EOF
