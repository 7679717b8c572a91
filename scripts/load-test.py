#!/usr/bin/env python3
"""Load test of `agyn-admission serve`, rerunnable: python3 scripts/load-test.py

Builds the release binary, installs the load generator (oha, from crates.io,
into target/tools) if it is missing, makes a throwaway CA and serving
certificate with openssl, starts the server with the built-in policy set on
127.0.0.1, and drives it over HTTPS with AdmissionReviews:

  floor  a ConfigMap review of the same size as the pod's: no policy judges
         it, so it measures the server alone (TLS, HTTP, parsing, answer);
  pod    tests/data/typical-pod-review.json through /validate: every built-in
         policy;
  half   the pod and the floor again, each rate-limited to half the pod's
         measured maximum: the latency of a server that is busy but not
         saturated, measured from the moment the rate schedule meant to
         send each request (oha's --latency-correction: a stalled server
         cannot hide behind requests it delayed). The first second is
         reported apart: 32 TLS handshakes at once, and the schedule's
         catch-up after them, are a start-up cost, not the steady state.

  looping (with --looping) the built-in set plus a policy that loops
         until its deadline (100 ms) on pods labelled loop: "true": half the
         connections send such pods, the other half the typical pod, while
         /readyz is polled on the metrics port; the probes' and the other
         half's latencies show what a hostile policy costs everyone else.

The floor and the pod runs alternate for --rounds rounds and the ratio is
given per round and as the median: on a shared machine one pair of runs can
be 20% off the next. Each run lasts --duration seconds with --connections
connections. Prints a Markdown table, the server's peak memory (VmHWM) and
its time to ready with a warm cache. The load generator shares the machine's
cores with the server.
"""

import argparse
import csv
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "agyn-admission")
TOOLS = os.path.join(ROOT, "target", "tools")
OHA_VERSION = "1.16.0"
WEBHOOK = "127.0.0.1:18443"
METRICS = "127.0.0.1:19090"


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def oha_path():
    found = shutil.which("oha") or os.path.join(TOOLS, "bin", "oha")
    if not os.path.exists(found):
        print(f"installing oha {OHA_VERSION} into {TOOLS} ...", file=sys.stderr)
        run("cargo", "install", "oha", "--locked", "--version", OHA_VERSION, "--root", TOOLS)
    return found


def certificates(dir):
    def openssl(*args):
        run("openssl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{dir}/ca.key", "-out", f"{dir}/ca.crt", "-days", "1",
            "-subj", "/CN=load-test CA")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{dir}/tls.key", "-out", f"{dir}/tls.csr", "-subj", "/CN=127.0.0.1")
    with open(f"{dir}/san.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", f"{dir}/tls.csr", "-CA", f"{dir}/ca.crt", "-CAkey",
            f"{dir}/ca.key", "-CAcreateserial", "-out", f"{dir}/tls.crt", "-days", "1",
            "-extfile", f"{dir}/san.ext")


def bodies(dir):
    with open(os.path.join(ROOT, "tests", "data", "typical-pod-review.json")) as f:
        pod = json.load(f)
    pod_body = json.dumps(pod)
    config_map = json.loads(pod_body)
    request = config_map["request"]
    for key in ("kind", "requestKind"):
        request[key] = {"group": "", "version": "v1", "kind": "ConfigMap"}
    for key in ("resource", "requestResource"):
        request[key] = {"group": "", "version": "v1", "resource": "configmaps"}
    request["name"] = "agent-api-config"
    request["object"] = {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "agent-api-config", "namespace": "agyn"},
                         "data": {"config.yaml": ""}}
    pad = len(pod_body) - len(json.dumps(config_map))
    request["object"]["data"]["config.yaml"] = "x" * max(pad, 0)
    paths = {}
    for name, body in (("pod", pod_body), ("floor", json.dumps(config_map))):
        paths[name] = os.path.join(dir, f"{name}.json")
        with open(paths[name], "w") as f:
            f.write(body)
    return paths, len(pod_body)


def start(dir, cache, policies=None):
    # Logs as in production: an audit event per decision, to a file.
    log = open(f"{dir}/server.log", "a")
    extra = ["--policies", policies] if policies else []
    server = subprocess.Popen(
        [BIN, "serve", "--tls-cert-file", f"{dir}/tls.crt", "--tls-private-key-file",
         f"{dir}/tls.key", "--listen", WEBHOOK, "--metrics-listen", METRICS,
         "--cache-dir", cache] + extra,
        stdout=subprocess.DEVNULL, stderr=log)
    began = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(f"http://{METRICS}/readyz", timeout=1) as r:
                if r.status == 200:
                    return server, time.monotonic() - began
        except OSError:
            pass
        if server.poll() is not None:
            sys.exit(f"the server exited with {server.returncode}")
        time.sleep(0.005)


