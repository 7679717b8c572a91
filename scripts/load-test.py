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


def start(dir, cache):
    # Logs as in production: an audit event per decision, to a file.
    log = open(f"{dir}/server.log", "a")
    server = subprocess.Popen(
        [BIN, "serve", "--tls-cert-file", f"{dir}/tls.crt", "--tls-private-key-file",
         f"{dir}/tls.key", "--listen", WEBHOOK, "--metrics-listen", METRICS,
         "--cache-dir", cache],
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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="default 32")
    parser.add_argument("--rounds", type=int, default=3,
                        help="floor and pod runs, alternating (default 3)")
    args = parser.parse_args()

    run("cargo", "build", "--release", "--quiet", cwd=ROOT)
    oha = oha_path()
    dir = tempfile.mkdtemp(prefix="agyn-load-")
    try:
        certificates(dir)
        paths, size = bodies(dir)
        cache = os.path.join(dir, "cache")
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
