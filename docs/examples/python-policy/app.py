"""Two admission policies in Python, as one agyn:policy@0.2.0 component.

- no-latest-tag: every container of a Pod (containers, initContainers,
  ephemeralContainers, in that order) names an image tag other than
  `latest`, or a digest. Settings: {"exemptRegistries": ["registry.example"]}.
- service-type: a Service's spec.type is ClusterIP or ExternalName, or one
  of the types in settings {"allowedTypes": ["NodePort", "LoadBalancer"]}.

componentize-py turns this module into a component of the `policy` world
(policy-sdk/wit/policy.wit); build.sh says how. The class `WitWorld` below
is the world's exports. The bindings (`wit_world`, `componentize_py_types`)
are generated at build time; nothing else outside the standard library is
used.

Every call is judged on its own: an exception in one policy becomes that
call's `Err`, never a trap, so the other policies of the call still give
their verdicts.
"""

import json

import wit_world
from componentize_py_types import Err, Ok
from wit_world.imports import types


class SettingsError(Exception):
    """Settings the policy refuses; the message is the reason."""


# --- no-latest-tag ---------------------------------------------------------

# Container lists of a Pod's spec, in the order Kubernetes lists them, with
# the noun each violation names.
CONTAINER_LISTS = (
    ("containers", "container"),
    ("initContainers", "init container"),
    ("ephemeralContainers", "ephemeral container"),
)

DEFAULT_REGISTRY = "docker.io"


def check_keys(settings, known):
    unknown = sorted(k for k in settings if k not in known)
    if unknown:
        raise SettingsError(
            "unknown field %s, expected %s"
            % (", ".join(json.dumps(k) for k in unknown), " or ".join(json.dumps(k) for k in known))
        )


def string_list(settings, key):
    value = settings.get(key, [])
    if not isinstance(value, list):
        raise SettingsError("%s must be a list of strings" % key)
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SettingsError("%s[%d] must be a string (is %s)" % (key, i, json.dumps(item)))
        if not item.strip():
            raise SettingsError("%s[%d] must not be empty" % (key, i))
    return value


def no_latest_tag_settings(settings):
    check_keys(settings, ("exemptRegistries",))
    registries = string_list(settings, "exemptRegistries")
    # "ghcr.io/", "ghcr.io" and "GHCR.io" name the same registry; a path
    # after the host ("ghcr.io/team") exempts that path only.
    return [r.strip().rstrip("/").lower() for r in registries]


def split_image(image):
    """(registry, repository, tag or None, digest or None) of a reference."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first.lower(), rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    return registry, repository, tag, (digest or None)


def exempt(registry, repository, exempt_registries):
    full = registry + "/" + repository.lower()
    return any(full == e or full.startswith(e + "/") or registry == e for e in exempt_registries)


def no_latest_tag(obj, settings):
    exempt_registries = no_latest_tag_settings(settings)
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("the Pod has no spec")
    violations = []
    for field, noun in CONTAINER_LISTS:
        containers = spec.get(field) or []
        if not isinstance(containers, list):
            raise ValueError("spec.%s is not a list" % field)
        for container in containers:
            if not isinstance(container, dict):
                raise ValueError("spec.%s has an entry that is not an object" % field)
            image = container.get("image")
            if not isinstance(image, str) or not image:
                # The API server refuses a container without an image.
                continue
            registry, repository, tag, digest = split_image(image)
            if digest or (tag is not None and tag != "latest"):
                continue
            if exempt(registry, repository, exempt_registries):
                continue
            violations.append(
                "%s %s: image must name a version or a digest (is %s)"
                % (noun, json.dumps(container.get("name", "")), json.dumps(image))
            )
    return violations


# --- service-type ----------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
ALWAYS_ALLOWED = ("ClusterIP", "ExternalName")


def service_type_settings(settings):
    check_keys(settings, ("allowedTypes",))
    allowed = string_list(settings, "allowedTypes")
    for i, t in enumerate(allowed):
        if t not in SERVICE_TYPES:
            raise SettingsError(
                "allowedTypes[%d] must be one of %s (is %s)"
                % (i, ", ".join(SERVICE_TYPES), json.dumps(t))
            )
    return set(allowed) | set(ALWAYS_ALLOWED)


def service_type(obj, settings):
    allowed = service_type_settings(settings)
    if obj.get("kind") != "Service":
        # The metadata's rules send only Services; anything else is not ours.
        return []
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise ValueError("spec is not an object")
    kind = spec.get("type", "ClusterIP")
    if kind in allowed or kind not in SERVICE_TYPES:
        # An unknown type is the API server's to refuse.
        return []
    return [
        "spec.type must be one of %s (is %s)"
        % (", ".join(t for t in SERVICE_TYPES if t in allowed), json.dumps(kind))
    ]


# --- the world -------------------------------------------------------------

# name -> (settings check, judge); a judge returns the list of violations.
POLICIES = {
    "no-latest-tag": (no_latest_tag_settings, no_latest_tag),
    "service-type": (service_type_settings, service_type),
}


def parse_settings(text):
    """Settings JSON as a dict; "" and null mean the defaults."""
    text = text.strip()
    if text in ("", "null"):
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise SettingsError("not JSON: %s" % e)
    if not isinstance(value, dict):
        raise SettingsError("must be an object")
    return value


def unknown_policy(name):
    return "this component has no policy named %s (it has %s)" % (
        json.dumps(name),
        ", ".join(POLICIES),
    )


def judge(call, obj):
    entry = POLICIES.get(call.policy)
    if entry is None:
        return Err(unknown_policy(call.policy))
    try:
        settings = parse_settings(call.settings)
        violations = entry[1](obj, settings)
    except SettingsError as e:
        return Err("invalid settings: %s" % e)
    except ValueError as e:
        return Err("cannot read the object: %s" % e)
    except Exception as e:  # a bug in the policy: its error, not a trap
        return Err("internal error: %s: %s" % (type(e).__name__, e))
    return Ok(types.Verdict(violations=violations, warnings=[], mutated=False))


class WitWorld(wit_world.WitWorld):
    def policies(self):
        return list(POLICIES)

    def validate_settings(self, policy, settings):
        entry = POLICIES.get(policy)
        if entry is None:
            raise Err(unknown_policy(policy))
        try:
            entry[0](parse_settings(settings))
        except SettingsError as e:
            raise Err("invalid settings: %s" % e)
        except Exception as e:
            raise Err("invalid settings: internal error: %s: %s" % (type(e).__name__, e))

    def evaluate(self, request, object, old_object, calls):
        # `request` and `old_object` are not needed by these policies; not
        # parsing them saves a third of an evaluation's JSON work.
        try:
            obj = json.loads(object)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except Exception as e:
            message = "cannot read the object: %s" % e
            return types.Evaluation(verdicts=[Err(message) for _ in calls], mutated_object=None)
        # Neither policy mutates: a call with `mutate` set only validates.
        return types.Evaluation(
            verdicts=[judge(call, obj) for call in calls],
            mutated_object=None,
        )
