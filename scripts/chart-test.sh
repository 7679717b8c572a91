#!/usr/bin/env bash
# The Helm chart's tests (charts/tests): a real Helm engine renders and
# lints it (PyPI helm-python-sdk, which bundles Helm's Go library), every
# rendered object is validated strictly against Kubernetes' schemas (PyPI
# kubernetes-validate), and the release binary judges the chart's own pods.
# Installs both packages in a venv under target/ the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=target/chart-venv
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet helm-python-sdk==0.2.2 kubernetes-validate==1.37.0
fi
cargo build --release --quiet
"$venv/bin/python" -m unittest discover -s charts/tests -v
