"""The chart's README lists every value of values.schema.json, and the
defaults it shows are values.yaml's."""

import json
import os
import re
import unittest

import yaml

from test_chart import CHART

README = os.path.join(CHART, "README.md")


def schema_values(node, prefix=""):
    """Every value the schema defines: objects with properties are opened,
    everything else (free-form objects, lists, scalars) is one value."""
    found = {}
    for name, child in node.get("properties", {}).items():
        key = prefix + name
        if "properties" in child:
            found.update(schema_values(child, key + "."))
        else:
            found[key] = child
    return found


def readme_table():
    with open(README) as f:
        text = f.read()
    table = re.search(r"<!-- values-table:.*-->\n((?:\|.*\n)+)", text)
    assert table, "the chart README lost its values table"
    rows = {}
    for line in table.group(1).splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0].strip("`")] = cells[1]
    return rows


def default(values, key):
    for part in key.split("."):
        values = values[part]
    return values


class ValuesTable(unittest.TestCase):
    def test_every_schema_value_is_documented_and_nothing_else(self):
        with open(os.path.join(CHART, "values.schema.json")) as f:
            schema = json.load(f)
        documented, defined = set(readme_table()), set(schema_values(schema))
        self.assertEqual(sorted(defined - documented), [],
                         "values in values.schema.json missing from the chart README's table")
        self.assertEqual(sorted(documented - defined), [],
                         "values in the chart README's table that values.schema.json lacks")

    def test_the_defaults_shown_are_values_yaml_s(self):
        with open(os.path.join(CHART, "values.yaml")) as f:
            values = yaml.safe_load(f)
        for key, shown in readme_table().items():
            # A default written as one code span is a YAML value; prose
            # (the built-in set, the resources) is checked by reading.
            if not re.fullmatch(r"`[^`]*`", shown):
                continue
            with self.subTest(value=key):
                self.assertEqual(yaml.safe_load(shown.strip("`")), default(values, key))


if __name__ == "__main__":
    unittest.main()
