#!/usr/bin/env bash
# Every test: the Rust workspace (release profile, as the binary ships),
# then the Helm chart's (which need the release binary just built).
set -euo pipefail
cd "$(dirname "$0")/.."
# With KUBEBUILDER_ASSETS (a folder holding etcd, kube-apiserver and
# kubectl; .ci/run sets it), one throwaway API server for every test suite
# that needs one (tests/apiserver); without it, those tests skip.
if [[ -n "${KUBEBUILDER_ASSETS:-}" ]]; then
  kube_dir="$(mktemp -d "${TMPDIR:-/tmp}/agyn-kube.XXXXXX")"
  trap '"$KUBEBUILDER_ASSETS/../stop" "$kube_dir" >/dev/null 2>&1; rm -rf "$kube_dir"' EXIT
  "$KUBEBUILDER_ASSETS/../start" "$kube_dir"
  export AGYN_TEST_KUBECONFIG="$kube_dir/kubeconfig"
fi
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
