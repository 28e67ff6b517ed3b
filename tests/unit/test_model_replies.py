"""Replies, token estimates and stats of the models simulator."""

from __future__ import annotations

from typing import Any

from devhost.models.replies import MAX_REPLY_TOKENS, MIN_REPLY_TOKENS, make_reply
from devhost.models.stats import Stats
from devhost.models.tokens import estimate_prompt_tokens, message_text, text_tokens

MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is the capital of France, please?"},
]


def test_replies_are_deterministic_per_deployment_and_messages() -> None:
    a = make_reply("d1", MESSAGES, None)
    assert a == make_reply("d1", MESSAGES, None)
    assert a != make_reply("d2", MESSAGES, None)
    assert a != make_reply("d1", [*MESSAGES, {"role": "user", "content": "and Spain?"}], None)
    assert a != make_reply("d1", MESSAGES, None, choice=1)
    assert a.text.startswith("Re: What is the capital of France,")
    assert MIN_REPLY_TOKENS <= a.tokens <= MAX_REPLY_TOKENS
    assert a.tokens == len(a.text.split())
    assert a.finish_reason == "stop"


def test_max_tokens_cuts_the_reply() -> None:
    r = make_reply("d", MESSAGES, 3)
    assert r.tokens == 3
    assert r.text == "Re: What is"
    assert r.finish_reason == "length"
    full = make_reply("d", MESSAGES, 1000)
    assert full.finish_reason == "stop"


def test_prompt_tokens_are_about_four_characters_each_plus_overhead() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    # 3 priming + per message 3 + ceil(len/4): 14 chars -> 4, 38 chars -> 10
    assert estimate_prompt_tokens(MESSAGES) == 3 + (3 + 4) + (3 + 10)
    named = [{"role": "user", "name": "bob", "content": "abcd"}]
    assert estimate_prompt_tokens(named) == 3 + 3 + 1 + 1


def test_content_parts_are_read_as_text() -> None:
    parts = {
        "role": "user",
        "content": [{"type": "text", "text": "hello"}, {"type": "image_url"}, "junk"],
    }
    assert message_text(parts) == "hello"
    assert message_text({"role": "assistant", "content": None}) == ""


def test_stats_aggregate_by_deployment_and_tenant() -> None:
    stats = Stats()
    c = stats.cell("pool-a", "contoso")
    c.requests += 2
    c.ok += 2
    c.prompt_tokens += 10
    c.completion_tokens += 5
    c.quality_sum += 1.6
    f = stats.cell("pool-a", "fabrikam")
    f.requests += 1
    f.throttled += 1
    stats.rejected["unauthorized"] += 1
    report = stats.report()
    assert report["totals"]["requests"] == 3
    pool = report["deployments"]["pool-a"]
    assert (pool["ok"], pool["throttled"], pool["total_tokens"]) == (2, 1, 15)
    assert pool["quality_mean"] == 0.8
    assert pool["tenants"]["fabrikam"]["throttled"] == 1
    assert report["tenants"]["contoso"]["deployments"]["pool-a"]["ok"] == 2
    assert report["tenants"]["fabrikam"]["quality_mean"] is None
    assert report["rejected"] == {"unauthorized": 1}
    stats.reset()
    assert stats.report()["totals"]["requests"] == 0
