"""The Bicep in infra/ read as data with pycep-parser, and a few helpers to follow its references.

pycep gives each file as JSON: `parameters`, `variables`, `resources`, `modules`, `outputs`. An
expression is a plain string (an identifier or a literal: pycep does not tell them apart), a number,
a bool, a list, an object, or `{"function": ...}` / `{"operator": ...}` nodes. `resolve` replaces
identifiers that name a variable or a parameter with their value, following a module's parameters
to the arguments its caller passes, which is enough to read names and role ids across files.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pycep import BicepParser

REPO = Path(__file__).resolve().parents[3]
INFRA = REPO / "infra"
MAIN = INFRA / "main.bicep"

Json = Any
_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


@cache
def parse(path: Path) -> dict[str, Json]:
    parsed: dict[str, Json] = dict(BicepParser().parse(file_path=path))
    return parsed


def section(path: Path, name: str) -> dict[str, Json]:
    """`parameters`, `variables`, `resources`, `modules` or `outputs` of a file ({} when absent)."""
    found: dict[str, Json] | None = parse(path).get(name)
    return found or {}


def body(config: Mapping[str, Json]) -> dict[str, Json]:
    """The object of a resource or module, under any `[for ...]` loop and `if (...)` condition."""
    current: Mapping[str, Json] = config
    while "config" in current and ("loop_type" in current or "condition" in current):
        current = current["config"]
    return dict(current)


def loop_array(config: Mapping[str, Json]) -> Json | None:
    """The array a `[for ...]` resource or module iterates over; None when it is not a loop."""
    if "loop_type" not in config:
        return None
    return config["loop_type"]["detail"].get("array_name")


def loop_item(config: Mapping[str, Json]) -> str | None:
    if "loop_type" not in config:
        return None
    item: str | None = config["loop_type"]["detail"].get("item_name")
    return item


def accessor(expr: Json) -> str | None:
    """`a.b.c` / `a[i].id` for an identifier or a property / index accessor chain, else None."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "operator" in expr:
        operator = expr["operator"]
        operands = operator.get("operands", {})
        left = accessor(operands.get("operand_1"))
        right = accessor(operands.get("operand_2"))
        if left is None or right is None:
            return None
        if operator["type"] == "property_accessor":
            return f"{left}.{right}"
        if operator["type"] == "index_accessor":
            return f"{left}[{right}]"
    return None


def function_call(expr: Json, name: str) -> dict[str, Json] | None:
    """The parameters of a call to the function `name` (pycep's snake_case type), else None."""
    if isinstance(expr, dict) and "function" in expr and expr["function"]["type"] == name:
        params: dict[str, Json] = expr["function"].get("parameters") or {}
        return params
    return None


@dataclass(frozen=True)
class Module:
    """One `module symbol 'path' = ...` declaration."""

    file: Path
    symbol: str
    path: Path
    config: dict[str, Json]

    @property
    def params(self) -> dict[str, Json]:
        params: dict[str, Json] = body(self.config).get("params") or {}
        return params


def modules(path: Path) -> list[Module]:
    found = []
    for symbol, declaration in section(path, "modules").items():
        assert declaration["type"] == "local", f"{path.name}: module {symbol} is not a local file"
        target = (path.parent / declaration["detail"]["path"]).resolve()
        found.append(Module(path, symbol, target, declaration["config"]))
    return found


def module(symbol: str, path: Path = MAIN) -> Module:
    for candidate in modules(path):
        if candidate.symbol == symbol:
            return candidate
    raise KeyError(f"{path.name} has no module {symbol}")


def resources(path: Path, resource_type: str | None = None) -> dict[str, dict[str, Json]]:
    return {
        symbol: resource
        for symbol, resource in section(path, "resources").items()
        if resource_type is None or resource["type"] == resource_type
    }


def all_resources(resource_type: str) -> list[tuple[Path, str, dict[str, Json]]]:
    """The resources of a type that infra/ creates (`existing` references left out)."""
    return [
        (path, symbol, resource)
        for path in bicep_files()
        for symbol, resource in resources(path, resource_type).items()
        if not resource["existing"]
    ]


@dataclass(frozen=True)
class Scope:
    """Where identifiers are looked up: a file, and for a module the arguments of its caller."""

    file: Path
    args: Mapping[str, Json] | None = None
    caller: Scope | None = None

    @staticmethod
    def of(call: Module) -> Scope:
        return Scope(call.path, call.params, Scope(call.file))


