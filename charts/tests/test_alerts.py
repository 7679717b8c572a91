"""The chart's optional PrometheusRule (prometheusRule.enabled): rendered by
the real Helm engine, checked by `promtool check rules`, and each alert
exercised by `promtool test rules` on synthetic series, so an expression
that names a metric the server does not export, or never fires, fails here.

promtool comes from Debian's `prometheus` package (.ci/run installs it);
without it on PATH the promtool tests are skipped with a message.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

from test_chart import NAMESPACE, ROOT, find, render

PROMTOOL = shutil.which("promtool")
NEEDS_PROMTOOL = unittest.skipUnless(
    PROMTOOL, "promtool is not on PATH: install Debian's `prometheus` package "
              "(apt-get install prometheus) to check the alert rules")

ENABLED = {"metrics": {"serviceMonitor": {"enabled": True}},
           "prometheusRule": {"enabled": True}}
# The labels the Prometheus Operator gives every series it scrapes through
# the chart's ServiceMonitor: the job is the Service's name.
SCRAPED = f'namespace="{NAMESPACE}", job="agyn-admission"'


def rule_groups(values=ENABLED):
    _, docs = render(values)
    return find(docs, "PrometheusRule")[0]["spec"]["groups"]


def alerts():
    return {r["alert"]: r for g in rule_groups() for r in g["rules"]}


def expected(alert, labels):
    """The alert as promtool reports it: its labels, and its annotations
    with $labels expanded."""
    rule = alerts()[alert]
    annotations = {k: re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], v)
                   for k, v in rule["annotations"].items()}
    return {"exp_labels": {**labels, **rule["labels"]}, "exp_annotations": annotations}


class Rendering(unittest.TestCase):
    def test_off_by_default(self):
        _, docs = render({})
        self.assertEqual([d for d in docs if d["kind"] == "PrometheusRule"], [])

    def test_labels_for_the_rule_selector(self):
        _, docs = render({**ENABLED, "prometheusRule": {"enabled": True,
                                                        "labels": {"release": "prom"}}})
        rule = find(docs, "PrometheusRule")[0]
        self.assertEqual(rule["metadata"]["labels"]["release"], "prom")
        self.assertEqual(rule["metadata"]["namespace"], NAMESPACE)

    def test_every_alert_selects_this_release_and_has_a_runbook_section(self):
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            runbook = f.read()
        headings = {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
                    for h in re.findall(r"^#+ (.*)$", runbook, re.M)}
        for name, rule in alerts().items():
            with self.subTest(alert=name):
                self.assertIn(SCRAPED, rule["expr"])
                self.assertIn(rule["labels"]["severity"], ["critical", "warning"])
                anchor = rule["annotations"]["runbook_url"].split("#")[1]
                self.assertIn(anchor, headings, f"docs/operations.md has no section #{anchor}")

    def test_the_runbook_shows_the_rules_as_rendered(self):
        """docs/operations.md quotes the rules of a default install."""
        with open(os.path.join(ROOT, "docs", "operations.md")) as f:
            text = f.read()
        block = re.search(r"<!-- rendered: prometheusRule -->\n```yaml\n(.*?)```", text, re.S)
        self.assertIsNotNone(block, "docs/operations.md lost its rendered rules block")
        self.assertEqual(yaml.safe_load(block.group(1)), {"groups": rule_groups()},
                         "docs/operations.md's alert rules differ from the chart's template: "
                         "copy the rendered spec.groups into it")


@NEEDS_PROMTOOL
class Promtool(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        with open(os.path.join(self.dir, "rules.yaml"), "w") as f:
            yaml.safe_dump({"groups": rule_groups()}, f)

    def promtool(self, *args):
        run = subprocess.run([PROMTOOL, *args], cwd=self.dir, capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        return run.stdout

    def test_check_rules(self):
        out = self.promtool("check", "rules", "rules.yaml")
        self.assertIn(f"SUCCESS: {len(alerts())} rules found", out)

    def test_each_alert_fires_when_it_should_and_not_otherwise(self):
        pod = {"namespace": NAMESPACE, "job": "agyn-admission", "pod": "agyn-admission-0"}
        series = lambda name, **labels: name + "{" + ", ".join(
            f'{k}="{v}"' for k, v in {**pod, **labels}.items()) + "}"
        tests = [
            # Healthy: scraped, answering, no errors, a set loaded.
            {"input_series": [
                {"series": series("up"), "values": "1x30"},
                {"series": series("agyn_admission_requests_total", endpoint="validate",
                                  outcome="allowed"), "values": "0+100x30"},
                {"series": series("agyn_admission_policies_loaded"), "values": "6x30"},
                {"series": series("agyn_admission_policy_set_reloads_total", result="loaded"),
                 "values": "0 1x29"},
            ], "alert_rule_test": [
                {"eval_time": "25m", "alertname": name, "exp_alerts": []} for name in alerts()
            ]},
            # Every replica down, then none scraped at all.
            {"input_series": [{"series": series("up"), "values": "0x30"}],
             "alert_rule_test": [{"eval_time": "10m", "alertname": "AgynAdmissionDown",
                                  "exp_alerts": [expected("AgynAdmissionDown", {})]}]},
            {"input_series": [{"series": 'up{job="other"}', "values": "1x30"}],
             "alert_rule_test": [{"eval_time": "10m", "alertname": "AgynAdmissionDown",
                                  "exp_alerts": [expected("AgynAdmissionDown",
                                                          {"namespace": NAMESPACE,
                                                           "job": "agyn-admission"})]}]},
            # 5 refused reviews a minute against 100 answered.
            {"input_series": [
                {"series": series("agyn_admission_requests_total", endpoint="validate",
                                  outcome="allowed"), "values": "0+100x30"},
                {"series": series("agyn_admission_requests_total", endpoint="validate",
                                  outcome="error"), "values": "0+5x30"},
            ], "alert_rule_test": [{"eval_time": "20m", "alertname": "AgynAdmissionRequestErrors",
                                    "exp_alerts": [expected("AgynAdmissionRequestErrors", {})]}]},
            # A policy that keeps missing its deadline.
            {"input_series": [
                {"series": series("agyn_admission_policy_errors_total", policy="my-policy",
                                  cause="deadline"), "values": "0+3x30"},
            ], "alert_rule_test": [{"eval_time": "15m", "alertname": "AgynAdmissionPolicyFailing",
                                    "exp_alerts": [expected("AgynAdmissionPolicyFailing",
                                                            {"policy": "my-policy",
                                                             "cause": "deadline"})]}]},
            # Every answer between 0.1 s and 1 s.
            {"input_series": [
                {"series": series("agyn_admission_request_duration_seconds_bucket",
                                  endpoint="validate", le="0.1"), "values": "0x30"},
                {"series": series("agyn_admission_request_duration_seconds_bucket",
                                  endpoint="validate", le="1.0"), "values": "0+60x30"},
                {"series": series("agyn_admission_request_duration_seconds_bucket",
                                  endpoint="validate", le="+Inf"), "values": "0+60x30"},
            ], "alert_rule_test": [{"eval_time": "20m", "alertname": "AgynAdmissionSlow",
                                    "exp_alerts": [expected("AgynAdmissionSlow", {})]}]},
            # A policy set edited into one that does not load.
            {"input_series": [
                {"series": series("agyn_admission_policy_set_reloads_total", result="refused"),
                 "values": "0 0 0 1x27"},
            ], "alert_rule_test": [{"eval_time": "5m", "alertname": "AgynAdmissionPolicySetRefused",
                                    "exp_alerts": [expected("AgynAdmissionPolicySetRefused",
                                                            {**pod, "result": "refused"})]}]},
            # A replica that never loads its set.
            {"input_series": [{"series": series("agyn_admission_policies_loaded"), "values": "0x30"}],
             "alert_rule_test": [{"eval_time": "15m", "alertname": "AgynAdmissionNoPolicies",
                                  "exp_alerts": [expected("AgynAdmissionNoPolicies", pod)]}]},
        ]
        for test in tests:
            test["interval"] = "1m"
        covered = {t["alertname"] for test in tests[1:] for t in test["alert_rule_test"]}
        self.assertEqual(covered, set(alerts()), "every alert needs a firing case")
        with open(os.path.join(self.dir, "tests.yaml"), "w") as f:
            yaml.safe_dump({"rule_files": ["rules.yaml"], "evaluation_interval": "1m",
                            "tests": tests}, f)
        self.promtool("test", "rules", "tests.yaml")


if __name__ == "__main__":
    unittest.main()
