"""Resource bodies checked against the type definitions the Bicep compiler uses
(Azure/bicep-types-az), from the extract in data/bicep_types.json (see refresh_bicep_types.py).

For each resource declaration: its type and API version must exist, and every property path the
body sets must exist in that version's schema with a value of the right type. Values that are
expressions (function calls, operators other than `?:`, references to parameters, variables,
loop items or resources) cannot be typed without the compiler and are accepted; literal objects,
arrays, strings, integers and booleans are checked, as are both branches of `cond ? a : b` and the
body of a `[for ...]`. Literal strings must be among the allowed values where the schema has a
closed set; integers must be within the schema's bounds. Setting a read-only property fails too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from tests.unit.infra import bicep_model as bicep

DATA = Path(__file__).resolve().parent / "data" / "bicep_types.json"
READ_ONLY = 2
# Keys of a resource declaration that are Bicep's, not the resource type's.
LANGUAGE_KEYS = {"parent", "scope", "dependsOn"}
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Json = Any


@dataclass(frozen=True)
class Types:
    source: Mapping[str, str]
    versions: Mapping[str, list[str]]
    resources: Mapping[str, int]
    types: list[Json]

    def node(self, ref: Json) -> Json:
        return self.types[ref["$ref"]]


@cache
def load_types(path: Path = DATA) -> Types:
    data = json.loads(path.read_text())
    return Types(data["source"], data["versions"], data["resources"], data["types"])


@dataclass
class _Context:
    types: Types
    identifiers: set[str]
    where: str
    errors: list[str] = field(default_factory=list)

    def error(self, path: str, message: str) -> None:
        self.errors.append(f"{self.where}: {path}: {message}")


def identifiers(path: Path) -> set[str]:
    """Names an expression in `path` can refer to: a string equal to one is not a literal."""
    names = set()
    for name in ("parameters", "variables", "resources", "modules"):
        names |= set(bicep.section(path, name))
    for node in bicep.walk(bicep.parse(path)):
        if isinstance(node, dict) and "loop_type" in node:
            detail = node["loop_type"].get("detail") or {}
            names |= {v for k, v in detail.items() if k.endswith("_name") and isinstance(v, str)}
    return names | {"null"}


def _describe(types: Types, node: Json) -> str:
    kind = node["$type"]
    if kind == "StringLiteralType":
        return repr(node["value"])
    if kind == "UnionType":
        return " | ".join(_describe(types, types.node(e)) for e in node["elements"])
    if kind == "ObjectType":
        return f"object {node.get('name', '')}".strip()
    return str(kind).removesuffix("Type").lower()


def _literal_kind(value: Json, ctx: _Context) -> str | None:
    """'string', 'int', 'bool', 'object', 'array', or None for an expression or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return None if value in ctx.identifiers else "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        if "operator" in value or "function" in value:
            return None
        if "loop_type" in value:
            return "array"
        return "object"
    return None


def _accepts(node: Json, value: Json, ctx: _Context) -> bool:
    """Whether a value can be of this type, without reporting (to pick a union member)."""
    trial = _Context(ctx.types, ctx.identifiers, ctx.where)
    _check(node, value, "", trial)
    return not trial.errors


