"""`body_bytes` never raises, whatever a value body holds (issue 8, item 5).

The real SDK and broker cases are in tests/integration/test_devhost_amqp_bodies.py; these are the
values no sender can produce through the SDK but the conversion must survive anyway (a stand-in
message with only the two attributes `body_bytes` reads).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from azure.servicebus.amqp import AmqpMessageBodyType

from devhost.host.servicebus_trigger import body_bytes, json_value


@dataclass
class StandIn:
    body: Any
    body_type: AmqpMessageBodyType = AmqpMessageBodyType.VALUE


class Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text")

    def __repr__(self) -> str:
        return "<Unprintable>"


def broken_sections() -> Iterator[list[int]]:
    yield [1]
    raise RuntimeError("the link dropped")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({b"a": b"\xff"}, {"a": "/w=="}),
        (
            {None: 1, True: 2, 1.5: 3, uuid.UUID(int=0): 4},
            {"null": 1, "true": 2, "1.5": 3, "00000000-0000-0000-0000-000000000000": 4},
        ),
        ((1, (2, 3)), [1, [2, 3]]),
        (float("inf"), "inf"),
        (Decimal("1.10"), "1.10"),
        (datetime(2025, 1, 2, tzinfo=UTC), "2025-01-02T00:00:00+00:00"),
        (memoryview(b"ok"), "ok"),
    ],
)
def test_json_value(value: Any, expected: Any) -> None:
    assert json_value(value) == expected
    json.dumps(json_value(value), allow_nan=False)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (StandIn({"x": Unprintable()}), b"{'x': <Unprintable>}"),
        (StandIn(broken_sections(), AmqpMessageBodyType.SEQUENCE), b"<generator object"),
        (StandIn(broken_sections(), AmqpMessageBodyType.DATA), b"<generator object"),
    ],
)
def test_a_value_that_cannot_be_written_is_handed_over_as_its_repr(
    message: StandIn, expected: bytes
) -> None:
    assert body_bytes(message).startswith(expected)  # type: ignore[arg-type]


def test_a_body_that_cannot_even_be_read_is_handed_over_empty() -> None:
    class Unreadable:
        body_type = AmqpMessageBodyType.VALUE

        @property
        def body(self) -> Any:
            raise RuntimeError("undecodable")

    assert body_bytes(Unreadable()) == b""  # type: ignore[arg-type]


def test_nesting_beyond_the_limit_is_handed_over_as_its_repr() -> None:
    value: list[Any] = []
    for _ in range(200):
        value = [value]
    assert body_bytes(StandIn(value)).startswith(b"[[[[")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nested too deeply"):
        json_value(value)
