"""The SDK README's example policy is the crate tests/policies/no-latest-tag,
character for character, so copying it gives code that builds and passes
its tests (the workspace builds and tests that crate): no doctest lines,
nothing that works only inside this repository."""

import re
import unittest

from doctools import read


class SdkReadme(unittest.TestCase):
    def test_the_example_is_the_tested_crate(self):
        readme = read("policy-sdk/README.md")
        blocks = re.findall(r"```rust\n(.*?)```", readme, re.S)
        self.assertEqual(len(blocks), 1, "one Rust block: the policy")
        self.assertEqual(blocks[0], read("tests/policies/no-latest-tag/src/lib.rs"))
        self.assertNotRegex(blocks[0], r"(?m)^# ", "no hidden doctest lines")
