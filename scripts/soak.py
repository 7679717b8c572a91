#!/usr/bin/env python3
"""Soak test of `agyn-admission serve`, bounded: python3 scripts/soak.py [--duration 60]

Uses the release binary as built (target/release/agyn-admission: run
`cargo build --release` first; this script builds nothing), makes a
throwaway CA and serving certificate with openssl, writes the built-in
policy set (policies/agyn-policy-set.yaml) to a file of its own, and starts
the server on 127.0.0.1 (ports chosen by the kernel, read from its log) with
`--policies FILE`, `--log-format json` and a fresh --cache-dir (so it
compiles the policies, as a new pod does; --warm-cache starts it once to
fill the cache and soaks the second start, as a restarted container). Then,
for --duration seconds:

  load      --threads client threads, each on its own HTTPS keep-alive
            connection that trusts only the test CA, send a mix of
            AdmissionReviews built from tests/data/typical-pod-review.json
            (the compliant pod; the same pod privileged and as root; a bare
            pod with nothing set; a Deployment of the compliant pod and one
            of the privileged pod) to /mutate?timeout=10s and
            /validate?timeout=10s. Every answer is checked: HTTP 200, an
            AdmissionReview, the request's uid (a new one per request)
            echoed, `allowed` and the presence of a patch as expected. The
            expectations are taken by sending each body once before the
            soak, and must agree with what the policies are for: /mutate
            admits everything, /validate admits the compliant pod and its
            Deployment and denies the privileged ones.
            A connection the server closed is reopened; a request that failed
            before any byte of its answer was read is sent again, once, on
            the new connection, and counted as a reconnect, not an error.
  reloads   every --reload-every seconds, alternately: the policy set file is
            rewritten (`timeout: 200ms` added to or removed from pod-security,
            which moves reviews between the inline and the blocking path but
            changes no verdict; a generation comment) and the serving
            certificate rotated (a new key and certificate from the same CA),
            each by writing a temporary file and renaming it over the old.
            The server's JSON log (stderr, to a file) must say "policy set
            reloaded" / "certificate reloaded" after each, and a new
            connection must be shown the new certificate.

Every --interval seconds prints a line: requests in the interval, errors,
p50 and p99 latency of the interval, the server's RSS (VmRSS), reloads and
rotations so far. At the end: a Markdown table, then SIGTERM, which the
server must obey with exit status 0.

Exits 1 if any request failed or was answered wrongly, if the server's RSS
grew by more than --rss-growth percent between the first and the last third
of the run (the highest sample of each), if a reload or a rotation was not
seen to take effect, or if the server did not exit 0; 0 otherwise. Loopback
only; the clients share the machine's cores with the server, so the
latencies are the clients' (Python's) as much as the server's: the table
also gives the server's own time per review, from its audit events.
SOAK_KEEP=1 keeps the temporary directory (the server's log, the files).
"""

import argparse
import collections
import fcntl
import heapq
import http.client
import json
import os
import re
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "agyn-admission")
POLICY_SET = os.path.join(ROOT, "policies", "agyn-policy-set.yaml")
ENDPOINTS = ("/mutate?timeout=10s", "/validate?timeout=10s")
# What the policies are for; the verdicts measured before the soak must agree.
MEANT = {
    ("pod", "/validate?timeout=10s"): True,
    ("pod-privileged", "/validate?timeout=10s"): False,
    ("deployment", "/validate?timeout=10s"): True,
    ("deployment-privileged", "/validate?timeout=10s"): False,
}
UID_MARK = "00000000-0000-4000-8000-00000000cafe"
TOOK = re.compile(rb'"took_us":(\d+)')


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


def openssl(*args):
    run("openssl", *args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def replace(path, data):
    """Writes `data` to a temporary file next to `path`, renames it over."""
    tmp = f"{path}.tmp"
    with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def make_ca(dir):
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", f"{dir}/ca.key", "-out", f"{dir}/ca.crt", "-days", "1",
            "-subj", "/CN=soak CA")
    with open(f"{dir}/san.ext", "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")


