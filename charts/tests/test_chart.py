"""The Helm chart, rendered by a real Helm engine (helm-python-sdk bundles
Helm's Go library), validated strictly against Kubernetes' own schemas
(kubernetes-validate), and its workload judged by the built agyn-admission.

Run by scripts/chart-test.sh, which installs both packages in a venv.
"""

import base64
import json
import os
import subprocess
import tempfile
import unittest

import helm_python as helm
import kubernetes_validate
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "agyn-admission")
BINARY = os.path.join(ROOT, "target", "release", "agyn-admission")
NAMESPACE = "agyn-system"
KUBERNETES = ["1.30", "1.33", "1.37"]

# Every switch the README documents, each rendered, linted and validated.
SWITCHES = {
    "defaults": {},
    "cert-manager": {"tls": {"certManager": {"enabled": True}}},
    "dry run": {"dryRun": True},
    "platform namespaces only": {"webhook": {"otherNamespaces": {"enabled": False}}},
    "fail everywhere": {"webhook": {"otherNamespaces": {"failurePolicy": "Fail"}}},
    "excluded namespaces": {"webhook": {"excludedNamespaces": ["legacy", "agyn"]}},
    "monitoring": {"metrics": {"serviceMonitor": {"enabled": True}},
                   "networkPolicy": {"enabled": True}},
    "alert rules": {"metrics": {"serviceMonitor": {"enabled": True}},
                    "prometheusRule": {"enabled": True,
                                       "labels": {"release": "kube-prometheus-stack"}}},
    "priority class": {"priorityClass": {"create": True}},
    "existing priority class": {"priorityClassName": "system-cluster-critical"},
    "image digest": {"image": {"digest": "sha256:" + "ab" * 32},
                     "imagePullSecrets": [{"name": "registry"}]},
    "extra policy modules": {"extraPolicyModules": {
        "enabled": True, "volume": {"configMap": {"name": "my-policies"}}}},
    "text logs, one replica": {"logFormat": "text", "replicas": 1},
    "fallback": {"fallback": {"enabled": True}},
    "fallback without mutations": {"fallback": {"enabled": True, "mutations": False}},
    "fallback in dry run": {"dryRun": True, "fallback": {"enabled": True}},
    "audit": {"audit": {"enabled": True}},
    "audit, every cron job setting": {
        "audit": {"enabled": True, "schedule": "*/30 * * * *", "timeZone": "Europe/Berlin",
                  "concurrencyPolicy": "Replace", "successfulJobsHistoryLimit": 1,
                  "failedJobsHistoryLimit": 1, "startingDeadlineSeconds": 60,
                  "activeDeadlineSeconds": 1500, "backoffLimit": 0, "results": "failures",
                  "pageSize": 100},
        "webhook": {"excludedNamespaces": ["legacy"]},
        "extraPolicyModules": {"enabled": True, "volume": {"configMap": {"name": "my-policies"}}},
        "networkPolicy": {"enabled": True}},
    "audit watching, policy reports, monitored": {
        "audit": {"enabled": True, "mode": "watch", "reportApi": "wgpolicyk8s"},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "networkPolicy": {"enabled": True,
                          "apiServerPeers": [{"ipBlock": {"cidr": "10.0.0.10/32"}}]}},
}

# Served from Kubernetes 1.36: older schemas have no such kind.
MUTATING_POLICY_KINDS = ["MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]


def render(values, namespace=NAMESPACE):
    with helm.Chart.load(CHART) as chart:
        files = chart.render(values, name="agyn-admission", namespace=namespace)
    text = "".join(f"---\n{body}\n" for path, body in sorted(files.items())
                   if path.endswith(".yaml") and body.strip())
    return text, [d for d in yaml.safe_load_all(text) if d]


def find(docs, kind, name=None):
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, f"no {kind} {name or ''} rendered"
    return found


class Render(unittest.TestCase):
    def test_every_switch_renders_lints_and_validates_strictly(self):
        for switch, values in SWITCHES.items():
            with self.subTest(switch=switch):
                _, docs = render(values)
                report = helm.lint(CHART, values, namespace=NAMESPACE, strict=True)
                self.assertEqual(report["errors"], [], report)
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(serious, [], report)
                for version in KUBERNETES:
                    for doc in docs:
                        try:
                            kubernetes_validate.validate(doc, version, strict=True)
                        except kubernetes_validate.SchemaNotFoundError:
                            # cert-manager and Prometheus Operator kinds: no
                            # schema in Kubernetes; checked below by hand.
                            # MutatingAdmissionPolicy: none before 1.36.
                            if doc["kind"] in MUTATING_POLICY_KINDS and version < "1.36":
                                continue
                            self.assertIn(doc["apiVersion"],
                                          ["cert-manager.io/v1", "monitoring.coreos.com/v1"])
                        except kubernetes_validate.ValidationError as e:
                            self.fail(f"{switch}: {doc['kind']} {doc['metadata']['name']} "
                                      f"on {version}: {'.'.join(map(str, e.path))}: {e.message}")

    def test_bad_values_fail_at_install_with_their_path(self):
        for values, path in [
            ({"webhook": {"timeoutSeconds": 60}}, "/webhook/timeoutSeconds"),
            ({"webhook": {"platformFailurePolicy": "Sometimes"}}, "/webhook/platformFailurePolicy"),
            ({"replicas": "two"}, "/replicas"),
            ({"dryrun": True}, "dryrun"),
            ({"policySet": {"policies": [{"name": "x", "mode": "loud"}]}}, "/policySet/policies/0/mode"),
        ]:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmValuesError) as raised:
                    render(values)
                self.assertIn(path, str(raised.exception))


