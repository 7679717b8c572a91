"""Every agyn-admission command line the documents show uses flags the
binary has: a renamed or removed flag fails here, naming the document."""

import glob
import os
import re
import shlex
import subprocess
import unittest

from doctools import BINARY, NEEDS_BINARY, ROOT, read

DOCUMENTS = ["README.md", "charts/agyn-admission/README.md"] + sorted(
    os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))
SHELL_BLOCK = re.compile(r"^```(?:sh|bash)\n(.*?)^```", re.M | re.S)


def command_lines(text):
    """agyn-admission invocations in the shell blocks, continuations joined."""
    for body in SHELL_BLOCK.findall(text):
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0]
            for part in re.split(r"\||&&|;|\$\(|`", line):
                words = part.strip().rstrip("&").split()
                if words and os.path.basename(words[0]) == "agyn-admission":
                    yield part.strip().rstrip("&").strip()


def flags_of(*command):
    run = subprocess.run([BINARY, *command, "--help"], capture_output=True, text=True,
                         check=True)
    return set(re.findall(r"(?<![\w-])(--?[\w-]+)", run.stdout))


@NEEDS_BINARY
class Commands(unittest.TestCase):
    def test_documented_flags_exist(self):
        known = {"": flags_of()}
        for command in ["check", "serve", "rules", "fallback", "audit"]:
            known[command] = flags_of(command)
        for command in ["new", "build", "test", "inspect", "push", "pull"]:
            known[f"policy {command}"] = flags_of("policy", command)
        seen = 0
        for document in DOCUMENTS:
            for line in command_lines(read(document)):
                words = shlex.split(line, comments=True)[1:]
                positional = [w for w in words if not w.startswith("-")]
                command = " ".join(positional[:2]) if positional[:1] == ["policy"] \
                    else (positional[0] if positional else "")
                command = command if command in known else ""
                for word in words:
                    if word.startswith("-") and word != "-":
                        flag = word.split("=")[0]
                        seen += 1
                        with self.subTest(document=document, line=line, flag=flag):
                            self.assertIn(flag, known[command] | known[""],
                                          f"{document}: `{line}` uses {flag}, which "
                                          f"`agyn-admission {command} --help` lacks")
        self.assertGreater(seen, 10, "the commands were not found")

    def test_the_field_reference_is_a_policy_set_that_loads(self):
        import tempfile
        from doctools import block
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "set.yaml")
            with open(path, "w") as f:
                f.write(block("docs/policy-sets.md", "policy-set-fields"))
            run = subprocess.run([BINARY, "check", "--no-cache", "--policies", path,
                                  os.path.join(ROOT, "examples", "agyn", "compliant-pod.yaml")],
                                 capture_output=True, text=True)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)


if __name__ == "__main__":
    unittest.main()
