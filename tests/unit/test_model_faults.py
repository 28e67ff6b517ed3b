"""Injected faults: windows in time, counts and deterministic fractions, on a fake clock."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from devhost.models.faults import ANY_DEPLOYMENT, FaultBoard, FaultSpec


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pattern(board: FaultBoard, deployment: str, calls: int) -> str:
    return "".join("x" if board.pick(deployment) else "." for _ in range(calls))


def test_no_faults_means_no_fault() -> None:
    board = FaultBoard(FakeClock())
    assert board.pick("d") is None
    assert board.describe() == []


def test_a_fraction_is_spread_evenly_and_deterministically() -> None:
    board = FaultBoard(FakeClock())
    board.add("d", FaultSpec(kind="500", rate=0.5))
    assert _pattern(board, "d", 8) == ".x.x.x.x"
    board.clear()
    board.add("d", FaultSpec(kind="503", rate=0.25))
    assert _pattern(board, "d", 8) == "...x...x"


def test_count_limits_the_faults_then_the_fault_goes_away() -> None:
    board = FaultBoard(FakeClock())
    board.add("d", FaultSpec(kind="timeout", count=2))
    assert _pattern(board, "d", 4) == "xx.."
    assert board.describe() == []


def test_after_and_duration_bound_the_fault_in_time() -> None:
    clock = FakeClock()
    board = FaultBoard(clock)
    board.add("d", FaultSpec(kind="503", after_s=5, duration_s=10))
    assert board.pick("d") is None
    clock.now += 5
    spec = board.pick("d")
    assert spec is not None
    assert spec.kind == "503"
    clock.now += 9.9
    assert board.pick("d") is not None
    clock.now += 0.1
    assert board.pick("d") is None


def test_faults_apply_to_their_deployment_or_to_every_one() -> None:
    board = FaultBoard(FakeClock())
    board.add("a", FaultSpec(kind="500"))
    assert board.pick("b") is None
    board.add(ANY_DEPLOYMENT, FaultSpec(kind="disconnect"))
    b = board.pick("b")
    assert b is not None
    assert b.kind == "disconnect"
    a = board.pick("a")
    assert a is not None
    assert a.kind == "500"  # the deployment's own fault first
    assert board.clear("a") == 1
    assert board.clear() == 1


def test_describe_reports_progress() -> None:
    board = FaultBoard(FakeClock())
    fault = board.add("d", FaultSpec(kind="500", rate=0.5, count=3))
    _pattern(board, "d", 3)
    [desc] = board.describe()
    assert desc["id"] == fault.id
    assert desc["deployment"] == "d"
    assert desc["seen"] == 3
    assert desc["fired"] == 1
    assert desc["active"] is True


@pytest.mark.parametrize(
    "bad",
    [
        {"kind": "404"},
        {"kind": "500", "rate": 0},
        {"kind": "500", "rate": 1.5},
        {"kind": "500", "duration_s": 0},
        {"kind": "500", "count": 0},
        {"kind": "500", "typo": 1},
    ],
)
def test_bad_fault_specs_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        FaultSpec.model_validate(bad)
