"""The CI recipes of docs/ci.md (docs/examples/github-actions.yaml and
gitlab-ci.yaml): their `agyn-admission check` commands, run here as the
jobs run them, on this repository's chart rendered by a real Helm engine
and on a denied manifest, with the release binary in place of the image.
"""

import json
import os
import shutil
import subprocess
import tempfile
import unittest
import xml.etree.ElementTree as ET

import yaml

from doctools import BINARY, NEEDS_BINARY, ROOT, path, read

try:
    import helm_python as helm
except ImportError:  # outside target/chart-venv
    helm = None

GITHUB = yaml.safe_load(read("docs", "examples", "github-actions.yaml"))
GITLAB = yaml.safe_load(read("docs", "examples", "gitlab-ci.yaml"))


def github_step(name):
    return next(s for s in GITHUB["jobs"]["check"]["steps"] if s.get("name") == name)


class Recipes(unittest.TestCase):
    def test_github_uploads_the_sarif_the_check_step_writes(self):
        self.assertIn("security-events", GITHUB["permissions"])
        upload = github_step("Upload to code scanning")
        self.assertTrue(upload["uses"].startswith("github/codeql-action/upload-sarif@"))
        self.assertIn(upload["with"]["sarif_file"], github_step("Judge the manifests")["run"])
        self.assertIn("cancelled()", upload["if"], "the report must be uploaded on a denial too")

    def test_gitlab_keeps_its_reports_when_the_job_fails(self):
        job = GITLAB["agyn-admission-check"]
        self.assertEqual(job["artifacts"]["when"], "always")
        self.assertIn(job["artifacts"]["reports"]["junit"], " ".join(job["script"]))
        self.assertEqual(GITLAB["render-charts"]["artifacts"]["paths"], ["rendered/"])


@NEEDS_BINARY
@unittest.skipUnless(helm, "helm-python-sdk is not installed (scripts/chart-test.sh installs it)")
class Commands(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.dir = tmp.name
        os.mkdir(os.path.join(self.dir, "rendered"))
        # What `helm template` writes for this repository's own chart.
        with helm.Chart.load(path("charts", "agyn-admission")) as chart:
            files = chart.render({}, name="agyn-admission", namespace="agyn-system")
        with open(os.path.join(self.dir, "rendered", "agyn-admission.yaml"), "w") as f:
            f.writelines(f"---\n# Source: {p}\n{body}\n" for p, body in sorted(files.items())
                         if p.endswith(".yaml") and body.strip())
        bin_dir = os.path.join(self.dir, "bin")
        os.mkdir(bin_dir)
        os.symlink(BINARY, os.path.join(bin_dir, "agyn-admission"))
        self.env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"],
                    "AGYN_ADMISSION": BINARY, "XDG_CACHE_HOME": os.path.join(self.dir, "cache")}

    def sh(self, command):
        return subprocess.run(["bash", "-c", command], cwd=self.dir, env=self.env,
                              capture_output=True, text=True)

    def deny_one(self):
        shutil.copy(os.path.join(ROOT, "examples", "agyn", "debug-pod.yaml"),
                    os.path.join(self.dir, "rendered", "debug.yaml"))

    def sarif(self):
        with open(os.path.join(self.dir, "agyn-admission.sarif")) as f:
            report = json.load(f)
        self.assertEqual(report["version"], "2.1.0")
        return report["runs"][0]["results"]

    def test_github_check_step(self):
        command = github_step("Judge the manifests")["run"]
        run = self.sh(command)
        self.assertEqual(run.returncode, 0, run.stderr)
        self.assertEqual(self.sarif(), [], "the chart's own objects are admitted")

        self.deny_one()
        run = self.sh(command)
        self.assertEqual(run.returncode, 1, "a denial fails the job")
        results = self.sarif()
        self.assertIn("readonly-root-filesystem", {r["ruleId"] for r in results})
        self.assertEqual({r["level"] for r in results}, {"error"})
        self.assertEqual({r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
                          for r in results}, {"rendered/debug.yaml"})

    def test_gitlab_check_script(self):
        script = GITLAB["agyn-admission-check"]["script"]
        run = self.sh("set -e\n" + "\n".join(script))
        self.assertEqual(run.returncode, 0, run.stderr)
        self.deny_one()
        run = self.sh("set -e\n" + "\n".join(script))
        self.assertEqual(run.returncode, 1, "a denial fails the job")
        self.assertTrue(any(r["ruleId"] == "drop-capabilities" for r in self.sarif()))
        suite = ET.parse(os.path.join(self.dir, "agyn-admission.xml")).getroot()[0]
        self.assertEqual(suite.get("failures"), "1")
        failure = suite.find("testcase/failure")
        self.assertIn("readonly-root-filesystem", failure.text)


if __name__ == "__main__":
    unittest.main()
