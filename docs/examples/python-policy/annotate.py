#!/usr/bin/env python3
"""Adds a policy component's metadata, or shows what a component holds.

    annotate.py COMPONENT METADATA.json   append METADATA.json to COMPONENT
                                          as the custom section
                                          `agyn.policy.metadata`
    annotate.py --inspect COMPONENT       print what the component holds, as
                                          JSON: its metadata, core modules,
                                          core instances, memories, tables

The host reads a component's metadata from a top-level custom section named
`agyn.policy.metadata` (docs/python-policies.md): byte 0x00, the section's
size (unsigned LEB128), the name's length (LEB128), the name, then the JSON.
A custom section may stand between any two sections, so appending one to
the end of a component leaves everything else as it was. Annotating again
replaces the section instead of adding a second one.

Only the standard library is used.
"""

import json
import sys

SECTION_NAME = "agyn.policy.metadata"
SEVERITIES = ("info", "low", "medium", "high", "critical")
COMPONENT_PREAMBLE = b"\x00asm\x0d\x00\x01\x00"
MODULE_PREAMBLE = b"\x00asm\x01\x00\x00\x00"


def fail(message):
    sys.exit("annotate.py: " + message)


def leb128(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class Reader:
    def __init__(self, data, pos=0, end=None):
        self.data = data
        self.pos = pos
        self.end = len(data) if end is None else end

    def at_end(self):
        return self.pos >= self.end

    def byte(self):
        if self.pos >= self.end:
            raise ValueError("unexpected end at offset %d" % self.pos)
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u(self):
        result = shift = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return result

    def bytes(self, n):
        if self.pos + n > self.end:
            raise ValueError("section runs past the end at offset %d" % self.pos)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def name(self):
        return self.bytes(self.u()).decode("utf-8")


def sections(data, pos, end, headers=False):
    """(id, start, end) of each section from `pos` to `end`, with the
    offset of its header first if `headers`."""
    r = Reader(data, pos, end)
    while not r.at_end():
        header = r.pos
        section_id = r.byte()
        size = r.u()
        start = r.pos
        if start + size > end:
            raise ValueError("section %d at offset %d runs past the end" % (section_id, start))
        yield (header, section_id, start, start + size) if headers else (section_id, start, start + size)
        r.pos = start + size


def custom_name(data, start, end):
    return Reader(data, start, end).name()


def check_metadata(raw):
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        fail("the metadata is not UTF-8 JSON: %s" % e)
    policies = meta.get("policies") if isinstance(meta, dict) else None
    if not isinstance(policies, list) or not policies:
        fail('the metadata needs a non-empty "policies" list')
    names = set()
    for i, p in enumerate(policies):
        where = "policies[%d]" % i
        if not isinstance(p, dict) or not isinstance(p.get("name"), str) or not p["name"]:
            fail("%s needs a name" % where)
        if p["name"] in names:
            fail("%s: the name %r is used twice" % (where, p["name"]))
        names.add(p["name"])
        if not isinstance(p.get("rules"), list) or not p["rules"]:
            fail("%s (%s) needs rules" % (where, p["name"]))
        if "severity" in p and p["severity"] not in SEVERITIES:
            fail("%s (%s): severity must be one of %s" % (where, p["name"], ", ".join(SEVERITIES)))
        schema = p.get("settingsSchema")
        if schema is not None and not isinstance(schema, dict):
            fail("%s (%s): settingsSchema must be an object or null" % (where, p["name"]))
    return meta


def annotate(component_path, metadata_path):
    with open(component_path, "rb") as f:
        data = f.read()
    if not data.startswith(COMPONENT_PREAMBLE):
        fail("%s is not a WebAssembly component" % component_path)
    with open(metadata_path, "rb") as f:
        raw = f.read()
    check_metadata(raw)
    # Compact JSON: the host parses it, nobody reads it in the binary.
    payload = json.dumps(json.loads(raw), separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    # Drop an earlier copy of the section, keep everything else byte for byte.
    kept = bytearray(data[:len(COMPONENT_PREAMBLE)])
    for header, section_id, start, end in sections(data, len(COMPONENT_PREAMBLE), len(data), True):
        if section_id == 0 and custom_name(data, start, end) == SECTION_NAME:
            continue
        kept += data[header:end]

    name = SECTION_NAME.encode("utf-8")
    body = leb128(len(name)) + name + payload
    kept += b"\x00" + leb128(len(body)) + body
    with open(component_path, "wb") as f:
        f.write(kept)


# --- inspection -------------------------------------------------------------

def limits(r):
    flags = r.byte()
    minimum = r.u()
    maximum = r.u() if flags & 0x01 else None
    return {"min": minimum, "max": maximum, "shared": bool(flags & 0x02), "64": bool(flags & 0x04)}


def reftype(r):
    b = r.byte()
    if b in (0x63, 0x64):  # (ref null? heaptype)
        r.byte()
    return b


def core_module(data, start, end):
    """Memories and tables of one core module, defined and imported, and
    the size of its data segments."""
    if data[start:start + 8] != MODULE_PREAMBLE:
        raise ValueError("core module at offset %d has no module preamble" % start)
    info = {"bytes": end - start, "memories": [], "tables": [], "imported_memories": [],
            "imported_tables": [], "data_bytes": 0, "functions": 0}
    for section_id, s, e in sections(data, start + 8, end):
        r = Reader(data, s, e)
        if section_id == 2:  # imports
            for _ in range(r.u()):
                module, field = r.name(), r.name()
                kind = r.byte()
                if kind == 0x00:
                    r.u()
                elif kind == 0x01:
                    reftype(r)
                    info["imported_tables"].append(dict(limits(r), name=module + "." + field))
                elif kind == 0x02:
                    info["imported_memories"].append(dict(limits(r), name=module + "." + field))
                elif kind == 0x03:
                    r.byte()
                    r.byte()
                elif kind == 0x04:
                    r.byte()
                    r.u()
                else:
                    raise ValueError("unknown import kind %d" % kind)
        elif section_id == 3:  # functions
            info["functions"] = r.u()
        elif section_id == 4:  # tables
            for _ in range(r.u()):
                if data[r.pos] == 0x40:  # table with an initializer
                    r.byte()
                    r.byte()
                reftype(r)
                info["tables"].append(limits(r))
                # an initializer expression would follow; none in practice
        elif section_id == 5:  # memories
            for _ in range(r.u()):
                info["memories"].append(limits(r))
        elif section_id == 11:  # data
            info["data_bytes"] = e - s
    return info


def component(data, start, end, out, depth=0):
    for section_id, s, e in sections(data, start, end):
        if section_id == 0:
            name = custom_name(data, s, e)
            if depth == 0:
                out["custom_sections"].append(name)
                if name == SECTION_NAME:
                    r = Reader(data, s, e)
                    r.name()
                    out["metadata"] = json.loads(data[r.pos:e].decode("utf-8"))
        elif section_id == 1:
            out["core_modules"].append(core_module(data, s, e))
        elif section_id == 2:
            r = Reader(data, s, e)
            for _ in range(r.u()):
                tag = r.byte()
                if tag == 0x00:
                    out["core_instances"]["instantiated"] += 1
                    r.u()
                    for _ in range(r.u()):
                        r.name()
                        r.byte()
                        r.u()
                else:
                    out["core_instances"]["from_exports"] += 1
                    for _ in range(r.u()):
                        r.name()
                        r.byte()
                        r.u()
        elif section_id == 4:
            out["nested_components"] += 1
            if data[s:s + 8] != COMPONENT_PREAMBLE:
                raise ValueError("nested component at offset %d has no preamble" % s)
            component(data, s + 8, e, out, depth + 1)
        elif section_id == 5:
            out["component_instances"] += Reader(data, s, e).u()


def inspect(path):
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(COMPONENT_PREAMBLE):
        fail("%s is not a WebAssembly component" % path)
    out = {"bytes": len(data), "custom_sections": [], "metadata": None, "core_modules": [],
           "core_instances": {"instantiated": 0, "from_exports": 0},
           "nested_components": 0, "component_instances": 0}
    component(data, len(COMPONENT_PREAMBLE), len(data), out)
    modules = out["core_modules"]
    out["summary"] = {
        "core_modules": len(modules),
        "core_instances_instantiated": out["core_instances"]["instantiated"],
        "defined_memories": sum(len(m["memories"]) for m in modules),
        "defined_tables": sum(len(m["tables"]) for m in modules),
        "largest_initial_memory_bytes": max(
            [mem["min"] * 65536 for m in modules for mem in m["memories"]] or [0]),
        "largest_table_elements": max(
            [t["min"] for m in modules for t in m["tables"]] or [0]),
    }
    return out


def main(argv):
    if len(argv) == 3 and argv[1] == "--inspect":
        json.dump(inspect(argv[2]), sys.stdout, indent=1)
        print()
    elif len(argv) == 3 and not argv[1].startswith("-"):
        annotate(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