def _check(node: Json, value: Json, path: str, ctx: _Context) -> None:
    types = ctx.types
    if isinstance(value, dict) and "operator" in value:
        operator = value["operator"]
        if operator["type"] == "conditional":
            operands = operator["operands"]
            _check(node, operands["true_value"], path, ctx)
            _check(node, operands["false_value"], path, ctx)
        return
    kind = _literal_kind(value, ctx)
    if kind is None:
        return
    node_kind = node["$type"]
    if node_kind == "AnyType":
        return
    if node_kind == "UnionType":
        members = [types.node(e) for e in node["elements"]]
        if any(_accepts(member, value, ctx) for member in members):
            return
        # Report against the member of the same kind where there is one, for a useful message.
        same = [m for m in members if _kind_of(m) == kind]
        if len(same) == 1:
            _check(same[0], value, path, ctx)
        else:
            ctx.error(path, f"{value!r} is not {_describe(types, node)}")
        return
    expected = _kind_of(node)
    if expected != kind:
        ctx.error(path, f"{kind} given where the schema wants {_describe(types, node)}")
        return
    if node_kind == "StringLiteralType":
        if value != node["value"] and "${" not in value:
            ctx.error(path, f"{value!r} is not {node['value']!r}")
    elif node_kind == "IntegerType":
        if "minValue" in node and value < node["minValue"]:
            ctx.error(path, f"{value} is below the minimum {node['minValue']}")
        if "maxValue" in node and value > node["maxValue"]:
            ctx.error(path, f"{value} is above the maximum {node['maxValue']}")
    elif node_kind == "ArrayType":
        item = types.node(node["itemType"])
        if isinstance(value, dict):  # a [for ...] loop: its body is one item
            _check(item, value["config"], f"{path}[]", ctx)
        else:
            for index, element in enumerate(value):
                _check(item, element, f"{path}[{index}]", ctx)
    elif node_kind in ("ObjectType", "DiscriminatedObjectType"):
        _check_object(node, value, path, ctx)


def _kind_of(node: Json) -> str | None:
    return {
        "StringType": "string",
        "StringLiteralType": "string",
        "IntegerType": "int",
        "BooleanType": "bool",
        "ArrayType": "array",
        "ObjectType": "object",
        "DiscriminatedObjectType": "object",
    }.get(node["$type"])


def _object_properties(node: Json, value: Mapping[str, Json], ctx: _Context) -> dict[str, Json]:
    if node["$type"] == "ObjectType":
        return dict(node.get("properties") or {})
    properties = dict(node.get("baseProperties") or {})
    discriminator = node["discriminator"]
    chosen = value.get(discriminator)
    elements = node["elements"]
    if isinstance(chosen, str) and chosen in elements:
        element = ctx.types.node(elements[chosen])
        properties.update(element.get("properties") or {})
    else:  # unknown at this point: any element's properties may appear
        for ref in elements.values():
            properties.update(ctx.types.node(ref).get("properties") or {})
    return properties


def _check_object(node: Json, value: Mapping[str, Json], path: str, ctx: _Context) -> None:
    properties = _object_properties(node, value, ctx)
    additional = node.get("additionalProperties")
    for raw_key, item in value.items():
        name = bicep.key(raw_key)
        here = f"{path}.{name}" if path else name
        if name in properties:
            prop = properties[name]
            if prop.get("flags", 0) & READ_ONLY:
                ctx.error(here, "is read-only")
                continue
            _check(ctx.types.node(prop["type"]), item, here, ctx)
        elif additional is not None:
            _check(ctx.types.node(additional), item, here, ctx)
        elif "${" in name:
            ctx.error(here, "a computed key on an object that takes no additional properties")
        else:
            known = ", ".join(sorted(properties))
            ctx.error(here, f"unknown property (the schema has: {known})")


def check_resource(
    resource_type: str, api_version: str, config: Json, names: set[str], where: str
) -> list[str]:
    """The schema errors of one resource declaration (its pycep `config`, loops and conditions
    included); [] when it fits."""
    types = load_types()
    ctx = _Context(types, names, where)
    key = f"{resource_type}@{api_version}"
    if key not in types.resources:
        known = types.versions.get(resource_type)
        if known is None:
            ctx.error(key, "resource type not in the extract (unknown type, or refresh it)")
        elif api_version not in known:
            ctx.error(key, f"API version does not exist; the versions are {known}")
        else:
            ctx.error(key, "not extracted yet: run tests/unit/infra/refresh_bicep_types.py")
        return ctx.errors
    resource = types.types[types.resources[key]]
    body_type = types.node(resource["body"])
    body = {k: v for k, v in bicep.body(config).items() if k not in LANGUAGE_KEYS}
    _check_object(body_type, body, "", ctx)
    return ctx.errors


def check_file(path: Path) -> Iterator[str]:
    names = identifiers(path)
    for symbol, resource in bicep.resources(path).items():
        where = f"{path.name}:{symbol}"
        config = resource["config"]
        if resource["existing"]:
            config = {"name": bicep.body(config).get("name")}
        yield from check_resource(resource["type"], resource["api_version"], config, names, where)
