"""The PII scrubber: per-kind recall and a precision floor on the synthetic corpus, examples of
each kind and of look-alikes, and properties (never raises, no detected value survives,
idempotent, deterministic) with hypothesis."""

from __future__ import annotations

import os
import random
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.pii import STRUCTURED, evaluate
from bench.pii_corpus import Gen, generate
from shared.feedback.pii import PiiKind, PiiScrubber, Span, default_scrubber, resolve

# Locally each run explores new inputs (that is how the side-by-side phone and IBAN cases were
# found); in CI the examples are derived from the test (derandomize), so a landing is repeatable.
PROPERTY = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=bool(os.environ.get("CI")),
    database=None,
)


@pytest.fixture(scope="module")
def scrubber() -> PiiScrubber:
    return default_scrubber()


# --- the corpus ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 11])
def test_recall_and_precision_on_the_corpus(scrubber: PiiScrubber, seed: int) -> None:
    tallies, errors = evaluate(scrubber, generate(seed, per_template=3))
    for kind in STRUCTURED:
        row = tallies[kind].row()
        assert row["recall"] >= 0.98, (kind, row, [e for e in errors if e["kind"] == kind])
        assert row["covered"] >= 0.98, (kind, row)
        assert row["precision"] >= 0.95, (kind, row, [e for e in errors if e["kind"] == kind])
    person = tallies["person"].row()
    assert person["recall"] >= 0.85, person
    assert person["precision"] >= 0.9, person
    assert tallies["all"].row()["precision"] >= 0.97


def test_negative_lines_keep_their_look_alikes(scrubber: PiiScrubber) -> None:
    negatives = [line for line in generate(7, per_template=3) if line.negative]
    flagged = [line.text for line in negatives if scrubber.detect(line.text)]
    assert len(flagged) <= len(negatives) * 0.03, flagged


# --- examples --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("mail anna.meier+x@example.co.uk now", PiiKind.EMAIL),
        ("call +49 30 12345678 today", PiiKind.PHONE),
        ("ruf 030 1234567 an", PiiKind.PHONE),
        ("appelez le 01 42 68 53 00", PiiKind.PHONE),
        ("call (202) 456-1111", PiiKind.PHONE),
        ("card 4111 1111 1111 1111 ok", PiiKind.CARD),
        ("card 3782-822463-10005 ok", PiiKind.CARD),
        ("iban DE89 3704 0044 0532 0130 00 ok", PiiKind.IBAN),
        ("iban NL91ABNA0417164300 ok", PiiKind.IBAN),
        ("host 203.0.113.9 down", PiiKind.IP),
        ("host 2001:db8:85a3::8a2e:370:7334 down", PiiKind.IP),
        ("SSN 536-90-4399", PiiKind.NATIONAL_ID),
        ("NINO AB 12 34 56 C", PiiKind.NATIONAL_ID),
        ("Steuer-ID 65929970489", PiiKind.NATIONAL_ID),
        ("DNI 12345678Z", PiiKind.NATIONAL_ID),
        ("NIE X1234567L", PiiKind.NATIONAL_ID),
        ("NIR 2 55 08 14 168 025 38", PiiKind.NATIONAL_ID),
        ("mijn BSN is 111222333", PiiKind.NATIONAL_ID),
        ("my name is Zbigniew Wojtaszek", PiiKind.PERSON),
        ("ask Sophie Marchetti about it", PiiKind.PERSON),
        ("Sehr geehrter Herr Oberhuber,", PiiKind.PERSON),
        ("Thanks!\nBest regards,\nOlusegun Bakare", PiiKind.PERSON),
    ],
)
def test_each_kind_is_replaced_by_its_placeholder(
    scrubber: PiiScrubber, text: str, kind: PiiKind
) -> None:
    result = scrubber.scrub(text)
    assert kind.placeholder in result.text, result.text
    assert result.found.get(kind, 0) >= 1


