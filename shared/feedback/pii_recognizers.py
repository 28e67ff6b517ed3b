"""The detectors of the default scrubber: Presidio's recognizers called directly (no NLP engine,
no spaCy model), libphonenumber for phones, python-stdnum for the national ids Presidio lacks, and
the name detector. Imported lazily by `shared.feedback.pii.default_scrubber` (Presidio imports
spaCy: about a second, once per process). See `shared.feedback.pii` for the choices."""

from __future__ import annotations

import ipaddress
import re
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import phonenumbers
import tldextract
from presidio_analyzer import EntityRecognizer, Pattern, PatternRecognizer
from presidio_analyzer.predefined_recognizers import (
    CreditCardRecognizer,
    DeTaxIdRecognizer,
    EmailRecognizer,
    EsNieRecognizer,
    EsNifRecognizer,
    IbanRecognizer,
    IpRecognizer,
    ItFiscalCodeRecognizer,
    UkNinoRecognizer,
    UsSsnRecognizer,
)
from stdnum import iban as stdnum_iban
from stdnum.fr import nir
from stdnum.nl import bsn

from shared.feedback.pii import Detector, PiiKind, Span
from shared.feedback.pii_names import NameDetector

# Presidio's context enhancement needs an NLP engine's lemmas; without one, a recognizer's context
# word (lower-cased) within this many characters before a match adds Presidio's default boost.
_CONTEXT_CHARS = 48
_CONTEXT_BOOST = 0.35
# The emails of a text are looked for near each "@" only: Presidio's email pattern is quadratic
# on a long run of word characters, a window keeps a huge input linear.
_EMAIL_WINDOW = 320

_DIGIT = re.compile(r"\d")


@dataclass(frozen=True)
class PresidioDetector:
    """One Presidio recognizer as a `Detector`: its results of at least `min_score` (after the
    context boost) become spans of `kind`."""

    name: str
    recognizer: EntityRecognizer
    kind: PiiKind
    min_score: float = 0.5
    needs_digit: bool = True
    needs_context: bool = False

    def find(self, text: str) -> Iterator[Span]:
        if self.needs_digit and not _DIGIT.search(text):
            return
        yield from self._find_in(text, 0, len(text))

    def _find_in(self, text: str, start: int, end: int) -> Iterator[Span]:
        part = text[start:end]
        entities = self.recognizer.supported_entities
        # no NLP engine: Presidio types the artifacts as required, its recognizers accept None
        for result in self.recognizer.analyze(part, entities, None):  # type: ignore[arg-type]
            s, e = start + result.start, start + result.end
            score = float(result.score)
            if self._has_context(text, s):
                score = min(1.0, score + _CONTEXT_BOOST)
            elif self.needs_context:
                continue
            if score >= self.min_score:
                yield Span(s, e, self.kind, score)

    def _has_context(self, text: str, start: int) -> bool:
        before = text[max(0, start - _CONTEXT_CHARS) : start].lower()
        return any(w in before for w in self.recognizer.context or ())


_DOT_BETWEEN_DIGITS = re.compile(r"(?<=\d)\.(?=\d)")
_ASCII_UPPER = str.maketrans(string.ascii_lowercase, string.ascii_uppercase)


@dataclass(frozen=True)
class DotsAsSpaces:
    """`inner` on the text with dots between digits read as spaces (`4111.1111.1111.1111` is
    grouped as people group with spaces); the same length, so spans keep their offsets."""

    inner: Detector

    @property
    def name(self) -> str:
        return self.inner.name

    def find(self, text: str) -> Iterator[Span]:
        yield from self.inner.find(_DOT_BETWEEN_DIGITS.sub(" ", text))


@dataclass(frozen=True)
class UpperCased:
    """`inner` on the text as it is and with ASCII letters upper-cased (an IBAN typed in lower
    case is still one); only ASCII, so every offset stays (`str.upper` would turn a German sharp
    s into two letters)."""

    inner: Detector

    @property
    def name(self) -> str:
        return self.inner.name

    def find(self, text: str) -> Iterator[Span]:
        # both: upper-casing the words around an IBAN can make them look like more of its groups
        yield from self.inner.find(text)
        upper = text.translate(_ASCII_UPPER)
        if upper != text:
            yield from self.inner.find(upper)


@dataclass(frozen=True)
class IbanPrefixDetector:
    """An IBAN followed by more digit groups ("ES67 0456 ... 0148 0000"): Presidio's pattern takes
    the whole run, whose checksum then fails. Here each IBAN-shaped run is cut back at its spaces
    until a prefix passes python-stdnum's IBAN check (length per country and mod 97; as Presidio,
    not each country's own BBAN check digits)."""

    name: str = "iban_prefix"
    score: float = 0.9

    def find(self, text: str) -> Iterator[Span]:
        for match in _IBAN_SHAPE.finditer(text):
            parts = match.group().split(" ")
            for k in range(len(parts), 0, -1):
                candidate = " ".join(parts[:k])
                if stdnum_iban.is_valid(candidate.replace(" ", ""), check_country=False):
                    yield Span(match.start(), match.start() + len(candidate), PiiKind.IBAN, 0.9)
                    break


