"""De-identification: find names, dates, phone numbers, addresses, record numbers and e-mail
addresses in free text (OCR text, captions) and replace them with typed placeholders such as
[NAME] or [DATE].

Phone numbers come from Google's libphonenumber rules (the `phonenumbers` package). No trained
recogniser (Presidio, spaCy) can be loaded here, so the rest are tested rules, written for
clinical documents: a name is found by its context (a title such as "Dr.", or a label such as
"Patient:" or "Reviewed by"), since a bare capitalised word may as well be a test or a ward;
dates by their shape (3 parts, or a month name) and by labels such as "DOB" even when OCR
garbled the digits; record numbers by labels (MRN, account, ...) and by long digit runs.
Years alone, times, measurements and reference ranges are kept: they are not identifying and the
model needs them. Rules are a best effort: they reduce what a screen shows, they do not prove
a document is free of PHI.

Only what is shown or exported is redacted; the model always reads the original text.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from fusion.privacy.addresses import addresses
from phonenumbers import Leniency, PhoneNumberMatcher, is_valid_number

KINDS = ("NAME", "DATE", "PHONE", "ADDRESS", "ID", "EMAIL")
PLACEHOLDER = re.compile(r"\[(?:%s)\]" % "|".join(KINDS))
NOTICE = ("De-identified: names, dates, phone numbers, addresses and record numbers in page text and captions "
          "show as [NAME], [DATE], [PHONE], [ADDRESS], [ID]")


@dataclass(frozen=True)
class Span:
    """Characters [start, end) of a text that are PHI of this kind."""
    start: int
    end: int
    kind: str

    @property
    def placeholder(self) -> str:
        return f"[{self.kind}]"


# ---- the rules ---------------------------------------------------------------------------------
# Each rule yields (start, end) of the PHI itself; a label before it ("MRN", "Patient:") stays.

_MONTH_NAMES = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December"]
# Capitalised or upper case only: "may" in "potassium may read high" is not a month.
_MONTH = "(?:%s)" % "|".join(sorted(
    {v for m in _MONTH_NAMES for v in (m, m.upper(), m[:3], m[:3].upper())} | {"Sept", "SEPT"}, key=len, reverse=True))
_ORD = r"(?:st|nd|rd|th)?"
# Patterns that begin with a digit check the character before it in Python (_clear_before), not
# with a lookbehind: a pattern that starts with a character class is scanned for quickly, one
# that starts with a lookbehind is tried at every position (2-3x slower).
_NUMERIC_DATES = [
    re.compile(r"(\d{4})([-/.])(\d{1,2})\2(\d{1,2})(?![^\W_]|[/-]|\.\d)"),           # 2024-01-05
    re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4}|\d{2})(?![^\W_]|[/-]|\.\d)"),    # 03/14/1962
]
_MONTH_DATES = [
    re.compile(rf"\d{{1,2}}{_ORD}(?:\s+of)?[\s-]+{_MONTH}\.?,?[\s-]+\d{{2,4}}\b"),     # 14 Mar 1962
    re.compile(rf"\d{{1,2}}{_ORD}(?:\s+of)?\s+{_MONTH}\b(?!\w)"),                     # 14 March
]
_MONTH_FIRST_DATES = [
    re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}{_ORD},?\s+\d{{4}}\b"),                    # March 14, 1962
    re.compile(rf"\b{_MONTH}\.?,?\s+\d{{4}}\b"),                                      # March 1962
    re.compile(rf"\b{_MONTH}\.?\s+\d{{1,2}}{_ORD}(?![\w:.])"),                        # March 14
]
# Labels whose value is a date whatever shape OCR left it in: the next 1-3 tokens holding digits.
_DATE_LABEL = re.compile(
    r"\b(?:DOB|D\.O\.B\.?|DOD|DOS|date of (?:birth|death|service|admission|discharge|visit)|birth ?date|born|"
    r"(?:admission|discharge|visit|service|collection|report|exam|procedure) date|admitted|discharged|date)"
    r"\s*[:#.]?\s*", re.IGNORECASE)
# OCR's readings of digits and separators: O for 0, l or I or | for 1, ~ or _ for a lost character.
_DATEISH_TOKEN = re.compile(rf"(?:[\dOIlo|/.~_-]*\d[\dOIlo|/.~_-]*,?|[~_-]+|{_MONTH}\.?,?)(?=\s|$)")

_ID_LABEL = re.compile(
    r"\b(?:MRN|MR\s?#|MR\s?No|medical record(?:\s*(?:number|no|#))?|record\s*(?:number|no|#)|"
    r"(?:patient|chart|hospital|case|visit|encounter|member|insurance|policy|account|accession|specimen|"
    r"sample|lab|order|device|serial|license|licence|passport|NHS|health card|health plan|subscriber|"
    r"beneficiary|claim|group)\s*(?:ID|number|no|num|#)|acct|account|encounter|accession|SSN|"
    r"social security(?:\s*(?:number|no|#))?|ID)\b\.?\s*(?:[:#]|no\.?|number)?\s*", re.IGNORECASE)
_ID_VALUE = re.compile(r"(?=[A-Za-z0-9/-]*\d)[A-Za-z0-9][A-Za-z0-9/-]{3,}\b")
_SSN = re.compile(r"\d{3}-\d{2}-\d{4}(?![\w-])")
_LONG_NUMBER = re.compile(r"\d{7,}(?![\w.,]\d|\w)")     # MRNs, accounts; up to 3 capitals before: "AB1234567"
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}\b")

_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
           "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP").split()
_SUFFIX = (r"(?:Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Court|Ct|Way|Place|Pl|Terrace|Ter|"
           r"Circle|Cir|Highway|Hwy|Parkway|Pkwy|Square|Sq|Trail|Trl|Crescent|Cres|Close|Row|Walk|Alley|Plaza|"
           r"Loop|Pike|Dr(?=\.?\s*(?:,|\n|$|Apt|Suite|Unit|#)))")
_UNIT = r"(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit|Flat|Fl|Floor|Room|Rm|#)\.?\s*#?\s*[\w-]+)?"
_CITY_STATE_ZIP = rf"[A-Z][a-z]+(?:\s[A-Z][a-z]+){{0,2}},?\s+(?:{'|'.join(_STATES)})\.?\s+\d{{5}}(?:-\d{{4}})?\b"
_ADDRESS_PATTERNS = [
    re.compile(rf"\d{{1,6}}[A-Za-z]?\s+(?:(?:[NSEW]|North|South|East|West)\.?\s+)?"
               rf"(?:(?:[A-Z][a-z]+|\d+(?:st|nd|rd|th))\s+){{1,3}}{_SUFFIX}\b\.?"
               rf"(?:\s+(?:NE|NW|SE|SW|N|S|E|W)\b)?{_UNIT}"
               rf"(?:,?\s*{_CITY_STATE_ZIP}|,\s*[A-Z][a-z]+(?:\s[A-Z][a-z]+){{0,2}}(?=\s*(?:[,.;]|\n|$)))?"),
    re.compile(rf"\b{_CITY_STATE_ZIP}"),
    re.compile(r"\bP\.?\s?O\.?\s+Box\s+\d+\b", re.IGNORECASE),
]
# "Address: anything up to the end of the line (or the next "Label:")".
_ADDRESS_LABEL = re.compile(r"(?:home |street |mailing )?(?:address|addr)\s*[:#]\s*([^\n;]+?)(?=\s+\w+\s*:|\s*[\n;]|\s*$)",
                            re.IGNORECASE)

_TITLE = re.compile(r"\b(?:Dr|DR|Doctor|Mr|MR|Mrs|MRS|Ms|MS|Mx|Miss|Prof|Professor)\b[.:]?\s*")  # OCR: "Dr:"
_NAME_LABEL = re.compile(
    r"\b(?:patient(?:'s)?(?: full)?(?: name)?|pt(?: name)?|name(?: of patient)?|full name|surname|last name|"
    r"first name|given names?|family name|maiden name|next of kin|NOK|guardian|mother|father|spouse|"
    r"emergency contact|contact person|physician|attending|consultant|surgeon|GP|PCP|provider|clinician|"
    r"referring (?:physician|doctor|provider)|referrer|radiologist|cardiologist|pathologist|technician|"
    r"technologist|signature|signed)\s*[:;]\s*", re.IGNORECASE)
_BY_LABEL = re.compile(
    r"\b(?:reviewed|ordered|signed|seen|referred|dictated|verified|approved|authori[sz]ed|attended|examined|"
    r"reported|transcribed|requested|prepared|performed|interpreted|read|confirmed|witnessed)\s+by\s*:?\s*",
    re.IGNORECASE)
_NAME_TOKEN = re.compile(r"(?:Ma?c|O['’])?[A-Z][A-Za-z'’]*(?:-[A-Z][A-Za-z'’]*)?\.?")
# Words that end a name: the labels of the fields that follow it on the same line.
_NOT_NAME = {"mrn", "dob", "dod", "id", "no", "age", "sex", "gender", "male", "female", "ward", "room", "bed",
             "date", "tel", "phone", "fax", "status", "specimen", "indication", "collected", "recorded",
             "ordered", "reviewed", "signed", "unit", "dept", "department", "clinic", "hospital", "address",
             "the", "and", "md", "do", "rn", "np", "pa", "phd", "mbbs", "frcp", "facc", "m", "f", "on", "at",
             "result", "results", "report", "final", "preliminary", "amended", "page", "of", "ssn", "acct"}


class _Text:
    """A text and its words, read once and shared by every rule: a rule that starts at a label
    ("MRN", "Patient:") tries its regex only where the label's first word is, not at every
    character (Python's re has no fast scan for a long list of alternatives)."""

    def __init__(self, text: str):
        self.text = text
        self.lower = text.lower()
        words = _WORD.findall(text)
        self.cased = set(words)                        # as written: "May" is a month, "may" is not
        self.vocab = {w.lower() for w in words}
        self.taken: list[Span] = []

    def starts(self, word: str):
        """Where the lower-case `word` begins as a whole word."""
        i = self.lower.find(word)
        while i >= 0:
            end = i + len(word)
            if (i == 0 or not self.lower[i - 1].isalpha()) and (end == len(self.lower) or not self.lower[end].isalpha()):
                yield i
            i = self.lower.find(word, i + 1)

    def labels(self, label: re.Pattern, first_words: frozenset[str]):
        """Matches of `label` that begin at one of these (lower-case) words."""
        for start in sorted(i for word in first_words & self.vocab for i in self.starts(word)):
            if m := label.match(self.text, start):
                yield m

    def masked(self) -> str:
        """The text with the spans found so far blanked out (same length, so offsets still hold)."""
        chars = list(self.text)
        for span in self.taken:
            chars[span.start:span.end] = " " * (span.end - span.start)
        return "".join(chars)


_WORD = re.compile(r"[A-Za-z]+")


def _clear_before(text: str, i: int, also: str = "", underscore: bool = False) -> bool:
    """Whether what precedes position i ends a word: not a letter or digit (nor "_" unless allowed,
    as in the file name scan_2024-01-05.png), nor one of `also`."""
    if i == 0:
        return True
    c = text[i - 1]
    return not (c.isalnum() or c in also or (c == "_" and not underscore))


def _matches(pattern: re.Pattern, text: str, also: str = "", underscore: bool = False):
    """pattern.finditer(text), keeping matches that start a word (see _clear_before); after one
    that does not, the search goes on from its next character, as a lookbehind would."""
    pos = 0
    while m := pattern.search(text, pos):
        if _clear_before(text, m.start(), also, underscore):
            yield m
            pos = max(m.end(), m.start() + 1)
        else:
            pos = m.start() + 1


def _firsts(*words: str) -> frozenset[str]:
    return frozenset(w.lower() for w in words)


_TITLE_FIRSTS = _firsts("Dr", "Doctor", "Mr", "Mrs", "Ms", "Mx", "Miss", "Prof", "Professor")
_NAME_FIRSTS = _firsts(
    "patient", "pt", "name", "full", "surname", "last", "first", "given", "family", "maiden", "next", "nok", "guardian",
    "mother", "father", "spouse", "emergency", "contact", "physician", "attending", "consultant", "surgeon", "gp", "pcp",
    "provider", "clinician", "referring", "referrer", "radiologist", "cardiologist", "pathologist", "technician",
    "technologist", "signature", "signed")
_BY_FIRSTS = _firsts(
    "reviewed", "ordered", "signed", "seen", "referred", "dictated", "verified", "approved", "authorised", "authorized",
    "attended", "examined", "reported", "transcribed", "requested", "prepared", "performed", "interpreted", "read",
    "confirmed", "witnessed")
_DATE_FIRSTS = _firsts("DOB", "D", "DOD", "DOS", "date", "birth", "birthdate", "born", "admission", "discharge", "visit",
                       "service", "collection", "report", "exam", "procedure", "admitted", "discharged")
_ID_FIRSTS = _firsts(
    "MRN", "MR", "medical", "record", "patient", "chart", "hospital", "case", "visit", "encounter", "member", "insurance",
    "policy", "account", "accession", "specimen", "sample", "lab", "order", "device", "serial", "license", "licence",
    "passport", "NHS", "health", "subscriber", "beneficiary", "claim", "group", "acct", "SSN", "social", "ID")
_ADDRESS_FIRSTS = _firsts("address", "addr", "home", "street", "mailing")
_MONTH_WORDS = frozenset(v for m in _MONTH_NAMES for v in (m, m.upper(), m[:3], m[:3].upper())) | {"Sept", "SEPT"}
_SUFFIX_WORDS = _firsts(*re.findall(r"[A-Z][a-z]+", _SUFFIX))
_ZIP = re.compile(r"\b\d{5}\b")


def _name_after(text: str, start: int) -> tuple[int, int] | None:
    """The name that begins at `start` (after a label or title): up to 4 capitalised tokens,
    initials included ("Jane Q. Doe", "DOE, JANE"); a leading title stays visible."""
    pos, first, last, count = start, None, None, 0
    title = _TITLE.match(text, pos)
    if title:
        pos = title.end()
    while count < 4:
        m = _NAME_TOKEN.match(text, pos)
        if not m or text[m.end():m.end() + 1] == ":":
            break
        word = m.group().rstrip(".").lower()
        initial = len(m.group()) == 2 and m.group().endswith(".")       # "M." in "Edward M. Reid"
        # "Ward" ends a name before "4B", not in "Jessica Ward."
        surname = word in _PLACE_WORDS and count and not _PLACE_CODE.match(text, m.end())
        if word in _NOT_NAME and not (initial or surname):
            break
        if first is None:
            first = m.start()
        last, count = m.end(), count + 1
        gap = _NAME_GAP.match(text, last)
        if not gap:
            break
        pos = gap.end()
    if first is None or not re.search(r"[A-Za-z]{2}", text[first:last]):
        return None
    if text[last - 1] == "." and text[last - 3:last - 1].isalpha():     # a sentence's full stop, not "Q."
        last -= 1
    return first, last


_NAME_GAP = re.compile(r",? (?=\S)")   # one space, or ", " in "Doe, Jane"
_PLACE_WORDS = {"ward", "room", "bed", "page", "unit"}
_PLACE_CODE = re.compile(r" ?[:#]? ?[A-Z]?\d")


def _names(t: _Text):
    for label, firsts in ((_NAME_LABEL, _NAME_FIRSTS), (_BY_LABEL, _BY_FIRSTS), (_TITLE, _TITLE_FIRSTS)):
        for m in t.labels(label, firsts):
            found = _name_after(t.text, m.end())
            if found:
                yield found
    for m in t.labels(_BARE_NAME_LABEL, _BARE_NAME_FIRSTS):      # "Patient John Smith", no colon
        found = _name_after(t.text, m.end())
        if found and _two_name_words(t.text[found[0]:found[1]]):
            yield found
    yield from _unlabeled_names(t)


# A label that is often written without its colon; then at least two name-like words must follow.
_BARE_NAME_LABEL = re.compile(r"\b(?:patient|pt|seen|referring|dear|thank you for referring|discussed with|"
                              r"consent given by|copied to)\s+(?=[A-Z])", re.IGNORECASE)
_BARE_NAME_FIRSTS = _firsts("patient", "pt", "seen", "referring", "dear", "thank", "discussed", "consent", "copied")
# Capitalised words that follow "Patient" in headings and field names, not in names.
_HEADING_WORDS = {"information", "info", "details", "name", "names", "copy", "label", "demographics", "care", "safety",
                  "education", "leaflet", "history", "summary", "record", "records", "notes", "consent", "form",
                  "portal", "services", "advice", "instructions", "identifier", "number", "signature", "list", "data",
                  "registration", "sticker", "type", "class", "category", "group", "location", "account", "profile",
                  "medical", "center", "centre", "hospital", "clinic", "health", "healthcare", "university", "college",
                  "institute", "school", "foundation", "laboratory", "laboratories", "pharmacy", "practice", "trust",
                  "associates", "department", "unit", "ward", "house", "street", "road", "avenue"}


def _two_name_words(found: str) -> bool:
    words = [w for w in re.findall(r"[A-Za-z'’-]+", found) if len(w) > 1]
    return len(words) >= 2 and not any(w.lower() in _HEADING_WORDS for w in words)


# Function words and clinical words that are also someone's given name somewhere ("The", "Will",
# "May", "Mark", "Van"): they never start an unlabeled name.
_COMMON_WORDS = {"the", "will", "may", "mark", "van", "are", "even", "red", "lucky", "manor", "approved", "an", "a", "i", "in", "on", "at", "to", "of", "by", "is", "as",
                 "so", "no", "do", "be", "it", "we", "he", "she", "my", "his", "her", "our", "all", "any", "see",
                 "per", "pre", "post", "non", "new", "old", "left", "right", "total", "normal", "free", "long", "short",
                 "early", "late", "young", "small", "major", "minor", "royal", "saint", "st", "general", "central",
                 "north", "south", "east", "west", "upper", "lower", "blood", "heart", "chest", "page", "ward",
                 "bay", "cash", "change", "tax", "sale", "son", "ma", "pa", "li", "lo", "la", "le", "du", "de",
                 "di", "da", "del", "dos", "das", "el", "al", "bin", "binti", "von", "ten", "ter", "der"}
_CAPITALISED = re.compile(r"\b[A-Z][A-Za-z'’]+\b")
_LAST_COMMA = re.compile(r"((?:Ma?c|O['’])?[A-Z][A-Za-z'’]+(?:-[A-Z][A-Za-z'’]+)?), $")


@functools.lru_cache(maxsize=1)
def given_names() -> frozenset[str]:
    """Given names from the name dictionary gender-guesser ships (Jörg Michael's nam_dict: about
    37,000 first names counted in 54 countries), lower case, less the common words above."""
    from importlib.resources import files

    data = (files("gender_guesser") / "data" / "nam_dict.txt").read_text(encoding="utf-8")
    names = {line[3:29].strip().lower() for line in data.splitlines() if line and line[0] not in "#="}
    calendar = {w.lower() for w in _MONTH_NAMES + ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                                                   "Sunday"]}
    return frozenset(n for n in names if n.isalpha() and len(n) > 1) - _COMMON_WORDS - calendar


