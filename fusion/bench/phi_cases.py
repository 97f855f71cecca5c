"""Generated pages and captions with known PHI of every kind, to measure the de-identification
rules (`bench deidentify`): names with and without a label, addresses in the formats of several
countries, dates in many shapes, phone numbers, record numbers and e-mail addresses, among clinical
lines that must stay (measurements, ranges, times, years, wards, headings).

The PHI values come from Faker's locales (a source the rules were not written from): names and
addresses of the US, UK, Canada, Australia, India, New Zealand, Ireland and Malaysia; Hong Kong
addresses, which Faker lacks, from a template of their usual shape. The clinical lines come from
the demo's documents.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

KINDS = ("NAME", "DATE", "PHONE", "ADDRESS", "ID", "EMAIL")
LOCALES = ("en_US", "en_GB", "en_CA", "en_AU", "en_IN", "en_NZ", "en_IE", "en_MS")
PHONE_LOCALES = ("en_US", "en_GB", "en_CA", "en_AU", "en_IN", "en_NZ")

_NAMED = ["Patient: {}", "Patient name: {}", "Name: {}", "Pt: {}", "Next of kin: {}", "Referring physician: Dr. {}",
          "Reviewed by Dr. {}", "Ordered by Dr {}", "Signed: {}", "Seen by {}", "Emergency contact: {}", "Mr. {}",
          "Mrs {}", "Attending: {}"]
_UNLABELED = ["Patient {} was seen in clinic today.", "{} attended with her daughter.", "Thank you for referring {}.",
              "Discussed with {} by phone.", "{}, 54, presents with chest pain.", "Patient {}",
              "Letter copied to {} and the ward team.", "Consent given by {} for the procedure."]
_ADDRESSED = ["Address: {}", "Home address: {}", "Lives at {}.", "{}", "Sent to {}"]
_DATED = ["DOB: {}", "Date of birth {}", "Admitted {}", "Seen on {}.", "Date: {}", "Collected {}", "Next visit {}"]
_PHONED = ["Tel: {}", "Phone {}", "Call {} with results.", "Mobile: {}", "Contact {} after 5 pm."]
_IDENTIFIED = ["MRN {}", "MRN: {}", "Account No. {}", "Hospital number {}", "NHS No: {}", "SSN {}", "Patient ID: {}",
               "Medicare {}", "Accession # {}"]
_MAILED = ["Email: {}", "Results sent to {}.", "e-mail {}"]
_KEPT = ["BP 128/82 mmHg at 14:30", "Follow up in 6 weeks.", "Smoker since 2019.", "Metformin 500 mg twice daily",
         "Potassium 4.1 mmol/L (3.5-5.1)", "Heart rate 72 bpm, regular.", "Ward 4B, bed 12", "Page 2 of 3",
         "Chest Pain Clinic", "Final Report", "Emergency Department", "Temperature 37.2 C at 06:15",
         "Ejection fraction 55-60%", "Repeat in 3 months.", "Review in 2026.", "eGFR > 90 mL/min/1.73m2",
         "Room 3, Outpatient Clinic", "Dose reduced to 2.5 mg on day 4.", "Version 2.1 of the protocol"]
_HK_DISTRICTS = ["Yuen Long, New Territories", "Tuen Mun, New Territories", "Sha Tin, New Territories",
                 "Mong Kok, Kowloon", "Kwun Tong, Kowloon", "Wan Chai", "Causeway Bay", "Tsuen Wan, N.T."]
_HK_BUILDINGS = ["Kingswood Villas", "Wah Fu Estate", "Tai Hing Gardens", "Mei Foo Sun Chuen", "Lok Fu Estate",
                 "Harbour View Court", "Fortune Plaza", "Sun Yuen Long Centre"]


@dataclass
class Case:
    """A text and where its PHI is: (start, end, kind)."""
    text: str = ""
    spans: list[tuple[int, int, str]] = field(default_factory=list)

    def add(self, template: str, value: str = "", kind: str | None = None, end: str = "\n") -> None:
        before, _, after = template.partition("{}")
        start = len(self.text) + len(before)
        self.text += before + value + after + end
        if kind:
            self.spans.append((start, start + len(value), kind))


def _fakers(seed: int) -> dict:
    from faker import Faker

    fakers = {locale: Faker(locale) for locale in LOCALES}
    for i, faker in enumerate(fakers.values()):
        faker.seed_instance(seed * 100 + i)
    return fakers


def _hong_kong_address(rng: random.Random) -> str:
    flat = f"Flat {rng.choice('ABCDEFGH')}, {rng.randint(1, 40)}/F"
    block = rng.choice(["", f"Block {rng.randint(1, 9)}, ", f"Tower {rng.randint(1, 5)}, "])
    street = rng.choice(["", f", {rng.randint(1, 300)} {rng.choice(['Castle Peak Road', 'Nathan Road', 'Po Yip Street'])}"])
    return f"{flat}, {block}{rng.choice(_HK_BUILDINGS)}{street}, {rng.choice(_HK_DISTRICTS)}, Hong Kong"


def _value(kind: str, fakers: dict, rng: random.Random) -> str:
    faker = fakers[rng.choice(LOCALES)]
    if kind == "NAME":
        # Names without Faker's titles ("Dr.", "MD"): a title stays visible, as the rules intend.
        first, last = faker.first_name(), faker.last_name()
        name = rng.choice([f"{first} {last}", f"{first} {last}", f"{first} {rng.choice('ABCDEFGHJKLMPRST')}. {last}",
                           f"{last}, {first}"])
        return name.upper() if rng.random() < 0.1 else name
    if kind == "ADDRESS":
        if rng.random() < 1 / (len(LOCALES) + 1):
            return _hong_kong_address(rng)
        return faker.address().replace("\n", rng.choice([", ", "\n"]))
    if kind == "DATE":
        day = faker.date_between("-90y", "+1y")
        shapes = ["%m/%d/%Y", "%d/%m/%Y", "%Y-%m-%d", "%d %b %Y", "%B %d, %Y", "%d.%m.%Y", "%d-%b-%Y", "%d %B %Y",
                  "%b %d %Y", "%m/%d/%y"]
        return day.strftime(rng.choice(shapes))
    if kind == "PHONE":
        return fakers[rng.choice(PHONE_LOCALES)].phone_number()
    if kind == "ID":
        return rng.choice([str(rng.randint(10 ** 6, 10 ** 10)), f"{rng.choice('ABCDEFGH')}{rng.randint(10 ** 6, 10 ** 8)}",
                           f"{rng.randint(100, 999)} {rng.randint(100, 999)} {rng.randint(1000, 9999)}",
                           faker.ssn() if faker is fakers["en_US"] else f"{rng.randint(100, 899)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}"])
    return faker.email()


_TEMPLATES = {"NAME": _NAMED + _UNLABELED, "ADDRESS": _ADDRESSED, "DATE": _DATED, "PHONE": _PHONED,
              "ID": _IDENTIFIED, "EMAIL": _MAILED}


def phi_cases(n: int, seed: int = 0) -> list[Case]:
    """n texts: pages (a heading, clinical lines and 3-8 PHI lines in a random order) and, one in
    four, captions (one line, one or two PHI values)."""
    from fusion.demo.documents import compose_document

    rng = random.Random(seed)
    fakers = _fakers(seed)
    cases = []
    for i in range(n):
        case = Case()
        caption = i % 4 == 3
        document = compose_document(("laboratory", "cardiology")[i % 2], rng)
        lines = [" ".join(row).strip() for row in document.rows] + rng.sample(_KEPT, 4)
        phi = [rng.choice(KINDS) for _ in range(rng.randint(1, 2) if caption else rng.randint(3, 8))]
        if not caption:
            case.add(document.title)
            case.add(document.facility)
        pieces = [("kept", line) for line in (lines[:1] if caption else lines)] + [("phi", kind) for kind in phi]
        rng.shuffle(pieces)
        for what, piece in pieces:
            end = "; " if caption else "\n"
            if what == "kept":
                case.add(piece, end=end)
            else:
                case.add(rng.choice(_TEMPLATES[piece]), _value(piece, fakers, rng), piece, end=end)
        case.text = case.text.rstrip("; \n")
        cases.append(case)
    return cases


def score(cases: list[Case], find) -> dict:
    """Per kind: recall (the share of its PHI values whose every letter and digit is redacted, by
    any placeholder) and precision (the share of the characters redacted as this kind that are
    PHI), over `find(text) -> [Span]`."""
    found_chars = {k: 0 for k in KINDS}
    right_chars = {k: 0 for k in KINDS}
    values = {k: 0 for k in KINDS}
    covered = {k: 0 for k in KINDS}
    missed: dict[str, list[str]] = {k: [] for k in KINDS}
    for case in cases:
        spans = find(case.text)
        hidden = [False] * len(case.text)
        for span in spans:
            hidden[span.start:span.end] = [True] * (span.end - span.start)
        phi = [False] * len(case.text)
        for start, end, kind in case.spans:
            phi[start:end] = [True] * (end - start)
            values[kind] += 1
            if all(hidden[j] for j in range(start, end) if case.text[j].isalnum()):
                covered[kind] += 1
            elif len(missed[kind]) < 12:
                missed[kind].append(case.text[start:end])
        for span in spans:
            found_chars[span.kind] += sum(1 for j in range(span.start, span.end) if case.text[j].isalnum())
            right_chars[span.kind] += sum(1 for j in range(span.start, span.end) if case.text[j].isalnum() and phi[j])
    return {kind: {"values": values[kind], "recall": round(covered[kind] / max(values[kind], 1), 4),
                   "precision": round(right_chars[kind] / found_chars[kind], 4) if found_chars[kind] else None,
                   "missed_examples": missed[kind]} for kind in KINDS}
