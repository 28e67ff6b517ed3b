"""PII removal before storage: prompts, answers and corrections are scrubbed before they are kept.

`default_scrubber().scrub(text)` returns the text with each found span replaced by a placeholder
(`<EMAIL>`, `<PHONE>`, `<CARD>`, `<IBAN>`, `<IP>`, `<NATIONAL_ID>`, `<PERSON>`) and the count per
kind, never the values. It is deterministic, never raises on any `str`, and idempotent. It runs in
the inference hot path (via `asyncio.to_thread`): about 1-3 ms on a 500-character prompt
(`bench/pii.py` measures it).

Libraries weighed (everything must work offline: no model can be downloaded at run time):
- Presidio (presidio-analyzer): maintained by Microsoft, the reference recognizers for emails,
  cards (Luhn), IBANs (mod 97 and per-country format), IPs (v4 and v6), phones (through Google's
  libphonenumber) and many national ids, each with context words. Its `AnalyzerEngine` wants a
  spaCy model (not installable from PyPI except as unofficial re-uploads), so the recognizers are
  called directly, with no NLP engine; Presidio still imports spaCy (about 180 MB installed,
  1 s of import, paid once per process when the scrubber is first built, not at import).
- scrubadub: its structured detectors are plain regexes (no Luhn nor IBAN checksum), names need
  spaCy/textblob models; unmaintained since 2023. Not chosen.
- `phonenumbers` alone plus python-stdnum alone: both are used (Presidio depends on the first;
  the second validates the national ids Presidio lacks), but on their own they would mean writing
  the email/card/IBAN/IP candidate regexes ourselves.
- Names: no spaCy/NER model is installable from PyPI (only unofficial re-uploads of
  en_core_web_sm, which we will not put in a deployment); transformer NER (GLiNER, Presidio's
  HuggingFace recognizer) would pull torch and a model download. So names come from
  `shared.feedback.pii_names`: a first-name gazetteer (the gender-guesser package's 45k-name
  dictionary, European and US frequency columns) plus context (titles, "my name is" in five
  languages, signatures after a closing line).

What each kind relies on (`shared.feedback.pii_recognizers`):
- EMAIL: Presidio EmailRecognizer (its TLD check made offline: the public-suffix snapshot that
  tldextract ships, never the network).
- PHONE: libphonenumber (the engine of Presidio's PhoneRecognizer, whose per-region matcher
  was too slow here: 10 ms per prompt): each digit run that could be a number must parse as a
  valid number (+CC/00CC: of any region; with a trunk 0: of DE, FR, NL, GB, BE, AT, CH, IT, IE,
  LU; without: US, ES, PT, IT, in their usual grouping). Dates, amounts, dotted quads and digit
  runs inside an IBAN-shaped token are not phones.
- CARD: Presidio CreditCardRecognizer (Luhn): a number that fails Luhn is not a card.
- IBAN: Presidio IbanRecognizer (mod 97 and the country's length and format).
- IP: Presidio IpRecognizer (v4, v6, validated by `ipaddress`), minus dotted quads written as a
  version ("version 1.2.3.4", "v1.2.3.4").
- NATIONAL_ID: US SSN, UK NINO, DE Steuer-ID, ES DNI/NIE, IT codice fiscale (Presidio, with their
  checksums where the id has one); FR NIR (INSEE, mod 97 key) and NL BSN (11-proof) with
  python-stdnum, the BSN only next to a context word ("BSN", "burgerservicenummer") because one
  random 9-digit number in 11 passes its check.
- PERSON: `shared.feedback.pii_names` (see there).

What it misses (bench/README.md, "PII removal", has the measured list): names that are neither
after a known first name, a title, an introduction phrase nor in a signature (a lone surname, a
first name alone in running text, names from outside the gazetteer's countries); phone numbers
libphonenumber does not consider valid (fictional 555 numbers, wrong lengths) or national
formats of regions not listed; national ids of other countries; SSNs written without separators
and without a context word; postal addresses, dates of birth and other quasi-identifiers (not
in scope).

Overlaps: spans that overlap are merged into one placeholder spanning all of them, of the kind
with the highest score (then the longest span, then a fixed kind order), so nothing a detector
found survives. Scrubbing repeats until a pass finds nothing (a placeholder can give a digit run
new word boundaries), which makes `scrub` idempotent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from types import MappingProxyType
from typing import Protocol

log = logging.getLogger(__name__)


class PiiKind(StrEnum):
    """What a removed span was."""

    EMAIL = "email"
    PHONE = "phone"
    CARD = "card"
    IBAN = "iban"
    IP = "ip"
    NATIONAL_ID = "national_id"
    PERSON = "person"

    @property
    def placeholder(self) -> str:
        """The text that replaces a span of this kind: `<EMAIL>`, `<NATIONAL_ID>`, ..."""
        return f"<{self.name}>"


# When two overlapping spans score the same and are as long, the earlier kind here wins:
# the checksummed kinds before the looser ones.
_KIND_ORDER: dict[PiiKind, int] = {
    kind: rank
    for rank, kind in enumerate(
        (
            PiiKind.NATIONAL_ID,  # NIR (15 digits, mod 97) before an Amex-length Luhn match
            PiiKind.IBAN,
            PiiKind.CARD,
            PiiKind.EMAIL,
            PiiKind.IP,
            PiiKind.PHONE,
            PiiKind.PERSON,
        )
    )
}

# A scrub repeats until a pass finds nothing; this bounds the passes on adversarial input.
_MAX_PASSES = 4


@dataclass(frozen=True, order=True)
class Span:
    """A detected span: `text[start:end]` is of `kind`, with a score in [0, 1]."""

    start: int
    end: int
    kind: PiiKind = field(compare=False)
    score: float = field(default=1.0, compare=False)


@dataclass(frozen=True)
class Scrubbed:
    """The scrubbed text and how many spans of each kind were removed (never the values)."""

    text: str
    found: Mapping[PiiKind, int]


class Detector(Protocol):
    """Finds spans of personal data in a text. `name` appears in logs."""

    @property
    def name(self) -> str: ...

    def find(self, text: str) -> Iterable[Span]: ...


def resolve(spans: Iterable[Span]) -> list[Span]:
    """Non-overlapping spans, in order: each group of overlapping spans becomes one span covering
    all of them, of the kind of the best one (highest score, then longest, then kind order)."""
    merged: list[Span] = []
    group: list[Span] = []
    group_end = 0
    for span in sorted(s for s in spans if s.end > s.start):
        if group and span.start >= group_end:
            merged.append(_merge(group))
            group = []
        group_end = max(group_end, span.end) if group else span.end
        group.append(span)
    if group:
        merged.append(_merge(group))
    return merged


def _merge(group: Sequence[Span]) -> Span:
    best = min(group, key=lambda s: (-s.score, -(s.end - s.start), _KIND_ORDER[s.kind]))
    return Span(
        start=min(s.start for s in group),
        end=max(s.end for s in group),
        kind=best.kind,
        score=best.score,
    )


class PiiScrubber:
    """Replaces what its detectors find by placeholders. Holds no per-call state: one instance
    serves every thread."""

    def __init__(self, detectors: Sequence[Detector]) -> None:
        self._detectors = tuple(detectors)

    def detect(self, text: str) -> list[Span]:
        """The spans one pass finds, resolved (non-overlapping, in order)."""
        spans: list[Span] = []
        for detector in self._detectors:
            try:
                spans.extend(detector.find(text))
            except Exception as exc:
                # A detector bug must not lose the feedback or fail the inference that logs it:
                # the other detectors still run. Logged without the text (it may hold PII).
                log.warning(
                    "pii.detector_failed detector=%s error=%s",
                    detector.name,
                    type(exc).__name__,
                    extra={"event": "pii.detector_failed", "detector": detector.name},
                )
        return resolve(spans + _elsewhere(text, spans))

    def scrub(self, text: str) -> Scrubbed:
        """`text` with each found span replaced by its kind's placeholder, and the counts."""
        counts: Counter[PiiKind] = Counter()
        for _ in range(_MAX_PASSES):
            spans = self.detect(text)
            if not spans:
                break
            counts.update(s.kind for s in spans)
            text = _replace(text, spans)
        return Scrubbed(text=text, found=MappingProxyType(dict(counts)))