@pytest.mark.parametrize(
    "text",
    [
        "order 1234-5678-9012-3456 shipped",  # 16 digits, fails Luhn
        "card 4111 1111 1111 1112",  # fails Luhn
        "IBAN DE88 3704 0044 0532 0130 00 rejected",  # wrong check digits
        "upgrade to version 1.2.3.4 or v10.0.19045",
        "on 2024-03-05 at 14:30, or 05.03.2024",
        "total $1,299.00 or 1.299,00 EUR",
        "reference 111222333 without its word",
        "Order 2024-275991 and Artikel 881-9005-53",
        "Thanks, the Support Team",
        # seen in this project's own docs and code
        "returns 400/413/422 on a bad body",
        "One JSON document per tenant, in Key Vault",
        "ratio 0.59 (1.19) at p95",
        "schedule 0 10-30/10 * * *",
        "python-stdnum checks the FR NIR",
    ],
)
def test_look_alikes_are_kept(scrubber: PiiScrubber, text: str) -> None:
    assert scrubber.scrub(text) == scrubber.scrub(text)
    result = scrubber.scrub(text)
    assert result.text == text
    assert dict(result.found) == {}


def test_found_counts_kinds_not_values(scrubber: PiiScrubber) -> None:
    result = scrubber.scrub("a@example.com, b@example.org and +44 20 7946 0958")
    assert dict(result.found) == {PiiKind.EMAIL: 2, PiiKind.PHONE: 1}
    assert result.text == "<EMAIL>, <EMAIL> and <PHONE>"
    assert {str(k) for k in result.found} <= {k.value for k in PiiKind}


def test_overlaps_merge_into_one_span_of_the_best_kind() -> None:
    spans = [
        Span(0, 10, PiiKind.PHONE, 0.6),
        Span(5, 20, PiiKind.NATIONAL_ID, 1.0),
        Span(30, 35, PiiKind.PERSON, 0.5),
    ]
    assert resolve(spans) == [Span(0, 20, PiiKind.NATIONAL_ID), Span(30, 35, PiiKind.PERSON)]
    merged = resolve(spans)[0]
    assert (merged.start, merged.end, merged.kind) == (0, 20, PiiKind.NATIONAL_ID)


def test_an_international_number_outranks_an_id_of_its_digits(scrubber: PiiScrubber) -> None:
    # 31612343919 is also a valid Steuer-ID
    assert scrubber.scrub("Mijn nummer is +31612343919").found == {PiiKind.PHONE: 1}


def test_a_failing_detector_does_not_stop_the_others() -> None:
    class Broken:
        name = "broken"

        def find(self, text: str) -> list[Span]:
            raise RuntimeError("bug")

    class Emails:
        name = "at"

        def find(self, text: str) -> list[Span]:
            at = text.find("@")
            return [Span(at, at + 1, PiiKind.EMAIL)] if at >= 0 else []

    assert PiiScrubber([Broken(), Emails()]).scrub("x@y").text == "x<EMAIL>y"


def test_default_scrubber_is_built_once() -> None:
    assert default_scrubber() is default_scrubber()


def test_a_typical_prompt_takes_a_few_milliseconds(scrubber: PiiScrubber) -> None:
    prompt = (
        "Hello, my name is Friederike Oberholzer, reach me at f.oberholzer@example.com or "
        "+49 151 23456789; refund to DE89 3704 0044 0532 0130 00. " * 4
    )[:500]
    scrubber.scrub(prompt)
    t0 = time.perf_counter()
    for _ in range(20):
        scrubber.scrub(prompt)
    per_call = (time.perf_counter() - t0) / 20
    assert per_call < 0.05  # measured ~2 ms; generous for a shared CI machine


def test_a_huge_input_stays_linear(scrubber: PiiScrubber) -> None:
    for text in ("a" * 200_000 + "@", "1" * 200_000, "a@" * 50_000, "1 " * 100_000):
        t0 = time.perf_counter()
        scrubber.scrub(text)
        assert time.perf_counter() - t0 < 10


