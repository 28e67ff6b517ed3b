"""A labelled corpus of synthetic lines for the PII scrubber, deterministic by seed.

Invented people in English, German, French, Spanish and Dutch sentences, signatures and chat
messages, with emails, phone numbers (national and international formats of 12 countries), card
numbers (Visa, Mastercard, Amex, Discover; spaces, dashes, none), IBANs of 9 countries (with and
without spaces), IPv4 and IPv6 addresses and national ids (US SSN, UK NINO, DE Steuer-ID, ES DNI
and NIE, FR NIR, NL BSN). Every checksum (Luhn, IBAN mod 97, the ids' check digits) is computed
here; phone numbers are drawn from libphonenumber's example numbers with their last digits
randomised and kept when libphonenumber says they are valid.

Names come from the lists below, written for this corpus, not from the scrubber's gazetteer; some
first names are deliberately from outside Western Europe. Negative lines hold look-alikes: order
numbers, dates, versions, prices, 16-digit numbers that fail Luhn, IBANs with a wrong check,
ISBNs, UUIDs, times.

    .venv/bin/python -m bench.pii_corpus --seed 7 > /tmp/corpus.jsonl   # one JSON line each
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import string
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import phonenumbers

Gold = tuple[int, int, str]  # start, end, kind (a PiiKind value)


@dataclass(frozen=True)
class Line:
    text: str
    spans: tuple[Gold, ...]
    lang: str
    negative: bool = False
    tags: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        return json.dumps(
            {
                "text": self.text,
                "spans": [list(s) for s in self.spans],
                "lang": self.lang,
                "negative": self.negative,
                "tags": list(self.tags),
            },
            ensure_ascii=False,
        )


# --- invented people -------------------------------------------------------------------------

FIRST = {
    "en": [
        "Oliver",
        "Amelia",
        "Harriet",
        "Callum",
        "Imogen",
        "Declan",
        "Priya",
        "Marcus",
        "Eleanor",
    ],
    "de": ["Jürgen", "Annika", "Lukas", "Friederike", "Matthias", "Svenja", "Tobias", "Lieselotte"],
    "fr": ["Camille", "Benoît", "Élodie", "Mathieu", "Solène", "Grégoire", "Aurélie", "Théo"],
    "es": ["Lucía", "Alejandro", "Inmaculada", "Javier", "Ainhoa", "Rodrigo", "Nerea", "Ignacio"],
    "nl": ["Daan", "Femke", "Sander", "Marloes", "Joris", "Anouk", "Wouter", "Lieke"],
    # first names a European gazetteer may well not hold
    "xx": ["Oluwaseun", "Thandiwe", "Xiomara", "Anahí", "Kwabena", "Nguyen", "Ksenia", "Aiyana"],
}
LAST = {
    "en": ["Ashcombe", "Pemberton", "Whitlock", "Fairbairn", "Holloway", "Trelawney", "Brackley"],
    "de": ["Brandtner", "Oberholzer", "Kessler", "Wittkamp", "Lindqvist", "Hülsmann", "Rautenberg"],
    "fr": ["Delacroix", "Montreuil", "Lefebvre", "Garnier", "Chauvet", "Beaumarchais", "Roussel"],
    "es": ["Etxeberria", "Valderrama", "Quintana", "Sandoval", "Arriaga", "Bermúdez", "Cifuentes"],
    "nl": ["de Wit", "van der Heijden", "Vermeulen", "Brouwer", "van Dijk", "Kuipers", "Hoekstra"],
    "xx": ["Adeyemi", "Mthembu", "Okonkwo", "Tran", "Volkova", "Begay", "Mensah"],
}
TITLE = {
    "en": ["Mr.", "Ms.", "Dr.", "Mrs."],
    "de": ["Herr", "Frau", "Dr."],
    "fr": ["M.", "Mme", "Madame", "Monsieur"],
    "es": ["Sr.", "Sra.", "Don", "Doña"],
    "nl": ["Dhr.", "Mevr.", "meneer"],
}
DOMAINS = ["example.com", "mail.example.org", "contoso.de", "fabrikam.fr", "correo.es", "posteo.nl"]
DOMAINS += ["uni-example.ac.uk", "tailwind.io"]


# --- checksums -------------------------------------------------------------------------------


def luhn_digit(partial: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def luhn_ok(number: str) -> bool:
    return luhn_digit(number[:-1]) == number[-1]


def iban_check(country: str, bban: str) -> str:
    moved = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in moved)
    return f"{98 - int(numeric) % 97:02d}"


def steuer_id_check(ten: str) -> str:
    product = 10
    for ch in ten:
        total = (int(ch) + product) % 10 or 10
        product = (total * 2) % 11
    check = 11 - product
    return "0" if check == 10 else str(check)


DNI_LETTERS = "TRWAGMYFPDXBNJZSQVHLCKE"


# --- value generators ------------------------------------------------------------------------


class Gen:
    def __init__(self, rng: random.Random) -> None:
        self.r = rng

    def digits(self, n: int) -> str:
        return "".join(self.r.choice(string.digits) for _ in range(n))

    def person(self, lang: str) -> tuple[str, str]:
        pool = lang if self.r.random() > 0.15 else "xx"
        return self.r.choice(FIRST[pool]), self.r.choice(LAST[pool])

    def email(self, first: str, last: str) -> str:
        f = _ascii(first).lower()
        la = _ascii(last).lower().replace(" ", "")
        local = self.r.choice([f"{f}.{la}", f"{f[0]}{la}", f"{f}_{la}{self.r.randint(1, 99)}"])
        local = self.r.choice([local, local, f"{local}+news"])
        return f"{local}@{self.r.choice(DOMAINS)}"

    def phone(self, region: str) -> str:
        kind = self.r.choice(
            [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
        )
        example = phonenumbers.example_number_for_type(region, kind)
        assert example is not None
        nsn = str(example.national_number)
        for _ in range(200):
            tail = self.digits(4)
            candidate = nsn[:-4] + tail
            number = phonenumbers.parse("+" + str(example.country_code) + candidate, None)
            if phonenumbers.is_valid_number(number):
                break
        style = self.r.choice(
            ["intl", "intl", "national", "national", "e164", "00", "dashed", "(0)"]
        )
        intl = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        if style == "intl":
            return intl
        if style == "national":
            return national
        if style == "e164":
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        if style == "00":
            return "00" + intl[1:]
        if style == "(0)" and national.startswith("0"):
            code, _, rest = intl.partition(" ")
            return f"{code} (0){rest}"
        return national.replace(" ", "-") if region != "FR" else national.replace(" ", ".")

    def card(self) -> str:
        brand = self.r.choice(["visa", "mc", "amex", "discover"])
        if brand == "amex":
            body = self.r.choice(["34", "37"]) + self.digits(12)
            number = body + luhn_digit(body)
            groups = [number[:4], number[4:10], number[10:]]
        else:
            prefix = {"visa": "4", "mc": str(self.r.randint(51, 55)), "discover": "6011"}[brand]
            body = prefix + self.digits(15 - len(prefix))
            number = body + luhn_digit(body)
            groups = [number[i : i + 4] for i in range(0, 16, 4)]
        return self.r.choice([" ", "-", ""]).join(groups)

    def bad_card(self) -> str:
        while True:
            number = "4" + self.digits(15)
            if not luhn_ok(number):
                return " ".join(number[i : i + 4] for i in range(0, 16, 4))

    IBAN_FORMATS = {
        # country: BBAN as (n: digits, a: upper letters, c: alphanumerics) runs
        "DE": "18n",
        "FR": "10n11c2n",
        "ES": "20n",
        "NL": "4a10n",
        "GB": "4a14n",
        "IT": "1a10n12c",
        "BE": "12n",
        "AT": "16n",
        "CH": "5n12c",
    }

    def iban(self, country: str | None = None, *, valid: bool = True) -> str:
        country = country or self.r.choice(list(self.IBAN_FORMATS))
        bban = ""
        spec = self.IBAN_FORMATS[country]
        i = 0
        while i < len(spec):
            j = i
            while spec[j].isdigit():
                j += 1
            count, kind = int(spec[i:j]), spec[j]
            alphabet = {
                "n": string.digits,
                "a": string.ascii_uppercase,
                "c": string.digits + string.ascii_uppercase,
            }[kind]
            bban += "".join(self.r.choice(alphabet) for _ in range(count))
            i = j + 1
        check = iban_check(country, bban)
        if not valid:
            check = f"{(int(check) + self.r.randint(1, 90)) % 97 + 2:02d}"
            if check == iban_check(country, bban):
                check = f"{(int(check) + 1) % 97 + 2:02d}"
        compact = country + check + bban
        if self.r.random() < 0.5:
            return compact
        return " ".join(compact[k : k + 4] for k in range(0, len(compact), 4))

    def ipv4(self) -> str:
        return ".".join(
            str(x) for x in [self.r.randint(1, 223), *(self.r.randint(0, 255) for _ in range(3))]
        )

    def ipv6(self) -> str:
        groups = [self.r.randint(0, 0xFFFF) for _ in range(8)]
        if self.r.random() < 0.5:
            groups[3:6] = [0, 0, 0]
        addr = ipaddress.IPv6Address(":".join(f"{g:x}" for g in groups))
        return addr.compressed if self.r.random() < 0.6 else addr.exploded

    def ssn(self) -> str:
        area = self.r.choice([a for a in range(1, 900) if a != 666])
        sep = self.r.choice(["-", "-", " "])
        return f"{area:03d}{sep}{self.r.randint(1, 99):02d}{sep}{self.r.randint(1, 9999):04d}"

    def nino(self) -> str:
        first = self.r.choice("ABCEGHJKLMNOPRSTWXYZ")
        second = self.r.choice("ABCEGHJKLMNPRSTWXYZ")
        while first + second in {"BG", "GB", "NK", "KN", "NT", "TN", "ZZ"}:
            second = self.r.choice("ABCEGHJKLMNPRSTWXYZ")
        d = self.digits(6)
        suffix = self.r.choice("ABCD")
        if self.r.random() < 0.5:
            return f"{first}{second}{d}{suffix}"
        return f"{first}{second} {d[:2]} {d[2:4]} {d[4:]} {suffix}"

    def steuer_id(self) -> str:
        while True:
            ten = str(self.r.randint(1, 9)) + self.digits(9)
            counts = sorted((ten.count(c) for c in set(ten)), reverse=True)
            # one digit twice or three times, the others at most once (the BZSt rule)
            if counts[0] in (2, 3) and all(c == 1 for c in counts[1:]):
                break
        number = ten + steuer_id_check(ten)
        if self.r.random() < 0.5:
            return number
        return f"{number[:2]} {number[2:5]} {number[5:8]} {number[8:]}"

    def dni(self) -> str:
        n = self.r.randint(10_000_000, 99_999_999)
        return f"{n}{DNI_LETTERS[n % 23]}"

    def nie(self) -> str:
        prefix = self.r.choice("XYZ")
        n = self.r.randint(1_000_000, 9_999_999)
        return f"{prefix}{n}{DNI_LETTERS[int(str('XYZ'.index(prefix)) + str(n)) % 23]}"

    def nir(self) -> str:
        sex = self.r.choice("12")
        body = (
            f"{sex}{self.r.randint(40, 99):02d}{self.r.randint(1, 12):02d}"
            f"{self.r.choice([d for d in range(1, 96) if d != 20]):02d}"
            f"{self.r.randint(1, 990):03d}{self.r.randint(1, 999):03d}"
        )
        key = f"{97 - int(body) % 97:02d}"
        if self.r.random() < 0.5:
            return body + key
        return f"{body[0]} {body[1:3]} {body[3:5]} {body[5:7]} {body[7:10]} {body[10:]} {key}"

    def bsn(self) -> str:
        while True:
            d = self.digits(8)
            if d[0] == "0":
                continue
            total = sum(int(c) * w for c, w in zip(d, range(9, 1, -1), strict=True))
            last = total % 11
            if last < 10:
                number = d + str(last)
                return (
                    number if self.r.random() < 0.6 else f"{number[:4]}.{number[4:6]}.{number[6:]}"
                )


def _ascii(s: str) -> str:
    table = str.maketrans("äöüéèêàáíóúñçëïÄÖÜÉÈÁÍÓÚÑ", "aoueeeaaiouncei" + "AOUEEAIOUN")
    return s.translate(table).replace("ß", "ss")


# --- templates -------------------------------------------------------------------------------
# {slot} is filled and labelled; {first}/{last}/{title} are parts of a person (labelled as one
# span "first last", or "last" after a title). Literal braces do not occur.

PHONE_REGIONS = {"en": ["US", "GB", "IE"], "de": ["DE", "AT", "CH"], "fr": ["FR", "BE"]}
PHONE_REGIONS |= {"es": ["ES", "PT"], "nl": ["NL", "BE"], "it": ["IT"]}

TEMPLATES: dict[str, dict[str, list[str]]] = {
    "email": {
        "en": [
            "Please reply to {email} when you can.",
            "Contact: {email}",
            "send the report to {email}, thanks",
        ],
        "de": ["Bitte schreiben Sie an {email}.", "Meine Adresse ist {email}"],
        "fr": ["Écrivez-moi à {email} svp.", "Mon adresse : {email}"],
        "es": ["Mi correo es {email}, escríbeme.", "Envíalo a {email}"],
        "nl": ["Mail mij op {email} a.u.b.", "Mijn e-mailadres is {email}."],
    },
    "phone": {
        "en": [
            "Call me on {phone} after 5pm.",
            "My number: {phone}",
            "reach me at {phone} or by email",
        ],
        "de": [
            "Rufen Sie mich unter {phone} an.",
            "Tel.: {phone}",
            "Meine Handynummer ist {phone}.",
        ],
        "fr": ["Appelez-moi au {phone}.", "Mon numéro : {phone}", "Tél. {phone}"],
        "es": ["Llámame al {phone}.", "Mi teléfono es {phone}"],
        "nl": ["Bel me op {phone}.", "Mijn nummer is {phone}"],
    },
    "card": {
        "en": ["My card number is {card}, expiry 04/27.", "charge {card} please"],
        "de": ["Kreditkarte: {card}", "Bitte belasten Sie {card}."],
        "fr": ["Ma carte bancaire : {card}", "Numéro de carte {card}"],
        "es": ["Mi tarjeta es {card}.", "Pague con la tarjeta {card}"],
        "nl": ["Mijn creditcard is {card}.", "Kaartnummer {card}"],
    },
    "iban": {
        "en": ["Please pay into {iban}.", "IBAN: {iban}"],
        "de": ["Überweisen Sie bitte auf {iban}.", "Meine IBAN lautet {iban}"],
        "fr": ["Mon IBAN est {iban}.", "Virement sur {iban} svp"],
        "es": ["Mi IBAN: {iban}", "Transfiera a la cuenta {iban}."],
        "nl": ["Maak het over naar {iban}.", "Rekeningnummer {iban}"],
    },
    "ip": {
        "en": ["The server at {ip} keeps timing out.", "login from {ip} was blocked", "ping {ip}"],
        "de": ["Der Zugriff von {ip} wurde gesperrt.", "Meine IP ist {ip}"],
        "fr": ["Connexion depuis {ip} refusée.", "Mon adresse IP : {ip}"],
        "es": ["La IP {ip} no responde.", "Acceso desde {ip}"],
        "nl": ["Het IP-adres {ip} is geblokkeerd.", "verbinding met {ip} mislukt"],
    },
    "national_id": {
        "en": [
            "My SSN is {ssn}.",
            "social security number {ssn}",
            "National Insurance number: {nino}",
            "my NI number is {nino}",
        ],
        "de": ["Meine Steuer-ID ist {steuer_id}.", "Steueridentifikationsnummer {steuer_id}"],
        "fr": ["Mon numéro de sécurité sociale est {nir}.", "N° INSEE : {nir}"],
        "es": ["Mi DNI es {dni}.", "DNI: {dni}", "Mi NIE es {nie}", "NIE {nie}"],
        "nl": ["Mijn BSN is {bsn}.", "burgerservicenummer: {bsn}"],
    },
    "person": {
        "en": [
            "Hi, my name is {first} {last} and I need help.",
            "I spoke to {first} {last} yesterday about the refund.",
            "Please forward this to {title} {last}.",
            "Thanks for your help!\nBest regards,\n{first} {last}",
            "Can {first} {last} approve the invoice?",
        ],
        "de": [
            "Hallo, ich heiße {first} {last}.",
            "Sehr geehrte {title} {last}, vielen Dank.",
            "Ich habe mit {first} {last} telefoniert.",
            "Vielen Dank im Voraus.\nMit freundlichen Grüßen\n{first} {last}",
        ],
        "fr": [
            "Bonjour, je m'appelle {first} {last}.",
            "J'ai parlé avec {first} {last} hier.",
            "Merci de transmettre à {title} {last}.",
            "Merci d'avance.\nCordialement,\n{first} {last}",
        ],
        "es": [
            "Hola, me llamo {first} {last}.",
            "Hablé con {first} {last} ayer.",
            "Por favor, avise a {title} {last}.",
            "Gracias.\nSaludos,\n{first} {last}",
        ],
        "nl": [
            "Hallo, mijn naam is {first} {last}.",
            "Ik heb {first} {last} gisteren gesproken.",
            "Graag doorsturen naar {title} {last}.",
            "Alvast bedankt.\nMet vriendelijke groet,\n{first} {last}",
        ],
    },
    "mixed": {
        "en": [
            "{first} {last}\n{email}\n{phone}",
            "Hi, I'm {first} {last} ({email}), call {phone} or pay to {iban}.",
        ],
        "de": ["Kontakt: {first} {last}, {email}, Tel. {phone}"],
        "fr": ["{first} {last} - {email} - {phone}"],
        "es": ["Soy {first} {last}, mi correo es {email} y mi teléfono {phone}."],
        "nl": ["Groet,\n{first} {last}\n{phone} | {email}"],
    },
}

NEGATIVES: list[str] = [
    "Order #{order} was shipped on {date}.",
    "Bestellnummer {order}, Lieferung am {date_de}.",
    "Commande n° {order} du {date_de}.",
    "Pedido {order} enviado el {date_de}.",
    "Bestelling {order} is verzonden op {date_de}.",
    "Please upgrade to version {version}; 1.9 is no longer supported.",
    "We run Python {version} on build {build}.",
    "Update auf Version {version} verfügbar.",
    "The total is ${price} including tax.",
    "Der Preis beträgt {price_de} €.",
    "Le prix est de {price_de} € TTC.",
    "El precio es {price_de} €.",
    "Reference {bad_card} is not a card number.",
    "Tracking code {bad_card} (carrier internal).",
    "IBAN {bad_iban} was rejected as invalid.",
    "Die IBAN {bad_iban} ist ungültig.",
    "ISBN {isbn}, page {page}.",
    "Request id {uuid} failed at {time}.",
    "Meeting at {time} in room {room}, agenda item {page}.",
    "Invoice INV-{year}-{five} is due in 30 days.",
    "Ticket {order}: the build {build} fails on step {page}.",
    "The model returned 3.14159 and 2.71828 for the test.",
    "Temperatures between 12 and 18 degrees, humidity 65%.",
    "Thanks for the quick answer, the Support Team was great.",
    "The New York office opens at {time}.",
    "Mit freundlichen Grüßen, Ihr Kundenservice",
    "Cordialement, le service client",
    "Kind regards, the team",
    "Met vriendelijke groet, de klantenservice",
    "Saludos, el equipo de soporte",
    "Gross margin grew 4.5 % to EUR {price_de} million in Q{quarter} {year}.",
    "Artikelnummer {order}-{page} ist nicht lieferbar.",
    "Serial number SN-{five}-{five}, firmware {version}.",
    "Die Sitzung ist am {date_de} um {time} Uhr.",
    "Le colis {order} arrivera le {date_de}.",
]


def _fill(template: str, values: dict[str, Callable[[], str]]) -> tuple[str, dict[str, str]]:
    out: dict[str, str] = {}
    text = template
    for key, make in values.items():
        if "{" + key + "}" in text:
            out[key] = make()
            text = text.replace("{" + key + "}", out[key], 1)
    return text, out


def _positive(gen: Gen, kind: str, lang: str, template: str) -> Line:
    r = gen.r
    first, last = gen.person(lang)
    region = r.choice(PHONE_REGIONS[lang])
    title = r.choice(TITLE[lang])
    slots: dict[str, tuple[str, str]] = {
        "email": (gen.email(first, last), "email"),
        "phone": (gen.phone(region), "phone"),
        "card": (gen.card(), "card"),
        "iban": (gen.iban(), "iban"),
        "ip": (gen.ipv4() if r.random() < 0.55 else gen.ipv6(), "ip"),
        "ssn": (gen.ssn(), "national_id"),
        "nino": (gen.nino(), "national_id"),
        "steuer_id": (gen.steuer_id(), "national_id"),
        "dni": (gen.dni(), "national_id"),
        "nie": (gen.nie(), "national_id"),
        "nir": (gen.nir(), "national_id"),
        "bsn": (gen.bsn(), "national_id"),
    }
    text = ""
    spans: list[Gold] = []
    rest = template
    while "{" in rest:
        before, _, after = rest.partition("{")
        key, _, rest = after.partition("}")
        text += before
        if key == "first":
            # "{first} {last}" is one person span
            assert rest.startswith(" {last}")
            rest = rest[len(" {last}") :]
            start = len(text)
            text += f"{first} {last}"
            spans.append((start, len(text), "person"))
        elif key == "title":
            assert rest.startswith(" {last}")
            rest = rest[len(" {last}") :]
            text += f"{title} "
            start = len(text)
            text += last
            spans.append((start, len(text), "person"))
        else:
            value, gold = slots[key]
            start = len(text)
            text += value
            spans.append((start, len(text), gold))
    text += rest
    return Line(text, tuple(spans), lang, tags=(kind,))


def _negative(gen: Gen, template: str) -> Line:
    r = gen.r
    values: dict[str, Callable[[], str]] = {
        "order": lambda: r.choice(
            [
                f"{r.randint(100, 999)}-{r.randint(1000, 9999)}",
                f"A{r.randint(10000, 99999)}",
                f"{r.randint(2023, 2026)}-{r.randint(100000, 999999)}",
            ]
        ),
        "date": lambda: f"{r.randint(2020, 2026)}-{r.randint(1, 12):02d}-{r.randint(1, 28):02d}",
        "date_de": lambda: f"{r.randint(1, 28):02d}.{r.randint(1, 12):02d}.{r.randint(2020, 2026)}",
        "version": lambda: r.choice(
            [
                f"{r.randint(1, 12)}.{r.randint(0, 20)}.{r.randint(0, 9)}",
                f"{r.randint(1, 4)}.{r.randint(0, 9)}",
            ]
        ),
        "build": lambda: f"{r.randint(10, 99)}.{r.randint(0, 9)}.{r.randint(1000, 29999)}",
        "price": lambda: f"{r.randint(1, 9)},{r.randint(100, 999)}.{r.randint(0, 99):02d}",
        "price_de": lambda: f"{r.randint(1, 9)}.{r.randint(100, 999)},{r.randint(0, 99):02d}",
        "bad_card": gen.bad_card,
        "bad_iban": lambda: gen.iban(valid=False),
        "isbn": lambda: (
            f"978-{r.randint(0, 9)}-{r.randint(10, 99)}-"
            f"{r.randint(100000, 999999)}-{r.randint(0, 9)}"
        ),
        "page": lambda: str(r.randint(2, 400)),
        "uuid": lambda: "-".join(
            "".join(r.choice("0123456789abcdef") for _ in range(n)) for n in (8, 4, 4, 4, 12)
        ),
        "time": lambda: f"{r.randint(7, 19):02d}:{r.choice(['00', '15', '30', '45'])}",
        "room": lambda: f"{r.randint(1, 5)}.{r.randint(10, 40)}",
        "year": lambda: str(r.randint(2020, 2026)),
        "five": lambda: f"{r.randint(10000, 99999)}",
        "quarter": lambda: str(r.randint(1, 4)),
    }
    text, _ = _fill(template, values)
    return Line(text, (), "xx", negative=True, tags=("negative",))


def generate(seed: int = 7, per_template: int = 3) -> list[Line]:
    """The corpus: `per_template` lines from each positive template, and from each negative."""
    gen = Gen(random.Random(seed))
    lines: list[Line] = []
    for kind, by_lang in TEMPLATES.items():
        for lang, templates in by_lang.items():
            for template in templates:
                lines.extend(_positive(gen, kind, lang, template) for _ in range(per_template))
    for template in NEGATIVES:
        lines.extend(_negative(gen, template) for _ in range(per_template))
    return lines


def _main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--per-template", type=int, default=3)
    args = parser.parse_args(argv)
    for line in generate(args.seed, args.per_template):
        sys.stdout.write(line.to_json() + "\n")


def iter_gold(lines: list[Line]) -> Iterator[tuple[Line, Gold]]:
    for line in lines:
        for span in line.spans:
            yield line, span


if __name__ == "__main__":
    _main()
