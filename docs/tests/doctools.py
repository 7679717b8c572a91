"""Shared by the documentation's tests: the repository's paths, the release
binary, and the output blocks the documents show.

A block a test checks is marked in the Markdown with a comment naming it,
right above the fenced block:

    <!-- doc-test: check-examples -->
    ```
    ...the output...
    ```

`expect_block` compares the block with what the test produced. Run the
tests with AGYN_DOCS_UPDATE=1 to write the produced output into the
documents instead (then review the diff).
"""

import os
import re
import shutil
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(ROOT, "target", "release", "agyn-admission")
UPDATE = os.environ.get("AGYN_DOCS_UPDATE") == "1"

NEEDS_BINARY = unittest.skipUnless(
    os.path.exists(BINARY), f"{BINARY} is missing: build it with `cargo build --release`")


def path(*parts):
    return os.path.join(ROOT, *parts)


def read(*parts):
    with open(path(*parts)) as f:
        return f.read()


def _block(text, name):
    pattern = re.compile(r"<!-- doc-test: " + re.escape(name) + r" -->\n(?:.*\n)*?"
                         r"(?P<indent> *)```[a-z]*\n(?P<body>(?:.*\n)*?)(?P=indent)```", re.M)
    return pattern.search(text)


def block(document, name):
    """The text of the fenced block marked `name` in `document`."""
    found = _block(read(document), name)
    if not found:
        raise AssertionError(f"{document} has no block marked <!-- doc-test: {name} -->")
    indent = len(found.group("indent"))
    return "".join(line[indent:] + "\n" for line in found.group("body").splitlines())


def expect_block(test, document, name, produced):
    """Asserts the document shows `produced` in its block `name` (or, with
    AGYN_DOCS_UPDATE=1, writes it there)."""
    produced = produced if produced.endswith("\n") else produced + "\n"
    if UPDATE:
        text = read(document)
        found = _block(text, name)
        if not found:
            raise AssertionError(f"{document} has no block marked <!-- doc-test: {name} -->")
        indent = found.group("indent")
        body = "".join(indent + line + "\n" if line else "\n" for line in produced.splitlines())
        with open(path(document), "w") as f:
            f.write(text[:found.start("body")] + body + text[found.end("body"):])
        return
    test.assertEqual(block(document, name), produced,
                     f"{document}'s block {name!r} differs from the real output: run the docs "
                     "tests with AGYN_DOCS_UPDATE=1 to write it, and review the diff")


def which(program):
    return shutil.which(program)
