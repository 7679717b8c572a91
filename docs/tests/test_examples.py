"""Every example in the documents that needs no cluster, run: the output a
document shows is what the release binary prints.

The webhook examples start `agyn-admission serve` on 127.0.0.1 with a
throwaway certificate, as the README's tour does, and play the API server.
"""

import json
import os
import re
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

import yaml

from doctools import BINARY, NEEDS_BINARY, ROOT, block, expect_block, path, read


def check(*args, cwd=ROOT):
    return subprocess.run([BINARY, "check", *args], cwd=cwd, capture_output=True, text=True)


@NEEDS_BINARY
class Check(unittest.TestCase):
    def test_readme_check_on_the_examples(self):
        run = check("examples/")
        self.assertEqual(run.returncode, 1, "some examples are denied: check must exit 1")
        expect_block(self, "README.md", "check-examples", run.stdout)

    def test_pod_security_examples(self):
        for level, status in (("restricted", 1), ("baseline", 0)):
            with self.subTest(level=level):
                run = check("--policies", f"examples/policy-sets/pss-{level}.yaml",
                            "docs/examples/web.yaml")
                self.assertEqual(run.returncode, status, run.stderr)
                expect_block(self, "docs/pod-security.md", f"pss-{level}", run.stdout)

    def test_reproducing_a_denial(self):
        run = check("examples/agyn/debug-pod.yaml")
        self.assertEqual(run.returncode, 1)
        expect_block(self, "docs/operations.md", "reproduce", run.stdout)

    def test_a_policy_set_error(self):
        broken = block("docs/policy-sets.md", "broken-set")
        with tempfile.TemporaryDirectory() as tmp:
            with open(os.path.join(tmp, "broken-set.yaml"), "w") as f:
                f.write(broken)
            run = check("--policies", "broken-set.yaml", os.path.join(ROOT, "examples"), cwd=tmp)
        self.assertEqual(run.returncode, 2, run.stdout + run.stderr)
        self.assertEqual(run.stdout, "", "nothing is judged")
        expect_block(self, "docs/policy-sets.md", "policy-set-error", run.stderr)

    def test_the_review_in_the_readme_is_the_mutated_example(self):
        """docs/examples/review.json carries examples/agyn/debug-pod.yaml as
        the mutating webhook leaves it, which is what /validate sees."""
        run = check("-o", "manifests", "examples/agyn/debug-pod.yaml")
        mutated = yaml.safe_load(run.stdout)
        review = json.loads(read("docs", "examples", "review.json"))
        self.assertEqual(review["request"]["object"], mutated,
                         "regenerate docs/examples/review.json's object with "
                         "`agyn-admission check -o manifests examples/agyn/debug-pod.yaml`")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@NEEDS_BINARY
class PolicyTest(unittest.TestCase):
    """The test file of docs/policy-authors.md, run where it says it lives."""

    def run_example(self, change=lambda text: text):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "tests", "objects"))
            with open(os.path.join(tmp, "tests", "run-as-non-root.test.yaml"), "w") as f:
                f.write(change(block("docs/policy-authors.md", "policy-test-file")))
            with open(os.path.join(tmp, "tests", "objects", "bare-pod.yaml"), "w") as f:
                f.write(block("docs/policy-authors.md", "policy-test-object"))
            return subprocess.run([BINARY, "policy", "test"], cwd=tmp, capture_output=True,
                                  text=True)

    def test_the_example_passes(self):
        run = self.run_example()
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        expect_block(self, "docs/policy-authors.md", "policy-test-output", run.stdout)

    def test_the_failure_shown(self):
        run = self.run_example(lambda text: text.replace("UID (is 0)", "UID (is unset)", 1))
        self.assertEqual(run.returncode, 1, run.stdout + run.stderr)
        expect_block(self, "docs/policy-authors.md", "policy-test-failure", run.stdout)


