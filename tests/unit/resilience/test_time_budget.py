"""A message's retry budget from host.json (shared/resilience/time_budget.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from shared.resilience.time_budget import (
    DEFAULT_FUNCTION_TIMEOUT_S,
    DEFAULT_LOCK_RENEWAL_S,
    HostSettingsError,
    message_time_budget,
    parse_timespan,
    read_host_json,
)

REPO_HOST_JSON = Path(__file__).resolve().parents[3] / "host.json"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("00:05:00", 300.0),
        ("00:30:00", 1800.0),
        ("01:00:00", 3600.0),
        ("1.00:00:00", 86400.0),
        ("2.03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("00:00:00.80", 0.8),
        ("00:01:00.5", 60.5),
        ("  00:05:00 ", 300.0),
    ],
)
def test_a_timespan_is_read_in_seconds(text: str, seconds: float) -> None:
    assert parse_timespan(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1", " -1 "])
def test_minus_one_is_unbounded(text: str) -> None:
    assert parse_timespan(text) is None


@pytest.mark.parametrize(
    "text", ["", "garbage", "5", "00:05", "5 minutes", "1.2.3", "-00:05:00", "00:05:00Z", "PT5M"]
)
def test_anything_else_is_a_host_settings_error(text: str) -> None:
    with pytest.raises(HostSettingsError):
        parse_timespan(text)


@pytest.mark.parametrize("text", ["00:60:00", "00:00:60"])
def test_minutes_or_seconds_past_59_are_not_a_timespan(text: str) -> None:
    """.NET's TimeSpan refuses them (OverflowException); the module's rule: "Raises
    HostSettingsError for anything else"."""
    with pytest.raises(HostSettingsError):
        parse_timespan(text)


def host(function_timeout: str | None = None, lock: str | None = None) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": "2.0", "extensions": {"serviceBus": {}}}
    if function_timeout is not None:
        doc["functionTimeout"] = function_timeout
    if lock is not None:
        doc["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"] = lock
    return doc


@pytest.mark.parametrize(
    ("function_timeout", "lock", "bound"),
    [
        ("00:02:00", "00:05:00", 120.0),  # the function timeout is the smaller
        ("00:10:00", "00:03:00", 180.0),  # the lock renewal is the smaller
        ("00:04:00", "00:04:00", 240.0),
        ("-1", "00:07:00", 420.0),  # an unbounded function: the lock bounds it
        ("00:07:00", "-1", 420.0),
        (None, "00:10:00", DEFAULT_FUNCTION_TIMEOUT_S),  # absent: the defaults
        ("00:10:00", None, DEFAULT_LOCK_RENEWAL_S),
        (None, None, min(DEFAULT_FUNCTION_TIMEOUT_S, DEFAULT_LOCK_RENEWAL_S)),
        ("-1", "-1", DEFAULT_LOCK_RENEWAL_S),  # both unbounded: still bounded
    ],
)
def test_the_budget_is_the_smaller_bound_less_margin_less_one_model_timeout(
    function_timeout: str | None, lock: str | None, bound: float
) -> None:
    doc = host(function_timeout, lock)
    assert message_time_budget(doc, model_timeout_s=30.0, margin_s=15.0) == bound - 45.0
    assert message_time_budget(doc, model_timeout_s=60.0, margin_s=5.0) == bound - 65.0


def test_the_budget_is_at_least_one_second() -> None:
    doc = host("00:00:30", "00:05:00")
    assert message_time_budget(doc, model_timeout_s=60.0) == 1.0


def test_no_auto_lock_renewal_is_not_an_unbounded_lock() -> None:
    """maxAutoLockRenewalDuration 00:00:00 turns renewal off: the message lock lapses after the
    queue's lock duration, so the smaller bound is 0 (the budget's floor), never the function
    timeout: 'the smaller of the two'."""
    doc = host("00:05:00", "00:00:00")
    assert message_time_budget(doc, model_timeout_s=30.0, margin_s=15.0) == 1.0


def test_a_bad_timespan_in_host_json_is_an_error() -> None:
    with pytest.raises(HostSettingsError):
        message_time_budget(host("five minutes", None), model_timeout_s=30.0)
    with pytest.raises(HostSettingsError):
        message_time_budget(host(None, "00:05"), model_timeout_s=30.0)


def test_the_repos_host_json_gives_its_budget() -> None:
    doc = read_host_json(REPO_HOST_JSON)
    raw = json.loads(REPO_HOST_JSON.read_text(encoding="utf-8"))
    function_timeout = parse_timespan(raw["functionTimeout"])
    lock = parse_timespan(raw["extensions"]["serviceBus"]["maxAutoLockRenewalDuration"])
    assert function_timeout is not None
    assert lock is not None
    expected = min(function_timeout, lock) - 15.0 - 60.0
    assert message_time_budget(doc, model_timeout_s=60.0, margin_s=15.0) == expected
    assert expected > 60.0  # room for retries, as the repo is configured today


def test_an_absent_host_json_means_the_defaults(tmp_path: Path) -> None:
    doc = read_host_json(tmp_path / "host.json")
    assert doc == {}
    assert message_time_budget(doc, model_timeout_s=60.0, margin_s=15.0) == 300.0 - 75.0


def test_a_host_json_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "host.json"
    path.write_text("[1, 2]", encoding="utf-8")
    with pytest.raises(HostSettingsError):
        read_host_json(path)
