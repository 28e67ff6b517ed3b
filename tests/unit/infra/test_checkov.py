"""`checkov --framework bicep` over infra/: every file parsed, every check ran, none failed, and
each skipped check is skipped inline in the Bicep with its reason.

checkov lives in its own venv (.venv-tools); `python3 dev.py test` passes its path in CHECKOV_BIN.
It runs once for this module.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.unit.infra.bicep_model import INFRA, REPO


def checkov_binary() -> Path:
    configured = os.environ.get("CHECKOV_BIN")
    fallback = REPO / ".venv-tools" / ("Scripts" if os.name == "nt" else "bin") / "checkov"
    candidates = [Path(configured)] if configured else []
    candidates.append(fallback)
    suffixes = ("", ".exe", ".cmd") if os.name == "nt" else ("",)
    for candidate in candidates:
        for suffix in suffixes:
            path = candidate.with_name(candidate.name + suffix)
            if path.is_file():
                return path
    pytest.fail(
        f"checkov not found (CHECKOV_BIN={configured!r}, nor {fallback}). The infra checks need "
        "it: run `python3 dev.py bootstrap` to install it into .venv-tools, or set CHECKOV_BIN.",
        pytrace=False,
    )


@dataclass(frozen=True)
class CheckovRun:
    report: Mapping[str, Any]
    stderr: str

    @property
    def results(self) -> Mapping[str, list[dict[str, Any]]]:
        results: Mapping[str, list[dict[str, Any]]] = self.report["results"]
        return results


@pytest.fixture(scope="module")
def checkov() -> CheckovRun:
    command = [
        str(checkov_binary()),
        "--directory",
        str(INFRA),
        "--framework",
        "bicep",
        "--output",
        "json",
        "--skip-download",  # no platform API calls: the checks are the ones installed
    ]
    env = dict(os.environ, BC_SKIP_MAPPING="TRUE")
    run = subprocess.run(
        command, capture_output=True, text=True, timeout=240, cwd=REPO, env=env, check=False
    )
    if run.returncode not in (0, 1):  # 1: some check failed, reported below
        pytest.fail(f"checkov exited {run.returncode}:\n{run.stderr[-4000:]}", pytrace=False)
    try:
        report = json.loads(run.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"checkov printed no JSON report:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
    if isinstance(report, list):  # one report per framework
        (report,) = [r for r in report if r.get("check_type") == "bicep"]
    return CheckovRun(report, run.stderr)


def _describe(records: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {r['check_id']} {r['check_name']}: {r['resource']} ({r['file_path']}"
        f":{r['file_line_range'][0]})"
        for r in records
    )


def test_checkov_parsed_every_bicep_file(checkov: CheckovRun) -> None:
    summary = checkov.report["summary"]
    assert summary["parsing_errors"] == 0, checkov.results.get("parsing_errors")
    assert summary["resource_count"] >= 40


def test_checkov_ran_every_check_without_crashing(checkov: CheckovRun) -> None:
    assert "Failed to run check" not in checkov.stderr, checkov.stderr[-4000:]


def test_checkov_finds_no_failed_check(checkov: CheckovRun) -> None:
    failed = checkov.results["failed_checks"]
    assert not failed, (
        f"checkov failed {len(failed)} check(s); fix them, or skip one inline in its resource "
        f"with `// checkov:skip=CKV_...:<the reason>`:\n{_describe(failed)}"
    )
    assert checkov.results["passed_checks"], "checkov passed no check: did it scan anything?"


def test_checkov_skips_are_inline_with_a_reason(checkov: CheckovRun) -> None:
    for record in checkov.results["skipped_checks"]:
        reason = (record.get("check_result") or {}).get("suppress_comment") or ""
        assert len(reason.strip()) >= 30, f"{record['check_id']} on {record['resource']}: {reason}"


def test_checkov_honours_every_line_comment_skip(checkov: CheckovRun) -> None:
    """checkov reads `// checkov:skip=` (its pattern is searched anywhere in a resource's lines),
    so every skip written in infra/ shows up as a skipped check: none is silently ignored."""
    from tests.unit.infra import bicep_model as bicep
    from tests.unit.infra.bicep_lexer import checkov_skips

    written = {
        (path.name, skip.check_id)
        for path in bicep.bicep_files()
        for skip in checkov_skips(path.read_text())[0]
    }
    skipped = {
        (Path(record["file_path"]).name, record["check_id"])
        for record in checkov.results["skipped_checks"]
    }
    assert written, "no skips found in infra/"
    assert written <= skipped, f"skips checkov did not apply: {sorted(written - skipped)}"
