"""A deployment's TPM / RPM budget as one instance sees it, on a fake clock (the rules of
shared/resilience/rate_budget.py's docstring)."""

from __future__ import annotations

import pytest

from devhost.models.tokens import estimate_prompt_tokens
from shared.resilience.rate_budget import (
    DeploymentBudget,
    admission_tokens,
    effective_rpm,
    prompt_tokens_estimate,
    text_tokens,
)
from shared.tenancy.registry import Capacity
from tests.fakes import FakeTime

MARGIN = 0.25
TTL = 5.0
BIG_RPM = 60_000  # 10,000 a window: the RPM limit out of the way


def budget(time: FakeTime, tpm: int, rpm: int | None = BIG_RPM) -> DeploymentBudget:
    return DeploymentBudget(
        Capacity(tokens_per_minute=tpm, requests_per_minute=rpm),
        clock=time.monotonic,
        margin_s=MARGIN,
        observation_ttl_s=TTL,
    )


# ---- tokens per minute: a sliding minute --------------------------------------------------


def test_a_request_that_fits_fits_now() -> None:
    time = FakeTime()
    b = budget(time, tpm=1000)
    assert b.room_at(1000) == time.now
    b.charge(400)
    assert b.room_at(600) == time.now


def test_a_request_fits_again_exactly_when_enough_old_charges_slid_out() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000)
    b.charge(600)  # at 1000
    time.now = 1020.0
    b.charge(300)  # at 1020
    time.now = 1030.0
    assert b.room_at(100) == 1030.0  # 900 + 100 fits
    assert b.room_at(200) == 1060.0 + MARGIN  # the 600 must slide out
    assert b.room_at(700) == 1060.0 + MARGIN  # 300 + 700 fits once the 600 is out
    assert b.room_at(800) == 1080.0 + MARGIN  # both must slide out
    time.now = 1060.0 + MARGIN - 0.001
    assert b.room_at(200) == 1060.0 + MARGIN
    time.now = 1060.0 + MARGIN
    assert b.room_at(200) == time.now
    b.charge(200)
    assert b.room_at(500) == time.now  # 300 + 200 + 500


def test_a_request_larger_than_the_tpm_fits_only_into_an_empty_minute() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000)
    assert b.room_at(5000) == 1000.0  # an empty minute admits it, alone
    b.charge(5000)
    time.now = 1001.0
    assert b.room_at(1) == 1060.0 + MARGIN
    time.now = 1060.0 + MARGIN
    b.charge(10)
    time.now = 1061.0
    assert b.room_at(5000) == 1060.0 + MARGIN + 60.0 + MARGIN  # waits for the 10 to leave too


# ---- requests per minute: RPM/6 per 10 seconds --------------------------------------------


def test_rpm_is_enforced_as_a_sixth_per_ten_seconds() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=10_000_000, rpm=60)  # 10 a window
    assert b.per_window == 10
    for i in range(10):
        time.now = 1000.0 + i * 0.5
        assert b.room_at(1) == time.now
        b.charge(1)
    assert b.room_at(1) == 1010.0 + MARGIN  # the 11th waits for the first to leave the window
    time.now = 1010.0 + MARGIN
    assert b.room_at(1) == time.now
    b.charge(1)
    assert b.room_at(1) == 1010.5 + MARGIN


@pytest.mark.parametrize(
    ("tpm", "rpm", "expected_rpm", "per_window"),
    [
        (1000, None, 6, 1),  # Azure's default: 6 RPM per 1,000 TPM
        (10_000, None, 60, 10),
        (200_000, None, 1200, 200),
        (500, None, 3, 1),  # at least one a window
        (10_000, 600, 600, 100),  # an explicit RPM wins
    ],
)
def test_a_deployment_without_rpm_gets_6_rpm_per_1000_tpm(
    tpm: int, rpm: int | None, expected_rpm: int, per_window: int
) -> None:
    capacity = Capacity(tokens_per_minute=tpm, requests_per_minute=rpm)
    assert effective_rpm(capacity) == expected_rpm
    time = FakeTime()
    b = budget(time, tpm=tpm, rpm=rpm)
    assert b.per_window == per_window
    for _ in range(per_window):
        b.charge(1)
    assert b.room_at(1) == time.now + 10.0 + MARGIN


# ---- 429s: block and refund ---------------------------------------------------------------


