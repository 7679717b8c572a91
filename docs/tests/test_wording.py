"""The user-facing documents state current facts: no work-log talk (runs,
sessions, issue numbers), and every relative link points to a file that
exists."""

import os
import re
import unittest

from doctools import ROOT, read

DOCUMENTS = ["README.md", "charts/agyn-admission/README.md"] + sorted(
    f"docs/{name}" for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))

WORK_LOG = [
    r"\bsessions?\b",
    r"\bissues? #?\d+",
    r"(?-i:DESIGN\.md)",
    r"\b(last|previous|this|fourth|third) run\b",
    r"\bStatus\b\n",
]


class Wording(unittest.TestCase):
    def test_no_work_log_talk(self):
        for document in DOCUMENTS:
            text = read(document)
            for pattern in WORK_LOG:
                with self.subTest(document=document, pattern=pattern):
                    self.assertIsNone(re.search(pattern, text, re.I),
                                      f"{document}: {pattern!r} is history, not documentation")

    def test_relative_links_resolve(self):
        for document in DOCUMENTS:
            base = os.path.dirname(os.path.join(ROOT, document))
            for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", read(document)):
                if re.match(r"[a-z]+:", target):
                    continue
                with self.subTest(document=document, link=target):
                    self.assertTrue(os.path.exists(os.path.join(base, target)),
                                    f"{document} links to {target}, which does not exist")

    def test_anchors_resolve(self):
        def anchors(document):
            # GitHub's: lower case, punctuation dropped, spaces to hyphens.
            return {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
                    for h in re.findall(r"^#+ (.*)$", read(document), re.M)}
        for document in DOCUMENTS:
            for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", read(document)):
                if re.match(r"[a-z]+:", target):
                    continue
                linked = os.path.normpath(os.path.join(os.path.dirname(document), target)) \
                    if target else document
                with self.subTest(document=document, link=f"{target}#{anchor}"):
                    self.assertIn(anchor, anchors(linked), f"{document}: no section #{anchor}")

    def test_the_readme_stays_short(self):
        self.assertLessEqual(read("README.md").count("\n"), 250)


if __name__ == "__main__":
    unittest.main()
