#!/usr/bin/env bash
# The state files of the hostile corpus (tests/data/hostile/states/): a valid tiny state,
# then damaged copies of it. Needs the release binary (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/../.."
B=${FASTRETRAIN:-target/release/fastretrain}
OUT=tests/data/hostile/states
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$OUT"
DATA=data/fashion-mnist/train-images-idx3-ubyte.gz
$B learn --state "$TMP/good.frs" --model tests/data/models/tiny_cnn.onnx --data $DATA --limit 100 >/dev/null
$B learn --state "$OUT/other_backbone.frs" --model tests/data/models/tiny_cnn_b.onnx --data $DATA --limit 100 >/dev/null
python3 - "$TMP/good.frs" "$OUT" <<'PY'
import struct, sys
good = open(sys.argv[1], "rb").read()
out = sys.argv[2]
open(f"{out}/truncated.frs", "wb").write(good[: len(good) // 2])
flipped = bytearray(good)
flipped[len(good) // 2] ^= 0x04
open(f"{out}/bit_flipped.frs", "wb").write(bytes(flipped))
future = bytearray(good)
future[8:12] = struct.pack("<I", 99)
open(f"{out}/future_version.frs", "wb").write(bytes(future))
open(f"{out}/zero_bytes.frs", "wb").write(b"")
open(f"{out}/not_a_state.frs", "wb").write(b"FRSTATE? no, just some text\n")
open(f"{out}/trailing_garbage.frs", "wb").write(good + b"\0\0\0\0")
# Found by cargo-fuzz: a payload length so large that adding the header overflowed.
huge = bytearray(good[:52])
huge[12:20] = struct.pack("<Q", 2**64 - 40)
open(f"{out}/fuzz_huge_length.frs", "wb").write(bytes(huge))
PY
rm -f "$OUT"/*.lock
echo "wrote $OUT"
