"""Every resource in infra/ fits the schema of its type and API version (Azure/bicep-types-az,
extracted into data/bicep_types.json), and the check fails on each kind of seeded mistake."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.unit.infra import bicep_model as bicep
from tests.unit.infra.bicep_model import INFRA
from tests.unit.infra.bicep_schema import check_file, load_types


def _ids(paths: list[Path]) -> list[str]:
    return [str(path.relative_to(INFRA)) for path in paths]


@pytest.mark.parametrize("path", bicep.bicep_files(), ids=_ids(bicep.bicep_files()))
def test_every_resource_fits_its_type_and_api_version(path: Path) -> None:
    errors = list(check_file(path))
    assert not errors, "\n".join(errors)


def test_the_extract_records_its_source_and_covers_every_type_used() -> None:
    types = load_types()
    assert types.source["repository"] == "Azure/bicep-types-az"
    assert re.fullmatch(r"[0-9a-f]{40}", types.source["commit"])
    used = {
        f"{resource['type']}@{resource['api_version']}"
        for path in bicep.bicep_files()
        for resource in bicep.resources(path).values()
    }
    missing = used - set(types.resources)
    assert not missing, f"run tests/unit/infra/refresh_bicep_types.py for {sorted(missing)}"


STORAGE = """
param flag bool
resource sa 'Microsoft.Storage/storageAccounts@{version}' = {{
  name: 'stexample'
  location: 'westeurope'
  kind: 'StorageV2'
  sku: {{
    name: 'Standard_LRS'
  }}
  properties: {{
{properties}
  }}
}}
"""


def _errors(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "seeded.bicep"
    path.write_text(text)
    return list(check_file(path))


def _storage(properties: str, version: str = "2023-05-01") -> str:
    return STORAGE.format(version=version, properties=properties)


SEEDED = {
    "unknown-property": (_storage("    allowBlobPublicAces: false"), "unknown property"),
    "unknown-nested-property": (
        _storage("    networkAcls: {\n      defaultActoin: 'Deny'\n    }"),
        "properties.networkAcls.defaultActoin: unknown property",
    ),
    "wrong-type": (_storage("    supportsHttpsTrafficOnly: 'yes'"), "string given"),
    # A closed set of values (an open one, like minimumTlsVersion, is a union with string).
    "value-not-allowed": (
        """
resource sb 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: 'sbexample'
  location: 'westeurope'
  sku: {
    name: 'Gold'
  }
}
""",
        "sku.name: 'Gold' is not 'Basic' | 'Standard' | 'Premium'",
    ),
    "read-only": (_storage("    provisioningState: 'Succeeded'"), "is read-only"),
    "bad-branch-of-a-condition": (
        _storage("    allowSharedKeyAccess: flag ? false : 'no'"),
        "string given",
    ),
    "api-version-that-does-not-exist": (
        _storage("    allowSharedKeyAccess: false", version="2023-13-01"),
        "API version does not exist",
    ),
    "type-that-does-not-exist": (
        _storage("").replace("storageAccounts@", "storageAccountz@"),
        "resource type not in the extract",
    ),
    "property-of-a-later-api-version": (
        """
resource acr 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  name: 'crexample'
  location: 'westeurope'
  sku: {
    name: 'Basic'
  }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
  }
}
""",
        "properties.anonymousPullEnabled: unknown property",
    ),
    "bad-item-in-a-loop": (
        """
param names array
resource c 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [
  for n in names: {
  name: n
  properties: {
    publicAccess: 'None'
    publicAccessLevel: 'None'
  }
}
]
""",
        "properties.publicAccessLevel: unknown property",
    ),
}


@pytest.mark.parametrize(("text", "expected"), SEEDED.values(), ids=list(SEEDED))
def test_the_schema_check_fails_on_a_seeded_mistake(
    tmp_path: Path, text: str, expected: str
) -> None:
    errors = _errors(tmp_path, text)
    assert any(expected in error for error in errors), errors


def test_the_schema_check_accepts_the_seed_without_the_mistake(tmp_path: Path) -> None:
    assert _errors(tmp_path, _storage("    allowSharedKeyAccess: flag ? false : true")) == []