# --- properties ------------------------------------------------------------------------------


def _values() -> st.SearchStrategy[tuple[str, PiiKind]]:
    def make(seed: int) -> list[tuple[str, PiiKind]]:
        gen = Gen(random.Random(seed))
        return [
            (gen.email("Anna", "Meier"), PiiKind.EMAIL),
            (gen.card(), PiiKind.CARD),
            (gen.iban(), PiiKind.IBAN),
            (gen.ipv4(), PiiKind.IP),
            (gen.phone("DE"), PiiKind.PHONE),
            (gen.steuer_id(), PiiKind.NATIONAL_ID),
            (gen.dni(), PiiKind.NATIONAL_ID),
        ]

    return st.integers(0, 10_000).flatmap(lambda s: st.sampled_from(make(s)))


# any Unicode but lone surrogates, control characters included
_filler = st.text(alphabet=st.characters(codec="utf-8"), max_size=60)


@PROPERTY
@given(st.text(max_size=400))
def test_any_text_scrubs_without_raising_and_idempotently(text: str) -> None:
    scrubber = default_scrubber()
    once = scrubber.scrub(text)
    assert isinstance(once.text, str)
    assert scrubber.scrub(once.text).text == once.text
    assert scrubber.scrub(text) == once


@PROPERTY
@given(st.lists(st.tuples(_filler, _values()), min_size=1, max_size=4), _filler)
def test_no_detected_value_survives(
    parts: list[tuple[str, tuple[str, PiiKind]]], tail: str
) -> None:
    scrubber = default_scrubber()
    text = "".join(f"{filler} {value} " for filler, (value, _) in parts) + tail
    spans = scrubber.detect(text)
    result = scrubber.scrub(text)
    for span in spans:
        assert text[span.start : span.end] not in result.text
    assert scrubber.scrub(result.text).text == result.text


@PROPERTY
@given(_values(), st.sampled_from([" ", "\n", ", ", " (", ": "]))
def test_generated_values_are_found_between_words(value: tuple[str, PiiKind], sep: str) -> None:
    raw, kind = value
    result = default_scrubber().scrub(f"hello{sep}{raw} world")
    assert raw not in result.text
    assert result.found.get(kind, 0) == 1, (raw, result)


def test_phones_written_side_by_side_are_each_removed() -> None:
    # found by hypothesis: the first two were one candidate too long to be a number, and kept
    text = " 01512 3455868  030 129557  01512 3455868 "
    result = default_scrubber().scrub(text)
    assert result.text == " <PHONE>  <PHONE>  <PHONE> "
    assert result.found == {PiiKind.PHONE: 3}


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("pay to de89370400440532013000 please", PiiKind.IBAN),
        ("Straße 5, gb82 west 1234 5698 7654 32", PiiKind.IBAN),
        ("card 4111.1111.1111.1111 expires soon", PiiKind.CARD),
    ],
)
def test_lower_case_ibans_and_dotted_cards_are_found(text: str, kind: PiiKind) -> None:
    result = default_scrubber().scrub(text)
    assert result.found == {kind: 1}, result


def test_an_iban_followed_by_more_digit_groups_is_found() -> None:
    # found by hypothesis: Presidio takes "ES67... 0000" as one candidate, whose checksum fails
    text = " ES6704565818175555000148 0000 ES6704565818175555000148 "
    assert default_scrubber().scrub(text).text == " <IBAN> 0000 <IBAN> "


def test_a_value_found_once_is_removed_wherever_it_occurs() -> None:
    # found by hypothesis: after "v" a dotted quad reads as a version, yet the same address was
    # found as an IP elsewhere in the text
    text = "from 207.7.47.204 and v 207.7.47.204"
    assert default_scrubber().scrub(text).text == "from <IP> and v <IP>"
