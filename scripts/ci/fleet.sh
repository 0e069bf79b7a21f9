#!/usr/bin/env bash
# Scale-out checks (docs/SCALE_OUT.md): the integrations' venv (flwr, Dask, the fastretrain wheel
# of this checkout), their tests (the fleet server's checks; a Dask LocalCluster learning in
# shards equals one process), then a Flower fleet of three devices on 127.0.0.1 (scripts/ci/fleet.py,
# arguments passed on: e.g. --kill, --epsilon 2, --samples 600), printing its JSON.
# FASTRETRAIN_BIN: the CLI (default: the release build).
set -euo pipefail
cd "$(dirname "$0")/../.."
T="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
PY="$(scripts/ci/fleet-venv.sh)"
BIN="${FASTRETRAIN_BIN:-$T/release/fastretrain}"
[ -x "$BIN" ] || cargo build --release --locked >&2
"$PY" -m pytest -q -p no:cacheprovider integrations >&2
"$PY" scripts/ci/fleet.py --binary "$BIN" "$@"