def issue(dir, tls_dir):
    """A new key and serving certificate from the CA, put in place of
    tls_dir/tls.{key,crt} by rename; returns the certificate (DER)."""
    work = os.path.join(dir, "issue")
    os.makedirs(work, exist_ok=True)
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{work}/tls.key", "-out", f"{work}/tls.csr", "-subj", "/CN=127.0.0.1")
    openssl("x509", "-req", "-in", f"{work}/tls.csr", "-CA", f"{dir}/ca.crt", "-CAkey",
            f"{dir}/ca.key", "-CAcreateserial", "-out", f"{work}/tls.crt", "-days", "1",
            "-extfile", f"{dir}/san.ext")
    with open(f"{work}/tls.key", "rb") as f:
        key = f.read()
    with open(f"{work}/tls.crt") as f:
        cert = f.read()
    # The key first: until the certificate follows, the pair does not match
    # and the server keeps the old one (it waits for writes to settle anyway).
    replace(os.path.join(tls_dir, "tls.key"), key)
    replace(os.path.join(tls_dir, "tls.crt"), cert)
    return ssl.PEM_cert_to_DER_cert(cert)


def policy_text(generation):
    """The built-in set; odd generations give pod-security a 200 ms timeout
    (above the default 100 ms: no verdict changes, but the reviews leave the
    inline path for the blocking pool)."""
    with open(POLICY_SET) as f:
        text = f.read()
    if generation % 2:
        anchor = "  - name: pod-security\n    mutate: true\n"
        if anchor not in text:
            sys.exit(f"{POLICY_SET} changed: no {anchor!r} to add a timeout after")
        text = text.replace(anchor, anchor + "    timeout: 200ms\n")
    return text + f"# soak generation {generation}\n"


def review_bodies():
    """name -> AdmissionReview (JSON text with UID_MARK as its uid)."""
    with open(os.path.join(ROOT, "tests", "data", "typical-pod-review.json")) as f:
        review = json.load(f)
    review["request"]["uid"] = UID_MARK
    pod = review["request"]["object"]

    def as_review(obj, kind, resource, group="", version="v1"):
        r = json.loads(json.dumps(review))
        request = r["request"]
        for key in ("kind", "requestKind"):
            request[key] = {"group": group, "version": version, "kind": kind}
        for key in ("resource", "requestResource"):
            request[key] = {"group": group, "version": version, "resource": resource}
        request["name"] = obj["metadata"]["name"]
        request["object"] = obj
        return r

    def privileged(pod):
        pod = json.loads(json.dumps(pod))
        pod["metadata"]["name"] = "agent-api-privileged"
        pod["spec"]["securityContext"].update({"runAsNonRoot": False, "runAsUser": 0})
        pod["spec"]["containers"][0]["securityContext"] = {
            "privileged": True, "allowPrivilegeEscalation": True, "runAsUser": 0}
        return pod

    def deployment(pod, name):
        labels = {"app.kubernetes.io/name": name}
        meta = {k: v for k, v in pod["metadata"].items()
                if k in ("annotations",)}
        return {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": pod["metadata"]["namespace"],
                         "labels": dict(labels)},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": dict(labels)},
                "template": {"metadata": dict(meta, labels=dict(labels)), "spec": pod["spec"]},
            },
        }

    bare = {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "bare", "namespace": pod["metadata"]["namespace"]},
            "spec": {"containers": [{"name": "app", "image": "ghcr.io/agynio/app:1.0"}]}}
    bad = privileged(pod)
    bodies = {
        "pod": review,
        "pod-privileged": as_review(bad, "Pod", "pods"),
        "pod-bare": as_review(bare, "Pod", "pods"),
        "deployment": as_review(deployment(pod, "agent-api"), "Deployment", "deployments",
                                "apps"),
        "deployment-privileged": as_review(deployment(bad, "agent-api-privileged"),
                                           "Deployment", "deployments", "apps"),
    }
    return {name: json.dumps(body) for name, body in bodies.items()}


