#!/usr/bin/env bash
# Coverage-guided fuzzing of the decoders we own (state, IDX, spec, image entry point) with
# cargo-fuzz (needs a nightly toolchain and `cargo install cargo-fuzz`).
# Usage: scripts/ci/fuzz.sh [SECONDS_PER_TARGET]   (default 60). Seeds come from tests/data.
set -uo pipefail
cd "$(dirname "$0")/../.."
secs="${1:-60}"
seeds=$(mktemp -d)
trap 'rm -rf "$seeds"' EXIT
mkdir -p "$seeds"/{state,idx,spec,image}
cp tests/data/hostile/states/* "$seeds/state/"
cp models/*.json tests/data/models/*.json "$seeds/spec/"
cp tests/data/hostile/images/ok/* tests/data/hostile/images/bad/* "$seeds/image/"
# IDX seeds: split byte (labels length) + labels + images.
python3 - "$seeds/idx" <<'PY'
import gzip, struct, sys
labels = struct.pack(">HBBI", 0, 8, 1, 2) + bytes([3, 7])
images = struct.pack(">HBBIII", 0, 8, 3, 2, 4, 4) + bytes(range(32))
open(f"{sys.argv[1]}/seed", "wb").write(bytes([len(labels)]) + labels + images)
PY
for target in state idx spec image; do
  mkdir -p "fuzz/corpus/$target"
  cargo +nightly fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "$seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -max_len=65536 2>&1 \
    | grep -E "^#[0-9]+ *DONE|Done [0-9]+ runs|ERROR|panicked|SUMMARY" | sed "s/^/$target: /"
done