class Safety(unittest.TestCase):
    """What a reader of the webhook configurations must be able to see."""

    def configurations(self, values):
        _, docs = render(values)
        return docs, (find(docs, "MutatingWebhookConfiguration")
                      + find(docs, "ValidatingWebhookConfiguration"))

    def test_kube_system_and_the_release_namespace_are_never_judged(self):
        for switch, values in SWITCHES.items():
            _, configurations = self.configurations(values)
            for configuration in configurations:
                for webhook in configuration["webhooks"]:
                    with self.subTest(switch=switch, webhook=webhook["name"]):
                        expressions = webhook["namespaceSelector"]["matchExpressions"]
                        never = [e for e in expressions
                                 if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn"]
                        self.assertTrue(never)
                        self.assertIn("kube-system", never[0]["values"])
                        self.assertIn(NAMESPACE, never[0]["values"])
                        self.assertIn({"key": "agyn.io/admission", "operator": "NotIn",
                                       "values": ["disabled"]}, expressions)
                        # No other expression can select them back: the
                        # selector's terms are ANDed.
                        for e in expressions:
                            if e["operator"] == "In":
                                self.assertNotIn("kube-system", e["values"])
                                self.assertNotIn(NAMESPACE, e["values"])

    def test_failure_policies_timeouts_and_registration(self):
        _, configurations = self.configurations({})
        for configuration in configurations:
            hooks = {w["name"].split(".")[0]: w for w in configuration["webhooks"]}
            prefix = "mutate" if configuration["kind"].startswith("Mutating") else "validate"
            platform, cluster = hooks[f"{prefix}-platform"], hooks[f"{prefix}-cluster"]
            self.assertEqual(platform["failurePolicy"], "Fail")
            self.assertEqual(cluster["failurePolicy"], "Ignore")
            platform_ns = [e for e in platform["namespaceSelector"]["matchExpressions"] if e["operator"] == "In"]
            self.assertEqual(platform_ns[0]["values"], ["agyn", "agyn-workloads"])
            for hook in (platform, cluster):
                # Well under the API server's 10 s; above the server's own
                # deadline (9/10 of it) and far above a policy's 100 ms.
                self.assertLessEqual(hook["timeoutSeconds"], 10)
                self.assertGreaterEqual(hook["timeoutSeconds"], 1)
                self.assertEqual(hook["admissionReviewVersions"], ["v1"])
                self.assertEqual(hook["sideEffects"], "None")
                self.assertEqual(hook["matchPolicy"], "Equivalent")
                self.assertEqual(hook["clientConfig"]["service"]["path"], f"/{prefix}")
                resources = {(g, r) for rule in hook["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
                for expected in [("", "pods"), ("apps", "deployments"), ("apps", "statefulsets"),
                                 ("apps", "daemonsets"), ("apps", "replicasets"), ("batch", "jobs"),
                                 ("batch", "cronjobs"), ("", "replicationcontrollers")]:
                    self.assertIn(expected, resources)
                if prefix == "mutate":
                    self.assertEqual(hook["reinvocationPolicy"], "IfNeeded")
                else:
                    self.assertIn(("", "pods/ephemeralcontainers"), resources)

    def test_the_rules_are_those_the_built_in_set_needs(self):
        # `agyn-admission rules` derives them from the policies' metadata:
        # the chart registers for exactly the requests the set judges.
        run = subprocess.run([BINARY, "rules", "--no-cache", "-o", "json"],
                             capture_output=True, text=True, check=True)
        needed = json.loads(run.stdout)

        def requests(rules):
            return sorted((g, v, r, o) for rule in rules for g in rule["apiGroups"]
                          for v in rule["apiVersions"] for r in rule["resources"]
                          for o in rule["operations"])

        _, configurations = self.configurations({})
        for configuration in configurations:
            kind = "mutating" if configuration["kind"].startswith("Mutating") else "validating"
            for hook in configuration["webhooks"]:
                with self.subTest(webhook=hook["name"]):
                    self.assertEqual(requests(hook["rules"]), requests(needed[kind]))

    def test_platform_namespaces_only_leaves_the_rest_of_the_cluster_alone(self):
        _, configurations = self.configurations({"webhook": {"otherNamespaces": {"enabled": False}}})
        for configuration in configurations:
            self.assertEqual([w["name"].split(".")[0].split("-")[1] for w in configuration["webhooks"]],
                             ["platform"])

    def test_the_ca_bundle_is_the_ca_that_signed_the_serving_certificate(self):
        docs, configurations = self.configurations({})
        secret = find(docs, "Secret", "agyn-admission-tls")[0]
        ca = base64.b64decode(secret["data"]["ca.crt"])
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in (("ca.pem", ca), ("tls.pem", base64.b64decode(secret["data"]["tls.crt"]))):
                with open(os.path.join(tmp, name), "wb") as f:
                    f.write(data)
            subprocess.run(["openssl", "verify", "-CAfile", f"{tmp}/ca.pem", f"{tmp}/tls.pem"],
                           check=True, capture_output=True)
            names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName",
                                    "-in", f"{tmp}/tls.pem"], check=True, capture_output=True,
                                   text=True).stdout
            self.assertIn(f"DNS:agyn-admission.{NAMESPACE}.svc", names)
        for configuration in configurations:
            for webhook in configuration["webhooks"]:
                self.assertEqual(base64.b64decode(webhook["clientConfig"]["caBundle"]), ca)
                service = webhook["clientConfig"]["service"]
                self.assertEqual((service["name"], service["namespace"]), ("agyn-admission", NAMESPACE))

    def test_with_cert_manager_the_ca_is_injected(self):
        docs, configurations = self.configurations({"tls": {"certManager": {"enabled": True}}})
        certificate = find(docs, "Certificate")[0]
        issuer = find(docs, "Issuer")[0]
        self.assertEqual(issuer["spec"], {"selfSigned": {}})
        self.assertEqual(certificate["spec"]["issuerRef"]["name"], issuer["metadata"]["name"])
        self.assertEqual(certificate["spec"]["secretName"], "agyn-admission-tls")
        self.assertIn(f"agyn-admission.{NAMESPACE}.svc", certificate["spec"]["dnsNames"])
        self.assertEqual([d for d in docs if d["kind"] == "Secret"], [])
        for configuration in configurations:
            self.assertEqual(configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                             f"{NAMESPACE}/{certificate['metadata']['name']}")
            for webhook in configuration["webhooks"]:
                self.assertNotIn("caBundle", webhook["clientConfig"])


class Workload(unittest.TestCase):
    def test_the_chart_s_own_pods_are_admitted_unchanged_by_agyn_admission(self):
        for switch in ("defaults", "dry run", "priority class"):
            with self.subTest(switch=switch):
                text, _ = render(SWITCHES[switch])
                run = subprocess.run([BINARY, "check", "--no-cache", "-o", "json", "-"], input=text,
                                     capture_output=True, text=True)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                results = json.loads(run.stdout)
                deployment = [r for r in results if r["kind"] == "Deployment"]
                self.assertEqual(len(deployment), 1, results)
                self.assertTrue(deployment[0]["allowed"], deployment[0])
                self.assertFalse(deployment[0].get("patch"), "the chart sets every field itself")

    def test_the_pod_meets_the_restricted_pod_security_standard(self):
        _, docs = render({})
        pod = find(docs, "Deployment")[0]["spec"]["template"]["spec"]
        self.assertFalse(pod["automountServiceAccountToken"])
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            self.assertNotIn(field, pod)
        for volume in pod["volumes"]:
            self.assertNotIn("hostPath", volume)
        for container in pod["containers"]:
            context = container["securityContext"]
            self.assertEqual(context["capabilities"], {"drop": ["ALL"]})
            self.assertFalse(context["allowPrivilegeEscalation"])
            self.assertTrue(context["readOnlyRootFilesystem"])
            self.assertGreater(context["runAsUser"], 0)
            self.assertGreater(context["runAsGroup"], 0)
            self.assertEqual(container["readinessProbe"]["httpGet"]["path"], "/readyz")
            self.assertEqual(container["livenessProbe"]["httpGet"]["path"], "/healthz")
            self.assertGreater(container["lifecycle"]["preStop"]["sleep"]["seconds"], 0)
            self.assertIn("memory", container["resources"]["limits"])

    def test_the_policy_set_is_the_built_in_one_and_loads(self):
        _, docs = render({"dryRun": True})
        config_map = find(docs, "ConfigMap", "agyn-admission-policy-set")[0]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "policy-set.yaml")
            with open(path, "w") as f:
                f.write(config_map["data"]["policy-set.yaml"])
            run = subprocess.run([BINARY, "check", "--no-cache", "--policies", path, "-o", "json",
                                  os.path.join(ROOT, "examples")], capture_output=True, text=True)
            builtin = subprocess.run([BINARY, "check", "--no-cache", "-o", "json",
                                      os.path.join(ROOT, "examples")], capture_output=True, text=True)
        self.assertEqual(run.returncode, builtin.returncode, run.stderr)
        self.assertEqual(json.loads(run.stdout), json.loads(builtin.stdout))
        args = find(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--dry-run", args)
        self.assertIn("--policies=/etc/agyn-admission/policy-set.yaml", args)


if __name__ == "__main__":
    unittest.main()
