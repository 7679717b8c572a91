"""The pre-commit hook (.pre-commit-hooks.yaml), used as docs/ci.md tells a
team to: a throwaway repository whose .pre-commit-config.yaml names this
repository's hook, with the release binary on PATH. A commit of a denied
manifest fails; a commit of a compliant one passes.

pre-commit comes from PyPI; scripts/test.sh installs it in the chart tests'
venv (target/chart-venv).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

from doctools import BINARY, NEEDS_BINARY, ROOT, path

PRE_COMMIT = (shutil.which("pre-commit", path=os.path.dirname(sys.executable))
              or shutil.which("pre-commit"))


@NEEDS_BINARY
@unittest.skipUnless(PRE_COMMIT, "pre-commit is not installed: pip install pre-commit "
                                 "(scripts/test.sh installs it in target/chart-venv)")
class PreCommitHook(unittest.TestCase):
    def setUp(self):
        tmp = tempfile.TemporaryDirectory()
        self.addCleanup(tmp.cleanup)
        self.tmp = tmp.name
        bin_dir = os.path.join(self.tmp, "bin")
        os.mkdir(bin_dir)
        os.symlink(BINARY, os.path.join(bin_dir, "agyn-admission"))
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([bin_dir, os.path.dirname(PRE_COMMIT), os.environ["PATH"]]),
            "PRE_COMMIT_HOME": os.path.join(self.tmp, "pre-commit-cache"),
            "XDG_CACHE_HOME": os.path.join(self.tmp, "cache"),
            "GIT_AUTHOR_NAME": "Test", "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test", "GIT_COMMITTER_EMAIL": "test@example.com",
            "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
        }
        # The hook's repository: this repository's .pre-commit-hooks.yaml as
        # it is in the working tree, committed.
        hooks = os.path.join(self.tmp, "agyn-admission")
        os.mkdir(hooks)
        shutil.copy(path(".pre-commit-hooks.yaml"), hooks)
        self.git(hooks, "init", "-q")
        self.git(hooks, "add", ".pre-commit-hooks.yaml")
        self.git(hooks, "commit", "-q", "-m", "hooks")
        rev = self.git(hooks, "rev-parse", "HEAD").stdout.strip()
        # The team's repository, as docs/ci.md configures it.
        self.app = os.path.join(self.tmp, "app")
        os.makedirs(os.path.join(self.app, "deploy"))
        self.git(self.app, "init", "-q")
        with open(os.path.join(self.app, ".pre-commit-config.yaml"), "w") as f:
            f.write(f"""repos:
  - repo: {hooks}
    rev: {rev}
    hooks:
      - id: agyn-admission-check
        files: ^deploy/
""")
        self.run_in_app(PRE_COMMIT, "install")

    def git(self, cwd, *args):
        return subprocess.run(["git", *args], cwd=cwd, env=self.env, check=True,
                              capture_output=True, text=True)

    def run_in_app(self, *args, check=True):
        run = subprocess.run(args, cwd=self.app, env=self.env, capture_output=True, text=True)
        if check:
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        return run

    def stage(self, example, as_name):
        shutil.copy(os.path.join(ROOT, "examples", "agyn", example),
                    os.path.join(self.app, "deploy", as_name))
        self.git(self.app, "add", "-A")

    def test_a_denied_manifest_fails_the_commit_and_a_compliant_one_passes(self):
        self.stage("debug-pod.yaml", "debug.yaml")
        denied = self.run_in_app("git", "commit", "-m", "debug pod", check=False)
        self.assertNotEqual(denied.returncode, 0, "the commit of a denied pod went through")
        output = denied.stdout + denied.stderr
        self.assertIn("agyn-admission check", output)
        self.assertIn("Failed", output)
        self.assertIn("DENIED   Pod agyn/debug  deploy/debug.yaml#1", output)
        self.assertIn("readonly-root-filesystem", output)
        self.assertEqual(self.git(self.app, "rev-list", "--all").stdout, "", "nothing committed")

        os.remove(os.path.join(self.app, "deploy", "debug.yaml"))
        self.stage("compliant-pod.yaml", "api.yaml")
        passed = self.run_in_app("git", "commit", "-m", "api pod")
        # git hands a hook's output to stderr.
        self.assertIn("agyn-admission check", passed.stderr)
        self.assertIn("Passed", passed.stderr)
        self.assertEqual(len(self.git(self.app, "rev-list", "--all").stdout.split()), 1)

    def test_files_outside_the_pattern_are_not_checked(self):
        # The config itself is YAML but not a manifest: `files: ^deploy/`
        # keeps it out, so nothing runs.
        self.git(self.app, "add", ".pre-commit-config.yaml")
        run = self.run_in_app("git", "commit", "-m", "config")
        self.assertIn("(no files to check)Skipped", run.stderr)


if __name__ == "__main__":
    unittest.main()