_CAPITALS_RUN = re.compile(r"(?:[A-Z][A-Z'’.-]*[ ,]*)+")


def _short_capitals_run(text: str, m: re.Match) -> bool:
    """Whether a word in capitals starts a run of 2-3 words in capitals: "ROSS BARTON" may be a
    name; "LUCKY STRIKE FILTER KINGS" or a sentence in capitals is not."""
    run = _CAPITALS_RUN.match(text, m.start())
    before = text[max(0, m.start() - 2):m.start()].strip(" ,")
    return not (before and before[-1].isupper()) and 2 <= len(run.group().split()) <= 3


def _unlabeled_names(t: _Text):
    """A known given name followed by a capitalised word ("John Smith", "Mary A. Jones",
    "ROBIN FERNANDEZ"), or after a surname and a comma ("Hernandez, Mario")."""
    names = given_names()
    text = t.text
    for m in _CAPITALISED.finditer(text):
        if m.group().lower() not in names or (m.group().isupper() and not _short_capitals_run(text, m)):
            continue
        found = _name_after(text, m.start())
        if found and found[1] > m.end() and _two_name_words(text[found[0]:found[1]]):
            yield found
        last = _LAST_COMMA.search(text, max(0, m.start() - 40), m.start())
        if last and last.group(1).lower() not in _NOT_NAME | _HEADING_WORDS and text[m.end():m.end() + 1] != ":":
            yield last.start(), m.end()


