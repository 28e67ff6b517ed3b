"""Deterministic replies: the same (deployment, messages, choice) always gives the same text.

A reply is a list of words, each counted as one completion token: a short echo of the last user
message followed by words picked by a hash. Its length (12 to 40 tokens) comes from the hash too,
and is cut at max_tokens, with finish_reason "length" when cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from devhost.models.tokens import message_text

MIN_REPLY_TOKENS = 12
MAX_REPLY_TOKENS = 40
ECHO_WORDS = 6

_VOCAB_TEXT = (
    "the answer is that this request was handled by a simulated model which returns a short "
    "reply derived from your prompt so tests can check routing latency quota retries tenants "
    "usage drift and quality without calling Azure at all here are some more words to vary "
    "each result clearly and deterministically for every deployment message choice"
)
_VOCAB = tuple(_VOCAB_TEXT.split())


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    tokens: int
    finish_reason: str


def _digest(deployment: str, messages: Sequence[Mapping[str, Any]], choice: int) -> bytes:
    h = hashlib.blake2b(f"{deployment}\x1e{choice}".encode())
    for m in messages:
        h.update(b"\x1e")
        h.update(str(m.get("role", "")).encode())
        h.update(b"\x1f")
        h.update(message_text(m).encode())
    return h.digest()


def make_reply(
    deployment: str,
    messages: Sequence[Mapping[str, Any]],
    max_tokens: int | None,
    choice: int = 0,
) -> Reply:
    digest = _digest(deployment, messages, choice)
    length = MIN_REPLY_TOKENS + digest[0] % (MAX_REPLY_TOKENS - MIN_REPLY_TOKENS + 1)
    last_user = next((message_text(m) for m in reversed(messages) if m.get("role") == "user"), "")
    words = ["Re:", *last_user.split()[:ECHO_WORDS]]
    i = 1
    while len(words) < length:
        words.append(_VOCAB[(digest[i % len(digest)] + 7 * i) % len(_VOCAB)])
        i += 1
    words = words[:length]
    finish = "stop"
    if max_tokens is not None and max_tokens < len(words):
        words = words[:max_tokens]
        finish = "length"
    return Reply(" ".join(words), len(words), finish)