def _elsewhere(text: str, spans: Sequence[Span]) -> list[Span]:
    """Every other occurrence of a value found somewhere: a value that is personal data in one
    place (an IP address) is in another where its context hides it ("v 207.7.47.204")."""
    more: list[Span] = []
    for value, kind, score in {(text[s.start : s.end], s.kind, s.score) for s in spans}:
        if len(value) < _MIN_REPEATED:
            continue
        at = text.find(value)
        while at >= 0:
            more.append(Span(at, at + len(value), kind, score))
            at = text.find(value, at + 1)
    return more


_MIN_REPEATED = 6  # shorter values (a short name) are too likely to occur inside other words


def _replace(text: str, spans: Sequence[Span]) -> str:
    parts: list[str] = []
    at = 0
    for span in spans:
        parts.append(text[at : span.start])
        parts.append(span.kind.placeholder)
        at = span.end
    parts.append(text[at:])
    return "".join(parts)


@cache
def default_scrubber() -> PiiScrubber:
    """The process's scrubber, built on first use (it imports Presidio and loads the name
    gazetteer, about a second), the same instance afterwards."""
    from shared.feedback.pii_recognizers import default_detectors  # noqa: PLC0415 - heavy, lazy

    scrubber = PiiScrubber(default_detectors())
    # first calls load lazily held data (tldextract's suffix snapshot, libphonenumber metadata)
    scrubber.scrub("Anna Meier <anna@example.com> +49 30 1234567 192.0.2.1 DE89370400440532013000")
    return scrubber