def _dates(t: _Text):
    text = t.text
    for pattern in _NUMERIC_DATES:
        for m in _matches(pattern, text, ".,/-", underscore=True):
            if _plausible_numeric_date(m):
                yield m.span()
    if not _MONTH_WORDS.isdisjoint(t.cased):
        for pattern in _MONTH_DATES:
            yield from (m.span() for m in _matches(pattern, text, "."))
        for pattern in _MONTH_FIRST_DATES:
            yield from (m.span() for m in pattern.finditer(text))
    for m in t.labels(_DATE_LABEL, _DATE_FIRSTS):      # OCR-garbled values after DOB:, Date:, ...
        pos, end = m.end(), None
        for _ in range(3):
            token = _DATEISH_TOKEN.match(text, pos)
            if not token:
                break
            end = token.end()
            pos = end + (text[end:end + 1] == " ")
        if end is not None and re.search(r"\d", text[m.end():end]):
            yield m.end(), end


def _plausible_numeric_date(m: re.Match) -> bool:
    a, sep, b, c = m.group(1), m.group(2), m.group(3), m.group(4)
    if len(a) == 4:                                    # year first
        return 1800 <= int(a) <= 2199 and 1 <= int(b) <= 12 and 1 <= int(c) <= 31
    if sep == "." and len(c) != 4:                      # "5.1.24" reads like a version or a value
        return False
    x, y = int(a), int(b)
    return 1 <= x <= 31 and 1 <= y <= 31 and (x <= 12 or y <= 12) and (len(c) == 2 or 1800 <= int(c) <= 2199)