@dataclass(frozen=True)
class WindowedDetector:
    """A `PresidioDetector` run only on windows around each `anchor` (merged where they meet)."""

    inner: PresidioDetector
    anchor: str
    window: int

    @property
    def name(self) -> str:
        return self.inner.name

    def find(self, text: str) -> Iterator[Span]:
        for start, end in _windows(text, self.anchor, self.window):
            yield from self.inner._find_in(text, start, end)


def _windows(text: str, anchor: str, width: int) -> Iterator[tuple[int, int]]:
    """For each `anchor`, the run of non-space characters around it (at most `width` each side,
    and one more character each side for the word boundaries); an anchor inside a window extends
    it rather than starting another."""
    at = text.find(anchor)
    while at != -1:
        start = _space_before(text, at, width)
        end = _space_after(text, at + len(anchor), width)
        at = text.find(anchor, at + 1)
        while at != -1 and at < end:
            end = _space_after(text, at + len(anchor), width)
            at = text.find(anchor, at + 1)
        yield start, end


def _space_before(text: str, at: int, width: int) -> int:
    low = max(0, at - width)
    while at > low and not text[at - 1].isspace():
        at -= 1
    return max(0, at - 1)


def _space_after(text: str, at: int, width: int) -> int:
    high = min(len(text), at + width)
    while at < high and not text[at].isspace():
        at += 1
    return min(len(text), at + 1)


class _OfflineEmailRecognizer(EmailRecognizer):
    """Presidio's email recognizer whose TLD check reads tldextract's bundled public-suffix
    snapshot instead of fetching the list over the network on first use."""

    _extract = tldextract.TLDExtract(cache_dir=None, suffix_list_urls=())

    def validate_result(self, pattern_text: str) -> bool:
        return bool(self._extract(pattern_text).fqdn != "")


class _IpRecognizer(IpRecognizer):
    """Presidio's IP recognizer; also drops what `ipaddress` rejects (e.g. 999.1.1.1)."""

    def invalidate_result(self, pattern_text: str) -> bool:
        try:
            ipaddress.ip_address(pattern_text.strip("[]"))
        except ValueError:
            return True
        return False