class ServerLog:
    """Reads the server's JSON log (its stderr, a pipe) on a thread of its
    own: counts the messages (reloads) and the audit events, gathers the
    audit events' took_us, keeps the warnings and errors. The lines other
    than audit events go to a file too (all of them with SOAK_KEEP): at a
    thousand reviews a second the audit events are a gigabyte in a quarter
    of an hour."""

    def __init__(self, pipe, path):
        self.pipe = pipe
        self.file = open(path, "ab")
        self.keep_all = bool(os.environ.get("SOAK_KEEP"))
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.listening = None
        self.problems = []  # WARN and ERROR lines
        self.unparsed = 0
        self.took = collections.Counter()  # the audit events' took_us, in 10 µs
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        for line in self.pipe:
            with self.lock:
                self.line(line)
        self.file.close()

    def line(self, line):
        if b'"message":"decision"' in line:
            self.counts["decision"] += 1
            took = TOOK.search(line)
            if took:
                self.took[int(took.group(1)) // 10] += 1
            if self.keep_all:
                self.file.write(line)
            return
        self.file.write(line)
        self.file.flush()
        try:
            event = json.loads(line)
        except ValueError:
            self.unparsed += 1
            return
        fields = event.get("fields", event)
        message = fields.get("message", "")
        self.counts[message] += 1
        if message == "listening":
            self.listening = fields
        if event.get("level") in ("WARN", "ERROR"):
            self.problems.append(line.decode(errors="replace").rstrip())

    def count(self, message):
        with self.lock:
            return self.counts[message]

    def wait_for(self, message, above, timeout):
        """Waits until `message` was logged more than `above` times."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.count(message) > above:
                return True
            time.sleep(0.05)
        return False

    def finish(self):
        """After the server exited: the rest of its log."""
        self.thread.join(timeout=30)


def start(dir, tls_dir, policies, cache, log_path):
    server = subprocess.Popen(
        [BIN, "--log-format", "json", "serve",
         "--tls-cert-file", f"{tls_dir}/tls.crt", "--tls-private-key-file", f"{tls_dir}/tls.key",
         "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
         "--policies", policies, "--cache-dir", cache],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, bufsize=1 << 16)
    try:
        # A second of audit events in the pipe, should the reader be slow
        # to get Python's lock: the server waits when its log cannot go out.
        fcntl.fcntl(server.stderr.fileno(), fcntl.F_SETPIPE_SZ, 1 << 20)
    except (AttributeError, OSError):
        pass
    logs = ServerLog(server.stderr, log_path)

    def failed(why):
        if server.poll() is None:
            server.kill()
        server.wait()
        logs.finish()
        with open(log_path, errors="replace") as f:
            sys.exit(f"{why}; its log:\n{f.read()}")

    began = time.monotonic()
    while logs.listening is None:
        if server.poll() is not None:
            failed(f"the server exited with {server.returncode}")
        if time.monotonic() - began > 60:
            failed("the server did not log where it listens within 60 s")
        time.sleep(0.02)
    webhook, metrics = logs.listening["webhook"], logs.listening["metrics"]
    while True:
        try:
            with urllib.request.urlopen(f"http://{metrics}/readyz", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None:
            failed(f"the server exited with {server.returncode}")
        if time.monotonic() - began > 600:
            failed("the server was not ready within 600 s")
        time.sleep(0.02)
    return server, logs, webhook, metrics, time.monotonic() - began


def proc_status(pid, key):
    """A VmRSS / VmHWM line of /proc/PID/status, in MiB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def percentile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def histogram_percentile(histogram, q):
    """From a Counter of latencies in units of 10 µs; in ms."""
    total = sum(histogram.values())
    if not total:
        return float("nan")
    rank, seen = int(q * total), 0
    for bucket in sorted(histogram):
        seen += histogram[bucket]
        if seen > rank:
            return bucket / 100
    return max(histogram) / 100


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.interval = []  # latencies (ms) since the last report
        self.interval_errors = 0
        self.histogram = collections.Counter()
        self.requests = 0
        self.errors = 0
        self.reconnects = 0
        self.connections = 0
        self.answered = 0  # HTTP 200 answers, right or wrong
        self.messages = []
        self.max_ms = 0.0
        self.slowest = []  # heap of (ms, seconds into the soak, what)
        self.began = time.monotonic()

    def ok(self, ms, kind):
        with self.lock:
            self.interval.append(ms)
            self.histogram[int(ms * 100)] += 1
            self.requests += 1
            self.answered += 1
            self.max_ms = max(self.max_ms, ms)
            if len(self.slowest) < 5 or ms > self.slowest[0][0]:
                entry = (ms, time.monotonic() - self.began - ms / 1000, kind)
                (heapq.heappushpop if len(self.slowest) >= 5 else heapq.heappush)(
                    self.slowest, entry)

    def error(self, message, answered=False):
        with self.lock:
            self.requests += 1
            self.errors += 1
            self.interval_errors += 1
            self.answered += answered
            if len(self.messages) < 20:
                self.messages.append(f"{time.strftime('%H:%M:%S')} {message}")

    def take(self):
        with self.lock:
            interval, errors = self.interval, self.interval_errors
            self.interval, self.interval_errors = [], 0
            return interval, errors


class Client:
    """One keep-alive HTTPS connection, reopened when the server closes it."""

    def __init__(self, webhook, context, stats):
        self.host, port = webhook.rsplit(":", 1)
        self.port = int(port)
        self.context = context
        self.stats = stats
        self.conn = None
        self.used = False  # has answered a request: its loss is a reconnect
        self.closed_by_server = False  # the last answer said `connection: close`

    def open(self):
        self.close()
        self.conn = http.client.HTTPSConnection(self.host, self.port, context=self.context,
                                                timeout=30)
        self.used = False
        with self.stats.lock:
            self.stats.connections += 1

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def post(self, path, body):
        """(status, body bytes); raises what the connection raised."""
        for attempt in (1, 2):
            if self.conn is None:
                if self.closed_by_server:
                    # After an answer with `connection: close`, which
                    # http.client would hide by reconnecting by itself.
                    with self.stats.lock:
                        self.stats.reconnects += 1
                    self.closed_by_server = False
                self.open()
            try:
                self.conn.request("POST", path, body, {"content-type": "application/json"})
                response = self.conn.getresponse()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError,
                    ssl.SSLEOFError, ssl.SSLZeroReturnError, http.client.CannotSendRequest):
                # Nothing of an answer was read. Once, on a fresh connection,
                # if this one had been used (the server may close idle ones).
                if attempt == 2 or not self.used:
                    self.close()
                    raise
                with self.stats.lock:
                    self.stats.reconnects += 1
                self.close()
                continue
            except Exception:
                self.close()
                raise
            try:
                data = response.read()
            except Exception:
                self.close()
                raise
            self.used = True
            if response.will_close:
                self.close()
                self.closed_by_server = True
            return response.status, data
        raise AssertionError("unreachable")


