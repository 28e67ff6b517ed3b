"""Refresh tests/unit/infra/data/bicep_types.json: the resource type definitions of exactly the
types and API versions that infra/ declares, extracted from Azure/bicep-types-az (the generated
definitions the Bicep compiler itself type-checks resource bodies against).

    git clone --filter=blob:none https://github.com/Azure/bicep-types-az /tmp/bicep-types-az
    .venv/bin/python -m tests.unit.infra.refresh_bicep_types /tmp/bicep-types-az

Run it after adding a resource or changing an API version (test_bicep_schema fails until then).
It reads `generated/<dir>/<namespace>/<version>/types.json` at the checkout's HEAD (or --commit),
keeps the type nodes reachable from each resource type (descriptions dropped, references
renumbered into one list) and records, per resource type, every API version the repository has,
so that a version that does not exist is told apart from one not extracted yet.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path
from typing import Any

from tests.unit.infra import bicep_model as bicep

DATA = Path(__file__).resolve().parent / "data" / "bicep_types.json"


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True
    ).stdout


# Extracted besides what infra/ uses: the version ml.bicep once declared with a property that
# version does not have (anonymousPullEnabled), so test_bicep_schema can show the check catches it.
EXTRA = {("Microsoft.ContainerRegistry/registries", "2023-07-01")}


def used_types() -> set[tuple[str, str]]:
    return EXTRA | {
        (resource["type"], resource["api_version"])
        for path in bicep.bicep_files()
        for resource in bicep.resources(path).values()
    }


def _ref(node: Any) -> int | None:
    if isinstance(node, dict) and set(node) == {"$ref"}:
        return int(node["$ref"].rsplit("/", 1)[1])
    return None


def _reachable(types: list[dict[str, Any]], start: int) -> list[int]:
    seen: list[int] = []
    stack = [start]
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.append(index)

        def visit(node: Any) -> None:
            ref = _ref(node)
            if ref is not None:
                stack.append(ref)
            elif isinstance(node, dict):
                for value in node.values():
                    visit(value)
            elif isinstance(node, list):
                for item in node:
                    visit(item)

        visit(types[index])
    return sorted(seen)


def _rewrite(node: Any, mapping: dict[int, int]) -> Any:
    ref = _ref(node)
    if ref is not None:
        return {"$ref": mapping[ref]}
    if isinstance(node, dict):
        return {
            k: _rewrite(v, mapping)
            for k, v in node.items()
            if not (k == "description" and isinstance(v, str))  # a doc string, not a property
        }
    if isinstance(node, list):
        return [_rewrite(item, mapping) for item in node]
    return node


def extract(repo: Path, commit: str) -> dict[str, Any]:
    files = list(_git(repo, "ls-tree", "-r", "--name-only", commit, "generated").split("\n"))
    type_files = [f for f in files if f.endswith("/types.json")]
    out_types: list[Any] = []
    resources: dict[str, int] = {}
    versions: dict[str, list[str]] = {}
    cache: dict[str, list[dict[str, Any]]] = {}

    def load(path: str) -> list[dict[str, Any]]:
        if path not in cache:
            cache[path] = json.loads(_git(repo, "show", f"{commit}:{path}"))
        return cache[path]

    wanted = sorted(used_types())
    for resource_type, _ in wanted:
        if resource_type in versions:
            continue
        namespace = resource_type.split("/")[0].lower()
        found: set[str] = set()
        for path in type_files:
            parts = path.split("/")  # generated/<dir>/<namespace>/<version>/types.json
            if len(parts) == 5 and parts[2] == namespace:
                names = {t.get("name") for t in load(path) if t.get("$type") == "ResourceType"}
                if f"{resource_type}@{parts[3]}" in names:
                    found.add(parts[3])
        versions[resource_type] = sorted(found)
        cache.clear()  # keep memory bounded: one namespace at a time

    for resource_type, version in wanted:
        key = f"{resource_type}@{version}"
        namespace = resource_type.split("/")[0].lower()
        for path in type_files:
            parts = path.split("/")
            if len(parts) != 5 or parts[2] != namespace or parts[3] != version:
                continue
            types = load(path)
            starts = [
                i
                for i, t in enumerate(types)
                if t.get("$type") == "ResourceType" and t.get("name") == key
            ]
            if not starts:
                continue
            kept = _reachable(types, starts[0])
            mapping = {old: len(out_types) + n for n, old in enumerate(kept)}
            out_types.extend(_rewrite(types[old], mapping) for old in kept)
            resources[key] = mapping[starts[0]]
            break

    head = _git(repo, "log", "-1", "--format=%H %cI", commit).split()
    return {
        "source": {
            "repository": "Azure/bicep-types-az",
            "commit": head[0],
            "committed": head[1],
            "refresh": "python -m tests.unit.infra.refresh_bicep_types <checkout>",
        },
        "versions": versions,
        "resources": resources,
        "types": out_types,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("repo", type=Path, help="a clone of Azure/bicep-types-az (bare is fine)")
    parser.add_argument("--commit", default="HEAD")
    args = parser.parse_args()
    data = extract(args.repo, args.commit)
    DATA.parent.mkdir(exist_ok=True)
    DATA.write_text(json.dumps(data, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{DATA}: {len(data['resources'])} resource types, {len(data['types'])} type nodes")


if __name__ == "__main__":
    main()
