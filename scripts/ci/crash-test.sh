#!/usr/bin/env bash
# Long crash test: SIGKILL `learn` at random moments (default 1000 times) and check every
# state after each kill, and exact resumption. Usage: scripts/ci/crash-test.sh [KILLS] [MODEL]
# The short version (24 kills) runs in `cargo test --release` (tests/crash.rs).
set -euo pipefail
cd "$(dirname "$0")/../.."
export CRASH_KILLS="${1:-1000}"
[ -n "${2:-}" ] && export CRASH_MODEL="$(realpath "$2")"
cargo test --release --test tests crash:: -- --nocapture 2>&1 | grep -E "crash test:|test result|panicked|error"