def resolve(expr: Json, scope: Scope, depth: int = 0) -> Json:
    """`expr` with variables, parameters (their argument, else their default) and `${...}`
    interpolations of them replaced by their values, as far as they are known without deploying."""
    if depth > 40:
        raise RecursionError(f"cannot resolve {expr!r} in {scope.file.name}")
    if isinstance(expr, list):
        return [resolve(item, scope, depth + 1) for item in expr]
    if isinstance(expr, dict):
        return {key: resolve(value, scope, depth + 1) for key, value in expr.items()}
    if not isinstance(expr, str):
        return expr
    variables = section(scope.file, "variables")
    if expr in variables:
        return resolve(variables[expr]["value"], scope, depth + 1)
    parameters = section(scope.file, "parameters")
    if expr in parameters:
        if scope.args is not None and expr in scope.args:
            assert scope.caller is not None
            return resolve(scope.args[expr], scope.caller, depth + 1)
        return resolve(parameters[expr].get("default"), scope, depth + 1)

    def substitute(match: re.Match[str]) -> str:
        value = resolve(match.group(1), scope, depth + 1)
        return value if isinstance(value, str) and value != match.group(1) else match.group(0)

    return _INTERPOLATION.sub(substitute, expr)


def key(name: str) -> str:
    """An object key as written, without the quotes pycep keeps on quoted keys ('azd-env-name')."""
    return name[1:-1] if len(name) >= 2 and name[0] == name[-1] == "'" else name


def walk(expr: Json) -> Iterator[Json]:
    """Every node of an expression, depth first."""
    yield expr
    if isinstance(expr, dict):
        for value in expr.values():
            yield from walk(value)
    elif isinstance(expr, list):
        for item in expr:
            yield from walk(item)


def strings(expr: Json) -> set[str]:
    return {node for node in walk(expr) if isinstance(node, str)}


def name_value_pairs(expr: Json) -> dict[str, Json]:
    """`{ name: ..., value: ... }` objects anywhere in an expression, as name -> value."""
    return {
        node["name"]: node["value"]
        for node in walk(expr)
        if isinstance(node, dict)
        and set(node) == {"name", "value"}
        and isinstance(node["name"], str)
    }


def required_params(path: Path) -> set[str]:
    return {
        name
        for name, declaration in section(path, "parameters").items()
        if declaration.get("default") is None
    }


def decorator(declaration: Mapping[str, Json], kind: str) -> Json | None:
    for item in declaration.get("decorators") or []:
        if item.get("type") == kind:
            return item.get("argument")
    return None


def function_app_call() -> Module:
    """The module call in main.bicep that deploys the Function app (Microsoft.Web/sites)."""
    for call in modules(MAIN):
        if resources(call.path, "Microsoft.Web/sites"):
            return call
    raise AssertionError("main.bicep deploys no Microsoft.Web/sites")


def function_app_settings() -> dict[str, Json]:
    """The Function app's app settings (name -> value), followed into main.bicep's arguments."""
    call = function_app_call()
    ((_, site),) = resources(call.path, "Microsoft.Web/sites").items()
    expr = body(site["config"])["properties"]["siteConfig"]["appSettings"]
    return name_value_pairs(resolve(expr, Scope.of(call)))


@dataclass(frozen=True)
class Grant:
    """One role assignment that main.bicep asks a module to make."""

    module: str  # the module's symbol in main.bicep
    param: str  # the module parameter that holds the assignments
    principal: str  # the identity module whose principal gets the role, or DEVELOPER
    role_id: str  # the role definition id (a GUID)
    entry: dict[str, Json]  # the whole entry, e.g. with `container`


DEVELOPER = "principalId"  # main.bicep's parameter: the developer azd signs in as


def _entries(value: Json, where: str) -> Iterator[dict[str, Json]]:
    """The assignment objects of an argument: a literal array, `concat(...)` of them, either branch
    of `cond ? [...] : [...]`, or the body of a `[for ...]` (one entry standing for each item)."""
    if isinstance(value, list):
        yield from value
    elif (args := function_call(value, "concat")) is not None:
        for arg in args.values():
            if arg is not None:
                yield from _entries(arg, where)
    elif isinstance(value, dict) and value.get("operator", {}).get("type") == "conditional":
        operands = value["operator"]["operands"]
        yield from _entries(operands["true_value"], where)
        yield from _entries(operands["false_value"], where)
    elif isinstance(value, dict) and "loop_type" in value:
        yield value["config"]
    else:
        raise AssertionError(f"{where}: not an array of assignments main.bicep spells out: {value}")


def grants() -> list[Grant]:
    found = []
    scope = Scope(MAIN)
    for call in modules(MAIN):
        for param, value in call.params.items():
            if not param.endswith(("roleAssignments", "RoleAssignments")):
                continue
            for entry in _entries(value, f"{call.symbol}.{param}"):
                principal = accessor(entry["principalId"]) or ""
                if principal == DEVELOPER:
                    symbol = DEVELOPER
                else:
                    assert principal.endswith(".outputs.principalId"), principal
                    symbol = principal.split(".")[0]
                role_id = resolve(entry["roleDefinitionId"], scope)
                assert isinstance(role_id, str), f"{call.symbol}.{param}: {role_id!r}"
                found.append(Grant(call.symbol, param, symbol, role_id.lower(), entry))
    return found