def _ids(t: _Text):
    for m in t.labels(_ID_LABEL, _ID_FIRSTS):
        value = _ID_VALUE.match(t.text, m.end())
        if value:
            yield value.span()
    yield from (m.span() for m in _matches(_SSN, t.text, "-"))


def _long_numbers(t: _Text):
    """Unlabeled runs of 7+ digits (record numbers, accounts): after the phone rule, which claims
    the ones that are a phone number's digits."""
    text = t.text
    for m in _LONG_NUMBER.finditer(text):
        start = m.start()
        while start > 0 and m.start() - start < 3 and "A" <= text[start - 1] <= "Z":
            start -= 1
        if _clear_before(text, start, ".,-"):
            yield start, m.end()


# A window of digits and phone punctuation with 7+ digits: only these are handed to libphonenumber
# (on a whole page it costs milliseconds; on a page's few windows, microseconds).
_PHONE_WINDOW = re.compile(r"[+(]?\(?\d[\d\s().\-/]{5,}\d(?:\b|(?=x\d))(?:\s?(?:x|ext\.?)\s?\d{1,6}\b)?")
_PHONE_LABEL = re.compile(r"\b(?:tel|telephone|phone|ph|fax|mobile|mob|cell|pager|bleep|contact|call|ring|text|whatsapp)\b"
                          r"\.?\s*(?:no\.?|#|number)?\s*[:#]?\s*$", re.IGNORECASE)
