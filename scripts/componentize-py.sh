#!/usr/bin/env bash
# Prints the path of a componentize-py 0.25 executable, the tool that turns a
# Python policy into a WebAssembly component (docs/python-policies.md).
#
# Installs componentize-py==0.25.* from PyPI into a venv the first time, at
# $AGYN_PY_VENV (default target/componentize-venv, relative to the repo
# root). Needs python3 (3.10 or newer) with venv and ensurepip. Everything
# but the path goes to stderr, so that a caller can write
#     componentize_py=$(scripts/componentize-py.sh)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${AGYN_PY_VENV:-target/componentize-venv}"
case "$venv" in
    /*) ;;
    *) venv="$root/$venv" ;;
esac
version='0.25.*'
exe="$venv/bin/componentize-py"

die() {
    echo "componentize-py.sh: $*" >&2
    exit 1
}

installed_ok() {
    [ -x "$exe" ] && "$venv/bin/python" - <<'EOF' 2>/dev/null
import importlib.metadata, sys
v = importlib.metadata.version("componentize-py")
sys.exit(0 if v.split(".")[:2] == ["0", "25"] else 1)
EOF
}

if installed_ok; then
    echo "$exe"
    exit 0
fi

command -v python3 >/dev/null 2>&1 \
    || die "python3 is not installed (Debian: apt-get install python3 python3-venv)"
python3 - <<'EOF' || die "componentize-py 0.25 needs Python 3.10 or newer (found $(python3 --version 2>&1))"
import sys
sys.exit(0 if sys.version_info >= (3, 10) else 1)
EOF
python3 -c 'import venv, ensurepip' 2>/dev/null \
    || die "python3 lacks venv/ensurepip (Debian: apt-get install python3-venv)"

if [ ! -x "$venv/bin/pip" ]; then
    echo "componentize-py.sh: creating a venv at $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv" >&2 \
        || die "python3 -m venv $venv failed (Debian: apt-get install python3-venv)"
fi
echo "componentize-py.sh: installing componentize-py==$version into $venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version" >&2 \
    || die "pip could not install componentize-py==$version (is PyPI reachable? is there a wheel for $(uname -sm)?)"
installed_ok || die "componentize-py==$version is not runnable at $exe after installing"
echo "$exe"
