#!/usr/bin/env bash
# The dry run over many pods: generates N pod manifests (default 10,000),
# runs `check` on the directory with the release binary, and reports wall
# time, CPU time (user + system, all threads) and peak memory. Half the
# pods are compliant, half are bare and admitted after mutation. On a
# machine shared with other work, CPU time moves less than wall time.
#   scripts/bench-dry-run.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
cargo build --release --quiet
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
python3 - "$dir" "$n" <<'PY'
import os, sys
out, n = sys.argv[1], int(sys.argv[2])
with open("tests/data/typical-pod.yaml") as f:
    compliant = f.read()
bare = """apiVersion: v1
kind: Pod
metadata: {name: bare-%d, namespace: agyn, labels: {app: web}}
spec:
  containers:
    - {name: web, image: nginx:1.27, ports: [{containerPort: 8080}]}
    - {name: sidecar, image: envoy:1.31}
"""
for i in range(n):
    text = compliant.replace("agent-api-7f9c8d6b5-x2k4p", "pod-%d" % i) if i % 2 else bare % i
    with open(os.path.join(out, "pod-%05d.yaml" % i), "w") as f:
        f.write(text)
PY
# Warm the compiled-policy cache so the figure is the steady state.
./target/release/agyn-admission check "$dir/pod-00000.yaml" >/dev/null || true
python3 - "$dir" <<'PY'
import resource, subprocess, sys, time
start = time.monotonic()
run = subprocess.run(["./target/release/agyn-admission", "check", "-o", "json", sys.argv[1]],
                     stdout=subprocess.DEVNULL)
wall = time.monotonic() - start
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
print(f"check over {sys.argv[1]}: exit {run.returncode}, wall {wall:.2f} s, "
      f"CPU {cpu:.2f} s, peak RSS {peak:.0f} MiB")
PY
