"""The chart's fallback (fallback.enabled): the API server's own admission
policies, shipped in files/fallback.json. Rendered by a real Helm engine;
with AGYN_TEST_KUBECONFIG (scripts/test.sh starts the API server of
../shared/kube), installed, upgraded and uninstalled on a real API server.

Run by scripts/chart-test.sh.
"""

import importlib.util
import json
import os
import subprocess
import tempfile
import time
import unittest

import helm_python as helm
import yaml

from test_chart import CHART, NAMESPACE, ROOT, SWITCHES, find, render

_spec = importlib.util.spec_from_file_location(
    "chart_fallback", os.path.join(ROOT, "scripts", "chart-fallback.py"))
chart_fallback = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chart_fallback)

KINDS = ["ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding",
         "MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding"]


def default_values():
    with open(os.path.join(CHART, "values.yaml")) as f:
        return yaml.safe_load(f)


def generated(docs):
    return [d for d in docs if d["kind"] in KINDS]


class Render(unittest.TestCase):
    def test_the_shipped_fallback_is_that_of_the_default_policy_set(self):
        with open(chart_fallback.FILE) as f:
            shipped = f.read()
        self.assertEqual(shipped, chart_fallback.generate(),
                         "stale: run target/chart-venv/bin/python scripts/chart-fallback.py")

    def test_off_by_default_and_on_it_covers_every_policy(self):
        _, docs = render({})
        self.assertEqual(generated(docs), [])
        _, docs = render(SWITCHES["fallback"])
        policies = {d["metadata"]["labels"]["agyn.io/fallback-for"]
                    for d in find(docs, "ValidatingAdmissionPolicy")}
        names = {p["name"] for p in default_values()["policySet"]["policies"]}
        self.assertEqual(policies, names)
        self.assertEqual(len(find(docs, "MutatingAdmissionPolicy")), len(names))
        for doc in generated(docs):
            self.assertEqual(doc["metadata"]["labels"]["app.kubernetes.io/managed-by"], "Helm")
            if doc["kind"].endswith("Policy"):
                # Settings are in the CEL: no parameters to be missing.
                self.assertNotIn("paramKind", doc["spec"])
                self.assertEqual(doc["spec"]["failurePolicy"], "Fail")
        _, docs = render(SWITCHES["fallback without mutations"])
        self.assertEqual([d for d in generated(docs) if d["kind"].startswith("Mutating")], [])

    def test_bindings_never_act_in_kube_system_the_release_namespace_or_opted_out(self):
        for values in [{}, {"webhook": {"excludedNamespaces": ["legacy"]}},
                       {"webhook": {"otherNamespaces": {"enabled": False}}}]:
            values = {**values, "fallback": {"enabled": True}}
            _, docs = render(values)
            for binding in [d for d in generated(docs) if d["kind"].endswith("Binding")]:
                with self.subTest(values=values, binding=binding["metadata"]["name"]):
                    expressions = binding["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
                    never = [e for e in expressions if e["operator"] == "NotIn"
                             and e["key"] == "kubernetes.io/metadata.name"][0]["values"]
                    self.assertIn("kube-system", never)
                    self.assertIn(NAMESPACE, never)
                    for excluded in values.get("webhook", {}).get("excludedNamespaces", []):
                        self.assertIn(excluded, never)
                    self.assertIn({"key": "agyn.io/admission", "operator": "NotIn",
                                   "values": ["disabled"]}, expressions)
                    only = [e["values"] for e in expressions if e["operator"] == "In"]
                    platform_only = "otherNamespaces" in values.get("webhook", {})
                    self.assertEqual(only, [["agyn", "agyn-workloads"]] if platform_only else [])
                    self.assertEqual(binding["spec"]["policyName"], binding["metadata"]["name"]
                                     .removesuffix(".templates"))

    def test_in_dry_run_the_fallback_only_warns(self):
        _, docs = render({"dryRun": True, "fallback": {"enabled": True}})
        self.assertEqual([d for d in generated(docs) if d["kind"].startswith("Mutating")], [])
        bindings = find(docs, "ValidatingAdmissionPolicyBinding")
        self.assertEqual({tuple(b["spec"]["validationActions"]) for b in bindings}, {("Warn",)})

    def test_with_the_fallback_the_webhooks_fail_open_everywhere(self):
        for values, expected in [({"fallback": {"enabled": True}}, "Ignore"),
                                 ({"fallback": {"enabled": True, "webhookFailurePolicy": "Fail"}}, "Fail")]:
            _, docs = render(values)
            for configuration in (find(docs, "MutatingWebhookConfiguration")
                                  + find(docs, "ValidatingWebhookConfiguration")):
                for hook in configuration["webhooks"]:
                    self.assertEqual(hook["failurePolicy"], expected, hook["name"])

    def test_another_policy_set_needs_its_own_generated_fallback(self):
        policy_set = default_values()["policySet"]
        policy_set["policies"] = [p for p in policy_set["policies"] if p["name"] != "pod-security"]
        with self.assertRaises(helm.HelmRenderError) as raised:
            render({"policySet": policy_set, "fallback": {"enabled": True}})
        self.assertIn("fallback.objects", str(raised.exception))
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
            yaml.safe_dump({"apiVersion": "agyn.io/v1alpha1", "kind": "PolicySet", **policy_set}, f)
            f.flush()
            objects = subprocess.run([chart_fallback.BINARY, "fallback", "--no-cache", "-o", "json",
                                      "--policies", f.name],
                                     capture_output=True, text=True, check=True).stdout
        _, docs = render({"policySet": policy_set,
                          "fallback": {"enabled": True, "objects": objects}})
        policies = {d["metadata"]["labels"]["agyn.io/fallback-for"]
                    for d in find(docs, "ValidatingAdmissionPolicy")}
        self.assertNotIn("pod-security", policies)
        self.assertIn("run-as-non-root", policies)
        # Generated without --mutations: none, whatever fallback.mutations says.
        self.assertEqual([d for d in docs if d["kind"] == "MutatingAdmissionPolicy"], [])


@unittest.skipUnless(os.environ.get("AGYN_TEST_KUBECONFIG"),
                     "AGYN_TEST_KUBECONFIG is not set; run scripts/test.sh with "
                     "KUBEBUILDER_ASSETS=.../shared/kube/bin")
class ApiServer(unittest.TestCase):
    """The chart with the fallback on a real API server (1.36)."""

    kubeconfig = os.environ.get("AGYN_TEST_KUBECONFIG")
    kubectl = os.path.join(os.environ.get("KUBEBUILDER_ASSETS", ""), "kubectl")

    def kubectl_run(self, *args, **kwargs):
        return subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args],
                              capture_output=True, text=True, **kwargs)

    def test_the_api_server_takes_every_object_without_a_warning(self):
        text, docs = render(SWITCHES["fallback"])
        objects = "".join(f"---\n{yaml.safe_dump(d)}" for d in generated(docs))
        run = self.kubectl_run("apply", "--dry-run=server", "--warnings-as-errors", "-f", "-",
                               input=objects)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(run.stderr, "")

    def create_pod(self, namespace, name, security_context=None):
        container = {"name": "app", "image": "ghcr.io/agynio/app:1.0"}
        if security_context:
            container["securityContext"] = security_context
        pod = {"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"containers": [container]}}
        return self.kubectl_run("create", "--dry-run=server", "-o", "json", "-f", "-",
                                input=json.dumps(pod))

    def the_fallback_enforces_while_the_webhook_is_down(self, release_namespace):
        """The chart's webhooks are registered but unreachable (no pod
        runs here): down, at failurePolicy Ignore. The fallback still
        denies a root pod and makes a bare one compliant, everywhere but in
        kube-system and the release namespace."""
        team = f"{release_namespace}-team"
        for namespace in (team, "agyn", "kube-system", release_namespace):
            self.kubectl_run("create", "namespace", namespace)
            self.kubectl_run("-n", namespace, "create", "serviceaccount", "default")
        deadline = time.monotonic() + 60
        while True:
            root = self.create_pod(team, "root", {"runAsUser": 0})
            if root.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        self.assertIn("ValidatingAdmissionPolicy", root.stderr)
        self.assertIn("[run-as-non-root]", root.stderr)
        for namespace in (team, "agyn"):
            bare = self.create_pod(namespace, "bare")
            self.assertEqual(bare.returncode, 0, bare.stderr)
            context = json.loads(bare.stdout)["spec"]["containers"][0]["securityContext"]
            self.assertEqual(context["capabilities"], {"drop": ["ALL"]})
            self.assertTrue(context["readOnlyRootFilesystem"])
        for namespace in ("kube-system", release_namespace):
            left_alone = self.create_pod(namespace, "root", {"runAsUser": 0})
            self.assertEqual(left_alone.returncode, 0, left_alone.stderr)
            self.assertEqual(json.loads(left_alone.stdout)["spec"]["containers"][0]
                             ["securityContext"], {"runAsUser": 0})

    def test_install_upgrade_and_uninstall(self):
        namespace = f"chart-fallback-{os.getpid()}"
        release = "fallback-test"
        config = helm.Config(kubeconfig_path=self.kubeconfig, namespace=namespace)
        selector = f"app.kubernetes.io/instance={release}"

        def generated_names():
            run = self.kubectl_run("get", ",".join(k.lower() for k in KINDS), "-l", selector,
                                   "-o", "name", check=True)
            return sorted(run.stdout.split())

        try:
            config.install(CHART, release, SWITCHES["fallback"], namespace=namespace,
                           create_namespace=True, timeout=60)
            installed = generated_names()
            self.assertEqual(len([n for n in installed if "mutatingadmissionpolicy." in n]), 6,
                             installed)
            self.the_fallback_enforces_while_the_webhook_is_down(namespace)
            config.upgrade(CHART, release, SWITCHES["fallback without mutations"],
                           namespace=namespace, timeout=60)
            upgraded = generated_names()
            self.assertEqual([n for n in upgraded if "mutating" in n], [], upgraded)
            self.assertEqual([n for n in installed if "validating" in n],
                             [n for n in upgraded if "validating" in n])
        finally:
            config.uninstall(release, timeout=60)
        self.assertEqual(generated_names(), [])


if __name__ == "__main__":
    unittest.main()