def stop(server):
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=30)


def peak_memory_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def oha_args(oha, dir, body, seconds, connections):
    return [oha, "--no-tui", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST",
            "-H", "content-type: application/json", "-D", body, "--cacert", f"{dir}/ca.crt"]


def load(oha, dir, body, seconds, connections):
    args = oha_args(oha, dir, body, seconds, connections) + ["--output-format", "json"]
    out = run(*args, f"https://{WEBHOOK}/validate?timeout=10s", capture_output=True, text=True)
    result = json.loads(out.stdout)
    codes = result.get("statusCodeDistribution", {})
    if set(codes) != {"200"}:
        sys.exit(f"answers other than 200: {codes}")
    summary = result["summary"]
    percentiles = result["latencyPercentiles"]
    return {
        "rps": summary["requestsPerSec"],
        "p50": percentiles["p50"] * 1000,
        "p99": percentiles["p99"] * 1000,
        "requests": sum(codes.values()),
    }


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def paced(oha, dir, body, seconds, connections, rate):
    """A rate-limited run; latencies from the schedule, per request."""
    args = oha_args(oha, dir, body, seconds, connections)
    args += ["-q", str(rate), "--latency-correction", "--output-format", "csv"]
    out = run(*args, f"https://{WEBHOOK}/validate?timeout=10s", capture_output=True, text=True)
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    if any(r["status"] != "200" for r in rows):
        sys.exit("answers other than 200 in a paced run")
    steady = [float(r["request-duration"]) * 1000 for r in rows if float(r["request-start"]) >= 1]
    start = [float(r["request-duration"]) * 1000 for r in rows if float(r["request-start"]) < 1]
    return {
        "rps": len(steady) / (seconds - 1),
        "p50": percentile(steady, 0.50),
        "p99": percentile(steady, 0.99),
        "max": max(steady),
        "start_p99": percentile(start, 0.99),
    }


def server_times(log, offset):
    """The server's own time per decision (the audit events' took_us, from
    the request's headers to the answer), in ms, for the events logged after
    `offset`: the handler's time, without the socket queues, TLS and waits
    for a CPU that the client's latency also holds."""
    with open(log) as f:
        f.seek(offset)
        took = [int(m.group(1)) / 1000 for m in re.finditer(r"took_us=(\d+)", f.read())]
    return {"p50": percentile(took, 0.50), "p99": percentile(took, 0.99)}


def hostile_wasm():
    """The deliberately broken test component that webhook/build.rs builds."""
    found = []
    for base, _, files in os.walk(os.path.join(ROOT, "target", "policy-wasm")):
        found += [os.path.join(base, f) for f in files if f == "hostile_policies.wasm"]
    if not found:
        sys.exit("no hostile_policies.wasm under target/policy-wasm: run `cargo test --release "
                 "--no-run` first (the build script builds it with the tests)")
    return max(found, key=os.path.getmtime)


