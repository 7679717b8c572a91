#!/usr/bin/env python3
"""Scale benchmark of `agyn-admission audit`: python3 scripts/audit-scale.py [--pods 10000]

Measures what a cluster-wide scan costs at 10,000 pods: the scan's wall
time, the audit's peak RSS, the API requests it made (by verb and
resource), the largest LIST response the API server sent it, and the
reports it wrote (count and bytes). The issue's targets: 10,000 pods
scanned and reported in under 60 s on a 2-core machine, the API server
included; peak RSS under 150 MiB once the policies are compiled; no
response larger than a page. Uses the release binary as built (--binary,
default target/release/agyn-admission: run `cargo build --release` first;
this script builds nothing). Python's standard library only.

  cluster   a throwaway control plane (etcd and kube-apiserver) started
            with ../shared/kube/start in a temporary folder (binaries from
            $KUBEBUILDER_ASSETS, else ../shared/kube/bin), the API server
            writing an audit log of every request from clients other than
            itself at Metadata level: each request of the scan with its URI,
            so a LIST's `limit`. Stopped at the end, also on an error, Ctrl-C
            or SIGTERM. Or --kubeconfig K, an existing cluster (no audit
            log, no etcd or API server CPU figures; the namespaces this run
            made are deleted at the end unless --keep). It should be quiet:
            the request counts are the API server's, whoever made them.
  CRDs      the manifests in --crds (default charts/agyn-admission/crds;
            skipped if the folder is missing), applied and waited for.
  pods      --namespaces namespaces (audit-scale-NN) with their
            ServiceAccounts: there is no controller-manager to make
            `default`, and the ServiceAccount admission plugin refuses a pod
            whose account is missing, even one with
            automountServiceAccountToken false. Then --pods pods, round-robin
            over the namespaces: half the repository's typical pod
            (tests/data/typical-pod-review.json: restricted Pod Security,
            non-root, read-only root filesystem, drop ALL, no token), half in
            four non-compliant variants (root with added capabilities and
            the token mounted; bare; privileged in the host's namespaces with
            a hostPath; almost compliant). Bare pods, without the typical
            pod's ReplicaSet ownerReference (--owner-references keeps it,
            dangling). Made by concurrent HTTPS POSTs on keep-alive
            connections with the kubeconfig's credentials (--workers
            threads), the fastest way measured: kubectl create -f of big
            Lists, in parallel, was slower, and the API server's CPU is the
            limit either way (3.5-6 ms a pod: 10,000 pods in 36 s on an
            otherwise quiet 2-core machine, 70-100 s beside a build). Not
            part of the scan; its time is printed.
  baseline  this script, in a process of its own, listing every pod in
            pages of 500: full objects in uncompressed JSON (as kube-rs
            without its gzip feature gets them), each page parsed and
            dropped. What listing alone costs; a floor for the scan's wall
            time (--no-baseline skips it). Not kubectl: `get -o json` holds
            the whole list (1.4 GB RSS at 10,000 pods), and it asks for gzip,
            which the response-size histogram then counts compressed.
  scan      the compiled-policy cache filled first (`check --cache-dir C
            examples/`) and the report CRDs' storage made (a fresh CRD's
            first LIST is answered 429 for a second), then `audit
            --kubeconfig K --cache-dir C --log-format json` (plus
            --audit-args) run twice, from a copy of the binary (a build may
            replace it meanwhile): the first writes every report, the second
            finds nothing changed and should write (almost) none.

Figures for each measured run:

  - wall time, peak RSS and CPU time: wait4's rusage, taken by a small
    launcher (see LAUNCHER: the figure is not this script's own RSS);
  - API requests: apiserver_request_total from the API server's /metrics,
    before minus after, by verb, resource, scope and status code; resource
    requests only, without the API server's own loopback clients
    (system_client), so this script's scrapes (non-resource GETs) are not
    counted; a server-side apply is counted as APPLY;
  - the largest response of each LIST: the bucket of the histogram
    apiserver_response_sizes it fell in (decades: "(1 MB, 10 MB]"), as
    bytes sent (compressed, if the client asked for gzip); the histogram
    has no client label, so only the (verb, resource) pairs of the run's
    requests are kept; the mean size comes with it;
  - from the API server's audit log: the LISTs without a `limit`, the
    largest limit asked, the continued LISTs and resourceVersion=0 reads;
  - report writes: POST/PUT/PATCH/APPLY/DELETE requests on reports; and
    etcd's puts and bytes put (etcd_mvcc_put_total,
    etcd_debugging_mvcc_total_put_size_in_bytes: real writes, where a
    request count also holds no-op applies; the API server's own lease
    renewals add a few);
  - the API server's and etcd's CPU time (/proc); the load average before;
  - whether the run compiled anything (new files in the cache), which
    would make its RSS a compiling one;
  - afterwards, the reports in the cluster (reports.openreports.io,
    listed in pages): count, those labelled managed-by agyn-admission, the
    kinds of their scopes, their summaries summed, bytes as compact JSON
    with managedFields (about what etcd holds for a custom resource).

Prints Markdown tables (--json: one JSON document instead); progress on
stderr. Exits 1 if a target was missed or a run failed (exit status other
than 0 or 1), 2 if the binary has no `audit` subcommand (the cluster, the
pods and the baseline are still measured and printed). The machine's cores
are shared with the API server and etcd, and with whatever else runs: the
load average before each run is printed. --keep keeps the folder (logs,
the API server's audit log) and leaves the cluster running.
"""

