#!/usr/bin/env bash
# Builds the Python policies in this directory into one agyn:policy@0.2.0
# component, with its metadata:
#
#     docs/examples/python-policy/build.sh [OUTPUT.wasm]
#
# OUTPUT defaults to policies.wasm beside this script (the module that
# policy-set.yaml names). componentize-py 0.25 is installed on first use
# (scripts/componentize-py.sh); the build takes about 30 s and 400 MB.
#
# Steps: componentize-py compiles app.py against the world `policy` of
# policy-sdk/wit into a component (CPython, the standard library modules
# app.py imports, and a snapshot of the interpreter after importing it);
# annotate.py then appends metadata.json as the component's custom section
# `agyn.policy.metadata`, which the host reads for each policy's rules.
#
# No --stub-wasi: the host links WASI 0.2 with nothing granted (no files,
# sockets, environment), so the real imports cost nothing and keep print(),
# time and random working. Stubbing them would replace each WASI interface
# with a trapping module of its own: 38 core instances instead of 14 for
# the same size (18.5 MB either way), and the host's instance pool holds
# fewer Python instances at once the more core instances each one has.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
out="${1:-$here/policies.wasm}"
case "$out" in
    /*) ;;
    *) out="$PWD/$out" ;;
esac
mkdir -p "$(dirname "$out")"

componentize_py="$("$root/scripts/componentize-py.sh")"

# componentize-py takes the app from a directory on its Python path and
# writes __pycache__ there: give it a copy of the policy's modules only.
# A policy split into several modules lists them all here.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp "$here/app.py" "$stage/"

"$componentize_py" --quiet \
    --wit-path "$root/policy-sdk/wit" --world policy \
    componentize --python-path "$stage" app \
    --output "$stage/policies.wasm"
python3 "$here/annotate.py" "$stage/policies.wasm" "$here/metadata.json"
mv "$stage/policies.wasm" "$out"
echo "$out"
