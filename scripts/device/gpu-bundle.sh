#!/usr/bin/env bash
# What a GPU machine needs to run scripts/device/gpu-check.sh, packed to travel: that machine has no
# package registry and takes at most 64 MiB of files (the working tree included), so nothing
# can be built there. Writes .gpu-bundle/ (ignored by git, named in the device call's carry):
#   fastretrain.xz          the `--features train-wgpu` binary, stripped, xz -9e
#   fastretrain.sha256      its checksum (gpu-check.sh verifies the unpacked binary)
#   gl/libvulkan1_*.deb     the Vulkan loader (unpacked there only if the machine has none)
#   manifest.json           sizes: the bundle, the tracked working tree, both together
# The model and the data subset the check uses (models/mobilenetv2.onnx, data/fashion-mnist,
# tests/data/images) are tracked files and travel with the tree. Exits 1 when the bundle is
# over 60 MiB or bundle and tree together over the device's 64 MiB.
#
#   scripts/device/gpu-bundle.sh                      # builds (≈ 20 min cold on 2 cores, alone)
#   BIN=path/to/fastretrain scripts/device/gpu-bundle.sh
#
# REHEARSE=1 then copies what would travel (the tree's tracked and unignored files and the
# bundle, nothing else) to a temporary folder and runs scripts/device/gpu-check.sh there from the
# bundle on Mesa's lavapipe (VULKAN=lavapipe; N, SIZE, PYTHON as gpu-check.sh takes them, with
# N=64 SIZE=32 by default: lavapipe is ~20x slower than the CPU backend), as the device would.
#
# The device call is in docs/TRAINING.md ("GPU").
set -euo pipefail
cd "$(dirname "$0")/../.."
BUNDLE=.gpu-bundle
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked --features train-wgpu >&2
  BIN="$(realpath "${CARGO_TARGET_DIR:-target}")/release/fastretrain"
fi
"$BIN" retrain --help | grep -q wgpu || { echo "$BIN has no wgpu backend" >&2; exit 2; }
rm -rf "$BUNDLE.tmp"
mkdir -p "$BUNDLE.tmp/gl"
strip --strip-all -o "$BUNDLE.tmp/fastretrain" "$BIN"
stripped=$(stat -c %s "$BUNDLE.tmp/fastretrain")
(cd "$BUNDLE.tmp" && sha256sum fastretrain > fastretrain.sha256)
xz -9e -T2 "$BUNDLE.tmp/fastretrain"
# The loader as Debian ships it (the device README's recipe: `dpkg -x` into /). A second run
# reuses the downloaded file.
if ls "$BUNDLE"/gl/libvulkan1_*.deb >/dev/null 2>&1; then
  cp "$BUNDLE"/gl/libvulkan1_*.deb "$BUNDLE.tmp/gl/"
else
  (cd "$BUNDLE.tmp/gl" && apt-get download libvulkan1 >&2 2>/dev/null)
fi
rm -rf "$BUNDLE"
mv "$BUNDLE.tmp" "$BUNDLE"
python3 - "$BUNDLE" "$stripped" "$(stat -c %s "$BIN")" <<'EOF'
import json, os, subprocess, sys
bundle, stripped, built = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
MIB = 1 << 20
def size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
# What travels besides the bundle: tracked and untracked-but-not-ignored files (../shared
# does not travel; a shared/ inside the checkout would).
files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                       capture_output=True, check=True).stdout.split(b"\0")
tree = sum(os.path.getsize(f) for f in files if f and os.path.isfile(f))
total = size(bundle)
manifest = {
    "binary_built_bytes": built, "binary_stripped_bytes": stripped,
    "binary_xz_bytes": os.path.getsize(f"{bundle}/fastretrain.xz"),
    "bundle_bytes": total, "tree_bytes": tree, "travelling_bytes": total + tree,
    "bundle_mib": round(total / MIB, 2), "travelling_mib": round((total + tree) / MIB, 2),
    "limits_mib": {"bundle": 60, "travelling": 64},
}
json.dump(manifest, open(f"{bundle}/manifest.json", "w"), indent=1)
print(json.dumps(manifest))
sys.exit(0 if total <= 60 * MIB and total + tree <= 64 * MIB else 1)
EOF

if [ "${REHEARSE:-0}" = 1 ]; then
  copy=$(mktemp -d)
  git ls-files -z --cached --others --exclude-standard | xargs -0 cp --parents -t "$copy"
  cp -r "$BUNDLE" "$copy/"
  echo "rehearsing in $copy (what travels, unpacked from the bundle, on lavapipe)" >&2
  # BIN unset: the check unpacks the bundle, as on the device.
  (cd "$copy" && env -u BIN VULKAN=lavapipe N="${N:-64}" SIZE="${SIZE:-32}" scripts/device/gpu-check.sh)
fi