def test_block_keeps_the_deployment_shut_for_the_retry_after() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000)
    b.block(3.0)
    assert b.room_at(1) == 1003.0
    b.block(1.0)  # a shorter block does not shorten the first
    assert b.room_at(1) == 1003.0
    time.now = 1003.0
    assert b.room_at(1) == 1003.0
    b.block(7.0)
    assert b.room_at(1) == 1010.0


def test_refund_undoes_the_charge_of_a_throttled_request() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000, rpm=6)  # one request a window
    b.charge(700)
    time.now = 1001.0
    receipt = b.charge(300)
    assert b.room_at(1) > time.now
    b.refund(receipt)  # the service throttled it and charged nothing
    assert b.room_at(300) == 1010.0 + MARGIN  # only the RPM of the first still binds
    time.now = 1010.0 + MARGIN
    assert b.room_at(300) == time.now
    assert b.room_at(301) == 1060.0 + MARGIN


def test_refund_of_everything_leaves_an_empty_budget() -> None:
    time = FakeTime()
    b = budget(time, tpm=1000, rpm=6)
    b.refund(b.charge(1000))
    assert b.room_at(1000) == time.now


def test_refund_undoes_that_charge_not_another_of_the_same_size() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000, rpm=600)
    first = b.charge(400)
    time.now = 1070.0  # the first charge has slid out of the minute
    b.charge(400)
    b.refund(first)  # too late to matter: the second charge must stay
    assert b.room_at(601) == 1070.0 + 60.0 + MARGIN


# ---- what the service says: x-ratelimit-remaining-* --------------------------------------


def test_an_observed_remaining_lowers_the_room_for_the_ttl_only() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=100_000)
    b.charge(100)
    b.observe(remaining_tokens=500, remaining_requests=None)  # another instance spent the rest
    assert b.room_at(400) == 1000.0
    assert b.room_at(600) == 1000.0 + TTL
    time.now = 1000.0 + TTL - 0.01
    assert b.room_at(600) == 1000.0 + TTL
    time.now = 1000.0 + TTL
    assert b.room_at(600) == time.now  # the observation is stale: the local view again


def test_what_this_instance_charged_since_the_observation_counts_against_it() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=100_000)
    b.observe(remaining_tokens=1000, remaining_requests=None)
    b.charge(700)
    assert b.room_at(300) == 1000.0
    assert b.room_at(301) == 1000.0 + TTL


def test_no_requests_remaining_shuts_the_deployment_for_the_ttl() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=100_000)
    b.observe(remaining_tokens=None, remaining_requests=1)
    assert b.room_at(1) == 1000.0
    b.charge(1)
    assert b.room_at(1) == 1000.0 + TTL
    b.observe(remaining_tokens=50_000, remaining_requests=0)
    assert b.room_at(1) == 1000.0 + TTL


def test_an_observation_never_raises_the_room_above_the_local_view() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000)
    b.charge(900)
    b.observe(remaining_tokens=1_000_000, remaining_requests=1000)
    assert b.room_at(200) == 1060.0 + MARGIN


def test_an_observation_with_no_headers_changes_nothing() -> None:
    time = FakeTime(now=1000.0)
    b = budget(time, tpm=1000)
    b.observe(remaining_tokens=10, remaining_requests=None)
    b.observe(remaining_tokens=None, remaining_requests=None)  # kept: the earlier one stands
    assert b.room_at(100) == 1000.0 + TTL


# ---- what a request is charged ------------------------------------------------------------


def test_text_tokens_are_four_characters_each_rounded_up() -> None:
    assert [text_tokens("x" * n) for n in (0, 1, 4, 5, 8, 9)] == [0, 1, 1, 2, 2, 3]


def test_admission_is_the_prompt_estimate_plus_max_tokens_or_the_default() -> None:
    contents = ["abcd", "abcde"]  # 1 + 2 tokens of text
    prompt = 3 + (3 + 1) + (3 + 2)  # priming + per message
    assert prompt_tokens_estimate(contents) == prompt
    assert admission_tokens(contents, 100, default_max=256) == prompt + 100
    assert admission_tokens(contents, None, default_max=256) == prompt + 256


@pytest.mark.parametrize(
    "contents",
    [["Hello, simulator: how are you today?"], ["sys", "x" * 1001, "é" * 7], [""]],
)
def test_the_prompt_estimate_is_the_simulators_charge(contents: list[str]) -> None:
    """The budget mirrors what the service charges at admission (the simulator stands in)."""
    messages = [{"role": "user", "content": c} for c in contents]
    assert prompt_tokens_estimate(contents) == estimate_prompt_tokens(messages)
