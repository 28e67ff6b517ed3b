"""Strategies and settings the fuzz tests share (tests/security/test_fuzz_*.py).

What a hostile or broken sender can put in a message: random bytes; JSON of every shape, huge
(a megabyte of text) and deeply nested (past the parser's recursion limit); wrong types in every
field of a valid document; odd Unicode (look-alikes, bidi overrides, zero-width, NUL, NEL, lone
surrogates written as JSON escapes `"\\ud800"`, which `json.loads` turns into a lone surrogate);
path tricks in every id (`../`, `%2e%2e`, `%2f`, backslashes, fullwidth solidus); and application
properties of the wrong type or size.

Settings: a bounded number of examples per test, no example database, and `derandomize=True`
when `CI` is set (the examples are then derived from the test itself: repeatable), as
tests/unit/test_inference_handler_properties.py does. Locally each run explores new examples.
"""

from __future__ import annotations

import json
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CANARY = "fuzz-canary-7f3a"
"""Put in the free text of valid documents (never in ids or keys, which a detail may name): no
rejection detail may repeat it."""


CANARY_KEY = f"{CANARY}@example.org"
"""An unknown field named like an email: a detail may name a field, never this one."""


def fuzz_settings(max_examples: int) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=bool(os.environ.get("CI")),
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
            HealthCheck.function_scoped_fixture,
        ],
    )


TRICKS = [
    "../",
    "..",
    "../../contoso/r-1",
    "%2e%2e",
    "%2e%2e%2fcontoso",
    "%252e%252e",
    "a/b",
    "a\\b",
    "\uff0e\uff0e\uff0f",  # fullwidth ../
    "\uff43\uff4f\uff4e\uff54\uff4f\uff53\uff4f",  # fullwidth contoso
    "c\u043entoso",  # Cyrillic o
    "Contoso",
    "contoso\n",
    "r-1\u200b",
    "r\u202e1-",
    "\ufeffr-1",
    "a\x00b",
    "a\x85b",
    "\u2028",
    "\ud800",
    "\udfff\ud800",
    "_unknown",
    "",
    " ",
    "x" * 300,
]
ODD_TEXT = st.one_of(
    st.sampled_from(TRICKS),
    st.text(max_size=24),
    st.text(
        alphabet=st.characters(codec=None, categories=["Cs", "Cf", "Cc", "Zl", "Zp"]), max_size=6
    ),
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    ODD_TEXT,
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(ODD_TEXT, children, max_size=4)
    ),
    max_leaves=16,
)


def encode(document: Any, *, ascii_only: bool = True) -> bytes:
    """JSON bytes; `ascii_only` writes every non-ASCII character (lone surrogates included) as a
    `\\uXXXX` escape, the only way a lone surrogate reaches a JSON body."""
    text = json.dumps(document, ensure_ascii=ascii_only, allow_nan=True)
    return text.encode("utf-8", "surrogatepass")


def deep(depth: int, *, inside: str = "messages") -> bytes:
    """An object whose `inside` field nests `depth` arrays deep."""
    return b'{"%s": ' % inside.encode() + b"[" * depth + b"]" * depth + b"}"


DEPTHS = st.sampled_from([64, 1_000, 100_000])
HUGE_SIZES = st.sampled_from([300_000, 1_100_000])


def mutated(valid: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """`valid` with some fields replaced by any JSON value, some removed, some added."""
    keys = sorted(valid)

    def build(changes: dict[str, Any], removed: list[str], added: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in valid.items() if k not in removed}
        out.update(changes)
        out.update(added)
        return out

    return st.builds(
        build,
        st.dictionaries(st.sampled_from(keys), JSON_VALUES | ODD_TEXT, max_size=3),
        st.lists(st.sampled_from(keys), max_size=2),
        st.dictionaries(ODD_TEXT | st.just(CANARY_KEY), JSON_VALUES, max_size=2),
    )


def with_text(valid: dict[str, Any], field: str) -> st.SearchStrategy[dict[str, Any]]:
    """`valid` with its free-text `field` (a top-level string, or `messages`' content) replaced
    by any text: odd Unicode, lone surrogates (escaped by `encode`), path tricks, the canary."""
    text = st.one_of(st.text(max_size=200), ODD_TEXT).map(lambda t: f"{t} {CANARY}")
    if field == "messages":
        return text.map(lambda t: {**valid, "messages": [{"role": "user", "content": t}]})
    return text.map(lambda t: {**valid, field: t})


def bodies(valid: dict[str, Any], text_field: str | None = None) -> st.SearchStrategy[bytes]:
    """Every kind of body, around a valid document (and, when given, any text in its
    `text_field`: the near-valid bodies that reach the handler's later steps)."""
    near = with_text(valid, text_field).map(encode) if text_field else st.nothing()
    huge = with_text(valid, text_field or "text")
    return st.one_of(
        near,
        near,
        st.binary(max_size=200),
        JSON_VALUES.map(encode),
        mutated(valid).map(encode),
        mutated(valid).map(lambda d: encode(d, ascii_only=False)),  # raw UTF-8 (or not)
        DEPTHS.map(deep),
        st.builds(lambda n, doc: encode(_padded(doc, n)), HUGE_SIZES, huge),
        st.just(b""),
        st.just(b"null"),
        st.just(b"\xef\xbb\xbf{}"),  # a UTF-8 BOM
    )


PROPERTY_NAMES = st.one_of(
    st.sampled_from(
        [
            "type",
            "version",
            "reschedule_attempt",
            "first_enqueued_at",
            "model_attempts",
            "reschedule_reason",
            "traffic",
            "batch_id",
            "batch_line",
            "admission_wait",
            "tenant_id",
            "request_id",
        ]
    ),
    ODD_TEXT,
)
PROPERTY_VALUES = st.one_of(
    ODD_TEXT,
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True),
    st.binary(max_size=40),
    st.text(min_size=2_000, max_size=3_000),
    st.booleans(),
)
PROPERTIES = st.dictionaries(PROPERTY_NAMES, PROPERTY_VALUES, max_size=5)
MESSAGE_IDS = st.one_of(st.sampled_from(["m-1", "m-2"]), ODD_TEXT)


def _padded(document: dict[str, Any], size: int) -> dict[str, Any]:
    """`document` with its text made `size` characters longer (a huge body)."""
    padded = json.loads(json.dumps(document))
    if "messages" in padded and isinstance(padded["messages"], list):
        padded["messages"][0]["content"] += "x" * size
    else:
        padded["padding"] = "x" * size
    return padded
