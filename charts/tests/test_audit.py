"""The chart's audit (audit.enabled): `agyn-admission audit` as a CronJob or
a Deployment, its RBAC, and the report CRDs of crds/. Rendered by a real
Helm engine; with AGYN_TEST_KUBECONFIG (scripts/test.sh starts the API
server of ../shared/kube), installed on a real API server, the CRDs and
the ServiceAccount's permissions checked there, and the release binary's
audit run as that ServiceAccount.

Run by scripts/chart-test.sh.
"""

import copy
import glob
import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.request

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

from test_chart import BINARY, CHART, KUBERNETES, NAMESPACE, find, render

AUDIT = {"audit": {"enabled": True}}
WATCH = {"audit": {"enabled": True, "mode": "watch"}}
COMPONENT = "app.kubernetes.io/component"
MANAGED_BY = "app.kubernetes.io/managed-by=agyn-admission"

# What the validating webhooks judge, without subresources: the kinds the
# audit lists (the brief of `agyn-admission audit`).
JUDGED = {("", "pods"), ("", "replicationcontrollers"), ("apps", "deployments"),
          ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
          ("batch", "jobs"), ("batch", "cronjobs")}
READ = ["list", "watch"]
WRITE = ["list", "create", "update", "patch", "delete"]
REPORTS = {
    "openreports": {"group": "openreports.io", "version": "v1alpha1",
                    "kinds": {"Report": "reports", "ClusterReport": "clusterreports"}},
    "wgpolicyk8s": {"group": "wgpolicyk8s.io", "version": "v1alpha2",
                    "kinds": {"PolicyReport": "policyreports",
                              "ClusterPolicyReport": "clusterpolicyreports"}},
}
CRDS = {
    f"{plural}.{api['group']}": (api_name, kind, plural)
    for api_name, api in REPORTS.items() for kind, plural in api["kinds"].items()
}
SHORT_NAMES = {"reports": "reps", "clusterreports": "creps",
               "policyreports": "polr", "clusterpolicyreports": "cpolr"}


def audit_objects(docs):
    return [d for d in docs if d["metadata"].get("labels", {}).get(COMPONENT) == "audit"]


def workload(docs):
    found = [d for d in audit_objects(docs) if d["kind"] in ("CronJob", "Deployment")]
    assert len(found) == 1, found
    return found[0]


def pod_template(doc):
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]
    return doc["spec"]["template"]


