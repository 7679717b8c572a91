"""docs/cli.md is the binary's --help, as scripts/cli-docs.py writes it."""

import subprocess
import sys
import unittest

from doctools import BINARY, NEEDS_BINARY, path


@NEEDS_BINARY
class CliReference(unittest.TestCase):
    def test_docs_cli_md_matches_the_help(self):
        run = subprocess.run([sys.executable, path("scripts", "cli-docs.py"), "--check",
                              "--binary", BINARY], capture_output=True, text=True)
        self.assertEqual(run.returncode, 0,
                         f"{run.stdout}{run.stderr}\n"
                         "docs/cli.md is out of date: run `python3 scripts/cli-docs.py`")

    def test_every_command_is_documented(self):
        with open(path("docs", "cli.md")) as f:
            text = f.read()
        for command in ("", " check", " serve"):
            self.assertIn(f"## `agyn-admission{command}`", text)


if __name__ == "__main__":
    unittest.main()
