#!/usr/bin/env bash
# Pod creation latency through a real API server, with and without the
# webhook (webhook/benches/apiserver_latency.rs): starts a throwaway control
# plane from KUBEBUILDER_ASSETS (default ../shared/kube/bin), runs the
# benchmark against it and stops it. Arguments go to the benchmark:
#   scripts/apiserver-latency.sh [--count N] [--concurrency N]
set -euo pipefail
cd "$(dirname "$0")/.."
assets="${KUBEBUILDER_ASSETS:-../shared/kube/bin}"
[[ -x $assets/kube-apiserver ]] || { echo "no kube-apiserver in $assets; set KUBEBUILDER_ASSETS" >&2; exit 2; }
dir="$(mktemp -d "${TMPDIR:-/tmp}/agyn-kube.XXXXXX")"
trap '"$assets/../stop" "$dir" >/dev/null 2>&1; rm -rf "$dir"' EXIT
"$assets/../start" "$dir" >/dev/null
AGYN_TEST_KUBECONFIG="$dir/kubeconfig" cargo bench --bench apiserver_latency -- "$@"