def check(status, data, uid, expected):
    """None if the answer is right, else what is wrong with it."""
    if status != 200:
        return f"HTTP {status}: {data[:200]!r}"
    try:
        review = json.loads(data)
        response = review["response"]
    except (ValueError, KeyError, TypeError):
        return f"not an AdmissionReview: {data[:200]!r}"
    if review.get("apiVersion") != "admission.k8s.io/v1" or review.get("kind") != "AdmissionReview":
        return f"not an admission.k8s.io/v1 AdmissionReview: {data[:200]!r}"
    if response.get("uid") != uid:
        return f"uid {response.get('uid')!r}, sent {uid!r}"
    allowed, patched = expected
    if response.get("allowed") is not allowed:
        return f"allowed={response.get('allowed')!r}, expected {allowed}: {data[:300]!r}"
    if ("patch" in response) != patched:
        return f"patch {'present' if 'patch' in response else 'absent'}, expected the other"
    return None


def expectations(webhook, context, bodies):
    """(body, endpoint) -> (allowed, patched), by asking once; checked
    against MEANT."""
    stats = Stats()
    client = Client(webhook, context, stats)
    found = {}
    for name, body in bodies.items():
        for endpoint in ENDPOINTS:
            uid = str(uuid.uuid4())
            status, data = client.post(endpoint, body.replace(UID_MARK, uid))
            if status != 200:
                sys.exit(f"{name} {endpoint}: HTTP {status}: {data[:300]!r}")
            response = json.loads(data)["response"]
            if response.get("uid") != uid:
                sys.exit(f"{name} {endpoint}: uid not echoed: {data[:300]!r}")
            found[name, endpoint] = (response["allowed"], "patch" in response)
    client.close()
    wrong = [f"{name} {endpoint}: allowed={found[name, endpoint][0]}, meant {meant}"
             for (name, endpoint), meant in MEANT.items() if found[name, endpoint][0] != meant]
    wrong += [f"{name} {endpoint}: denied by the mutating webhook"
              for (name, endpoint), (allowed, _) in found.items()
              if endpoint.startswith("/mutate") and not allowed]
    if wrong:
        sys.exit("verdicts other than the policies mean, before any soak:\n  " + "\n  ".join(wrong))
    return found


