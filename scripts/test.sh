#!/usr/bin/env bash
# Every test: the Rust workspace (release profile, as the binary ships),
# then the Helm chart's (which need the release binary just built).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace
scripts/chart-test.sh