def probe(seconds, latencies):
    """Polls /readyz on the metrics port, as the kubelet would, faster."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        began = time.monotonic()
        with urllib.request.urlopen(f"http://{METRICS}/readyz", timeout=5) as r:
            if r.status != 200:
                sys.exit(f"/readyz answered {r.status}")
        latencies.append((time.monotonic() - began) * 1000)
        time.sleep(0.01)


def looping(oha, dir, cache, paths, seconds, connections):
    with open(os.path.join(ROOT, "policies", "agyn-policy-set.yaml")) as f:
        policies = f.read().rstrip() + (
            f"\n  - name: loop\n    module: {hostile_wasm()}\n    match:\n"
            f"      labelSelector:\n        matchLabels: {{loop: \"true\"}}\n")
    with open(f"{dir}/looping.yaml", "w") as f:
        f.write(policies)
    with open(paths["pod"]) as f:
        pod = json.load(f)
    pod["request"]["object"]["metadata"].setdefault("labels", {})["loop"] = "true"
    with open(f"{dir}/loop.json", "w") as f:
        json.dump(pod, f)
    server, _ = start(dir, cache, f"{dir}/looping.yaml")
    try:
        half = max(1, connections // 2)
        runs = {}
        for name, body in (("loop", f"{dir}/loop.json"), ("plain", paths["pod"])):
            args = oha_args(oha, dir, body, seconds, half) + ["--output-format", "csv"]
            runs[name] = subprocess.Popen(args + [f"https://{WEBHOOK}/validate?timeout=10s"],
                                          stdout=subprocess.PIPE, text=True)
        probes = []
        probe(seconds, probes)
        results = {}
        for name, process in runs.items():
            out, _ = process.communicate()
            rows = list(csv.DictReader(io.StringIO(out)))
            if any(r["status"] != "200" for r in rows):
                sys.exit(f"answers other than 200 in the {name} run")
            results[name] = [float(r["request-duration"]) * 1000 for r in rows]
        with urllib.request.urlopen(f"http://{METRICS}/metrics", timeout=5) as r:
            metrics = r.read().decode()
    finally:
        stop(server)
    errors = {m.group(1): int(float(m.group(2))) for m in re.finditer(
        r'agyn_admission_policy_errors_total\{policy="loop",cause="(\w+)"\} (\S+)', metrics)}
    print(f"\nlooping policy: {half} connections send pods it loops on, {half} the typical pod, "
          f"{seconds} s, /readyz polled every 10 ms\n")
    print("| traffic | requests | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, values in (("typical pod (built-in set only)", results["plain"]),
                         ("pod labelled loop (denied by the loop's failure policy)",
                          results["loop"]),
                         ("/readyz on the metrics port", probes)):
        print(f"| {name} | {len(values)} | {percentile(values, 0.5):.2f} ms | "
              f"{percentile(values, 0.99):.2f} ms | {max(values):.2f} ms |")
    print(f"\nthe loop policy's failures by cause: {errors}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="default 32")
    parser.add_argument("--rounds", type=int, default=3,
                        help="floor and pod runs, alternating (default 3)")
    parser.add_argument("--looping", action="store_true",
                        help="only the looping-policy scenario")
    args = parser.parse_args()

    run("cargo", "build", "--release", "--quiet", cwd=ROOT)
    oha = oha_path()
    dir = tempfile.mkdtemp(prefix="agyn-load-")
    try:
        certificates(dir)
        paths, size = bodies(dir)
        cache = os.path.join(dir, "cache")
        if args.looping:
            looping(oha, dir, cache, paths, args.duration, args.connections)
            return
        # The first start fills the compiled-policy cache; the second is
        # the one measured, as a restarted pod with its cache volume.
        server, cold = start(dir, cache)
        stop(server)
        server, warm = start(dir, cache)
        try:
            load(oha, dir, paths["pod"], 2, args.connections)  # warm-up
            rounds = [{body: load(oha, dir, paths[body], args.duration, args.connections)
                       for body in ("floor", "pod")} for _ in range(args.rounds)]
            rate = int(percentile([r["pod"]["rps"] for r in rounds], 0.5) / 2)
            half = {}
            for body in ("pod", "floor"):
                logged = os.path.getsize(f"{dir}/server.log")
                half[body] = paced(oha, dir, paths[body], args.duration, args.connections, rate)
                half[body]["server"] = server_times(f"{dir}/server.log", logged)
            memory = peak_memory_mib(server.pid)
        finally:
            stop(server)
    finally:
        shutil.rmtree(dir, ignore_errors=True)

    print(f"\n{args.connections} connections, {args.duration} s per run, "
          f"AdmissionReview of {size} bytes, built-in policy set\n")
    print("| run | requests/s | p50 | p99 | max |")
    print("|---|---|---|---|---|")
    for i, r in enumerate(rounds, 1):
        floor, pod = r["floor"], r["pod"]
        print(f"| round {i}: floor, ConfigMap, no policy, flat out | {floor['rps']:.0f} | "
              f"{floor['p50']:.2f} ms | {floor['p99']:.2f} ms | |")
        print(f"| round {i}: pod, every built-in policy, flat out | {pod['rps']:.0f} | "
              f"{pod['p50']:.2f} ms | {pod['p99']:.2f} ms | |")
    for body in ("pod", "floor"):
        r = half[body]
        print(f"| {body} at half the pod's median maximum ({rate}/s), after the first second | "
              f"{r['rps']:.0f} | {r['p50']:.2f} ms | {r['p99']:.2f} ms | {r['max']:.2f} ms |")
    print("\nthe server's own time per decision in the paced runs (audit log): "
          + ", ".join(f"{body} p50 {half[body]['server']['p50']:.2f} ms, "
                      f"p99 {half[body]['server']['p99']:.2f} ms" for body in ("pod", "floor")))
    print(f"\nfirst second of the paced runs (handshakes, catch-up): p99 "
          f"{half['pod']['start_p99']:.1f} ms for the pod, {half['floor']['start_p99']:.1f} ms "
          f"for the floor")
    ratios = [100 * r["pod"]["rps"] / r["floor"]["rps"] for r in rounds]
    print(f"\npod / floor: {percentile(ratios, 0.5):.0f}% of the floor's requests per second "
          f"(median; by round: {', '.join(f'{x:.0f}%' for x in ratios)})")
    print(f"server peak memory (VmHWM): {memory:.1f} MiB")
    print(f"ready after start: {warm * 1000:.0f} ms with a warm cache "
          f"({cold * 1000:.0f} ms compiling)")


if __name__ == "__main__":
    main()