# Where the numbers are read as local ones: the US first, then the countries whose pages we have seen.
_PHONE_REGIONS = ("US", "GB", "CA", "AU", "NZ", "IE", "IN", "HK", "MY", "SG")
_DIGITS = re.compile(r"\d+")
_DECIMAL = re.compile(r"\.\d{1,2}(?!\d)")
_PHONE_SHAPE = re.compile(r"\(\d{3}\)\s?\d{3}[\s.-]?\d{4}$|\d{3}[\s.-]\d{3}[\s.-]\d{4}$|\d{3}[\s.-]\d{4}$")


def _phones(t: _Text):
    text = t.masked()    # record numbers and dates found before are not phone numbers
    for window in _matches(_PHONE_WINDOW, text):
        groups = _DIGITS.findall(window.group())
        if sum(map(len, groups)) < 7:
            continue
        labeled = _PHONE_LABEL.search(text, max(0, window.start() - 20), window.start()) is not None
        international = window.group().startswith("+")           # "+44(0)20 ..."
        if not (labeled or international) and (any(len(g) == 1 for g in groups[1:]) or _DECIMAL.search(window.group())):
            continue   # "0.92 0.80-1.10", "389 0-500": values and ranges, not a phone number's groups
        found = _phone_in(text, window, labeled)
        if found:
            yield found
        elif labeled:       # a number after "Tel:" that no country's plan knows is still a phone number
            yield window.span()


