"""Policy modules from OCI registries (`registry` in the values): the pull
secret, CA bundle and cosign keys mounted read-only into the webhook's and
the audit's pods, the AGYN_REGISTRY_* environment `serve` and `audit` read,
and NetworkPolicy egress to the registries and DNS only when the policy set
names an oci:// module. Rendered by a real Helm engine and validated
strictly against Kubernetes' schemas; with AGYN_TEST_KUBECONFIG, also
applied in a server-side dry run to a real API server.

Run by scripts/chart-test.sh.
"""

import copy
import json
import os
import subprocess
import unittest

import helm_python as helm
import kubernetes_validate
import yaml

from test_chart import BINARY, CHART, KUBERNETES, NAMESPACE, find, render

DIGEST = "0123456789abcdef" * 4
OCI = f"oci://registry.example.com/agyn/no-latest-tag@sha256:{DIGEST}"


def default_policies():
    with open(os.path.join(CHART, "values.yaml")) as f:
        return yaml.safe_load(f)["policySet"]["policies"]


def with_oci_module(values=None, **policy):
    """`values` with the default policy set plus one policy from a
    registry."""
    values = copy.deepcopy(values or {})
    entry = {"name": "no-latest-tag", "module": OCI, **policy}
    values.setdefault("policySet", {})["policies"] = default_policies() + [entry]
    return values


