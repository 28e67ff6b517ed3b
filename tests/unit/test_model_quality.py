"""The simulator's quality model: prompt topics, quality schedules, verdicts and their marks."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from devhost.models import (
    GOOD_ANSWER_MARK,
    POOR_ANSWER_MARK,
    ConfigError,
    ScheduledQuality,
    Simulator,
    StaticQuality,
    VerdictModel,
    Verdicts,
    load_config,
    parse_config,
    topic_of,
    verdict_of,
)
from devhost.models.quality import MARK_TOKENS, mark_reply, quality_at
from devhost.models.replies import Reply
from devhost.models.stats import Stats
from tests.fixtures.models import STACK_CONFIG, model_deployment


def user(text: Any) -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": "#system-tags-do-not-count"},
        {"role": "user", "content": text},
    ]


# ---- topics -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Why was I charged twice? #billing", "billing"),
        ("#Shipping late, and #billing wrong", "shipping"),
        ("about #GDPR-art_17 please", "gdpr-art_17"),
        ("no tag here", "general"),
        ("a lone # sign, #_underscore and #-dash", "general"),
        ("price#billing counts too", "billing"),
        ("#" + "a" * 40, "a" * 32),
        ("", "general"),
    ],
)
def test_the_topic_is_the_first_tag_of_the_last_user_message(text: str, topic: str) -> None:
    assert topic_of(user(text)) == topic


def test_the_topic_reads_only_the_last_user_message() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "first #billing"},
        {"role": "assistant", "content": "answer #legal"},
        {"role": "user", "content": [{"type": "text", "text": "then #Shipping"}]},
        {"role": "assistant", "content": "#legal again"},
    ]
    assert topic_of(messages) == "shipping"
    assert topic_of([{"role": "system", "content": "#billing"}]) == "general"
    assert topic_of([{"role": "user", "content": None}]) == "general"


# ---- chances and schedules ----------------------------------------------------------------

DECAYING = model_deployment(
    "decaying",
    quality=0.9,
    quality_by_topic={"legal": 0.7, "billing": 0.8},
    quality_schedule=[
        {"after_requests": 3, "quality": 0.5},
        {"after_requests": 5, "quality_by_topic": {"billing": 0.1}},
        {"after_requests": 7, "quality": 0.3, "quality_by_topic": {"legal": 0.2}},
    ],
)


@pytest.mark.parametrize(
    ("served", "general", "legal", "billing"),
    [
        (0, 0.9, 0.7, 0.8),
        (2, 0.9, 0.7, 0.8),
        (3, 0.5, 0.7, 0.8),
        (4, 0.5, 0.7, 0.8),
        (5, 0.5, 0.7, 0.1),
        (7, 0.3, 0.2, 0.1),
        (10_000, 0.3, 0.2, 0.1),
    ],
)
def test_steps_apply_once_the_deployment_has_served_their_count(
    served: int, general: float, legal: float, billing: float
) -> None:
    assert quality_at(DECAYING, "general", served) == general
    assert quality_at(DECAYING, "shipping", served) == general
    assert quality_at(DECAYING, "legal", served) == legal
    assert quality_at(DECAYING, "billing", served) == billing


def test_a_step_after_zero_requests_applies_from_the_first() -> None:
    d = model_deployment("d", quality=0.9, quality_schedule=[{"after_requests": 0, "quality": 0.4}])
    assert quality_at(d, "general", 0) == 0.4


def test_scheduled_quality_counts_each_deployments_requests() -> None:
    model = ScheduledQuality()
    other = model_deployment("other", quality=0.6)
    chances = [model.score(DECAYING, "t", user("hi")) for _ in range(3)]
    assert model.score(other, "t", user("hi")) == 0.6
    chances.append(model.score(DECAYING, "t", user("hi")))  # the 4th: after 3 served
    assert chances == [0.9, 0.9, 0.9, 0.5]
    assert model.score(DECAYING, "t", user("#legal")) == 0.7
    assert model.score(DECAYING, "t", user("#billing")) == 0.1  # the 6th
    assert (model.served("decaying"), model.served("other"), model.served("none")) == (6, 1, 0)
    model.reset("decaying")
    assert model.served("decaying") == 0
    assert model.served("other") == 1
    assert model.score(DECAYING, "t", user("hi")) == 0.9
    model.reset()
    assert model.served("other") == 0


def test_scheduled_quality_counts_under_a_lock() -> None:
    model = ScheduledQuality()
    d = model_deployment("d")

    def serve() -> None:
        for _ in range(2_000):
            model.score(d, "t", user("hi"))
            model.draw("d", 0.5)

    threads = [threading.Thread(target=serve) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert model.served("d") == 16_000


def test_static_quality_ignores_topics_and_schedules() -> None:
    assert StaticQuality().score(DECAYING, "t", user("#legal")) == 0.9
    assert not isinstance(StaticQuality(), VerdictModel)
    assert isinstance(ScheduledQuality(), VerdictModel)
    assert isinstance(Verdicts(), VerdictModel)


# ---- verdicts -----------------------------------------------------------------------------


@pytest.mark.parametrize("chance", [0.0, 0.1, 0.55, 0.92, 1.0])
def test_the_good_rate_is_close_to_the_chance(chance: float) -> None:
    model = ScheduledQuality()
    draws = 20_000
    good = sum(model.draw("fabrikam-ft-v1", chance) for _ in range(draws))
    assert abs(good / draws - chance) < 0.015  # > 4 standard deviations at 20,000 draws


def test_verdicts_are_reproducible_per_deployment_name() -> None:
    a, b = ScheduledQuality(), ScheduledQuality()
    first = [a.draw("d1", 0.5) for _ in range(64)]
    assert first == [b.draw("d1", 0.5) for _ in range(64)]
    assert first != [b.draw("d2", 0.5) for _ in range(64)]
    assert first != [ScheduledQuality(seed="run-2").draw("d1", 0.5) for _ in range(64)]
    # one deployment's draws do not shift another's
    c = ScheduledQuality()
    interleaved = []
    for _ in range(64):
        c.draw("d2", 0.5)
        interleaved.append(c.draw("d1", 0.5))
    assert interleaved == first
    a.reset("d1")
    assert [a.draw("d1", 0.5) for _ in range(64)] == first


def test_verdict_of_reads_a_replys_mark() -> None:
    assert GOOD_ANSWER_MARK == " [sim: good answer]"
    assert POOR_ANSWER_MARK == " [sim: poor answer]"
    assert verdict_of("Re: hello there" + GOOD_ANSWER_MARK) is True
    assert verdict_of("Re: hello there" + POOR_ANSWER_MARK) is False
    assert verdict_of("[sim: good answer]") is True
    assert verdict_of("Re: hello there") is None
    assert verdict_of("") is None
    # the last mark wins (an echoed prompt may quote one)
    assert verdict_of("Re: [sim: good answer] quoted" + POOR_ANSWER_MARK) is False


def test_a_mark_adds_its_words_as_tokens() -> None:
    reply = Reply("Re: hello there", 3, "stop")
    marked = mark_reply(reply, good=False)
    assert marked == Reply("Re: hello there [sim: poor answer]", 3 + MARK_TOKENS, "stop")
    assert marked.tokens == len(marked.text.split())
    assert MARK_TOKENS == len(POOR_ANSWER_MARK.split()) == 3
    assert mark_reply(Reply("", 0, "length"), good=True) == Reply(
        "[sim: good answer]", MARK_TOKENS, "length"
    )


def test_stats_count_good_answers() -> None:
    stats = Stats()
    c = stats.cell("d", "contoso")
    c.ok, c.verdicts, c.good = 4, 4, 3
    stats.cell("d", "fabrikam").ok = 1
    report = stats.report()
    assert (report["totals"]["verdicts"], report["totals"]["good"]) == (4, 3)
    assert report["deployments"]["d"]["tenants"]["contoso"]["good_rate"] == 0.75
    assert report["tenants"]["fabrikam"]["good_rate"] is None


# ---- config -------------------------------------------------------------------------------


def test_the_shipped_config_decays_fabrikams_tuned_deployment() -> None:
    config = load_config(STACK_CONFIG)
    assert config.answer_verdicts is True
    by_name = {d.name: d for d in config.deployments}
    tuned = by_name["fabrikam-ft-v1"]
    assert tuned.quality == 0.92
    assert [(s.after_requests, s.quality) for s in tuned.quality_schedule] == [(240, 0.55)]
    assert quality_at(tuned, "general", 239) == 0.92
    assert quality_at(tuned, "general", 240) == 0.55
    assert by_name["gpt-4o-mini-pool-a"].quality_by_topic == {"billing": 0.85, "legal": 0.6}


def test_quality_fields_default_to_empty_and_verdicts_off() -> None:
    config = parse_config({"api_keys": ["k"], "deployments": [{"name": "d"}]})
    [d] = config.deployments
    assert (d.quality_by_topic, d.quality_schedule, config.answer_verdicts) == ({}, [], False)


def _with(**fields: Any) -> dict[str, Any]:
    return {"api_keys": ["k"], "deployments": [{"name": "d", **fields}]}


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_with(quality_by_topic={"billing": 1.5}), "quality_by_topic.billing"),
        (_with(quality_by_topic={"Billing": 0.5}), "topic 'Billing' must be lowercase"),
        (_with(quality_by_topic={"#billing": 0.5}), "topic '#billing'"),
        (_with(quality_schedule=[{"after_requests": -1, "quality": 0.5}]), "after_requests"),
        (_with(quality_schedule=[{"after_requests": 1, "quality": -0.1}]), "quality_schedule.0"),
        (_with(quality_schedule=[{"after_requests": 1}]), "needs 'quality'"),
        (_with(quality_schedule=[{"quality": 0.5}]), "after_requests"),
        (_with(quality_schedule=[{"after_requests": 1, "qualty": 0.5}]), "qualty"),
        (
            _with(
                quality_schedule=[
                    {"after_requests": 10, "quality": 0.5},
                    {"after_requests": 5, "quality": 0.4},
                ]
            ),
            "ascending and unique, got [10, 5]",
        ),
        (
            _with(
                quality_schedule=[
                    {"after_requests": 5, "quality": 0.5},
                    {"after_requests": 5, "quality": 0.4},
                ]
            ),
            "ascending and unique, got [5, 5]",
        ),
        ({"api_keys": ["k"], "answer_verdicts": "maybe"}, "answer_verdicts"),
    ],
)
def test_bad_quality_configs_name_the_bad_field(doc: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError, match="invalid models simulator config") as err:
        parse_config(doc, "cfg.json")
    assert expected in str(err.value)


def test_the_simulator_draws_verdicts_itself_for_a_model_without_draw() -> None:
    config = parse_config({"api_keys": ["k"], "deployments": [{"name": "d"}]})
    default = Simulator(config)
    assert isinstance(default.quality_model, ScheduledQuality)
    assert default.verdicts is default.quality_model
    static = Simulator(config, quality_model=StaticQuality())
    assert isinstance(static.verdicts, Verdicts)
    assert static.config.answer_verdicts is False
    on = Simulator(parse_config({"api_keys": ["k"], "answer_verdicts": True}))
    assert on.config.answer_verdicts is True
