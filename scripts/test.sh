#!/usr/bin/env bash
# Every test: the Rust workspace (release profile, as the binary ships),
# then the Helm chart's (which need the release binary just built).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --workspace
scripts/chart-test.sh
# The documentation's tests (docs/tests): every example that needs no
# cluster is run, docs/cli.md is compared with --help, the pre-commit hook
# and the CI recipes are exercised. They use the chart tests' venv, with
# pre-commit from PyPI.
venv=target/chart-venv
"$venv/bin/python" -c 'import pre_commit' 2>/dev/null \
  || "$venv/bin/pip" install --quiet pre-commit==4.7.0
"$venv/bin/python" -m unittest discover -s docs/tests -v