# Every registry value set, and the audit on.
REGISTRY = {
    "registry": {
        "pullSecret": "regcred",
        "caBundle": {"configMap": "registry-ca", "key": "bundle.pem"},
        "insecure": ["registry.local:5000", "10.0.0.5"],
        "timeout": "1m30s",
        "verifyKeys": {"configMap": "cosign-keys"},
    },
}
NETWORK = {"networkPolicy": {"enabled": True}}
ENV = {
    "AGYN_REGISTRY_CONFIG": "/etc/agyn/registry/config.json",
    "AGYN_REGISTRY_CA": "/etc/agyn/registry-ca/ca.crt",
    "AGYN_INSECURE_REGISTRIES": "registry.local:5000,10.0.0.5",
    "AGYN_REGISTRY_TIMEOUT": "1m30s",
}
MOUNTS = {
    "registry-config": "/etc/agyn/registry",
    "registry-ca": "/etc/agyn/registry-ca",
    "verify-keys": "/etc/agyn/keys",
}
DNS = {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
       "to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]}


def merged(*parts):
    out = {}
    for part in parts:
        for key, value in copy.deepcopy(part).items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            else:
                out[key] = value
    return out


def pods(docs):
    """(name, pod spec) of every workload of the chart: the webhook's
    Deployment and, when on, the audit's CronJob or Deployment."""
    found = []
    for doc in docs:
        if doc["kind"] == "Deployment":
            found.append((doc["metadata"]["name"], doc["spec"]["template"]["spec"]))
        elif doc["kind"] == "CronJob":
            found.append((doc["metadata"]["name"],
                          doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return found


def network_policy(docs, name):
    return find(docs, "NetworkPolicy", name)[0]["spec"]


def validate(test, docs, label):
    for version in KUBERNETES:
        for doc in docs:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError:
                # MutatingAdmissionPolicy before 1.36, cert-manager and
                # Prometheus Operator kinds: test_chart checks those.
                pass
            except kubernetes_validate.ValidationError as e:
                test.fail(f"{label}: {doc['kind']} {doc['metadata']['name']} on {version}: "
                          f"{'.'.join(map(str, e.path))}: {e.message}")


class Defaults(unittest.TestCase):
    def test_no_registry_mounts_env_or_egress_by_default(self):
        for values in ({}, {"audit": {"enabled": True}}, {"audit": {"enabled": True, "mode": "watch"}},
                       NETWORK, merged(NETWORK, {"audit": {"enabled": True}})):
            with self.subTest(values=values):
                _, docs = render(values)
                for name, pod in pods(docs):
                    container = pod["containers"][0]
                    self.assertNotIn("env", container, name)
                    mounts = {m["name"] for m in container["volumeMounts"]}
                    self.assertFalse(mounts & set(MOUNTS), name)
                    self.assertFalse({v["name"] for v in pod["volumes"]} & set(MOUNTS), name)
                    for mount in container["volumeMounts"]:
                        self.assertFalse(mount["mountPath"].startswith("/etc/agyn/"), name)
                if values.get("networkPolicy"):
                    # "The server calls nothing."
                    self.assertEqual(network_policy(docs, "agyn-admission")["egress"], [])
                if values.get("audit") and values.get("networkPolicy"):
                    egress = network_policy(docs, "agyn-admission-audit")["egress"]
                    self.assertEqual(len(egress), 1, "only the API server")
                    self.assertEqual([p["port"] for p in egress[0]["ports"]], [443, 6443])

    def test_registry_settings_alone_open_no_egress(self):
        # Credentials without an oci:// module: mounted, but the pods still
        # call nothing.
        _, docs = render(merged(REGISTRY, NETWORK))
        self.assertEqual(network_policy(docs, "agyn-admission")["egress"], [])

    def test_the_policy_set_has_no_verify_unless_given(self):
        _, docs = render({})
        text = find(docs, "ConfigMap", "agyn-admission-policy-set")[0]["data"]["policy-set.yaml"]
        self.assertNotIn("verify", yaml.safe_load(text))


class Mounts(unittest.TestCase):
    def check_pod(self, name, pod):
        container = pod["containers"][0]
        env = {e["name"]: e["value"] for e in container["env"]}
        self.assertEqual(env, ENV, name)
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        for volume, path in MOUNTS.items():
            self.assertEqual(mounts[volume]["mountPath"], path, name)
            self.assertIs(mounts[volume]["readOnly"], True, name)
            self.assertNotIn("subPath", mounts[volume], "a subPath never sees a rotated Secret")
        volumes = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(volumes["registry-config"]["secret"]["secretName"], "regcred")
        # Only the config.json, where AGYN_REGISTRY_CONFIG names it.
        self.assertEqual(volumes["registry-config"]["secret"]["items"],
                         [{"key": ".dockerconfigjson", "path": "config.json"}])
        # Readable by the pod's group (fsGroup), not by others.
        self.assertEqual(volumes["registry-config"]["secret"]["defaultMode"], 0o440)
        self.assertEqual(pod["securityContext"]["fsGroup"], 65532)
        self.assertEqual(volumes["registry-ca"]["configMap"],
                         {"name": "registry-ca", "items": [{"key": "bundle.pem", "path": "ca.crt"}]})
        self.assertEqual(volumes["verify-keys"]["configMap"], {"name": "cosign-keys"})
        # The hardening stays.
        context = container["securityContext"]
        self.assertTrue(context["readOnlyRootFilesystem"])
        self.assertFalse(context["allowPrivilegeEscalation"])
        self.assertEqual(context["capabilities"], {"drop": ["ALL"]})
        self.assertTrue(context["runAsNonRoot"])
        self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
        for volume in pod["volumes"]:
            self.assertNotIn("hostPath", volume)

    def test_the_webhook_and_the_audit_get_the_env_and_read_only_mounts(self):
        for mode in ("cronjob", "watch"):
            with self.subTest(mode=mode):
                values = merged(with_oci_module(REGISTRY), {"audit": {"enabled": True, "mode": mode}})
                _, docs = render(values)
                workloads = pods(docs)
                self.assertEqual(sorted(n for n, _ in workloads),
                                 ["agyn-admission", "agyn-admission-audit"])
                kinds = {d["kind"] for d in docs if d["metadata"]["name"] == "agyn-admission-audit"}
                self.assertIn("CronJob" if mode == "cronjob" else "Deployment", kinds)
                for name, pod in workloads:
                    self.check_pod(name, pod)
                validate(self, docs, mode)

    def test_a_ca_bundle_from_a_secret(self):
        _, docs = render({"registry": {"caBundle": {"secret": "registry-tls"}},
                          "audit": {"enabled": True}})
        for name, pod in pods(docs):
            volumes = {v["name"]: v for v in pod["volumes"]}
            self.assertEqual(volumes["registry-ca"]["secret"],
                             {"secretName": "registry-tls",
                              "items": [{"key": "ca.crt", "path": "ca.crt"}]})
            container = pod["containers"][0]
            env = {e["name"]: e["value"] for e in container["env"]}
            self.assertEqual(env, {"AGYN_REGISTRY_CA": "/etc/agyn/registry-ca/ca.crt",
                                   "AGYN_REGISTRY_TIMEOUT": "30s"}, name)
            self.assertEqual([m["name"] for m in container["volumeMounts"]
                              if m["name"] in MOUNTS], ["registry-ca"])
        validate(self, docs, "CA from a Secret")

    def test_an_oci_module_alone_sets_only_the_timeout(self):
        # Anonymous pulls over TLS: nothing to mount, no insecure list.
        _, docs = render(with_oci_module())
        for name, pod in pods(docs):
            self.assertEqual(pod["containers"][0]["env"],
                             [{"name": "AGYN_REGISTRY_TIMEOUT", "value": "30s"}], name)
            self.assertFalse({v["name"] for v in pod["volumes"]} & set(MOUNTS), name)

    def test_the_cache_holds_pulled_modules(self):
        # 64Mi fits the compiled built-in policies; pulled modules and their
        # compiled code get registry.cacheSizeLimit.
        def sizes(values):
            _, docs = render(values)
            return {name: next(v for v in pod["volumes"] if v["name"] == "cache")
                    ["emptyDir"]["sizeLimit"] for name, pod in pods(docs)}
        audit = {"audit": {"enabled": True}}
        self.assertEqual(set(sizes(audit).values()), {"64Mi"})
        self.assertEqual(set(sizes(with_oci_module(audit)).values()), {"256Mi"})
        self.assertEqual(
            set(sizes(with_oci_module(merged(audit, {"registry": {"cacheSizeLimit": "1Gi"}}))).values()),
            {"1Gi"})

    def test_the_policy_set_carries_modules_keys_and_pins(self):
        pem = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE\n-----END PUBLIC KEY-----\n"
        values = with_oci_module({"policySet": {"verify": {"key": pem}}},
                                 verify={"key": "/etc/agyn/keys/cosign.pub"})
        values["policySet"]["policies"].append(
            {"name": "floating", "module": "oci://registry.example.com/agyn/floating:1.0",
             "allowFloatingTags": True, "failurePolicy": "Ignore"})
        values["policySet"]["policies"].append(
            {"name": "pinned-apart", "module": "oci://registry.example.com/agyn/p:1.0",
             "sha256": DIGEST})
        _, docs = render(values)
        text = find(docs, "ConfigMap", "agyn-admission-policy-set")[0]["data"]["policy-set.yaml"]
        policy_set = yaml.safe_load(text)
        self.assertEqual(policy_set["verify"], {"key": pem})
        by_name = {p["name"]: p for p in policy_set["policies"]}
        self.assertEqual(by_name["no-latest-tag"],
                         {"name": "no-latest-tag", "module": OCI,
                          "verify": {"key": "/etc/agyn/keys/cosign.pub"}})
        self.assertIs(by_name["floating"]["allowFloatingTags"], True)
        self.assertEqual(by_name["pinned-apart"]["sha256"], DIGEST)


class Egress(unittest.TestCase):
    def test_registry_and_dns_egress_only_with_an_oci_module(self):
        peers = [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
        values = with_oci_module(merged(REGISTRY, NETWORK, {
            "audit": {"enabled": True},
            "registry": {"networkPolicy": {"peers": peers, "ports": [443, 5000]}}}))
        _, docs = render(values)
        registry = {"ports": [{"port": 443, "protocol": "TCP"}, {"port": 5000, "protocol": "TCP"}],
                    "to": peers}
        self.assertEqual(network_policy(docs, "agyn-admission")["egress"], [registry, DNS])
        audit = network_policy(docs, "agyn-admission-audit")["egress"]
        self.assertEqual([p["port"] for p in audit[0]["ports"]], [443, 6443])
        self.assertEqual(audit[1:], [registry, DNS])
        # Ingress is untouched.
        self.assertEqual(network_policy(docs, "agyn-admission")["ingress"],
                         network_policy(render(NETWORK)[1], "agyn-admission")["ingress"])
        validate(self, docs, "egress")

    def test_empty_peers_mean_anywhere(self):
        _, docs = render(with_oci_module(NETWORK))
        egress = network_policy(docs, "agyn-admission")["egress"]
        self.assertEqual(egress, [{"ports": [{"port": 443, "protocol": "TCP"}]}, DNS])

    def test_dns_peers_are_configurable(self):
        node_local = [{"ipBlock": {"cidr": "169.254.20.10/32"}}]
        _, docs = render(with_oci_module(merged(
            NETWORK, {"registry": {"networkPolicy": {"dnsPeers": node_local}}})))
        self.assertEqual(network_policy(docs, "agyn-admission")["egress"][1]["to"], node_local)

    def test_egress_always_and_never(self):
        _, docs = render(merged(NETWORK, {"audit": {"enabled": True},
                                          "registry": {"networkPolicy": {"egress": "always"}}}))
        self.assertEqual(network_policy(docs, "agyn-admission")["egress"],
                         [{"ports": [{"port": 443, "protocol": "TCP"}]}, DNS])
        self.assertEqual(len(network_policy(docs, "agyn-admission-audit")["egress"]), 3)
        _, docs = render(with_oci_module(merged(
            NETWORK, {"audit": {"enabled": True}, "registry": {"networkPolicy": {"egress": "never"}}})))
        self.assertEqual(network_policy(docs, "agyn-admission")["egress"], [])
        self.assertEqual(len(network_policy(docs, "agyn-admission-audit")["egress"]), 1)

    def test_no_network_policy_without_network_policy_enabled(self):
        _, docs = render(with_oci_module(REGISTRY))
        self.assertEqual([d for d in docs if d["kind"] == "NetworkPolicy"], [])


class Values(unittest.TestCase):
    def test_every_registry_value_renders_lints_and_validates(self):
        values = with_oci_module(merged(REGISTRY, NETWORK, {
            "audit": {"enabled": True, "mode": "watch"},
            "registry": {"networkPolicy": {"peers": [{"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": "registry"}}}]}}}))
        _, docs = render(values)
        report = helm.lint(CHART, values, namespace=NAMESPACE, strict=True)
        self.assertEqual(report["errors"], [], report)
        self.assertEqual([m for m in report["messages"] if m["severity"] >= 2], [], report)
        validate(self, docs, "every registry value")

    def test_bad_values_fail_at_install_with_their_path(self):
        for values, path in [
            # One Secret: the server reads one config.json.
            ({"registry": {"pullSecret": ["one", "two"]}}, "/registry/pullSecret"),
            ({"registry": {"pullSecrets": ["one"]}}, "pullSecrets"),
            ({"registry": {"caBundle": {"configMap": "a", "secret": "b"}}}, "/registry/caBundle"),
            ({"registry": {"caBundle": {"key": ""}}}, "/registry/caBundle/key"),
            ({"registry": {"insecure": "registry.local"}}, "/registry/insecure"),
            ({"registry": {"insecure": ["http://registry.local"]}}, "/registry/insecure/0"),
            ({"registry": {"timeout": 30}}, "/registry/timeout"),
            ({"registry": {"timeout": "30"}}, "/registry/timeout"),
            ({"registry": {"verifyKeys": {"secret": "keys"}}}, "/registry/verifyKeys"),
            ({"registry": {"networkPolicy": {"egress": True}}}, "/registry/networkPolicy/egress"),
            ({"registry": {"networkPolicy": {"ports": ["https"]}}}, "/registry/networkPolicy/ports/0"),
            ({"registry": {"networkPolicy": {"peers": [{"cidr": "10.0.0.0/8"}]}}},
             "/registry/networkPolicy/peers/0"),
            # A tag can be moved to other code: pinned, or allowed.
            (with_oci_module(module="oci://registry.example.com/agyn/x:1.0"),
             "/policySet/policies/6"),
            (with_oci_module(verify={"path": "/etc/agyn/keys/cosign.pub"}),
             "/policySet/policies/6/verify"),
            ({"policySet": {"policies": [{"name": "run-as-non-root", "verify": {"key": "k"}}]}},
             "/policySet/policies/0/verify"),
            ({"policySet": {"policies": [{"name": "run-as-non-root", "allowFloatingTags": True}]}},
             "/policySet/policies/0/allowFloatingTags"),
            ({"policySet": {"policies": [{"name": "x", "modul": "oci://r.io/a/b"}]}},
             "/policySet/policies/0"),
            ({"policySet": {"verify": "-----BEGIN PUBLIC KEY-----", "policies": []}},
             "/policySet/verify"),
        ]:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmValuesError) as raised:
                    render(values)
                self.assertIn(path, str(raised.exception))

    def test_good_pins_are_accepted(self):
        for policy in ({},
                       {"module": "oci://registry.example.com/agyn/x:1.0", "sha256": DIGEST},
                       {"module": "oci://registry.example.com/agyn/x:1.0", "allowFloatingTags": True},
                       {"module": "oci://[::1]:5000/agyn/x@sha256:" + DIGEST}):
            with self.subTest(policy=policy):
                render(with_oci_module(**policy))


class Binary(unittest.TestCase):
    def test_the_env_is_what_serve_and_audit_read(self):
        # The release binary, as test_chart uses it: scripts/chart-test.sh
        # runs after the Rust tests built it.
        for command in ("serve", "audit"):
            with self.subTest(command=command):
                run = subprocess.run([BINARY, command, "--help"], capture_output=True, text=True,
                                     timeout=30, check=True)
                for name in ENV:
                    self.assertIn(f"[env: {name}=", run.stdout)


@unittest.skipUnless(os.environ.get("AGYN_TEST_KUBECONFIG"),
                     "AGYN_TEST_KUBECONFIG is not set; run scripts/test.sh with "
                     "KUBEBUILDER_ASSETS=.../shared/kube/bin")
class ApiServer(unittest.TestCase):
    """The workloads and NetworkPolicies, applied in a server-side dry run:
    the API server's own validation of the volumes, mounts and peers."""

    kubeconfig = os.environ.get("AGYN_TEST_KUBECONFIG")
    kubectl = os.path.join(os.environ.get("KUBEBUILDER_ASSETS", ""), "kubectl")
    namespace = f"chart-registry-{os.getpid()}"

    @classmethod
    def kubectl_run(cls, *args, **kwargs):
        return subprocess.run([cls.kubectl, "--kubeconfig", cls.kubeconfig, *args],
                              capture_output=True, text=True, **kwargs)

    @classmethod
    def setUpClass(cls):
        cls.kubectl_run("create", "namespace", cls.namespace, check=True)

    @classmethod
    def tearDownClass(cls):
        cls.kubectl_run("delete", "namespace", cls.namespace, "--wait=false")

    def test_a_server_side_dry_run_accepts_them(self):
        for mode in ("cronjob", "watch"):
            with self.subTest(mode=mode):
                values = with_oci_module(merged(REGISTRY, NETWORK, {
                    "audit": {"enabled": True, "mode": mode},
                    "registry": {"networkPolicy": {"peers": [{"ipBlock": {"cidr": "10.20.0.0/16"}}]}}}))
                _, docs = render(values, namespace=self.namespace)
                objects = [d for d in docs if d["kind"] in
                           ("Deployment", "CronJob", "NetworkPolicy", "ConfigMap")]
                run = self.kubectl_run("apply", "--server-side", "--dry-run=server",
                                       "--field-manager=chart-test", "-f", "-",
                                       input="".join(f"---\n{json.dumps(o)}\n" for o in objects))
                self.assertEqual(run.returncode, 0, run.stderr)


if __name__ == "__main__":
    unittest.main()