def worker(index, webhook, context, stats, mix, stop):
    client = Client(webhook, context, stats)
    i = index  # each thread starts at another point of the mix
    while not stop.is_set():
        name, endpoint, body, expected = mix[i % len(mix)]
        i += 1
        uid = str(uuid.uuid4())
        payload = body.replace(UID_MARK, uid).encode()
        began = time.perf_counter()
        try:
            status, data = client.post(endpoint, payload)
        except Exception as e:
            stats.error(f"thread {index} {name} {endpoint}: {type(e).__name__}: {e}")
            continue
        ms = (time.perf_counter() - began) * 1000
        wrong = check(status, data, uid, expected)
        if wrong:
            stats.error(f"thread {index} {name} {endpoint}: {wrong}", answered=status == 200)
        else:
            stats.ok(ms, f"{name} {endpoint.split('?')[0]}")
    client.close()


class Reloader(threading.Thread):
    """Every `every` seconds, alternately: a new policy set file, a new
    certificate. Waits for the server's log to say it took each one."""

    def __init__(self, dir, tls_dir, policies, logs, webhook, context_factory, every, stop):
        super().__init__(daemon=True)
        self.dir, self.tls_dir, self.policies = dir, tls_dir, policies
        self.logs, self.webhook, self.context_factory = logs, webhook, context_factory
        self.every, self.stop = every, stop
        self.generation = 0
        self.policy_writes = self.policy_seen = 0
        self.rotations = self.rotation_seen = self.rotation_served = 0
        self.failures = []
        self.reload_ms = []  # from the rename to the log line (includes the 200 ms settle)
        self.began = time.monotonic()
        self.events = []  # (seconds into the soak, what was done)

    def run(self):
        turn = 0
        while not self.stop.wait(self.every):
            try:
                if turn % 2 == 0:
                    self.policy()
                else:
                    self.rotate()
            except Exception as e:  # reported, and the soak fails
                self.failures.append(f"{type(e).__name__}: {e}")
            turn += 1

    def policy(self):
        before = self.logs.count("policy set reloaded")
        self.generation += 1
        began = time.monotonic()
        replace(self.policies, policy_text(self.generation))
        self.policy_writes += 1
        self.events.append((began - self.began, f"policy set generation {self.generation}"))
        if self.logs.wait_for("policy set reloaded", before, 10):
            self.policy_seen += 1
            self.reload_ms.append((time.monotonic() - began) * 1000)
        else:
            self.failures.append(f"policy set generation {self.generation}: "
                                 "no 'policy set reloaded' within 10 s")

    def rotate(self):
        before = self.logs.count("certificate reloaded")
        der = issue(self.dir, self.tls_dir)
        self.rotations += 1
        self.events.append((time.monotonic() - self.began, f"certificate {self.rotations}"))
        if not self.logs.wait_for("certificate reloaded", before, 10):
            self.failures.append(f"rotation {self.rotations}: no 'certificate reloaded' within 10 s")
            return
        self.rotation_seen += 1
        # A new connection must be shown the new certificate.
        host, port = self.webhook.rsplit(":", 1)
        conn = http.client.HTTPSConnection(host, int(port), context=self.context_factory(),
                                           timeout=10)
        try:
            conn.connect()
            served = conn.sock.getpeercert(binary_form=True)
        finally:
            conn.close()
        if served == der:
            self.rotation_served += 1
        else:
            self.failures.append(f"rotation {self.rotations}: a new connection was shown "
                                 "another certificate than the new one")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=60, help="seconds (default 60)")
    parser.add_argument("--threads", type=int, default=8,
                        help="client threads, one connection each (default 8)")
    parser.add_argument("--interval", type=float, default=5, help="seconds between lines (default 5)")
    parser.add_argument("--reload-every", type=float, default=3,
                        help="seconds between a policy set rewrite and a certificate "
                             "rotation, alternately (default 3)")
    parser.add_argument("--warm-cache", action="store_true",
                        help="soak a server started with the compiled policies already "
                             "cached (a restarted container), not one that compiled them")
    parser.add_argument("--rss-growth", type=float, default=20,
                        help="largest RSS growth allowed, in percent, from the first third "
                             "of the run to the last (default 20)")
    args = parser.parse_args()
    if not 1 <= args.duration <= 24 * 3600:
        parser.error("--duration: 1 to 86400 seconds")
    if not 1 <= args.threads <= 256:
        parser.error("--threads: 1 to 256")
    if args.interval <= 0 or args.reload_every <= 0:
        parser.error("--interval and --reload-every must be positive")
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    if shutil.which("openssl") is None:
        sys.exit("openssl is needed for the test certificates")

    dir = tempfile.mkdtemp(prefix="agyn-soak-")
    server = None
    try:
        tls_dir, policy_dir = os.path.join(dir, "tls"), os.path.join(dir, "policies")
        os.makedirs(tls_dir)
        os.makedirs(policy_dir)
        make_ca(dir)
        issue(dir, tls_dir)
        policies = os.path.join(policy_dir, "agyn-policy-set.yaml")
        replace(policies, policy_text(0))

        def context():
            return ssl.create_default_context(cafile=f"{dir}/ca.crt")  # the test CA only

        cache = os.path.join(dir, "cache")
        if args.warm_cache:
            # A first server fills the cache, as a pod's first container
            # fills its emptyDir; the soak is of the restarted one.
            server, fill_logs, *_ = start(dir, tls_dir, policies, cache,
                                          os.path.join(dir, "server-fill.log"))
            # Not at once: the server (as of this writing) installs its
            # SIGTERM handler only after /readyz says ready and its file
            # watches are set up; a SIGTERM in between kills it outright.
            time.sleep(1)
            server.send_signal(signal.SIGTERM)
            fill_logs.finish()
            if server.wait(timeout=60) != 0:
                sys.exit(f"the server that filled the cache exited with {server.returncode}")
        server, logs, webhook, metrics, ready = start(
            dir, tls_dir, policies, cache, os.path.join(dir, "server.log"))
        ready_rss = proc_status(server.pid, "VmRSS")
        bodies = review_bodies()
        expected = expectations(webhook, context(), bodies)
        mix = [(name, endpoint, body, expected[name, endpoint])
               for name, body in bodies.items() for endpoint in ENDPOINTS]
        version = subprocess.run([BIN, "--version"], capture_output=True, text=True).stdout.strip()
        print(f"{version}, pid {server.pid}, webhook https://{webhook}, ready after "
              f"{ready:.1f} s ({'a warm cache' if args.warm_cache else 'compiling into a fresh cache'})"
              f", RSS {ready_rss:.1f} MiB when ready")
        print("expected: " + ", ".join(
            f"{name} {endpoint.split('?')[0]} {'allowed' if a else 'denied'}"
            f"{' +patch' if p else ''}" for (name, endpoint), (a, p) in expected.items()))
        print(f"{args.threads} threads, {args.duration} s, a line every {args.interval:g} s, "
              f"a reload or rotation every {args.reload_every:g} s\n", flush=True)

        stats = Stats()
        stop = threading.Event()
        reloader = Reloader(dir, tls_dir, policies, logs, webhook, context, args.reload_every,
                            stop)
        threads = [threading.Thread(target=worker, daemon=True,
                                    args=(i, webhook, context(), stats, mix, stop))
                   for i in range(args.threads)]
        began = stats.began = reloader.began = time.monotonic()
        load_start = os.getloadavg()[0]
        for t in threads:
            t.start()
        reloader.start()

        rss = []  # (seconds since start, MiB), every second
        next_line = began + args.interval
        last_line = began
        died = None
        while True:
            now = time.monotonic()
            if now - began >= args.duration:
                break
            time.sleep(max(0.01, min(1.0, began + args.duration - now, next_line - now)))
            now = time.monotonic()
            rss.append((now - began, proc_status(server.pid, "VmRSS")))
            if server.poll() is not None:
                died = server.returncode
                stats.error(f"the server exited with {died} during the soak")
                break
            if now >= next_line or now - began >= args.duration:
                interval, errors = stats.take()
                print(f"{now - began:6.1f} s  requests {len(interval) + errors:6d} "
                      f"({(len(interval) + errors) / (now - last_line):5.0f}/s)  "
                      f"errors {errors}  p50 {percentile(interval, 0.5):6.2f} ms  "
                      f"p99 {percentile(interval, 0.99):6.2f} ms  "
                      f"rss {rss[-1][1]:6.1f} MiB  "
                      f"reloads {logs.count('policy set reloaded')}  "
                      f"rotations {logs.count('certificate reloaded')}", flush=True)
                last_line = now
                next_line += args.interval
        elapsed = time.monotonic() - began
        load_end = os.getloadavg()[0]
        stop.set()
        deadline = time.monotonic() + 40
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        stuck = sum(t.is_alive() for t in threads)
        reloader.join(timeout=30)
        hwm = proc_status(server.pid, "VmHWM")
        end_rss = proc_status(server.pid, "VmRSS")

        # SIGTERM with the clients gone: it must exit 0, and promptly.
        exit_code, exit_s = died, float("nan")
        if died is None:
            server.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                exit_code = server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
                exit_code = "none within 60 s (killed)"
            exit_s = time.monotonic() - t0
        logs.finish()
    finally:
        if server is not None and server.poll() is None:
            server.kill()
            server.wait()
        if os.environ.get("SOAK_KEEP"):
            print(f"\nkept (SOAK_KEEP): {dir}, the server's log in server.log")
        else:
            shutil.rmtree(dir, ignore_errors=True)

    third = args.duration / 3
    first = [m for t, m in rss if t <= third]
    last = [m for t, m in rss if t >= 2 * third]
    steady = max(first) if first else float("nan")
    final = max(last) if last else float("nan")
    growth = 100 * (final / steady - 1) if first and last else float("nan")
    decisions = logs.counts["decision"]
    answered = stats.answered + len(expected)  # with the pass that took the expectations

    print(f"\n{args.threads} threads for {elapsed:.0f} s, each on a keep-alive connection; "
          f"{len(mix)} kinds of review in turn\n")
    print("| | |")
    print("|---|---|")
    print(f"| requests | {stats.requests} ({stats.requests / elapsed:.0f}/s) |")
    print(f"| errors | {stats.errors} |")
    print(f"| reconnects (the server closed a used connection) | {stats.reconnects} "
          f"({stats.connections} connections opened) |")
    print(f"| latency p50 / p99 / max | {histogram_percentile(stats.histogram, 0.5):.2f} / "
          f"{histogram_percentile(stats.histogram, 0.99):.2f} / {stats.max_ms:.1f} ms |")
    print(f"| the server's own time per review (audit took_us) p50 / p99 / max | "
          f"{histogram_percentile(logs.took, 0.5):.2f} / {histogram_percentile(logs.took, 0.99):.2f}"
          f" / {max(logs.took, default=0) / 100:.1f} ms |")
    print(f"| RSS when ready, before any request | {ready_rss:.1f} MiB |")
    print(f"| RSS, steady state (highest in the first third) | {steady:.1f} MiB |")
    print(f"| RSS, end (highest in the last third) | {final:.1f} MiB ({growth:+.1f}%, "
          f"limit +{args.rss_growth:g}%) |")
    print(f"| RSS after the load stopped / VmHWM | {end_rss:.1f} / {hwm:.1f} MiB |")
    print(f"| policy set rewrites / 'policy set reloaded' seen | {reloader.policy_writes} / "
          f"{reloader.policy_seen}"
          + (f" (rename to log line p50 {percentile(reloader.reload_ms, 0.5):.0f} ms)"
             if reloader.reload_ms else "") + " |")
    print(f"| certificate rotations / 'certificate reloaded' / new cert served | "
          f"{reloader.rotations} / {reloader.rotation_seen} / {reloader.rotation_served} |")
    print(f"| audit events (decisions logged) / reviews answered | {decisions} / {answered} |")
    print(f"| WARN and ERROR lines in the server's log | {len(logs.problems)} |")
    print(f"| SIGTERM: exit status, time to exit | {exit_code}, {exit_s:.2f} s |")
    print(f"| load average (1 min) at start / end, {os.cpu_count()} CPUs | "
          f"{load_start:.1f} / {load_end:.1f} |")

    print("\nslowest requests:")
    for ms, at, what in sorted(stats.slowest, reverse=True):
        before = [(t, e) for t, e in reloader.events if t <= at]
        after = f", {at - before[-1][0]:.1f} s after {before[-1][1]}" if before else ""
        print(f"  {ms:.1f} ms at {at:.1f} s: {what}{after}")

    failures = []
    if stats.errors:
        failures.append(f"{stats.errors} requests failed or were answered wrongly; the first:\n    "
                        + "\n    ".join(stats.messages))
    if stuck:
        failures.append(f"{stuck} client threads still stuck in a request at the end")
    if growth != growth:  # nan
        failures.append("no RSS samples from the first or the last third of the run")
    elif growth > args.rss_growth:
        failures.append(f"RSS grew {growth:+.1f}% from the first third to the last "
                        f"(limit +{args.rss_growth:g}%)")
    if reloader.failures:
        failures.append("reloads and rotations:\n    " + "\n    ".join(reloader.failures))
    if exit_code != 0:
        failures.append(f"the server's exit status after SIGTERM: {exit_code}")
    if decisions != answered:
        print(f"\nnote: {decisions} audit events for {answered} answered reviews")
    if logs.problems:
        print(f"\nthe server's warnings and errors ({len(logs.problems)}; the first 10):")
        for line in logs.problems[:10]:
            print("  " + line)
    if logs.unparsed:
        print(f"\n{logs.unparsed} log lines were not JSON")
    if failures:
        print("\nFAILED:\n  " + "\n  ".join(failures))
        sys.exit(1)
    print("\nOK")


if __name__ == "__main__":
    main()