import argparse
import base64
import collections
import concurrent.futures
import copy
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "agyn-admission")
CRDS = os.path.join(ROOT, "charts", "agyn-admission", "crds")
TYPICAL_POD = os.path.join(ROOT, "tests", "data", "typical-pod-review.json")
KUBE_BIN = os.environ.get("KUBEBUILDER_ASSETS") or os.path.join(
    os.path.dirname(ROOT), "shared", "kube", "bin")
USER_AGENT = "audit-scale.py"
LABEL = "agyn.io/benchmark"
REPORTS = "/apis/openreports.io/v1alpha1/reports"
PAGE = 500
# Verbs that change a report (as apiserver_request_total spells them; a
# server-side apply is APPLY, not PATCH).
WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
# Every request the API server takes from a client other than itself, at
# Metadata level (the URI, not the bodies), except the pod creation, which
# is not measured and would be 10,000 lines, and the non-resource URLs
# (this script's /metrics scrapes).
APISERVER_AUDIT_POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived, ResponseStarted]
rules:
  - level: None
    users: ["system:apiserver"]
  - level: None
    nonResourceURLs: ["*"]
  - level: None
    verbs: [create]
    resources:
      - group: ""
        resources: [pods, namespaces, serviceaccounts]
      - group: apps
        resources: [deployments]
  - level: Metadata