def _phone_in(text: str, window: re.Match, labeled: bool) -> tuple[int, int] | None:
    """The longest phone number in the window as any of _PHONE_REGIONS would dial it: "(0141)
    496 0570" is one number in the UK, while the US would read only its last 7 digits."""
    lo = max(0, window.start() - 1)    # the matcher wants the "+" or "(" and a boundary before
    best = None
    for region in _PHONE_REGIONS:
        for match in PhoneNumberMatcher(text[lo:window.end()], region, leniency=Leniency.POSSIBLE):
            # Valid numbers anywhere; fictional ones ("555") only when shaped or labeled like a phone.
            if (labeled or is_valid_number(match.number) or _PHONE_SHAPE.search(match.raw_string)
                    or match.raw_string.startswith("+")) and (best is None or match.end - match.start > best[1] - best[0]):
                best = (lo + match.start, lo + match.end)
        if best and best[0] <= window.start() and best[1] >= window.end():
            break
    return best


def _addresses(t: _Text):
    text = t.text
    if not _SUFFIX_WORDS.isdisjoint(t.vocab):
        yield from (m.span() for m in _matches(_ADDRESS_PATTERNS[0], text, ".,"))
    if _ZIP.search(text):
        yield from (m.span() for m in _ADDRESS_PATTERNS[1].finditer(text))
    if "box" in t.vocab:
        yield from (m.span() for m in _ADDRESS_PATTERNS[2].finditer(text))
    for m in t.labels(_ADDRESS_LABEL, _ADDRESS_FIRSTS):
        yield m.span(1)
    yield from addresses(text)