@NEEDS_BINARY
class Serve(unittest.TestCase):
    """The README's `serve` tour, and what operations.md shows of it."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        tmp = cls.tmp.name
        cls.cert = os.path.join(tmp, "tls.crt")
        key = os.path.join(tmp, "tls.key")
        # The README's command for a throwaway certificate.
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                        "-keyout", key, "-out", cls.cert], check=True, capture_output=True)
        cls.webhook, cls.metrics = free_port(), free_port()
        cls.log = open(os.path.join(tmp, "server.log"), "w+")
        cls.server = subprocess.Popen(
            [BINARY, "serve", "--tls-cert-file", cls.cert, "--tls-private-key-file", key,
             "--listen", f"127.0.0.1:{cls.webhook}", "--metrics-listen", f"127.0.0.1:{cls.metrics}",
             "--cache-dir", os.path.join(tmp, "cache"), "--log-format", "json"],
            stdout=subprocess.DEVNULL, stderr=cls.log)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{cls.metrics}/readyz", timeout=1)
                break
            except OSError:
                if cls.server.poll() is not None or time.monotonic() > deadline:
                    cls.tearDownClass()
                    raise
                time.sleep(0.1)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate()
        cls.server.wait(timeout=60)
        cls.log.close()
        cls.tmp.cleanup()

    def post(self, path, body):
        context = ssl.create_default_context(cafile=self.cert)
        request = urllib.request.Request(f"https://localhost:{self.webhook}{path}", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=context, timeout=30) as answer:
            return json.load(answer)

    def validate(self):
        with open(path("docs", "examples", "review.json"), "rb") as f:
            return self.post("/validate?timeout=10s", f.read())

    def test_readme_validate(self):
        # As `curl ... | python3 -m json.tool` prints it.
        expect_block(self, "README.md", "serve-validate", json.dumps(self.validate(), indent=4))

    def test_the_denial_kubectl_prints(self):
        status = self.validate()["response"]["status"]
        self.assertEqual(status["code"], 403)
        expect_block(self, "docs/operations.md", "denial-message",
                     'Error from server (Forbidden): error when creating "debug-pod.yaml": '
                     'admission webhook "validate-platform.agyn.io" denied the request: '
                     + status["message"])

    def test_the_audit_event(self):
        uid = json.loads(read("docs", "examples", "review.json"))["request"]["uid"]
        self.validate()
        event = None
        for _ in range(100):
            self.log.seek(0)
            events = [json.loads(line) for line in self.log if line.startswith("{")]
            found = [e for e in events if e.get("target") == "agyn_admission::audit"
                     and e.get("uid") == uid]
            if found:
                event = found[-1]
                break
            time.sleep(0.05)
        self.assertIsNotNone(event, "no audit event for the review")
        self.assertNotIn("readOnlyRootFilesystem\": false", json.dumps(event),
                         "the object never reaches the log")
        # The times change from run to run; the rest is what the document shows.
        volatile = {"timestamp": "2026-01-01T12:00:00.000000Z", "took_us": 412}
        event = {k: volatile.get(k, v) for k, v in event.items()}
        event["verdicts"] = re.sub(r" \d+us(?=,|$)", " 380us", event["verdicts"])
        expect_block(self, "docs/operations.md", "audit-event", json.dumps(event, indent=2))

    def test_every_metric_is_in_the_operations_table(self):
        table = re.search(r"<!-- metrics-table:.*-->\n((?:\|.*\n)+)", read("docs", "operations.md"))
        self.assertIsNotNone(table, "docs/operations.md lost its metrics table")
        documented = {}
        for row in table.group(1).splitlines()[2:]:
            cells = [c.strip() for c in row.strip("|").split("|")]
            documented[cells[0].strip("`")] = cells[1]
        # Every metric the server registers (a family appears on /metrics
        # only once it has a series, so the source is the full list)...
        registered = re.findall(r'\.register\(\s*"(\w+)"', read("webhook", "src", "server",
                                                                  "metrics.rs"))
        self.assertTrue(registered)
        self.assertEqual(sorted(re.sub(r"_total$", "", name) for name in documented),
                         sorted(registered),
                         "docs/operations.md's metrics table must list every metric "
                         "webhook/src/server/metrics.rs registers")
        # ...and those a judged review makes appear, with the type shown.
        self.validate()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=10) as m:
            text = m.read().decode()
        exported = {}
        for name, kind in re.findall(r"^# TYPE agyn_admission_(\w+) (\w+)$", text, re.M):
            exported[name + "_total" if kind == "counter" else name] = kind
        self.assertIn("policy_duration_seconds", exported)
        for name, kind in exported.items():
            with self.subTest(metric=name):
                self.assertEqual(documented.get(name), kind)


if __name__ == "__main__":
    unittest.main()
