"""Every role infra/README.md's walk-through names is declared in the Bicep, with the id that the
code granting it uses (the postprovision hook, `shared.admin tenants add`)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from shared.admin import grants

INFRA = Path(__file__).resolve().parents[3] / "infra"
SECTION = "### Roles in this walk-through"
# Who grants a role -> the ids its code assigns (a role it names must be one of them).
GRANTERS = {
    "the postprovision hook": {grants.STORAGE_BLOB_DATA_CONTRIBUTOR},
    "`shared.admin tenants add`": {
        grants.SERVICE_BUS_DATA_SENDER,
        grants.SERVICE_BUS_DATA_RECEIVER,
    },
}


def walkthrough_roles(readme: str) -> list[tuple[str, str]]:
    """(role, granted by) of each row of the walk-through's roles table."""
    _, found, rest = readme.partition(SECTION)
    assert found, f"infra/README.md has no {SECTION!r}"
    rows = []
    for line in rest.split("\n\n", 2)[1].splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in {"Who", ""} and not set(cells[0]) <= {"-"}:
            rows.append((cells[1], cells[3]))
    return rows


def declared_roles(bicep: str) -> dict[str, str]:
    """Comment block above each of main.bicep's role variables -> the variable's role id."""
    blocks = re.findall(r"((?:^//[^\n]*\n)+)var \w+RoleId = '([0-9a-f-]{36})'", bicep, re.M)
    return {" ".join(line[2:].strip() for line in c.splitlines()): g for c, g in blocks}


def _declared(role: str, declared: dict[str, str]) -> str | None:
    """The id of the role variable whose comment names `role` (None: not declared)."""
    # The whole name: a comment starts with it, or names it after a colon ("...: <role>, ...").
    named = re.compile(rf"(?:^|: ){re.escape(role)}(?=[:,])")
    ids = {guid for comment, guid in declared.items() if named.search(comment)}
    return ids.pop() if len(ids) == 1 else None


def check(readme: str, bicep: str) -> list[str]:
    declared = declared_roles(bicep)
    problems = []
    rows = walkthrough_roles(readme)
    if not rows:
        problems.append("the roles table is empty")
    for role, granter in rows:
        role_id = _declared(role, declared)
        if role_id is None:
            problems.append(f"{role!r} is not declared in main.bicep")
            continue
        if granter in GRANTERS and role_id not in GRANTERS[granter]:
            problems.append(f"{granter} does not assign {role!r} ({role_id})")
    return problems


def test_every_walkthrough_role_is_declared_in_the_bicep() -> None:
    readme = (INFRA / "README.md").read_text()
    bicep = (INFRA / "main.bicep").read_text()
    assert len(walkthrough_roles(readme)) == 4
    assert check(readme, bicep) == []


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        (
            "| you | Owner | the namespace | you | everything |",
            "'Owner' is not declared in main.bicep",
        ),
        (
            "| app | Azure Service Bus Data Owner | queue x | `shared.admin tenants add` | x |",
            "`shared.admin tenants add` does not assign 'Azure Service Bus Data Owner'",
        ),
    ],
)
def test_a_seeded_bad_row_is_caught(row: str, problem: str) -> None:
    readme = (INFRA / "README.md").read_text()
    header = "| Who | Role | Scope | Granted by | For |\n|---|---|---|---|---|\n"
    seeded = readme.replace(header, header + row + "\n")
    assert problem in " ".join(check(seeded, (INFRA / "main.bicep").read_text()))