def _emails(t: _Text):
    if "@" in t.text:
        yield from (m.span() for m in _EMAIL.finditer(t.text))


# Earlier rules win where two overlap: "MRN 1234567" is an ID, not a phone number; "12 Oak Dr"
# is an address, not Dr. Oak.
_RULES = (("EMAIL", _emails), ("ID", _ids), ("DATE", _dates), ("ADDRESS", _addresses), ("PHONE", _phones),
          ("ID", _long_numbers), ("NAME", _names))


def find_phi(text: str) -> list[Span]:
    """The PHI spans of `text`, sorted and non-overlapping; neighbours of one kind separated only
    by spaces or commas are merged ("123 Main St, Springfield, IL 62704" is one address)."""
    if not text:
        return []
    t = _Text(text)
    for kind, rule in _RULES:
        found = sorted({(s, e) for s, e in rule(t) if e > s}, key=lambda se: (se[0], -se[1]))
        for start, end in found:
            for piece in _untaken(text, start, end, t.taken):     # what an earlier rule left of it
                t.taken.append(Span(*piece, kind))
    taken = sorted(t.taken, key=lambda s: s.start)
    merged: list[Span] = []
    for span in taken:
        if merged and merged[-1].kind == span.kind and not text[merged[-1].end:span.start].strip(" ,"):
            merged[-1] = Span(merged[-1].start, span.end, span.kind)
        else:
            merged.append(span)
    return merged


def _untaken(text: str, start: int, end: int, taken: list[Span]) -> list[tuple[int, int]]:
    """[start, end) less the spans already taken, in pieces that hold a letter or digit."""
    pieces = [(start, end)]
    for span in taken:
        pieces = [p for lo, hi in pieces for p in ((lo, min(hi, span.start)), (max(lo, span.end), hi))
                  if p[1] > p[0]] if span.start < end and start < span.end else pieces
    return [(lo, hi) for lo, hi in pieces if any(c.isalnum() for c in text[lo:hi])]


def apply_spans(text: str, spans: list[Span]) -> str:
    out, pos = [], 0
    for span in spans:
        out += [text[pos:span.start], span.placeholder]
        pos = span.end
    return "".join(out) + text[pos:]


def redact(text: str | None) -> str:
    """`text` with every PHI span replaced by its placeholder ("Patient: [NAME] MRN [ID]")."""
    return apply_spans(text, find_phi(text)) if text else (text or "")