"""

stopping = threading.Event()


def log(message):
    print(message, file=sys.stderr, flush=True)


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


class Api:
    """A small Kubernetes client: the kubeconfig's server, CA and
    credentials (client certificate or token), one keep-alive HTTPS
    connection per thread. Retries what a busy API server answers (429,
    5xx) and a dropped connection, with a backoff."""

    def __init__(self, kubectl, kubeconfig, dir):
        view = json.loads(run(kubectl, "--kubeconfig", kubeconfig, "config", "view", "--raw",
                              "--minify", "--flatten", "-o", "json",
                              capture_output=True, text=True).stdout)
        cluster = view["clusters"][0]["cluster"]
        user = view["users"][0]["user"]
        url = urllib.parse.urlparse(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.prefix = url.path.rstrip("/")
        pki = os.path.join(dir, "client-pki")
        os.makedirs(pki, mode=0o700, exist_ok=True)

        def file(name, key):
            path = os.path.join(pki, name)
            with open(path, "wb") as f:
                f.write(base64.b64decode(key))
            return path

        if cluster.get("insecure-skip-tls-verify"):
            self.context = ssl._create_unverified_context()
        else:
            ca = cluster.get("certificate-authority-data")
            self.context = ssl.create_default_context(cafile=file("ca.crt", ca) if ca else None)
        if "client-certificate-data" in user:
            self.context.load_cert_chain(file("client.crt", user["client-certificate-data"]),
                                         file("client.key", user["client-key-data"]))
        self.headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if "token" in user:
            self.headers["Authorization"] = f"Bearer {user['token']}"
        elif "client-certificate-data" not in user:
            sys.exit("the kubeconfig's user has neither a client certificate nor a token "
                     "(exec plugins are not supported here)")
        self.local = threading.local()

    def connection(self, fresh=False):
        conn = getattr(self.local, "conn", None)
        if fresh and conn is not None:
            conn.close()
            conn = None
        if conn is None:
            conn = self.local.conn = http.client.HTTPSConnection(
                self.host, self.port, context=self.context, timeout=60)
        return conn

    def request(self, method, path, body=None, content_type="application/json"):
        """(status, body bytes); raises after the retries."""
        headers = dict(self.headers)
        if body is not None:
            headers["Content-Type"] = content_type
            if not isinstance(body, (bytes, str)):
                body = json.dumps(body, separators=(",", ":"))
        for attempt in range(8):
            if stopping.is_set():
                raise KeyboardInterrupt
            try:
                conn = self.connection(fresh=attempt > 0)
                conn.request(method, self.prefix + path, body, headers)
                response = conn.getresponse()
                data = response.read()
            except (OSError, http.client.HTTPException):
                if attempt == 7:
                    raise
                time.sleep(0.05 * 2 ** attempt)
                continue
            if response.status in (429, 500, 502, 503, 504) and attempt < 7:
                time.sleep(float(response.getheader("Retry-After") or 0.05 * 2 ** attempt))
                continue
            return response.status, data
        raise AssertionError("unreachable")

    def get(self, path):
        status, data = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path}: {status} {data[:300]!r}")
        return data

    def create(self, path, obj):
        """POST; an object that already exists (a rerun on a cluster of
        one's own) is fine. True if created."""
        status, data = self.request("POST", path, obj)
        if status == 201:
            return True
        if status == 409:
            return False
        raise RuntimeError(f"POST {path}: {status} {data[:500]!r}")


# --- the cluster ---------------------------------------------------------

def start_cluster(dir, kube):
    policy = os.path.join(dir, "apiserver-audit-policy.yaml")
    with open(policy, "w") as f:
        f.write(APISERVER_AUDIT_POLICY)
    audit_log = os.path.join(dir, "apiserver-audit.log")
    env = dict(os.environ)
    # Appended to kube-apiserver's flags by the start script (split on
    # spaces: the temporary folder's path has none).
    env["KUBE_APISERVER_EXTRA_ARGS"] = (
        env.get("KUBE_APISERVER_EXTRA_ARGS", "")
        + f" --audit-policy-file={policy} --audit-log-path={audit_log}").strip()
    start = os.path.join(os.path.dirname(KUBE_BIN), "start")
    began = time.monotonic()
    out = run(start, kube, capture_output=True, text=True, env=env).stdout
    found = re.search(r"^KUBECONFIG=(.*)$", out, re.M)
    if not found:
        sys.exit(f"{start} printed no KUBECONFIG=: {out}")
    log(f"API server ready in {time.monotonic() - began:.1f} s")
    with open(os.path.join(kube, "ports")) as f:
        ports = dict(p.split("=") for p in f.read().split())
    pids = {}
    for name in ("kube-apiserver", "etcd"):
        with open(os.path.join(kube, "run", f"{name}.pid")) as f:
            pids[name] = int(f.read())
    return {"dir": kube, "kubeconfig": found.group(1), "audit_log": audit_log,
            "etcd": f"http://127.0.0.1:{ports['etcd']}/metrics", "pids": pids}


def stop_cluster(kube):
    """Safe when nothing was started (the start script, failing, stops
    what it started itself)."""
    stop = os.path.join(os.path.dirname(KUBE_BIN), "stop")
    subprocess.run([stop, kube], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def apply_crds(kubectl, kubeconfig, crds):
    if not os.path.isdir(crds):
        log(f"no CRD folder {crds}: none applied")
        return
    files = [f for f in sorted(os.listdir(crds)) if f.endswith((".yaml", ".yml", ".json"))]
    if not files:
        log(f"no CRD files in {crds}: none applied")
        return
    run(kubectl, "--kubeconfig", kubeconfig, "apply", "--server-side", "--force-conflicts",
        "-f", crds, stdout=subprocess.DEVNULL)
    run(kubectl, "--kubeconfig", kubeconfig, "wait", "--for=condition=Established",
        "--timeout=60s", "-f", crds, stdout=subprocess.DEVNULL)
    log(f"applied the CRDs in {crds}: {', '.join(files)}")


# --- the pods ------------------------------------------------------------

def pod_templates(owner_references):
    """name -> (pod, compliant). The typical pod and four ways of not
    being it; names and namespaces are set per pod."""
    with open(TYPICAL_POD) as f:
        typical = json.load(f)["request"]["object"]
    typical["metadata"].pop("generateName")
    if not owner_references:
        # A ReplicaSet's pod, without the ReplicaSet (no controller would
        # make or delete it here): a bare pod, reported as itself.
        typical["metadata"].pop("ownerReferences")
    templates = {"typical": (typical, True)}

    root = copy.deepcopy(typical)
    spec = root["spec"]
    del spec["automountServiceAccountToken"]  # the token is mounted
    spec["securityContext"].update({"runAsNonRoot": False, "runAsUser": 0, "runAsGroup": 0})
    spec["containers"][0]["securityContext"] = {
        "allowPrivilegeEscalation": True, "capabilities": {"add": ["NET_ADMIN", "SYS_PTRACE"]}}
    templates["root"] = (root, False)

    bare = copy.deepcopy(typical)
    bare["spec"] = {
        "serviceAccountName": "default",
        "containers": [{k: v for k, v in c.items() if k != "securityContext"}
                       for c in typical["spec"]["containers"]],
        "volumes": typical["spec"]["volumes"],
    }
    templates["bare"] = (bare, False)

    host = copy.deepcopy(typical)
    spec = host["spec"]
    spec.update({"hostNetwork": True, "hostPID": True})
    spec["securityContext"] = {}
    spec["volumes"].append({"name": "root", "hostPath": {"path": "/"}})
    container = spec["containers"][0]
    container["securityContext"] = {"privileged": True}
    container["volumeMounts"].append({"name": "root", "mountPath": "/host", "readOnly": True})
    templates["host"] = (host, False)

    almost = copy.deepcopy(typical)
    almost["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] = False
    del almost["spec"]["containers"][1]["securityContext"]["capabilities"]
    templates["almost"] = (almost, False)
    return templates


def service_accounts(templates):
    return sorted({t["spec"].get("serviceAccountName", "default") for t, _ in templates.values()}
                  | {"default"})


def namespace_names(count):
    width = max(2, len(str(count - 1)))
    return [f"audit-scale-{i:0{width}d}" for i in range(count)]


def populate(api, namespaces, made_namespaces, pods, deployments, workers, owner_references):
    """Creates the namespaces (appending those it made to
    made_namespaces, as it goes), their ServiceAccounts, the pods (and
    Deployments); returns figures about it."""
    templates = pod_templates(owner_references)
    compliant = [name for name, (_, ok) in templates.items() if ok]
    failing = [name for name, (_, ok) in templates.items() if not ok]

    def template(i):
        # Even: compliant; odd: the non-compliant variants in turn.
        names = failing if i % 2 else compliant
        return names[i // 2 % len(names)]

    began = time.monotonic()
    for ns in namespaces:
        if api.create("/api/v1/namespaces", {
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {LABEL: "audit-scale"}}}):
            made_namespaces.append(ns)
    # The ServiceAccounts (and the pods after them) concurrently: one POST
    # at a time leaves the API server's cores idle, waiting on etcd.
    pool = concurrent.futures.ThreadPoolExecutor(workers)
    try:
        list(pool.map(lambda a: api.create(f"/api/v1/namespaces/{a[0]}/serviceaccounts", {
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": a[1]}}),
            [(ns, sa) for ns in namespaces for sa in service_accounts(templates)]))

        def pod(i):
            name = template(i)
            ns = namespaces[i % len(namespaces)]
            body = copy.deepcopy(templates[name][0])
            body["metadata"].update({"name": f"{name}-{i:05d}", "namespace": ns})
            body["metadata"]["labels"][LABEL] = "audit-scale"
            return api.create(f"/api/v1/namespaces/{ns}/pods", body)

        def deployment(i):
            name = template(i)
            ns = namespaces[i % len(namespaces)]
            pod_template = copy.deepcopy(templates[name][0])
            labels = {"app.kubernetes.io/name": f"{name}-{i:05d}", LABEL: "audit-scale"}
            pod_template["metadata"] = {
                "labels": labels, "annotations": pod_template["metadata"].get("annotations", {})}
            body = {"apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": f"{name}-{i:05d}", "namespace": ns, "labels": labels},
                    "spec": {"replicas": 2, "selector": {"matchLabels": labels},
                             "template": pod_template}}
            return api.create(f"/apis/apps/v1/namespaces/{ns}/deployments", body)

        created = existing = 0
        pods_began = time.monotonic()
        for n, new in enumerate(pool.map(pod, range(pods)), 1):
            created += new
            existing += not new
            if n % 2000 == 0:
                log(f"  {n} pods ({n / (time.monotonic() - pods_began):.0f}/s)")
        pods_took = time.monotonic() - pods_began
        made = sum(pool.map(deployment, range(deployments)))
    except BaseException:
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    took = time.monotonic() - began
    return {"namespaces": len(namespaces), "namespaces_created": len(made_namespaces),
            "pods": pods, "pods_created": created,
            "pods_existing": existing, "compliant_pods": (pods + 1) // 2,
            "deployments": deployments, "deployments_created": made,
            "pods_seconds": round(pods_took, 2), "seconds": round(took, 2),
            "pods_per_second": round(created / pods_took, 1) if created else None,
            "workers": workers}


def delete_namespaces(api, namespaces):
    for ns in namespaces:
        api.request("DELETE", f"/api/v1/namespaces/{ns}")


# --- measuring -----------------------------------------------------------

METRIC = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
LABELS = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def scrape(text, names):
    """{(name, frozenset(labels)): value} for the named metrics."""
    samples = {}
    for line in text.splitlines():
        if not line.startswith(names):
            continue
        m = METRIC.match(line)
        if m and m.group(1) in names:
            samples[(m.group(1), frozenset(LABELS.findall(m.group(2) or "")))] = float(m.group(3))
    return samples


APISERVER_METRICS = ("apiserver_request_total", "apiserver_response_sizes_bucket",
                     "apiserver_response_sizes_sum", "apiserver_response_sizes_count")
ETCD_METRICS = ("etcd_mvcc_put_total", "etcd_debugging_mvcc_total_put_size_in_bytes",
                "etcd_mvcc_db_total_size_in_use_in_bytes")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Snapshot:
    """What is read before and after a measured run."""

    def __init__(self, api, cluster, cache):
        self.apiserver = scrape(api.get("/metrics").decode(), APISERVER_METRICS)
        self.etcd = {}
        self.cpu = {}
        self.audit_offset = None
        if cluster:
            # Loopback: no proxy from the environment in the way.
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
            with opener.open(cluster["etcd"], timeout=10) as r:
                self.etcd = scrape(r.read().decode(), ETCD_METRICS)
            self.cpu = {name: cpu_seconds(pid) for name, pid in cluster["pids"].items()}
            self.audit_offset = os.path.getsize(cluster["audit_log"]) \
                if os.path.exists(cluster["audit_log"]) else 0
        self.cache = {os.path.relpath(os.path.join(base, f), cache)
                      for base, _, files in os.walk(cache) for f in files}


def resource_name(labels):
    """pods, pods/status, reports.openreports.io: the metrics' labels or an
    audit event's objectRef, as kubectl names resources."""
    name = labels.get("resource", "")
    if labels.get("subresource"):
        name += f"/{labels['subresource']}"
    group = labels.get("group", labels.get("apiGroup", ""))
    return f"{name}.{group}" if group else name


def requests_diff(before, after):
    """{(verb, resource, scope, code): count} of the resource requests
    made between the snapshots by clients other than the API server's own
    (system_client names kube-apiserver, kube-controller-manager...)."""
    counts = collections.Counter()
    for key, value in after.items():
        if key[0] != "apiserver_request_total":
            continue
        labels = dict(key[1])
        if not labels.get("resource") or labels.get("system_client"):
            continue
        delta = value - before.get(key, 0)
        if delta > 0:
            counts[(labels["verb"], resource_name(labels), labels.get("scope", ""),
                    labels["code"])] += int(delta)
    return counts


def bucket_text(low, high):
    def size(b):
        for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
            if b >= scale:
                return f"{b / scale:g} {unit}"
        return f"{b:g} B"
    return f"> {size(low)}" if high == float("inf") else f"({size(low)}, {size(high)}]"


def response_sizes(before, after):
    """{(verb, resource): {count, mean, largest: (low, high]}} from the
    diff of the apiserver_response_sizes histogram."""
    buckets = collections.defaultdict(lambda: collections.Counter())
    sums = collections.Counter()
    for key, value in after.items():
        if not key[0].startswith("apiserver_response_sizes"):
            continue
        labels = dict(key[1])
        if not labels.get("resource"):
            continue  # /openapi, /metrics...: not the scan's
        ident = (labels.get("verb", ""), resource_name(labels))
        delta = value - before.get(key, 0)
        if key[0].endswith("_bucket"):
            buckets[ident][float(labels["le"])] += delta
        elif key[0].endswith("_sum"):
            sums[ident] += delta
    out = {}
    for ident, cumulative in buckets.items():
        total = cumulative.get(float("inf"), 0)
        if total <= 0:
            continue
        bounds = sorted(cumulative)
        # The largest response is in the first bucket that holds them all.
        for i, le in enumerate(bounds):
            if cumulative[le] >= total:
                low = bounds[i - 1] if i else 0
                out[ident] = {"count": int(total), "mean_bytes": round(sums[ident] / total),
                              "largest_low": low, "largest_high": le,
                              "largest": bucket_text(low, le)}
                break
    return out


def audit_events(path, offset):
    """The API server's audit events logged after `offset`, summed: per
    (verb, resource) the count, and for LISTs the ones without a limit,
    the largest limit, the continuations and resourceVersion=0 reads; the
    user agents; the first objects written (which reports a scan of an
    unchanged cluster rewrote)."""
    summary = collections.defaultdict(lambda: collections.Counter())
    limits = collections.defaultdict(int)
    agents = collections.Counter()
    written = []
    with open(path, "rb") as f:
        f.seek(offset)
        for line in f:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            ref = event.get("objectRef") or {}
            if not ref.get("resource"):
                continue
            resource = resource_name(ref)
            verb = event.get("verb", "")
            key = f"{verb} {resource}"
            agents[event.get("userAgent", "").split(" ")[0] or "(none)"] += 1
            if verb in ("create", "update", "patch", "delete") and len(written) < 20 \
                    and ref.get("name"):
                written.append(f"{verb} {resource} {ref.get('namespace', '')}/{ref['name']} "
                               f"{event.get('responseStatus', {}).get('code', '?')}")
            counts = summary[key]
            counts["requests"] += 1
            counts[f"code {event.get('responseStatus', {}).get('code', '?')}"] += 1
            if verb == "list":
                query = urllib.parse.parse_qs(urllib.parse.urlparse(event["requestURI"]).query)
                if "limit" in query:
                    limits[key] = max(limits[key], int(query["limit"][0]))
                else:
                    counts["without limit"] += 1
                if "continue" in query:
                    counts["continued"] += 1
                if query.get("resourceVersion") == ["0"]:
                    counts["resourceVersion=0"] += 1
    return {"by_request": {k: dict(v, largest_limit=limits.get(k)) if k in limits else dict(v)
                           for k, v in sorted(summary.items())},
            "user_agents": dict(agents), "first_writes": written}


def count_reports(api):
    """The reports in the cluster, listed in pages; None if the API server
    does not serve reports.openreports.io/v1alpha1 (no CRD)."""
    status, _ = api.request("GET", "/apis/openreports.io/v1alpha1")
    if status == 404:
        return None
    figures = collections.Counter()
    largest = 0
    scopes = collections.Counter()
    continue_ = ""
    while True:
        query = {"limit": PAGE, **({"continue": continue_} if continue_ else {})}
        page = json.loads(api.get(f"{REPORTS}?{urllib.parse.urlencode(query)}"))
        for item in page.get("items", []):
            size = len(json.dumps(item, separators=(",", ":")))
            largest = max(largest, size)
            figures["reports"] += 1
            figures["bytes"] += size
            labels = item.get("metadata", {}).get("labels", {})
            if labels.get("app.kubernetes.io/managed-by") == "agyn-admission":
                figures["managed_by_agyn"] += 1
            scopes[(item.get("scope") or {}).get("kind", "(no scope)")] += 1
            for result, n in (item.get("summary") or {}).items():
                if isinstance(n, int):
                    figures[f"summary_{result}"] += n
        continue_ = page.get("metadata", {}).get("continue")
        if not continue_:
            break
    return dict(figures, largest_bytes=largest, by_scope_kind=dict(scopes))


# Runs the measured command and reports its rusage. Why a launcher of
# its own, and not os.wait4 on a child of this script: a child forked from
# this process starts with a copy of its memory (tens of MiB once the pods
# are made), and the kernel carries that copy's high-water mark across exec
# into the child's ru_maxrss (/bin/true "peaks" at the parent's RSS). The
# launcher is a fresh interpreter (about 13 MiB), and what it spawns reports
# max(13 MiB, its own peak). The wall time is the launcher's too, without
# the interpreter's start.
LAUNCHER = r"""
import json, os, sys, time
began = time.monotonic()
pid = os.posix_spawnp(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.monotonic() - began
with open(sys.argv[1], "w") as f:
    json.dump({"wall": wall, "exit_status": os.waitstatus_to_exitcode(status),
               "maxrss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}, f)
"""


def launch(argv, out, err, env, rusage_path):
    """Runs argv under the launcher; its figures. The launcher leads a
    process group of its own, killed as a whole on Ctrl-C or an error, so
    the measured process does not outlive this script."""
    process = subprocess.Popen([sys.executable, "-c", LAUNCHER, rusage_path] + argv,
                               stdout=out, stderr=err, env=env, start_new_session=True)
    try:
        process.wait()
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if process.returncode != 0:
        raise RuntimeError(f"the launcher of {argv[0]} failed ({process.returncode}): "
                           f"see {err.name}")
    with open(rusage_path) as f:
        return json.load(f)


def measure(name, argv, api, cluster, cache, dir, env):
    """Runs argv once, measured; returns its figures."""
    log(f"{name}: {shlex.join(argv)}")
    before = Snapshot(api, cluster, cache)
    load = os.getloadavg()[0]
    out_path = os.path.join(dir, f"{name}.stdout")
    err_path = os.path.join(dir, f"{name}.stderr")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        usage = launch(argv, out, err, env, os.path.join(dir, f"{name}.rusage.json"))
    # The API server writes the audit event of the last request after its
    # answer: give it a moment.
    time.sleep(0.5)
    after = Snapshot(api, cluster, cache)
    requests = requests_diff(before.apiserver, after.apiserver)
    result = {
        "command": shlex.join(argv),
        "exit_status": usage["exit_status"],
        "wall_seconds": round(usage["wall"], 2),
        "peak_rss_mib": round(usage["maxrss_kib"] / 1024, 1),  # KiB on Linux
        "cpu_seconds": round(usage["cpu"], 2),
        "load_average_before": round(load, 2),
        "requests_total": sum(requests.values()),
        "requests": [{"verb": v, "resource": r, "scope": s, "code": c, "count": n}
                     for (v, r, s, c), n in sorted(requests.items())],
        "report_writes": sum(n for (v, r, _, _), n in requests.items()
                             if v in WRITES and r.startswith("reports")),
        # The histogram has no client label: the API server's own watches
        # and lists are in it too. Kept are the (verb, resource) pairs the
        # request counter, which tells clients apart, has for the run.
        "response_sizes": {f"{v} {r}": s
                           for (v, r), s in sorted(response_sizes(before.apiserver,
                                                                  after.apiserver).items())
                           if any(k[:2] == (v, r) for k in requests)},
        "compiled_during_run": sorted(after.cache - before.cache),
        "stdout_bytes": os.path.getsize(out_path),
    }
    if cluster:
        result["apiserver_cpu_seconds"] = round(
            after.cpu["kube-apiserver"] - before.cpu["kube-apiserver"], 2)
        result["etcd_cpu_seconds"] = round(after.cpu["etcd"] - before.cpu["etcd"], 2)

        def etcd(metric):
            return sum(v for k, v in after.etcd.items() if k[0] == metric) - \
                sum(v for k, v in before.etcd.items() if k[0] == metric)
        result["etcd_puts"] = int(etcd("etcd_mvcc_put_total"))
        result["etcd_put_bytes"] = int(etcd("etcd_debugging_mvcc_total_put_size_in_bytes"))
        result["etcd_db_in_use_change_bytes"] = int(etcd("etcd_mvcc_db_total_size_in_use_in_bytes"))
        result["apiserver_audit"] = audit_events(cluster["audit_log"], before.audit_offset)
    # The audit's own account of the scan, its last JSON log line saying
    # "audit done" (written, unchanged, deleted, errors), if it has one.
    with open(err_path, "rb") as f:
        for line in f:
            if b'"audit done"' in line:
                try:
                    done = json.loads(line)
                except ValueError:
                    continue
                result["audit_done"] = {k: v for k, v in done.items()
                                        if k not in ("timestamp", "level", "message", "target")}
    if result["exit_status"] not in (0, 1):
        with open(err_path, errors="replace") as f:
            tail = f.read()[-3000:]
        log(f"{name} exited with {result['exit_status']}; its stderr ends:\n{tail}")
    log(f"  {result['wall_seconds']:.2f} s, peak RSS {result['peak_rss_mib']} MiB, "
        f"{result['requests_total']} API requests, exit status {result['exit_status']}")
    return result


def list_pods(kubectl, kubeconfig):
    """The baseline: every pod, in pages of PAGE, full objects in
    uncompressed JSON (as a client without gzip gets them), each page
    parsed and dropped. What listing alone costs the API server, and the
    wall time a scan cannot go below."""
    with tempfile.TemporaryDirectory(prefix="agyn-audit-scale-list-") as dir:
        api = Api(kubectl, kubeconfig, dir)
        pods = pages = 0
        continue_ = ""
        while True:
            query = {"limit": PAGE, **({"continue": continue_} if continue_ else {})}
            page = json.loads(api.get(f"/api/v1/pods?{urllib.parse.urlencode(query)}"))
            pods += len(page["items"])
            pages += 1
            continue_ = page["metadata"].get("continue")
            if not continue_:
                break
    print(f"{pods} pods in {pages} pages")


# --- output --------------------------------------------------------------

def mib(b):
    return f"{b / 2**20:.1f} MiB"


def largest_list(run):
    """The largest LIST response's bucket over the resources listed."""
    lists = [(s["largest_high"], s["largest_low"], k) for k, s in run["response_sizes"].items()
             if k.startswith("LIST ")]
    if not lists:
        return None
    high, low, key = max(lists)
    return {"resource": key.split(" ", 1)[1], "low": low, "high": high,
            "text": f"{bucket_text(low, high)} ({key.split(' ', 1)[1]})"}


def verdicts(result):
    """The issue's targets, checked on the first scan."""
    first = result["runs"].get("audit (first)")
    if not first:
        return {}
    checks = {
        "wall time < 60 s": first["wall_seconds"] < 60,
        "peak RSS < 150 MiB": first["peak_rss_mib"] < 150,
        "exit status 0 or 1": all(r["exit_status"] in (0, 1) for name, r in result["runs"].items()
                                  if name.startswith("audit")),
        "nothing compiled during the run": not first["compiled_during_run"],
    }
    reports = result.get("reports_after_first") or {}  # None: no CRD, no reports
    checks["a report per pod"] = reports.get("reports", 0) >= result["population"]["pods"]
    audit = first.get("apiserver_audit")
    if audit:
        checks["every LIST paged (a limit)"] = not any(
            v.get("without limit") for k, v in audit["by_request"].items() if k.startswith("list "))
    second = result["runs"].get("audit (second)")
    if second:
        checks["second run rewrites < 1% of reports"] = \
            second["report_writes"] < max(1, result["population"]["pods"] // 100)
    return checks


def print_table(result):
    pop = result["population"]
    rate = (f"{pop['pods_per_second']:.0f} pods/s over {pop['workers']} connections"
            if pop["pods_per_second"] else "none new")
    print(f"\n{pop['pods']:,} pods ({pop['compliant_pods']:,} compliant) and "
          f"{pop['deployments']:,} Deployments in {pop['namespaces']} namespaces, created in "
          f"{pop['seconds']:.1f} s ({rate}; {pop['pods_existing']:,} already there); "
          f"{result['machine']['cpus']} CPUs\n")
    runs = result["runs"]
    names = list(runs)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")

    def row(title, fn):
        cells = []
        for name in names:
            try:
                value = fn(runs[name])
            except (KeyError, TypeError, ZeroDivisionError):
                value = None
            cells.append("" if value is None else str(value))
        print(f"| {title} | " + " | ".join(cells) + " |")

    row("wall time", lambda r: f"{r['wall_seconds']:.2f} s")
    row("peak RSS", lambda r: f"{r['peak_rss_mib']:.1f} MiB")
    row("CPU time (user + system)", lambda r: f"{r['cpu_seconds']:.2f} s")
    row("API server / etcd CPU time",
        lambda r: f"{r['apiserver_cpu_seconds']:.2f} s / {r['etcd_cpu_seconds']:.2f} s")
    row("API server CPU per API request",
        lambda r: f"{1000 * r['apiserver_cpu_seconds'] / r['requests_total']:.1f} ms")
    row("load average before", lambda r: f"{r['load_average_before']:.2f}")
    row("exit status", lambda r: r["exit_status"])
    row("API requests", lambda r: f"{r['requests_total']:,}")
    row("largest LIST response (histogram bucket)",
        lambda r: largest_list(r)["text"] if largest_list(r) else "no LIST")
    def lists(r):
        found = [v for k, v in r["apiserver_audit"]["by_request"].items() if k.startswith("list ")]
        return (f"{sum(v.get('without limit', 0) for v in found)} of "
                f"{sum(v['requests'] for v in found)}; largest limit "
                f"{max((v.get('largest_limit') or 0 for v in found), default=0)}")

    row("LISTs without a limit (audit log); largest limit", lists)
    row("user agent (audit log)", lambda r: ", ".join(r["apiserver_audit"]["user_agents"]))
    row("report writes (POST/PUT/PATCH/APPLY/DELETE)", lambda r: f"{r['report_writes']:,}")
    row("the audit's \"audit done\" log line", lambda r: ", ".join(
        f"{k} {v}" for k, v in r["audit_done"].items()))
    row("etcd puts / bytes put",
        lambda r: f"{r['etcd_puts']:,} / {mib(r['etcd_put_bytes'])}")
    row("compiled during the run", lambda r: len(r["compiled_during_run"]) or "nothing")

    print("\nAPI requests by verb, resource, scope and status code:\n")
    keys = sorted({(q["verb"], q["resource"], q["scope"], q["code"])
                   for r in runs.values() for q in r["requests"]})
    print("| request | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for key in keys:
        cells = [str(next((q["count"] for q in runs[n]["requests"]
                           if (q["verb"], q["resource"], q["scope"], q["code"]) == key), ""))
                 for n in names]
        print(f"| {' '.join(key)} | " + " | ".join(cells) + " |")

    print("\nresponse sizes (apiserver_response_sizes; count, mean, largest's bucket):\n")
    for name in names:
        for key, s in runs[name]["response_sizes"].items():
            print(f"- {name}: {key}: {s['count']}, mean {s['mean_bytes']:,} B, "
                  f"largest {s['largest']}")

    second = runs.get("audit (second)", {}).get("apiserver_audit")
    if second and second["first_writes"]:
        print("\nwrites of the second scan (the first 20, from the audit log): "
              + "; ".join(second["first_writes"]))
    for title, key in (("before the scans", "reports_before"),
                       ("after the first scan", "reports_after_first"),
                       ("after the second scan", "reports_after_second"),
                       ("in the cluster (no scan ran)", "reports_now")):
        if key not in result:
            continue
        reports = result[key]
        if reports is None:
            print(f"\nreports {title}: reports.openreports.io/v1alpha1 is not served "
                  "(no CRD: --crds)")
        elif reports.get("reports"):
            results = ", ".join(f"{k[len('summary_'):]} {v:,}" for k, v in reports.items()
                                if k.startswith("summary_"))
            print(f"\nreports {title}: {reports['reports']:,} "
                  f"({reports.get('managed_by_agyn', 0):,} labelled managed-by agyn-admission), "
                  f"{mib(reports['bytes'])} as compact JSON with managedFields, "
                  f"{reports['bytes'] / reports['reports']:,.0f} B each, largest "
                  f"{reports['largest_bytes']:,} B; by scope kind {reports['by_scope_kind']}; "
                  f"results {results or '(no summaries)'}")
        else:
            print(f"\nreports {title}: none")
    checks = result.get("targets")
    if checks:
        print("\n| target | met |\n|---|---|")
        for name, ok in checks.items():
            print(f"| {name} | {'yes' if ok else '**no**'} |")
    if result.get("problem"):
        print(f"\n{result['problem']}")


# --- main ----------------------------------------------------------------

def interrupted(*_):
    raise KeyboardInterrupt


def has_audit(binary):
    if not os.access(binary, os.X_OK):
        return False
    return subprocess.run([binary, "audit", "--help"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10000, help="default 10,000")
    parser.add_argument("--namespaces", type=int, default=50, help="default 50")
    parser.add_argument("--deployments", type=int, default=0,
                        help="Deployments too, in the same namespaces (no controller makes "
                             "their pods); default 0")
    parser.add_argument("--owner-references", action="store_true",
                        help="give the pods the typical pod's ReplicaSet ownerReference "
                             "(dangling: no ReplicaSet exists)")
    parser.add_argument("--binary", default=BIN, help="default target/release/agyn-admission")
    parser.add_argument("--audit-args", default="",
                        help="more arguments for both audit runs (one string, split as a shell "
                             "would)")
    parser.add_argument("--kubeconfig", help="an existing cluster instead of a throwaway one")
    parser.add_argument("--crds", default=CRDS,
                        help="a folder of CRD manifests to apply (default "
                             "charts/agyn-admission/crds; skipped if missing)")
    parser.add_argument("--workers", type=int, default=16,
                        help="concurrent connections creating pods (default 16)")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip the baseline (listing the pods alone)")
    # The baseline, run by this script as a process of its own.
    parser.add_argument("--list-pods", metavar="KUBECONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--keep", action="store_true",
                        help="keep the folder and leave the cluster running (and, with "
                             "--kubeconfig, the namespaces)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    args = parser.parse_args()

    kubectl = os.path.join(KUBE_BIN, "kubectl")
    if not os.access(kubectl, os.X_OK):
        kubectl = shutil.which("kubectl") or sys.exit(
            f"no kubectl in {KUBE_BIN} (KUBEBUILDER_ASSETS) nor on PATH")
    if args.list_pods:
        list_pods(kubectl, args.list_pods)
        return
    if not args.kubeconfig and not os.access(os.path.join(os.path.dirname(KUBE_BIN), "start"),
                                             os.X_OK):
        sys.exit(f"no {os.path.dirname(KUBE_BIN)}/start: set KUBEBUILDER_ASSETS to the folder "
                 "of kube-apiserver, etcd and kubectl beside start/stop, or give --kubeconfig")
    args.binary = os.path.abspath(args.binary)
    audit = has_audit(args.binary)
    if not audit:
        log(f"{args.binary} has no `audit` subcommand (or is missing): the cluster, the pods "
            "and the baseline are measured, the scan is not")

    # SIGTERM as Ctrl-C: the finally blocks stop the cluster either way.
    signal.signal(signal.SIGTERM, interrupted)
    dir = tempfile.mkdtemp(prefix="agyn-audit-scale-")
    cluster = None
    kube = os.path.join(dir, "kube")
    namespaces = namespace_names(args.namespaces)
    made_namespaces = []
    api = None
    result = {"runs": {}, "binary": args.binary, "machine": {"cpus": os.cpu_count()}}
    try:
        if args.kubeconfig:
            kubeconfig = os.path.abspath(args.kubeconfig)
        else:
            cluster = start_cluster(dir, kube)
            kubeconfig = cluster["kubeconfig"]
        api = Api(kubectl, kubeconfig, dir)
        apply_crds(kubectl, kubeconfig, args.crds)
        log(f"creating {args.pods} pods in {args.namespaces} namespaces ...")
        result["population"] = populate(api, namespaces, made_namespaces, args.pods,
                                        args.deployments, args.workers, args.owner_references)
        pop = result["population"]
        log(f"created in {pop['seconds']:.1f} s ({pop['pods_per_second'] or 0:.0f} pods/s, "
            f"{pop['pods_existing']} already there)")

        env = dict(os.environ, KUBECONFIG=kubeconfig, NO_PROXY="127.0.0.1,localhost",
                   no_proxy="127.0.0.1,localhost")
        cache = os.path.join(dir, "cache")
        if not args.no_baseline:
            result["runs"]["list pods (baseline)"] = measure(
                "baseline", [sys.executable, os.path.abspath(__file__), "--list-pods", kubeconfig],
                api, cluster, cache, dir, env)
        if audit:
            # A copy: a `cargo build` while this runs must not change the
            # binary between the two scans.
            binary = os.path.join(dir, os.path.basename(args.binary))
            shutil.copy2(args.binary, binary)
            result["version"] = subprocess.run([binary, "--version"], capture_output=True,
                                               text=True).stdout.strip()
            # The cache filled as the webhook's volume is, so the runs
            # measure the scan and not the compiler (check exits 1: the
            # examples include denied objects).
            began = time.monotonic()
            warm = subprocess.run([binary, "check", "--cache-dir", cache,
                                   os.path.join(ROOT, "examples")],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            if warm.returncode not in (0, 1):
                sys.exit(f"check (warming the cache) exited {warm.returncode}: {warm.stderr}")
            log(f"cache filled in {time.monotonic() - began:.1f} s")
            # A fresh CRD's storage (its watch cache) is made on the first
            # request, which the API server answers 429 "storage is
            # (re)initializing" for a second: a chart-installed CRD in a
            # cluster is past that, so the scan should not pay for it.
            result["reports_before"] = count_reports(api)
            for path in ("/apis/openreports.io/v1alpha1/clusterreports",
                         "/apis/wgpolicyk8s.io/v1alpha2/policyreports",
                         "/apis/wgpolicyk8s.io/v1alpha2/clusterpolicyreports"):
                api.request("GET", f"{path}?limit=1")
            argv = [binary, "audit", "--kubeconfig", kubeconfig, "--cache-dir", cache,
                    "--log-format", "json"] + shlex.split(args.audit_args)
            for which, key in (("first", "reports_after_first"),
                               ("second", "reports_after_second")):
                result["runs"][f"audit ({which})"] = measure(
                    f"audit-{which}", argv, api, cluster, cache, dir, env)
                result[key] = count_reports(api)
            result["targets"] = verdicts(result)
        else:
            result["problem"] = (f"{args.binary} has no `audit` subcommand: the scan was not "
                                 "measured")
            result["reports_now"] = count_reports(api)
    finally:
        stopping.set()
        if args.keep:
            log(f"kept {dir}" + (f"; the cluster runs: KUBECONFIG={cluster['kubeconfig']}, "
                                 f"stop it with {os.path.dirname(KUBE_BIN)}/stop "
                                 f"{cluster['dir']}" if cluster else ""))
        else:
            if not args.kubeconfig:
                stop_cluster(kube)
            elif made_namespaces:
                # Only the namespaces this run made (their pods and
                # reports go with them); a kept population is reused.
                stopping.clear()
                delete_namespaces(api, made_namespaces)
            shutil.rmtree(dir, ignore_errors=True)

    if args.json:
        json.dump(result, sys.stdout, indent=2)
        print()
    else:
        print_table(result)
    if not audit:
        sys.exit(2)
    if not all(result.get("targets", {}).values()):
        sys.exit(1)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