def container(doc):
    containers = pod_template(doc)["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]


def grants(role):
    """Every (group, resource, verb) a ClusterRole grants."""
    for rule in role["rules"]:
        # No resourceNames to hide a wider grant, no nonResourceURLs.
        assert set(rule) == {"apiGroups", "resources", "verbs"}, rule
    return {(g, r, v) for rule in role["rules"] for g in rule["apiGroups"]
            for r in rule["resources"] for v in rule["verbs"]}


def judged_by_the_validating_webhooks(docs):
    configuration = find(docs, "ValidatingWebhookConfiguration")[0]
    judged = set()
    for hook in configuration["webhooks"]:
        judged |= {(g, r) for rule in hook["rules"] for g in rule["apiGroups"]
                   for r in rule["resources"] if "/" not in r}
    return judged


def crds():
    found = {}
    for path in sorted(glob.glob(os.path.join(CHART, "crds", "*.yaml"))):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                found[doc["metadata"]["name"]] = doc
    return found


def sample_report(api, kind, name, namespace=None, result="fail"):
    """A report of the shape `agyn-admission audit` writes."""
    group = REPORTS[api]
    scope = {"apiVersion": "v1", "kind": "Pod", "name": "web",
             "uid": "5f0c2a2e-7c55-4d4e-8b8a-1d2f3a4b5c6d"}
    metadata = {"name": name, "labels": {"app.kubernetes.io/managed-by": "agyn-admission"}}
    if namespace:
        metadata["namespace"] = namespace
        scope["namespace"] = namespace
    else:
        scope = {"apiVersion": "v1", "kind": "Namespace", "name": "team",
                 "uid": "0b8d3c1e-2f4a-4b6c-9d8e-7f6a5b4c3d2e"}
    report = {
        "apiVersion": f"{group['group']}/{group['version']}",
        "kind": kind,
        "metadata": metadata,
        "scope": scope,
        "summary": {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 0},
        "results": [
            {"source": "agyn-admission", "policy": "run-as-non-root", "rule": "runAsUser",
             "category": "Pod Security", "severity": "high",
             "timestamp": {"seconds": 1767225600, "nanos": 120000000},
             "result": result, "scored": True,
             "message": "container app: runAsUser 0 (root)",
             "properties": {"container": "app", "mode": "enforce"}},
            {"source": "agyn-admission", "policy": "drop-capabilities",
             "timestamp": {"seconds": 1767225600, "nanos": 0},
             "result": "pass", "scored": True, "message": "", "properties": {}},
        ],
    }
    if api == "openreports":
        report["source"] = "agyn-admission"
        report["configuration"] = {"limits": {"statusFilter": ["fail", "error"]}}
    return report


def undeclared(value, schema, path=""):
    """Paths of `value` its structural schema does not declare: fields the
    API server would prune without a word."""
    found = []
    if isinstance(value, dict) and schema.get("type") == "object":
        if "additionalProperties" in schema:
            for k, v in value.items():
                found += undeclared(v, schema["additionalProperties"], f"{path}.{k}")
        else:
            for k, v in value.items():
                if k not in schema.get("properties", {}):
                    if not (path == "" and k in ("apiVersion", "kind", "metadata")):
                        found.append(f"{path}.{k}")
                    continue
                if not (path == "" and k == "metadata"):
                    found += undeclared(v, schema["properties"][k], f"{path}.{k}")
    elif isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            found += undeclared(item, schema["items"], f"{path}[{i}]")
    return found


class Render(unittest.TestCase):
    def test_off_by_default(self):
        _, docs = render({})
        self.assertEqual(audit_objects(docs), [])
        self.assertEqual([d for d in docs if d["kind"] in ("CronJob", "ClusterRole",
                                                           "ClusterRoleBinding")], [])

    def test_the_cluster_role_reads_what_the_webhooks_judge_and_writes_only_reports(self):
        for api, reports in REPORTS.items():
            for mode in ("cronjob", "watch"):
                with self.subTest(api=api, mode=mode):
                    _, docs = render({"audit": {"enabled": True, "mode": mode, "reportApi": api}})
                    judged = judged_by_the_validating_webhooks(docs)
                    self.assertEqual(judged, JUDGED)
                    role = find(docs, "ClusterRole", "agyn-admission-audit")[0]
                    expected = ({(g, r, v) for g, r in judged for v in READ}
                                # For their opt-out label.
                                | {("", "namespaces", v) for v in READ}
                                | {(reports["group"], r, v) for r in reports["kinds"].values()
                                   for v in WRITE})
                    self.assertEqual(grants(role), expected)
                    self.assertEqual(len(find(docs, "ClusterRole")), 1)
                    self.assertEqual([d for d in docs if d["kind"] in ("Role", "RoleBinding")], [])

    def test_the_role_is_bound_to_the_audit_s_service_account_only(self):
        _, docs = render(AUDIT)
        binding = find(docs, "ClusterRoleBinding")[0]
        self.assertEqual(binding["roleRef"], {"apiGroup": "rbac.authorization.k8s.io",
                                              "kind": "ClusterRole", "name": "agyn-admission-audit"})
        self.assertEqual(binding["subjects"], [{"kind": "ServiceAccount",
                                                "name": "agyn-admission-audit",
                                                "namespace": NAMESPACE}])
        account = find(docs, "ServiceAccount", "agyn-admission-audit")[0]
        self.assertFalse(account["automountServiceAccountToken"])
        self.assertEqual(pod_template(workload(docs))["spec"]["serviceAccountName"],
                         "agyn-admission-audit")
        # The webhook's own ServiceAccount stays without any role.
        self.assertEqual([s for b in find(docs, "ClusterRoleBinding") for s in b["subjects"]
                          if s["name"] == "agyn-admission"], [])

    def test_each_mode_renders_its_workload(self):
        _, docs = render(AUDIT)
        cron_job = workload(docs)
        self.assertEqual(cron_job["kind"], "CronJob")
        self.assertEqual([d["kind"] for d in audit_objects(docs)],
                         ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "CronJob"])
        self.assertEqual(pod_template(cron_job)["spec"]["restartPolicy"], "Never")
        self.assertNotIn("ports", container(cron_job))

        _, docs = render(WATCH)
        deployment = workload(docs)
        self.assertEqual(deployment["kind"], "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 1)
        self.assertEqual(deployment["spec"]["strategy"], {"type": "Recreate"})
        self.assertEqual([d["kind"] for d in audit_objects(docs)],
                         ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Deployment",
                          "Service"])
        labels = pod_template(deployment)["metadata"]["labels"]
        for key, value in deployment["spec"]["selector"]["matchLabels"].items():
            self.assertEqual(labels[key], value)
        audit = container(deployment)
        self.assertEqual(audit["ports"], [{"name": "metrics", "containerPort": 9090}])
        self.assertEqual(audit["livenessProbe"]["httpGet"],
                         {"path": "/healthz", "port": "metrics", "scheme": "HTTP"})
        self.assertEqual(audit["readinessProbe"]["httpGet"],
                         {"path": "/readyz", "port": "metrics", "scheme": "HTTP"})
        service = find(docs, "Service", "agyn-admission-audit")[0]
        self.assertEqual(service["spec"]["selector"], deployment["spec"]["selector"]["matchLabels"])
        self.assertEqual(service["spec"]["ports"],
                         [{"name": "metrics", "port": 9090, "targetPort": "metrics"}])

    def test_the_pod_is_hardened_as_the_webhook_s(self):
        for values in (AUDIT, WATCH):
            with self.subTest(mode=values["audit"].get("mode", "cronjob")):
                _, docs = render(values)
                webhook = find(docs, "Deployment", "agyn-admission")[0]["spec"]["template"]["spec"]
                doc = workload(docs)
                pod = pod_template(doc)["spec"]
                self.assertEqual(pod["securityContext"], webhook["securityContext"])
                self.assertEqual(pod["securityContext"]["seccompProfile"], {"type": "RuntimeDefault"})
                self.assertEqual(pod["securityContext"]["runAsUser"], 65532)
                self.assertEqual(pod["securityContext"]["runAsGroup"], 65532)
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])
                audit = container(doc)
                self.assertEqual(audit["securityContext"], webhook["containers"][0]["securityContext"])
                self.assertEqual(audit["securityContext"]["capabilities"], {"drop": ["ALL"]})
                self.assertFalse(audit["securityContext"]["allowPrivilegeEscalation"])
                self.assertTrue(audit["securityContext"]["readOnlyRootFilesystem"])
                self.assertEqual(audit["image"], webhook["containers"][0]["image"])
                # It calls the API server: the one pod of the chart with a token.
                self.assertTrue(pod["automountServiceAccountToken"])
                self.assertFalse(webhook["automountServiceAccountToken"])
                for field in ("hostNetwork", "hostPID", "hostIPC"):
                    self.assertNotIn(field, pod)
                volumes = {v["name"]: v for v in pod["volumes"]}
                self.assertEqual(set(volumes), {"policy-set", "cache"})
                webhook_volumes = {v["name"]: v for v in webhook["volumes"]}
                self.assertEqual(volumes["policy-set"], webhook_volumes["policy-set"])
                self.assertEqual(volumes["cache"], webhook_volumes["cache"])
                self.assertEqual({m["mountPath"]: m.get("readOnly", False) for m in audit["volumeMounts"]},
                                 {"/etc/agyn-admission": True, "/var/cache/agyn-admission": False})
                self.assertEqual(audit["resources"], {"requests": {"cpu": "100m", "memory": "64Mi"},
                                                      "limits": {"memory": "256Mi"}})

    def test_the_policy_set_is_the_webhook_s_and_extra_modules_are_mounted_alike(self):
        values = {"audit": {"enabled": True},
                  "extraPolicyModules": {"enabled": True,
                                         "volume": {"configMap": {"name": "my-policies"}}}}
        _, docs = render(values)
        webhook = find(docs, "Deployment", "agyn-admission")[0]["spec"]["template"]["spec"]
        pod = pod_template(workload(docs))["spec"]
        self.assertIn({"name": "extra-policies", "configMap": {"name": "my-policies"}}, pod["volumes"])
        self.assertIn({"name": "extra-policies", "mountPath": "/policies/extra", "readOnly": True},
                      pod["containers"][0]["volumeMounts"])
        self.assertEqual([v for v in pod["volumes"] if v["name"] == "extra-policies"],
                         [v for v in webhook["volumes"] if v["name"] == "extra-policies"])
        config_map = find(docs, "ConfigMap", "agyn-admission-policy-set")[0]
        self.assertIn("policy-set.yaml", config_map["data"])
        self.assertIn("--policies=/etc/agyn-admission/policy-set.yaml", container(workload(docs))["args"])

    def test_the_args_follow_the_values(self):
        _, docs = render(AUDIT)
        self.assertEqual(container(workload(docs))["args"], [
            "audit",
            "--policies=/etc/agyn-admission/policy-set.yaml",
            "--cache-dir=/var/cache/agyn-admission",
            f"--webhook-namespace={NAMESPACE}",
            "--opt-out-label=agyn.io/admission=disabled",
            "--report-api=openreports",
            "--results=all",
            "--page-size=500",
            "--log-format=json",
        ])
        _, docs = render({"audit": {"enabled": True, "mode": "watch", "reportApi": "wgpolicyk8s",
                                    "results": "failures", "pageSize": 100},
                          "webhook": {"excludedNamespaces": ["legacy", "sandbox"],
                                      "optOutLabel": "example.com/policy"},
                          "logFormat": "text"}, namespace="platform-admission")
        self.assertEqual(container(workload(docs))["args"], [
            "audit",
            "--policies=/etc/agyn-admission/policy-set.yaml",
            "--cache-dir=/var/cache/agyn-admission",
            "--webhook-namespace=platform-admission",
            "--exclude-namespace=legacy",
            "--exclude-namespace=sandbox",
            "--opt-out-label=example.com/policy=disabled",
            "--report-api=wgpolicyk8s",
            "--results=failures",
            "--page-size=100",
            "--log-format=text",
            "--watch",
            "--metrics-listen=0.0.0.0:9090",
        ])

    def test_only_the_platform_namespaces_when_the_webhooks_judge_only_those(self):
        _, docs = render({"audit": {"enabled": True},
                          "webhook": {"otherNamespaces": {"enabled": False},
                                      "platformNamespaces": ["agyn", "agyn-workloads"]}})
        args = container(workload(docs))["args"]
        self.assertEqual([a for a in args if a.startswith("--namespace")],
                         ["--namespace=agyn", "--namespace=agyn-workloads"])
        _, docs = render(AUDIT)
        self.assertFalse([a for a in container(workload(docs))["args"]
                          if a.startswith("--namespace")])

    def test_the_cron_job_follows_the_values(self):
        _, docs = render(AUDIT)
        spec = workload(docs)["spec"]
        self.assertEqual({k: v for k, v in spec.items() if k != "jobTemplate"}, {
            "schedule": "0 * * * *", "concurrencyPolicy": "Forbid",
            "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 3,
            "startingDeadlineSeconds": 600})
        job = spec["jobTemplate"]["spec"]
        self.assertEqual(job["backoffLimit"], 2)
        # Under the hourly schedule: a stuck run never holds back the next.
        self.assertLess(job["activeDeadlineSeconds"], 3600)
        _, docs = render({"audit": {"enabled": True, "schedule": "*/15 * * * *",
                                    "timeZone": "Europe/Berlin", "concurrencyPolicy": "Replace",
                                    "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 5,
                                    "startingDeadlineSeconds": None, "activeDeadlineSeconds": 840,
                                    "backoffLimit": 0}})
        spec = workload(docs)["spec"]
        self.assertEqual({k: v for k, v in spec.items() if k != "jobTemplate"}, {
            "schedule": "*/15 * * * *", "timeZone": "Europe/Berlin", "concurrencyPolicy": "Replace",
            "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 5})
        job = spec["jobTemplate"]["spec"]
        self.assertEqual((job["backoffLimit"], job["activeDeadlineSeconds"]), (0, 840))

    def test_the_audit_s_pods_are_not_the_webhook_s(self):
        """The webhook's Deployment, Service, PodDisruptionBudget and
        NetworkPolicy select its pods by label: none may select the
        audit's (a Service sending AdmissionReviews to it, a NetworkPolicy
        cutting it from the API server), nor the audit's select the
        webhook's."""
        values = {**WATCH, "networkPolicy": {"enabled": True}}
        _, docs = render(values)
        audit_labels = pod_template(workload(docs))["metadata"]["labels"]
        webhook_labels = find(docs, "Deployment", "agyn-admission")[0]["spec"]["template"]["metadata"]["labels"]

        def selects(selector, labels):
            return all(labels.get(k) == v for k, v in selector.items())

        selectors = {
            "webhook Deployment": find(docs, "Deployment", "agyn-admission")[0]["spec"]["selector"]["matchLabels"],
            "webhook Service": find(docs, "Service", "agyn-admission")[0]["spec"]["selector"],
            "PodDisruptionBudget": find(docs, "PodDisruptionBudget")[0]["spec"]["selector"]["matchLabels"],
            "webhook NetworkPolicy": find(docs, "NetworkPolicy", "agyn-admission")[0]["spec"]["podSelector"]["matchLabels"],
        }
        for name, selector in selectors.items():
            with self.subTest(selector=name):
                self.assertTrue(selects(selector, webhook_labels))
                self.assertFalse(selects(selector, audit_labels))
        for name, selector in {
            "audit Deployment": workload(docs)["spec"]["selector"]["matchLabels"],
            "audit Service": find(docs, "Service", "agyn-admission-audit")[0]["spec"]["selector"],
            "audit NetworkPolicy": find(docs, "NetworkPolicy", "agyn-admission-audit")[0]["spec"]["podSelector"]["matchLabels"],
        }.items():
            with self.subTest(selector=name):
                self.assertTrue(selects(selector, audit_labels))
                self.assertFalse(selects(selector, webhook_labels))

    def test_the_network_policy_lets_the_audit_call_the_api_server_only(self):
        _, docs = render(AUDIT)
        self.assertEqual([d for d in docs if d["kind"] == "NetworkPolicy"], [])
        peers = [{"ipBlock": {"cidr": "10.0.0.10/32"}}]
        for values, ingress in [
            ({**AUDIT, "networkPolicy": {"enabled": True}}, []),
            ({**WATCH, "networkPolicy": {"enabled": True, "apiServerPeers": peers,
                                         "apiServerPorts": [443]}},
             [{"ports": [{"port": "metrics", "protocol": "TCP"}],
               "from": [{"namespaceSelector": {"matchExpressions": [
                   {"key": "kubernetes.io/metadata.name", "operator": "In",
                    "values": ["monitoring"]}]}}]}]),
        ]:
            with self.subTest(mode=values["audit"].get("mode", "cronjob")):
                _, docs = render(values)
                policy = find(docs, "NetworkPolicy", "agyn-admission-audit")[0]["spec"]
                self.assertEqual(policy["policyTypes"], ["Ingress", "Egress"])
                self.assertEqual(policy["ingress"], ingress)
                ports = values["networkPolicy"].get("apiServerPorts", [443, 6443])
                expected = {"ports": [{"port": p, "protocol": "TCP"} for p in ports]}
                if values["networkPolicy"].get("apiServerPeers"):
                    expected["to"] = peers
                self.assertEqual(policy["egress"], [expected])
                # The webhook's own policy is untouched: it calls nothing.
                self.assertEqual(find(docs, "NetworkPolicy", "agyn-admission")[0]["spec"]["egress"], [])

    def test_the_service_monitor_scrapes_the_watching_audit(self):
        monitoring = {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}}
        _, docs = render({**AUDIT, **monitoring})
        self.assertEqual(len(find(docs, "ServiceMonitor")), 1)
        _, docs = render({**WATCH, **monitoring})
        monitor = find(docs, "ServiceMonitor", "agyn-admission-audit")[0]
        service = find(docs, "Service", "agyn-admission-audit")[0]
        self.assertEqual(monitor["spec"]["selector"]["matchLabels"],
                         {k: service["metadata"]["labels"][k]
                          for k in monitor["spec"]["selector"]["matchLabels"]})
        self.assertEqual(monitor["spec"]["endpoints"],
                         [{"port": "metrics", "path": "/metrics", "interval": "30s"}])
        self.assertEqual(monitor["metadata"]["labels"]["release"], "prom")
        # The webhook's ServiceMonitor does not scrape the audit's Service
        # (its job label would then be the webhook's alerts').
        webhook_monitor = find(docs, "ServiceMonitor", "agyn-admission")[0]
        self.assertFalse(all(service["metadata"]["labels"].get(k) == v for k, v in
                             webhook_monitor["spec"]["selector"]["matchLabels"].items()))

    def test_the_audit_s_workloads_pass_the_chart_s_own_policies_unchanged(self):
        # The token opt-in follows the policy set's service-account-token
        # settings: without it, the pod would be denied.
        with open(os.path.join(CHART, "values.yaml")) as f:
            policy_set = yaml.safe_load(f)["policySet"]
        custom = copy.deepcopy(policy_set)
        for policy in custom["policies"]:
            if policy["name"] == "service-account-token":
                policy["settings"] = {"optInKey": "example.com/api", "optInValue": "granted"}
        for name, values, annotation in [
            ("cronjob", AUDIT, ("agyn.io/kube-api-access", "true")),
            ("watch", WATCH, ("agyn.io/kube-api-access", "true")),
            ("custom opt-in", {**AUDIT, "policySet": custom}, ("example.com/api", "granted")),
        ]:
            with self.subTest(switch=name):
                text, docs = render(values)
                annotations = pod_template(workload(docs))["metadata"]["annotations"]
                self.assertEqual(annotations.get(annotation[0]), annotation[1])
                # Judged by the policy set the chart renders.
                config_map = find(docs, "ConfigMap", "agyn-admission-policy-set")[0]
                with tempfile.NamedTemporaryFile("w", suffix=".yaml") as policies:
                    policies.write(config_map["data"]["policy-set.yaml"])
                    policies.flush()
                    run = subprocess.run([BINARY, "check", "--no-cache", "--policies", policies.name,
                                          "-o", "json", "-"], input=text, capture_output=True,
                                         text=True)
                self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
                kind = workload(docs)["kind"]
                results = [r for r in json.loads(run.stdout)
                           if r["kind"] == kind and r["name"] == "agyn-admission-audit"]
                self.assertEqual(len(results), 1, run.stdout)
                self.assertTrue(results[0]["allowed"], results[0])
                self.assertFalse(results[0].get("patch"), "the chart sets every field itself")
                self.assertEqual(results[0]["warnings"], [])

    def test_long_release_names_still_make_a_valid_cron_job(self):
        with helm.Chart.load(CHART) as chart:
            files = chart.render(AUDIT, name="a-very-long-release-name-for-the-platform-team",
                                 namespace=NAMESPACE)
        docs = [d for d in yaml.safe_load_all(files["agyn-admission/templates/audit.yaml"]) if d]
        cron_job = [d for d in docs if d["kind"] == "CronJob"][0]
        self.assertLessEqual(len(cron_job["metadata"]["name"]), 52)
        self.assertTrue(cron_job["metadata"]["name"].endswith("-audit"))
        for version in KUBERNETES:
            kubernetes_validate.validate(cron_job, version, strict=True)

    def test_bad_values_fail_at_install_with_their_path(self):
        for values, path in [
            ({"audit": {"mode": "daily"}}, "/audit/mode"),
            ({"audit": {"reportApi": "kyverno"}}, "/audit/reportApi"),
            ({"audit": {"results": "some"}}, "/audit/results"),
            ({"audit": {"pageSize": 0}}, "/audit/pageSize"),
            # The audit takes 1 to 10,000.
            ({"audit": {"pageSize": 20000}}, "/audit/pageSize"),
            ({"audit": {"concurrencyPolicy": "Never"}}, "/audit/concurrencyPolicy"),
            ({"audit": {"activeDeadlineSeconds": 0}}, "/audit/activeDeadlineSeconds"),
            ({"audit": {"schedule": ""}}, "/audit/schedule"),
            ({"audit": {"interval": "1h"}}, "interval"),
            ({"networkPolicy": {"apiServerPorts": [70000]}}, "/networkPolicy/apiServerPorts/0"),
        ]:
            with self.subTest(values=values):
                with self.assertRaises(helm.HelmValuesError) as raised:
                    render(values)
                self.assertIn(path, str(raised.exception))


class Crds(unittest.TestCase):
    """The report CRDs of crds/: those of the upstream APIs, which Kyverno
    and Kubewarden install too. kubernetes-validate has no schema for the
    reports themselves: they are checked against the CRDs' own schemas
    here, and by the API server below."""

    def test_the_crds_are_the_upstream_apis(self):
        found = crds()
        self.assertEqual(set(found), set(CRDS))
        columns = [("Kind", "string", ".scope.kind", 1), ("Name", "string", ".scope.name", 1),
                   ("Pass", "integer", ".summary.pass", 0), ("Fail", "integer", ".summary.fail", 0),
                   ("Warn", "integer", ".summary.warn", 0), ("Error", "integer", ".summary.error", 0),
                   ("Skip", "integer", ".summary.skip", 0),
                   ("Age", "date", ".metadata.creationTimestamp", 0)]
        for name, (api, kind, plural) in CRDS.items():
            with self.subTest(crd=name):
                crd = found[name]
                for version in KUBERNETES:
                    kubernetes_validate.validate(crd, version, strict=True)
                spec = crd["spec"]
                self.assertEqual(spec["group"], REPORTS[api]["group"])
                self.assertEqual(spec["names"], {"kind": kind, "listKind": f"{kind}List",
                                                 "plural": plural, "singular": kind.lower(),
                                                 "shortNames": [SHORT_NAMES[plural]]})
                self.assertEqual(spec["scope"], "Cluster" if kind.startswith("Cluster") else "Namespaced")
                [version] = spec["versions"]
                self.assertEqual((version["name"], version["served"], version["storage"]),
                                 (REPORTS[api]["version"], True, True))
                self.assertEqual([(c["name"], c["type"], c["jsonPath"], c.get("priority", 0))
                                  for c in version["additionalPrinterColumns"]], columns)
                self.assertEqual(version["subresources"], {})

    def test_the_schemas_hold_the_fields_the_audit_writes(self):
        for name, (api, kind, _) in CRDS.items():
            with self.subTest(crd=name):
                schema = crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                top = schema["properties"]
                self.assertEqual(set(top["scope"]["properties"]),
                                 {"apiVersion", "kind", "name", "namespace", "uid",
                                  "fieldPath", "resourceVersion"})
                self.assertEqual(set(top["summary"]["properties"]),
                                 {"pass", "fail", "warn", "error", "skip"})
                result = top["results"]["items"]
                self.assertEqual(result["required"], ["policy"])
                self.assertEqual(set(result["properties"]),
                                 {"source", "policy", "rule", "category", "severity", "timestamp",
                                  "result", "scored", "message", "properties", "resources",
                                  "resourceSelector"})
                self.assertEqual(result["properties"]["result"]["enum"],
                                 ["pass", "fail", "warn", "error", "skip"])
                self.assertEqual(result["properties"]["severity"]["enum"],
                                 ["critical", "high", "low", "medium", "info"])
                self.assertEqual(result["properties"]["timestamp"]["required"], ["nanos", "seconds"])
                self.assertEqual(result["properties"]["properties"]["additionalProperties"],
                                 {"type": "string"})
                openreports = api == "openreports"
                self.assertEqual("source" in top, openreports)
                self.assertEqual("configuration" in top, openreports)
                if openreports:
                    limits = top["configuration"]["properties"]["limits"]["properties"]
                    self.assertEqual(limits["statusFilter"]["items"]["enum"],
                                     ["pass", "fail", "warn", "error", "skip"])

    def test_reports_of_the_audit_s_shape_fit_and_a_bogus_result_does_not(self):
        for name, (api, kind, _) in CRDS.items():
            with self.subTest(crd=name):
                schema = crds()[name]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
                namespace = None if kind.startswith("Cluster") else "team"
                report = sample_report(api, kind, "pod-web", namespace)
                jsonschema.validate(report, schema)
                self.assertEqual(undeclared(report, schema), [],
                                 "the API server would prune these fields")
                with self.assertRaises(jsonschema.ValidationError):
                    jsonschema.validate(sample_report(api, kind, "x", namespace, result="bogus"), schema)
                no_policy = sample_report(api, kind, "x", namespace)
                del no_policy["results"][0]["policy"]
                with self.assertRaises(jsonschema.ValidationError):
                    jsonschema.validate(no_policy, schema)
        # The other API's fields are not this one's.
        wg = sample_report("wgpolicyk8s", "PolicyReport", "x", "team")
        wg["source"] = "agyn-admission"
        schema = crds()["policyreports.wgpolicyk8s.io"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        self.assertEqual(undeclared(wg, schema), [".source"])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@unittest.skipUnless(os.environ.get("AGYN_TEST_KUBECONFIG"),
                     "AGYN_TEST_KUBECONFIG is not set; run scripts/test.sh with "
                     "KUBEBUILDER_ASSETS=.../shared/kube/bin")
class ApiServer(unittest.TestCase):
    """The chart with the audit on a real API server (1.36): no
    controller-manager runs there, so the CronJob never starts a pod; the
    audit's permissions are checked with `kubectl auth can-i` here, and
    by the release binary's audit run as its ServiceAccount (AuditRun)."""

    kubeconfig = os.environ.get("AGYN_TEST_KUBECONFIG")
    kubectl = os.path.join(os.environ.get("KUBEBUILDER_ASSETS", ""), "kubectl")
    namespace = f"chart-audit-{os.getpid()}"
    release = "audit-cron"

    @classmethod
    def kubectl_run(cls, *args, **kwargs):
        return subprocess.run([cls.kubectl, "--kubeconfig", cls.kubeconfig, *args],
                              capture_output=True, text=True, **kwargs)

    @classmethod
    def setUpClass(cls):
        cls.config = helm.Config(kubeconfig_path=cls.kubeconfig, namespace=cls.namespace)
        cls.crds_before = set(cls.kubectl_run("get", "crd", "-o", "name", check=True).stdout.split())
        cls.config.install(CHART, cls.release, AUDIT, namespace=cls.namespace,
                           create_namespace=True, timeout=60)

    @classmethod
    def tearDownClass(cls):
        cls.config.uninstall(cls.release, timeout=60)
        cls.kubectl_run("delete", "namespace", cls.namespace, "--wait=false")
        cls.config.close()

    def account(self, namespace, release):
        return f"system:serviceaccount:{namespace}:{release}-agyn-admission-audit"

    def can_i(self, account, verb, resource, namespace=None):
        where = ["-n", namespace] if namespace else ["-A"]
        resource, _, subresource = resource.partition("/")
        if subresource:
            where.append(f"--subresource={subresource}")
        run = self.kubectl_run("auth", "can-i", verb, resource, *where, "--as", account)
        self.assertIn(run.stdout.strip(), ("yes", "no"), run.stderr)
        return run.stdout.strip() == "yes"

    def assert_permissions(self, account, api):
        own = REPORTS[api]
        other = REPORTS["wgpolicyk8s" if api == "openreports" else "openreports"]
        allowed = [("list", "pods", None), ("watch", "pods", None), ("list", "pods", "team"),
                   ("list", "replicationcontrollers", None), ("list", "deployments.apps", None),
                   ("watch", "statefulsets.apps", None), ("list", "daemonsets.apps", None),
                   ("list", "replicasets.apps", None), ("list", "jobs.batch", None),
                   ("watch", "cronjobs.batch", None), ("list", "namespaces", None),
                   ("watch", "namespaces", None)]
        for plural in own["kinds"].values():
            resource = f"{plural}.{own['group']}"
            where = None if plural.startswith("cluster") else "team"
            allowed += [(verb, resource, where) for verb in WRITE]
        denied = [("get", "secrets", None), ("list", "secrets", "team"), ("create", "pods", "team"),
                  ("get", "pods", "team"), ("get", "namespaces", None),
                  ("list", "configmaps", None), ("update", "pods", "team"), ("delete", "pods", "team"),
                  ("patch", "deployments.apps", "team"), ("patch", "namespaces", None),
                  ("list", "nodes", None), ("list", "serviceaccounts", None),
                  ("create", "serviceaccounts/token", "team"), ("get", "pods/log", "team"),
                  ("deletecollection", f"{list(own['kinds'].values())[0]}.{own['group']}", "team"),
                  ("list", "customresourcedefinitions.apiextensions.k8s.io", None),
                  ("escalate", "clusterroles.rbac.authorization.k8s.io", None)]
        for plural in other["kinds"].values():
            denied += [("create", f"{plural}.{other['group']}", None),
                       ("list", f"{plural}.{other['group']}", None)]
        for verb, resource, namespace in allowed:
            with self.subTest(account=account, allowed=f"{verb} {resource}"):
                self.assertTrue(self.can_i(account, verb, resource, namespace))
        for verb, resource, namespace in denied:
            with self.subTest(account=account, denied=f"{verb} {resource}"):
                self.assertFalse(self.can_i(account, verb, resource, namespace))

    def test_the_install_creates_the_report_crds_established(self):
        names = [f"crd/{name}" for name in CRDS]
        run = self.kubectl_run("wait", "--for", "condition=Established", "--timeout=60s", *names)
        self.assertEqual(run.returncode, 0, run.stderr)
        for name, shipped in crds().items():
            with self.subTest(crd=name):
                live = json.loads(self.kubectl_run("get", "crd", name, "-o", "json", check=True).stdout)
                for field in ("group", "names", "scope"):
                    self.assertEqual(live["spec"][field], shipped["spec"][field])
                self.assertEqual([v["name"] for v in live["spec"]["versions"] if v["served"]],
                                 [v["name"] for v in shipped["spec"]["versions"]])
                # Made by this install, unless there before (the API
                # server is shared): then Helm left it as it was.
                if f"customresourcedefinition.apiextensions.k8s.io/{name}" not in self.crds_before:
                    self.assertEqual(live["spec"]["versions"], shipped["spec"]["versions"])
        run = self.kubectl_run("api-resources", "-o", "name")
        for name in CRDS:
            self.assertIn(name, run.stdout.split())
        # The CronJob and its RBAC are there.
        name = f"{self.release}-agyn-admission-audit"
        for kind in ("cronjob", "serviceaccount"):
            self.kubectl_run("-n", self.namespace, "get", kind, name, check=True)
        for kind in ("clusterrole", "clusterrolebinding"):
            self.kubectl_run("get", kind, name, check=True)

    def test_reports_of_the_audit_s_shape_are_taken_and_a_bogus_one_refused(self):
        self.kubectl_run("wait", "--for", "condition=Established", "--timeout=60s",
                         *[f"crd/{name}" for name in CRDS], check=True)
        for name, (api, kind, plural) in CRDS.items():
            with self.subTest(kind=kind):
                namespace = None if kind.startswith("Cluster") else self.namespace
                report = sample_report(api, kind, f"pod-web-{os.getpid()}", namespace)
                run = self.kubectl_run("apply", "--server-side", "--field-manager=chart-test",
                                       "-o", "json", "-f", "-", input=json.dumps(report))
                self.assertEqual(run.returncode, 0, run.stderr)
                stored = json.loads(run.stdout)
                # Nothing pruned: every field the audit writes is in the schema.
                for field in ("scope", "summary", "results") + (
                        ("source", "configuration") if api == "openreports" else ()):
                    self.assertEqual(stored[field], report[field], field)
                where = ["-n", namespace] if namespace else []
                table = self.kubectl_run("get", f"{plural}.{REPORTS[api]['group']}", *where,
                                         report["metadata"]["name"], "-o", "wide", check=True).stdout
                header, row = table.splitlines()
                self.assertEqual(header.split()[:8],
                                 ["NAME", "KIND", "NAME", "PASS", "FAIL", "WARN", "ERROR", "SKIP"])
                self.assertEqual(row.split()[1:8], [report["scope"]["kind"], report["scope"]["name"],
                                                    "1", "1", "0", "0", "0"])
                bogus = sample_report(api, kind, f"bogus-{os.getpid()}", namespace, result="bogus")
                run = self.kubectl_run("apply", "--server-side", "--field-manager=chart-test",
                                       "-f", "-", input=json.dumps(bogus))
                self.assertNotEqual(run.returncode, 0, run.stdout)
                self.assertIn('Unsupported value: "bogus"', run.stderr)
                self.kubectl_run("delete", f"{plural}.{REPORTS[api]['group']}", *where,
                                 report["metadata"]["name"], check=True)

    def test_the_audit_s_account_reads_what_it_judges_and_writes_its_reports_only(self):
        self.assert_permissions(self.account(self.namespace, self.release), "openreports")
        # The webhook's own ServiceAccount still has nothing.
        webhook = f"system:serviceaccount:{self.namespace}:{self.release}-agyn-admission"
        self.assertFalse(self.can_i(webhook, "list", "pods"))

    def test_watch_mode_with_the_policy_report_api(self):
        namespace = f"chart-audit-watch-{os.getpid()}"
        release = "audit-watch"
        config = helm.Config(kubeconfig_path=self.kubeconfig, namespace=namespace)
        values = {"audit": {"enabled": True, "mode": "watch", "reportApi": "wgpolicyk8s"},
                  "networkPolicy": {"enabled": True}}
        name = f"{release}-agyn-admission-audit"
        try:
            config.install(CHART, release, values, namespace=namespace, create_namespace=True,
                           timeout=60)
            for kind in ("deployment", "service", "networkpolicy"):
                self.kubectl_run("-n", namespace, "get", kind, name, check=True)
            self.assertEqual(self.kubectl_run("-n", namespace, "get", "cronjob", "-o", "name",
                                              check=True).stdout, "")
            self.assert_permissions(self.account(namespace, release), "wgpolicyk8s")
        finally:
            config.uninstall(release, timeout=60)
            config.close()
            self.kubectl_run("delete", "namespace", namespace, "--wait=false")
        # Uninstalled with its RBAC.
        self.assertNotEqual(self.kubectl_run("get", "clusterrole", name).returncode, 0)


def audit_help():
    try:
        run = subprocess.run([BINARY, "audit", "--help"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    return run.stdout if run.returncode == 0 else None


@unittest.skipUnless(os.environ.get("AGYN_TEST_KUBECONFIG"),
                     "AGYN_TEST_KUBECONFIG is not set; run scripts/test.sh with "
                     "KUBEBUILDER_ASSETS=.../shared/kube/bin")
class AuditRun(unittest.TestCase):
    """The release binary's audit, run with the args the chart renders, as
    the chart's audit ServiceAccount (impersonated by the kubeconfig's
    `as`): it exits 0 and writes reports, so the ClusterRole suffices."""

    kubeconfig = os.environ.get("AGYN_TEST_KUBECONFIG")
    kubectl = os.path.join(os.environ.get("KUBEBUILDER_ASSETS", ""), "kubectl")
    release_namespace = "agyn-system"

    def setUp(self):
        self.help = audit_help()
        if self.help is None:
            self.skipTest(f"{BINARY} has no `audit` subcommand yet (`audit --help` fails): "
                          "run `cargo build --release` once it does")

    def kubectl_run(self, *args, **kwargs):
        return subprocess.run([self.kubectl, "--kubeconfig", self.kubeconfig, *args],
                              capture_output=True, text=True, **kwargs)

    def create(self, *objects):
        run = self.kubectl_run("apply", "--server-side", "-f", "-",
                               input="".join(f"---\n{json.dumps(o)}\n" for o in objects))
        self.assertEqual(run.returncode, 0, run.stderr)

    def impersonating(self, tmp, account):
        with open(self.kubeconfig) as f:
            config = yaml.safe_load(f)
        for user in config["users"]:
            user["user"]["as"] = account
        path = os.path.join(tmp, f"kubeconfig-{account.rsplit(':', 1)[1]}")
        with open(path, "w") as f:
            yaml.safe_dump(config, f)
        return path

    def command(self, docs, tmp, kubeconfig, watch_port=None):
        """The audit's command line as the chart renders it, with local
        paths for the mounted policy set and cache."""
        config_map = find(docs, "ConfigMap")[0]
        policies = os.path.join(tmp, "policy-set.yaml")
        with open(policies, "w") as f:
            f.write(config_map["data"]["policy-set.yaml"])
        cache = tempfile.mkdtemp(dir=tmp)
        args = []
        for arg in container(workload(docs))["args"]:
            if arg.startswith("--policies="):
                arg = f"--policies={policies}"
            elif arg.startswith("--cache-dir="):
                arg = f"--cache-dir={cache}"
            elif arg.startswith("--metrics-listen="):
                arg = f"--metrics-listen=127.0.0.1:{watch_port}"
            args.append(arg)
        if "--kubeconfig" in self.help:
            args.append(f"--kubeconfig={kubeconfig}")
        env = {**os.environ, "KUBECONFIG": kubeconfig}
        return [BINARY, *args], env

    def reports(self, api, namespace=None):
        plurals = list(REPORTS[api]["kinds"].values())
        resource = f"{plurals[0] if namespace else plurals[1]}.{REPORTS[api]['group']}"
        where = ["-n", namespace] if namespace else []
        run = self.kubectl_run("get", resource, *where, "-l", MANAGED_BY, "-o", "json", check=True)
        return json.loads(run.stdout)["items"]

    def scopes(self, api, namespace):
        return {(r["scope"]["kind"], r["scope"]["name"]): r for r in self.reports(api, namespace)}

    def test_the_chart_s_audit_as_its_service_account(self):
        for api in REPORTS:
            with self.subTest(api=api):
                self.audit_once(api)

    def test_the_watching_audit_serves_the_probes_the_chart_gives_it(self):
        self.audit_once("openreports", watch=True)

    def audit_once(self, api, watch=False):
        run_name = f"{api[:2]}{'-watch' if watch else ''}"
        release = f"audit-{run_name}"
        # Fresh namespaces: with no controller-manager, a deleted namespace
        # stays Terminating for good.
        team = f"audit-team-{run_name}-{os.getpid()}"
        opted_out = f"audit-opted-out-{run_name}-{os.getpid()}"
        values = {"audit": {"enabled": True, "reportApi": api, "mode": "watch" if watch else "cronjob"}}
        config = helm.Config(kubeconfig_path=self.kubeconfig, namespace=self.release_namespace)
        with helm.Chart.load(CHART) as chart:
            files = chart.render(values, name=release, namespace=self.release_namespace)
        docs = [d for body in files.values() for d in yaml.safe_load_all(body) if d]
        try:
            config.install(CHART, release, values, namespace=self.release_namespace,
                           create_namespace=True, timeout=60)
            self.create(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": team}},
                {"apiVersion": "v1", "kind": "Namespace",
                 "metadata": {"name": opted_out, "labels": {"agyn.io/admission": "disabled"}}})
            for namespace in (team, opted_out, self.release_namespace):
                self.kubectl_run("-n", namespace, "create", "serviceaccount", "default")
            pod = {"apiVersion": "v1", "kind": "Pod",
                   "spec": {"containers": [{"name": "app", "image": "ghcr.io/agynio/app:1.0"}]}}
            root = copy.deepcopy(pod)
            root["spec"]["containers"][0]["securityContext"] = {"runAsUser": 0}
            deployment = {"apiVersion": "apps/v1", "kind": "Deployment",
                          "metadata": {"name": "web", "namespace": team},
                          "spec": {"selector": {"matchLabels": {"app": "web"}},
                                   "template": {"metadata": {"labels": {"app": "web"}},
                                                "spec": root["spec"]}}}
            self.create(
                {**pod, "metadata": {"name": "bare", "namespace": team}},
                {**root, "metadata": {"name": "root", "namespace": team}},
                deployment,
                {**root, "metadata": {"name": "root", "namespace": opted_out}},
                {**root, "metadata": {"name": "own", "namespace": self.release_namespace}})

            with tempfile.TemporaryDirectory() as tmp:
                account = f"system:serviceaccount:{self.release_namespace}:{release}-agyn-admission-audit"
                kubeconfig = self.impersonating(tmp, account)
                if watch:
                    self.watch(docs, tmp, kubeconfig, api, team)
                else:
                    # A ServiceAccount without the ClusterRole: the audit
                    # fails, so the kubeconfig's `as` is honoured and the
                    # run below proves the role suffices.
                    nobody = self.impersonating(
                        tmp, f"system:serviceaccount:{self.release_namespace}:nobody")
                    command, env = self.command(docs, tmp, nobody)
                    run = subprocess.run(command, env=env, capture_output=True, text=True,
                                         timeout=180)
                    self.assertNotEqual(run.returncode, 0,
                                        "the audit exited 0 as a ServiceAccount without any "
                                        "role: the kubeconfig's `as` was ignored, or a "
                                        "forbidden list does not fail the run")
                    command, env = self.command(docs, tmp, kubeconfig)
                    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
                    self.assertEqual(run.returncode, 0, run.stderr)
                self.assert_reports(api, team, opted_out)
                if not watch:
                    # The report of an object gone is deleted by the next run.
                    self.kubectl_run("-n", team, "delete", "pod", "root", "--wait=false", check=True)
                    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
                    self.assertEqual(run.returncode, 0, run.stderr)
                    self.assertNotIn(("Pod", "root"), self.scopes(api, team))
                    self.assertIn(("Pod", "bare"), self.scopes(api, team))
        finally:
            config.uninstall(release, timeout=60)
            config.close()
            # Emptied first: no namespace controller runs here to empty a
            # deleted namespace, and the next audit would find its objects.
            resources = ",".join(["pods", "deployments"] + [
                f"{plural}.{api_['group']}" for api_ in REPORTS.values()
                for plural in api_["kinds"].values() if not plural.startswith("cluster")])
            for namespace in (team, opted_out):
                self.kubectl_run("-n", namespace, "delete", resources, "--all", "--wait=false")
                self.kubectl_run("delete", "namespace", namespace, "--wait=false")
            self.kubectl_run("-n", self.release_namespace, "delete", "pod", "own", "--wait=false")

    def assert_reports(self, api, team, opted_out):
        scopes = self.scopes(api, team)
        for expected in [("Pod", "bare"), ("Pod", "root"), ("Deployment", "web")]:
            self.assertIn(expected, scopes, sorted(scopes))
        root = scopes[("Pod", "root")]
        self.assertGreater(root["summary"]["fail"], 0, root)
        self.assertIn(("run-as-non-root", "fail"),
                      {(r["policy"], r["result"]) for r in root["results"]}, root)
        self.assertEqual(root["scope"]["namespace"], team)
        # Never audited: opted out by label, and the release's namespace.
        self.assertEqual(self.reports(api, opted_out), [])
        self.assertEqual(self.reports(api, self.release_namespace), [])

    def watch(self, docs, tmp, kubeconfig, api, team):
        port = free_port()
        command, env = self.command(docs, tmp, kubeconfig, watch_port=port)
        self.assertIn("--watch", command)
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)

        def status(path):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
                    return r.status
            except OSError:
                return None

        try:
            deadline = time.monotonic() + 120
            while status("/readyz") != 200:
                self.assertIsNone(process.poll(), "the watching audit exited")
                self.assertLess(time.monotonic(), deadline, "/readyz never answered 200")
                time.sleep(0.5)
            self.assertEqual(status("/healthz"), 200)
            self.assertEqual(status("/metrics"), 200)
            # Ready means a first scan is written.
            self.assertIn(("Pod", "root"), self.scopes(api, team))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                _, stderr = process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                _, stderr = process.communicate()
        self.assertEqual(process.returncode, 0, stderr)


if __name__ == "__main__":
    unittest.main()
