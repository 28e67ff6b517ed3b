"""Person names without an NER model: a first-name gazetteer and context.

No spaCy or other NER model installs from PyPI (only unofficial re-uploads), and transformer NER
needs torch and a model download; so a name is found when it is:
- a known first name followed by one or two capitalised words (surnames, with particles such as
  "van der", "de la", "von"), e.g. "Anna Kowalczyk", "Jan van der Berg" (an all-capitals
  surname, "Marie DUBOIS", only after a title, an introduction or a closing);
- after a title: Mr/Mrs/Ms/Dr/Prof, Herr/Frau, M./Mme/Mlle, Sr./Sra./Don/Doña, Dhr./Mevr. ...;
- after an introduction: "my name is", "ich heiße", "je m'appelle", "me llamo", "mijn naam is"
  (and, for a known first name, "I am", "ich bin", "je suis", "soy", "ik ben", "this is");
- after a greeting ("Dear", "Hallo", "Bonjour", "Hola", "Beste" ...) when it is a known first name;
- on the line after a closing ("Best regards,", "Mit freundlichen Grüßen", "Cordialement",
  "Saludos", "Met vriendelijke groet" ...).
The gazetteer is the first-name dictionary that the gender-guesser package ships (Jörg Michael's
`nam_dict.txt`, about 45,000 names with a frequency per country), keeping the names seen in
Western Europe, the Nordics or the US, less a stop list of words that are also common words.

It misses: a first name alone in running text ("ask Anna"), a surname alone ("Kowalczyk said"),
names not in the dictionary without a title/introduction/signature (many non-European names),
names written in lower case, and it can take a capitalised word after a first name for a surname
("Rose Garden"). The placeholder replaces the name only, not the title or the phrase before it.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from importlib import resources

import regex

from shared.feedback.pii import PiiKind, Span

# Columns of nam_dict.txt (one character each, from column 30): the countries kept.
_COUNTRY_COLUMNS = 20  # great_britain ... finland: Western Europe, the US, the Nordics
_FIRST_COLUMN = 30

# Words the dictionary also lists as rare first names, or that commonly follow a first name, but
# are ordinary words in the languages we see. A first name or surname is never one of these.
_STOP_WORDS = """
One Two Three Four Five Six Seven Eight Nine Ten First Second Last Next Key
The A An And Or But If In On At To Of For With From By As Is It Its This That These Those I We
You He She They My Your Our Their His Her Hi Hello Hey Dear Thanks Thank Please Yes No Not New
Old Best Kind Regards Team Support Customer Client Service Order Invoice Price Total Card Bank
Account Number Phone Email Mail Server Version Street Road Avenue Hotel University Company Inc
Ltd Llc Gmbh Ag Sa Bv Nv Group Office Monday Tuesday Wednesday Thursday Friday Saturday Sunday
January February March April May June July August September October November December Christmas
Easter Will Can Could Would Should Shall Must Might Der Die Das Den Dem Des Ein Eine Einen Und
Oder Aber Wenn Ich Du Er Sie Es Wir Ihr Mein Meine Bitte Danke Hallo Liebe Lieber Sehr Guten Tag
Herr Frau Bin Ist Sind Hat Haben Mit Von Zu Im Am Bei Nach Vor Auf Aus Für Strasse Straße Weg
Platz Montag Dienstag Mittwoch Donnerstag Freitag Samstag Sonntag Januar Februar März Mai Juni
Juli Oktober Dezember Grüße Gruß Le La Les Un Une Des Du Et Ou Mais Je Tu Il Elle Nous Vous Ils
Elles Mon Ma Mes Bonjour Merci Cher Chère Madame Monsieur Rue Lundi Mardi Mercredi Jeudi
Vendredi Samedi Dimanche Janvier Février Mars Avril Juin Juillet Août Septembre Octobre Novembre
Décembre El Los Las Una Unos Unas Y O Pero Yo Tú Él Ella Nosotros Usted Mi Su Hola Gracias Calle
Lunes Martes Miércoles Jueves Viernes Sábado Domingo Enero Febrero Marzo Abril Mayo Junio Julio
Agosto Septiembre Octubre Noviembre Diciembre Señor Señora Santa San Santo Het Een En Of Maar Ik
Jij Hij Zij Wij Jullie Mijn Uw Hoi Dank Bedankt Beste Geachte Straat Maandag Dinsdag Woensdag
Donderdag Vrijdag Zaterdag Zondag Januari Februari Maart Mei Juni Juli Augustus Oktober Euro
Dollar Pound Price Prix Preis Precio Prijs Azure Windows Linux Python Java Excel Word
"""
_STOP = frozenset(_STOP_WORDS.split())

_TITLES = (
    r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Dame|Madam|Herr|Frau|Hr|Fr|Dipl\.-Ing|Ing|"
    r"M(?=\.)|Monsieur|Madame|Mademoiselle|Mme|Mlle|"
    r"Señor|Señora|Señorita|Sr|Sra|Srta|Don|Doña|Dña|"
    r"Dhr|Mevr|Mevrouw|Meneer|Mw|Heer|meneer|mevrouw|monsieur|madame|señor|señora|don|doña"
)
# A name word: capitalised (McDonald, O'Brien, Müller-Lüdenscheidt) or, as a surname, all capitals
_WORD = r"\p{Lu}\p{Ll}+(?:\p{Lu}\p{Ll}+)?(?:['\u2019\-]\p{Lu}?\p{Ll}+)*"
_CAPS = r"\p{Lu}{2,}(?:['\u2019\-]\p{Lu}{2,})*"
_PARTICLE = (
    r"(?:van der|van den|van de|von der|von dem|de la|de las|de los|van|von|vom|zu|de|del|der|"
    r"den|ten|ter|du|des|le|la|di|da|dos|das|do|y|e|'t|d')"
)
_SURNAME = rf"(?:{_PARTICLE}[ \t]+)?(?:{_WORD}|{_CAPS})"
# after a bare first name, an all-capitals word is more often an acronym ("Anna JSON") than a name
_PLAIN_SURNAME = rf"(?:{_PARTICLE}[ \t]+)?{_WORD}"
_FLAGS = regex.VERSION1

# FIRST + 1-2 surnames; the first word is checked against the gazetteer.
_FULL = regex.compile(
    rf"(?<![\p{{L}}\p{{N}}_])(?P<first>{_WORD})(?P<rest>(?:[ \t]+{_PLAIN_SURNAME}){{1,2}})"
    rf"(?![\p{{L}}\p{{N}}_])",
    _FLAGS,
)
_AFTER_TITLE = regex.compile(
    rf"(?<![\p{{L}}])(?:{_TITLES})\.?[ \t]+(?P<name>(?:{_PARTICLE}[ \t]+)?(?:{_WORD}|{_CAPS})"
    rf"(?:[ \t]+{_SURNAME}){{0,2}})(?![\p{{L}}\p{{N}}_])",
    _FLAGS,
)
_INTRO_ANY = (
    r"my name is|my name's|call me|ich heiße|ich heisse|mein name ist|je m'appelle|"
    r"je m\u2019appelle|mon nom est|me llamo|mi nombre es|mijn naam is|ik heet|signed|"
    r"unterschrieben"
)
_INTRO_KNOWN = (
    r"i am|i'm|i\u2019m|this is|ich bin|hier ist|hier spricht|je suis|c'est|ici|soy|habla|ik ben|"
    r"met|dear|hi|hello|hey|hallo|liebe|lieber|moin|bonjour|salut|cher|chère|hola|querido|"
    r"querida|estimado|estimada|beste|hoi|dag"
)
_AFTER_INTRO = regex.compile(
    rf"(?<![\p{{L}}])(?i:(?P<intro>{_INTRO_ANY})|(?P<known>{_INTRO_KNOWN}))[ \t,:]+"
    rf"(?P<name>{_WORD}(?:[ \t]+{_SURNAME}){{0,2}})(?![\p{{L}}\p{{N}}_])",
    _FLAGS,
)
_CLOSINGS = (
    r"regards|best regards|kind regards|warm regards|best wishes|best|cheers|thanks|thank you|"
    r"many thanks|sincerely|yours sincerely|yours truly|yours|"
    r"mit freundlichen grüßen|mit freundlichen grüssen|mit freundlichen gruessen|freundliche grüße|"
    r"viele grüße|beste grüße|liebe grüße|herzliche grüße|schöne grüße|gruß|grüße|lg|vg|mfg|"
    r"cordialement|bien cordialement|bien à vous|salutations|sincères salutations|amitiés|bises|"
    r"bonne journée|saludos|un saludo|saludos cordiales|atentamente|un abrazo|cordialmente|"
    r"met vriendelijke groet|vriendelijke groet|met vriendelijke groeten|groeten|groetjes|"
    r"hartelijke groet|mvg|gr"
)
_SIGNATURE = regex.compile(
    rf"(?im)^[ \t]*(?:{_CLOSINGS}|--)[ \t]*[,.!]?[ \t]*(?:\r?\n[ \t]*|[ \t]+)"
    rf"(?-i:(?P<name>(?:{_WORD}|{_CAPS})(?:[ \t]+{_SURNAME}){{0,2}}))(?![\p{{L}}\p{{N}}_])",
    _FLAGS,
)
_SPLIT = regex.compile(r"[ \t]+")
_PARTICLES = regex.compile(rf"^{_PARTICLE}$")


@cache
def first_names() -> frozenset[str]:
    """The gazetteer: first names seen in Western Europe, the Nordics or the US."""
    data = resources.files("gender_guesser").joinpath("data/nam_dict.txt")
    names: set[str] = set()
    with data.open(encoding="utf-8") as lines:
        for line in lines:
            if line[:1] in "#=" or len(line) <= _FIRST_COLUMN:
                continue
            parts = line.split()
            if len(parts) < 2:
                continue
            columns = line[_FIRST_COLUMN : _FIRST_COLUMN + _COUNTRY_COLUMNS]
            if columns.strip():
                name = parts[1]
                names.add(_fold(name.replace("+", "-")))
                names.add(_fold(name.replace("+", "")))
    return frozenset(n for n in names if n not in _STOP and len(n) > 1)


def _fold(word: str) -> str:
    """`word` without diacritics ("Élodie" -> "Elodie"): the dictionary writes some without."""
    decomposed = unicodedata.normalize("NFKD", word)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _is_first_name(word: str, known: frozenset[str]) -> bool:
    if word in _STOP:
        return False
    word = _fold(word)
    return word in known or ("-" in word and all(p in known for p in word.split("-")))


def _trim(name: str, start: int) -> tuple[int, int] | None:
    """The span of `name` less trailing stop words and particles; None if nothing is left."""
    words = _SPLIT.split(name)
    while words and (words[-1] in _STOP or _PARTICLES.match(words[-1])):
        words.pop()
    if not words or words[0] in _STOP:
        return None
    end = start + len(name)
    # the kept words are a prefix of `name`: find where the last one ends
    kept = " ".join(words)
    if kept != name:
        at = 0
        for w in words:
            at = name.index(w, at) + len(w)
        end = start + at
    return start, end


@dataclass(frozen=True)
class NameDetector:
    """Finds person names (see the module docstring for how and what it misses)."""

    known: frozenset[str]
    name: str = "person"
    score: float = 0.5

    @classmethod
    def default(cls) -> NameDetector:
        return cls(first_names())

    def find(self, text: str) -> Iterator[Span]:
        for match in _FULL.finditer(text, overlapped=True):
            if _is_first_name(match.group("first"), self.known):
                span = _trim(match.group(), match.start())
                if span and span[1] > match.end("first"):
                    yield Span(span[0], span[1], PiiKind.PERSON, self.score)
        for pattern in (_AFTER_TITLE, _SIGNATURE):
            for match in pattern.finditer(text, overlapped=True):
                span = _trim(match.group("name"), match.start("name"))
                if span:
                    yield Span(span[0], span[1], PiiKind.PERSON, self.score)
        for match in _AFTER_INTRO.finditer(text, overlapped=True):
            name = match.group("name")
            if match.group("known") is not None and not _is_first_name(
                _SPLIT.split(name)[0], self.known
            ):
                continue
            span = _trim(name, match.start("name"))
            if span:
                yield Span(span[0], span[1], PiiKind.PERSON, self.score)