_VERSION_BEFORE = re.compile(r"\b(?:version|release|build|ver\.?|v)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class IpDetector:
    """IPv4/IPv6 via Presidio, minus dotted quads that are written as a version number."""

    inner: PresidioDetector
    name: str = "ip"

    def find(self, text: str) -> Iterator[Span]:
        for span in self.inner.find(text):
            if ":" not in text[span.start : span.end] and _VERSION_BEFORE.search(
                text[max(0, span.start - 12) : span.start]
            ):
                continue
            yield span


class _NirRecognizer(PatternRecognizer):
    """French NIR (numéro de sécurité sociale, INSEE): 13 digits and a 2-digit mod-97 key, often
    grouped `1 85 05 78 006 084 36`; Corsica's 2A/2B departments included. python-stdnum checks."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="FR_NIR",
            name="fr_nir",
            patterns=[
                Pattern(
                    "NIR",
                    r"\b[12][ .]?\d{2}[ .]?(?:0[1-9]|1[0-2]|[2-9]\d)[ .]?(?:\d{2}|2[AB])"
                    r"[ .]?\d{3}[ .]?\d{3}[ .]?\d{2}\b",
                    0.5,
                )
            ],
            context=["sécurité sociale", "securite sociale", "nir", "insee", "numéro"],
        )

    def validate_result(self, pattern_text: str) -> bool:
        return bool(nir.is_valid(pattern_text.replace(".", " ")))


class _BsnRecognizer(PatternRecognizer):
    """Dutch BSN (burgerservicenummer): 9 digits passing the 11-proof (python-stdnum). One random
    9-digit number in 11 passes, so its detector also wants a context word before it."""

    def __init__(self) -> None:
        super().__init__(
            supported_entity="NL_BSN",
            name="nl_bsn",
            patterns=[
                Pattern("BSN", r"\b\d{4}[ .]?\d{2}[ .]?\d{3}\b|\b\d{3}[ .]\d{3}[ .]\d{3}\b", 0.5)
            ],
            context=["bsn", "burgerservicenummer", "sofinummer", "sofi-nummer"],
        )

    def validate_result(self, pattern_text: str) -> bool:
        return bool(bsn.is_valid(pattern_text))


class _SpacedSteuerIdRecognizer(DeTaxIdRecognizer):
    """Presidio's Steuer-ID recognizer (ISO 7064 check) that also reads the grouped form
    `12 345 678 901` as the BZSt prints it."""

    PATTERNS = [
        *DeTaxIdRecognizer.PATTERNS,
        Pattern("Steuer-ID grouped", r"\b[1-9]\d[ ]\d{3}[ ]\d{3}[ ]\d{3}\b", 0.5),
    ]

    def validate_result(self, pattern_text: str) -> bool | None:
        result: bool | None = super().validate_result(pattern_text.replace(" ", ""))
        return result


# Regions whose national formats are looked for; international (+CC / 00CC) numbers of any region
# are found whatever this list says. libphonenumber finds most digit runs "valid" somewhere (German
# and Austrian numbering is open), so a national-format number is tried only in the regions whose
# format it can be: with a trunk 0 where the region dials one, without where it does not.
TRUNK_ZERO_REGIONS: tuple[str, ...] = ("DE", "FR", "NL", "GB", "BE", "AT", "CH", "IT", "IE", "LU")
# region: the digit counts its numbers have when written without a trunk prefix
NO_TRUNK_REGIONS: dict[str, tuple[int, ...]] = {
    "US": (10, 11),  # NANP, optionally with the leading 1
    "ES": (9,),
    "PT": (9,),
    "IT": (9, 10),  # mobiles: 3xx ...
}
# A phone candidate: an optional + or (, then digits with the separators people type, 6+ digits.
_PHONE_CANDIDATE = re.compile(
    r"(?<![\w+\-.])(?:\+|\(\+?)?\d(?:[\d \t().\-/]|\u00a0){4,24}\d\)?(?![\w\-])"
)
_NOT_A_PHONE = re.compile(
    r"\d{4}-\d{1,2}-\d{1,2}"  # ISO date
    r"|\d{1,2}[./-]\d{1,2}[./-]\d{2,4}"  # 05.03.2024, 3/5/24
    r"|\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}"  # a dotted quad: an IP or a version
    r"|\d+[.,]\d{1,2}"  # an amount
)
# "0.59", "0 10-30/10" (a cron line): a trunk 0 is followed by a digit or "(" at once
_DECIMAL_START = re.compile(r"0(?:[.,]\d|[ \t\u00a0./-])")
_MIN_PHONE_DIGITS = 6
_MAX_PHONE_DIGITS = 15  # E.164


@dataclass(frozen=True)
class PhoneDetector:
    """Phone numbers with libphonenumber (the engine of Presidio's PhoneRecognizer): each digit run
    that could be one is parsed and must be a valid number (`is_valid_number`) of a region it can
    belong to; one of +CC / 00CC of any region."""

    trunk_zero_regions: Sequence[str] = TRUNK_ZERO_REGIONS
    no_trunk_regions: Mapping[str, Sequence[int]] = field(
        default_factory=lambda: dict(NO_TRUNK_REGIONS)
    )
    name: str = "phone"
    score: float = 0.6

    def find(self, text: str) -> Iterator[Span]:
        for candidate in _PHONE_CANDIDATE.finditer(text):
            span = self._span(candidate.group(), candidate.start())
            if span is not None:
                yield span
                continue
            # Not one number: perhaps several side by side, apart by two or more spaces or a
            # tab ("030 129557  0151 3455868"): from the left, the longest run of such pieces
            # that is a number. One space apart stays one candidate ("4201 1102 0318 1576" is
            # a reference, not two phones).
            tokens = [
                (m.start(), m.end())
                for m in re.finditer(r"\S+(?: \S+)*", candidate.group().replace("\t", "  "))
            ]
            i = 0
            while i < len(tokens):
                for j in range(len(tokens), i, -1):
                    piece = candidate.group()[tokens[i][0] : tokens[j - 1][1]]
                    span = self._span(piece, candidate.start() + tokens[i][0])
                    if span is not None:
                        yield span
                        i = j
                        break
                else:
                    i += 1

    def _span(self, raw: str, start: int) -> Span | None:
        chunk = raw.rstrip(" \t\u00a0-./(")
        if chunk.endswith(")") and chunk.count("(") < chunk.count(")"):
            chunk = chunk[:-1].rstrip(" \t\u00a0-./")
        digits = sum(c.isdigit() for c in chunk)
        if not _MIN_PHONE_DIGITS <= digits <= _MAX_PHONE_DIGITS:
            return None
        if _NOT_A_PHONE.fullmatch(chunk) or not self._is_phone(chunk, digits):
            return None
        # +CC / 00CC is unambiguous: it outranks an id or an account number it overlaps
        international = chunk.lstrip("(").startswith(("+", "00"))
        score = 1.0 if international else self.score
        return Span(start, start + len(chunk), PiiKind.PHONE, score)

    def _is_phone(self, chunk: str, digits: int) -> bool:
        bare = chunk.lstrip("(")
        if _DECIMAL_START.match(bare):
            return False
        if bare.startswith("+"):
            return _valid(chunk, None)
        if bare.startswith("00") and bare[2:3] != "0":
            return _valid("+" + bare[2:], None)
        if bare.startswith("0"):
            return any(_valid(chunk, region) for region in self.trunk_zero_regions)
        if "/" in chunk:  # "400/413/422": a list; a slash is a separator only after a trunk 0
            return False
        return any(
            _valid(chunk, region, grouped=True)
            for region, counts in self.no_trunk_regions.items()
            if digits in counts
        )


def _valid(number: str, region: str | None, *, grouped: bool = False) -> bool:
    """A valid number of `region` (None: written with +CC). `grouped`: if written in groups, they
    must be the region's (NANP 3-3-4; 9-digit numbers also 3-3-3), so that "2024-275991" or
    "881-9005-53" is an order number, not a phone."""
    try:
        parsed = phonenumbers.parse(number, region)
    except phonenumbers.NumberParseException:
        return False
    if not phonenumbers.is_valid_number(parsed):
        return False
    if grouped:
        written = _boundaries(number)
        if sum(c.isdigit() for c in number) == 11:  # the leading 1: shift the groups after it
            written = {b - 1 for b in written if b > 1}
        national = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL)
        return (
            not written
            or written == _boundaries(national)
            or (sum(c.isdigit() for c in number) == 9 and written == {3, 6})
        )
    return True


def _boundaries(number: str) -> set[int]:
    """Where the digit groups of `number` end (digit counts), the last one excepted."""
    ends: set[int] = set()
    count = 0
    for group in re.findall(r"\d+", number):
        count += len(group)
        ends.add(count)
    ends.discard(count)
    return ends


# The shape of an IBAN: country, check digits, then groups. A card or phone number inside one is
# part of an account number (a valid one is an IBAN and found as such; an invalid one is not PII).
_IBAN_SHAPE = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b")


@dataclass(frozen=True)
class OutsideIbanShapes:
    """`inner`'s spans, less those inside an IBAN-shaped run."""

    inner: Detector

    @property
    def name(self) -> str:
        return self.inner.name

    def find(self, text: str) -> Iterator[Span]:
        spans = list(self.inner.find(text))
        if not spans:
            return
        shapes = [m.span() for m in _IBAN_SHAPE.finditer(text)]
        for span in spans:
            if not any(s <= span.start and span.end <= e for s, e in shapes):
                yield span


def default_detectors() -> list[Detector]:
    """The default scrubber's detectors."""

    def presidio(
        name: str, recognizer: EntityRecognizer, kind: PiiKind, min_score: float = 0.5
    ) -> PresidioDetector:
        return PresidioDetector(name, recognizer, kind, min_score)

    detectors: list[Detector] = [
        WindowedDetector(
            PresidioDetector(
                "email", _OfflineEmailRecognizer(), PiiKind.EMAIL, 0.5, needs_digit=False
            ),
            anchor="@",
            window=_EMAIL_WINDOW,
        ),
        OutsideIbanShapes(
            DotsAsSpaces(presidio("card", CreditCardRecognizer(), PiiKind.CARD, 0.9))
        ),
        UpperCased(presidio("iban", IbanRecognizer(), PiiKind.IBAN, 0.9)),
        UpperCased(IbanPrefixDetector()),
        IpDetector(presidio("ip", _IpRecognizer(), PiiKind.IP)),
        OutsideIbanShapes(PhoneDetector()),
        # 0.35: a bare 9-digit run (Presidio: 0.05) counts only with a context word (+0.35)
        presidio("us_ssn", UsSsnRecognizer(), PiiKind.NATIONAL_ID, 0.35),
        presidio("uk_nino", UkNinoRecognizer(), PiiKind.NATIONAL_ID),
        presidio("de_steuer_id", _SpacedSteuerIdRecognizer(), PiiKind.NATIONAL_ID, 0.9),
        presidio("es_dni", EsNifRecognizer(), PiiKind.NATIONAL_ID, 0.9),
        presidio("es_nie", EsNieRecognizer(), PiiKind.NATIONAL_ID, 0.9),
        presidio("it_codice_fiscale", ItFiscalCodeRecognizer(), PiiKind.NATIONAL_ID, 0.9),
        presidio("fr_nir", _NirRecognizer(), PiiKind.NATIONAL_ID, 0.9),
        PresidioDetector("nl_bsn", _BsnRecognizer(), PiiKind.NATIONAL_ID, needs_context=True),
        NameDetector.default(),
    ]
    return detectors
