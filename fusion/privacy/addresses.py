"""Postal addresses in the shapes of several countries, found by their structure: an anchor that
only an address has (a postcode in its country's shape, a numbered street of a known street type,
a Hong Kong floor "12/F", a PO box), grown over the neighbouring parts of the address, which are
separated by commas or line breaks and made of numbers and capitalised words ("Flat 7", "Jones
Light", "North Holly", "S6 7LJ").

The street types are the postal standards' lists (USPS Publication 28, Australia's AS 4590, the
UK's and Ireland's common ones) and the road words of India and Malaysia. Rules, not a trained
recogniser: see fusion.privacy.deidentify.
"""
from __future__ import annotations

import re

_US_STATES = ("AL AK AZ AR CA CO CT DE DC FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO MT NE NV NH NJ NM NY "
              "NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY PR GU VI AS MP AA AE AP").split()
_CA_PROVINCES = "AB BC MB NB NL NS NT NU ON PE QC SK YT".split()
_AU_STATES = "NSW VIC QLD WA SA TAS ACT NT".split()

STREET_TYPES = set("""
Alley Allee Annex Arcade Avenue Ave Bayou Beach Bend Bluff Bluffs Bottom Boulevard Blvd Branch Bridge Brook Brooks
Burg Burgs Bypass Camp Canyon Cape Causeway Center Centre Circle Circles Cir Cliff Cliffs Club Common Commons Corner
Corners Course Court Courts Ct Cove Coves Creek Crescent Cres Crest Crossing Crossroad Curve Dale Dam Divide Drive
Drives Estate Estates Expressway Extension Extensions Fall Falls Ferry Field Fields Flats Ford Fords Forest Forge Forges
Fork Forks Fort Freeway Garden Gardens Gateway Glen Glens Green Greens Grove Groves Harbor Harbors Harbour Haven
Heights Highway Hwy Hill Hills Hollow Inlet Island Islands Isle Junction Junctions Key Keys Knoll Knolls Lake Lakes
Land Landing Lane Ln Light Lights Loaf Lock Locks Lodge Loop Mall Manor Manors Meadow Meadows Mews Mill Mills Mission
Motorway Mount Mountain Mountains Neck Orchard Oval Overpass Park Parks Parkway Parkways Pass Passage Path Pike Pine
Pines Place Pl Plain Plains Plaza Point Points Port Ports Prairie Radial Ramp Ranch Rapid Rapids Rest Ridge Ridges
River Road Rd Roads Route Row Rue Run Shoal Shoals Shore Shores Skyway Spring Springs Spur Spurs Square Squares Sq
Station Stravenue Stream Street St Streets Summit Terrace Throughway Trace Track Trafficway Trail Trailer Tunnel
Turnpike Underpass Union Unions Valley Valleys Via Viaduct View Views Village Villages Ville Vista Walk Walks Wall Way
Ways Well Wells
Access Alley Alleyway Amble Anchorage Approach Banan Bank Boardwalk Bowl Brace Brae Break Broadway Brow Bypass Chase Circuit
Close Concourse Copse Corso Cutting Dell Deviation Dip Distributor Driveway Edge Elbow End Entrance Esplanade Fairway
Firetrail Follow Formation Frontage Gap Glade Grange Grove Gully Hub Interchange Laneway Line Link Lookout Meander
Nook Outlook Parade Pathway Pocket Precinct Promenade Quadrant Quay Quays Ramble Reach Reserve Retreat Return Ridgeway
Rise Round Serviceway Slope Steps Strand Subway Tarn Thoroughfare Tollway Top Tor Towers Trailway Turn Twist Vale
Wharf Wynd Yard Centreway Gate Gates Mead Drove Hill Circus Approach Cross
Nagar Marg Chowk Ganj Colony Layout Puram Pura Bazar Bazaar
""".split())
# Words that open a street in Malaysia, India, Hong Kong and Singapore: "Jalan Ampang", "Lorong 3".
_STREET_FIRST = "Jalan Jln Lorong Persiaran Lebuh Lebuhraya Taman Bandar Seksyen Kampung Kampong Lengkok Medan Tingkat"
_STREET_TYPE = "|".join(sorted(STREET_TYPES, key=len, reverse=True))

_NUMBER = r"\d+[A-Za-z]?(?:[/-]\d+[A-Za-z]?)*"                          # 12, 12A, 7-6, 4/48T, 66/9
_ = r"[ \t]+"                                                           # a space within one line
# Where an address ends: a postcode in its country's shape, a region of Hong Kong.
_ENDS = [
    re.compile(rf"\b(?:{'|'.join(_US_STATES)})\.?,?{_}\d{{5}}(?:-\d{{4}})?\b"),                  # OR 13900
    re.compile(rf"\b(?:{'|'.join(_CA_PROVINCES)}),?{_}[A-Z]\d[A-Z] ?\d[A-Z]\d\b"),                # SK L6K1E1
    re.compile(r"\b[A-Z]{1,2}\d[A-Z\d]? \d[A-Z]{2}\b"),                                           # S6 7LJ
    re.compile(rf"\b(?:{'|'.join(_AU_STATES)}),?{_}\d{{4}}\b"),                                     # VIC, 7074
    re.compile(r"\b[A-Z][a-z]+[- ]\d{6}\b"),                                                      # Bhopal 690743
    re.compile(r"\b[AC-FHKNPRTV-Y]\d[\dW] ?[AC-FHKNPRTV-Y\d]{4}\b"),                              # D02 X285
    re.compile(r"(?:^|(?<=, ))\d{5} [A-Z]\w*", re.MULTILINE),                                     # 50450 Kuala..
    re.compile(r"\b(?:Hong Kong|Kowloon|New Territories|N\.T\.)(?!\w)"),
]
# Where an address starts: a numbered street of a known type, a road word, a flat, unit or box.
_STARTS = [
    re.compile(rf"\b{_NUMBER}{_}(?:[A-Z][\w'’-]*\.?{_}){{0,3}}(?:{_STREET_TYPE})\b"),            # 97 Lynda Bridge
    re.compile(rf"\b(?:{_STREET_FIRST.replace(' ', '|')}){_}[\w'’]"),                           # Jalan Ampang
    re.compile(rf"\b(?:P\.? ?O\.?{_}Box|PSC){_}?\d+\b"),
]
# A flat, unit or floor: part of an address, but alone ("Level 3", "Unit 4B") a place in a building.
_UNITS = re.compile(rf"\b(?:Unit|Flat|Apt\.?|Apartment|Suite|Studio|Level|Lot|Block|Tower|H\.No\.){_}?"
                    rf"(?:\d+[A-Za-z]?|[A-Z])\b|\b\d{{1,3}}/F\b")
# A word of an address: a number (not a decimal: "0.97" is a value) or a capitalised word.
_WORD = re.compile(r"(?:\d+[A-Za-z]*(?:[/-][\dA-Za-z]+)*|[A-Z][\w'’.-]*|&)$")
# A place's name on its own line or between commas: "Smithbury", "New Thomas", "Maungakiwi 5337".
_PLACE = re.compile(r"(?:[A-Z][\w'’.-]*(?: [A-Z][\w'’.-]*){0,3}(?:,? \d{4,6})?|RD \d+)$")
_PART = re.compile(r"[^,;\n]+")
_MAX_WORDS = 7


def addresses(text: str):
    """(start, end) of each address found in `text`. The text is cut into parts at commas,
    semicolons and line breaks; an address runs from its first anchored part to its last, over
    at most 3 plain address parts between, then grows: back over up to 3 parts before a postcode
    (its street and town) or 1 before a street (its house number), forward over 1 place's name
    after a postcode (state, country) or 2 after a street (its town). A flat or unit alone
    ("Level 3", "Unit 4B") is not an address."""
    starts = [m.span() for p in _STARTS for m in p.finditer(text)]
    ends = [m.span() for p in _ENDS for m in p.finditer(text)]
    if not starts and not ends:
        return
    units = [m.span() for m in _UNITS.finditer(text)]
    anchors = starts + ends + units
    parts = [m.span() for m in _PART.finditer(text)]
    kinds = ["".join(kind for kind, found in (("start", starts), ("end", ends), ("unit", units))
                     if any(s <= a < e for a, _ in found)) for s, e in parts]
    i, done = 0, -1
    while i < len(parts):
        if not kinds[i]:
            i += 1
            continue
        first = last = i
        while True:                         # the next anchored part within 3 address parts
            nxt = next((k for k in range(last + 1, min(last + 5, len(parts))) if kinds[k]), None)
            if nxt is None or not all(_joined(text, parts[k], parts[k + 1]) for k in range(last, nxt)) or \
                    not all(_address_part(text, parts[k]) for k in range(last + 1, nxt)) or \
                    _tail(text, parts[nxt], _anchor_in(parts[nxt], anchors)) > parts[nxt][0] + _lead(text, parts[nxt]):
                break         # ("Home address: 5 Oak St" on the next line is an address of its own)
            last = nxt
        # Before the first anchor: a postcode's street and town ("97 Lynda Bridge\nSmithbury\nW88 6FJ"),
        # or a house number ("249, Jln 9/7").
        lo = _tail(text, parts[first], _anchor_in(parts[first], anchors))
        while first > done + 1 and i - first < (3 if kinds[i] == "end" else 1) and lo == parts[first][0] + _lead(text, parts[first]) \
                and _joined(text, parts[first - 1], parts[first], newline=kinds[i] == "end"):
            first -= 1          # the whole part, or the address words at its end ("Lives at 741")
            lo = _tail(text, parts[first], parts[first][1] - _trail(text, parts[first]))
        # After the last: a street's town ("RD 10\nWaikawa 2234"), a postcode's state or country.
        after = 0
        while last + 1 < len(parts) and after < (1 if "end" in kinds[last - after] else 2) and \
                _joined(text, parts[last], parts[last + 1], newline="end" not in kinds[last - after]) and \
                _PLACE.match(text[slice(*parts[last + 1])].strip().rstrip(".")):
            last, after = last + 1, after + 1
        last_end = max([e for a, e in anchors if lo <= a < parts[last][1]], default=None)
        if after:                                                      # ends with a place's name
            hi = parts[last][1] - _trail(text, parts[last])
            hi -= text[hi - 1] == "."
        elif last_end is not None and any(a < last_end <= e for a, e in ends):
            hi = _head(text, (last_end, parts[last][1]), words=2)     # a postcode and its town's name
        else:
            hi = _head(text, (max(lo, parts[last][0]), parts[last][1]))
        hi = max(hi, last_end or hi)
        if any("start" in k or "end" in k for k in kinds[i:last + 1]) or after:
            yield lo, hi
        i, done = last + 1, last


def _anchor_in(part: tuple[int, int], anchors: list[tuple[int, int]]) -> int:
    return min(a for a, _ in anchors if part[0] <= a < part[1])


def _trail(text: str, part: tuple[int, int]) -> int:
    piece = text[part[0]:part[1]]
    return len(piece) - len(piece.rstrip())


def _lead(text: str, part: tuple[int, int]) -> int:
    piece = text[part[0]:part[1]]
    return len(piece) - len(piece.lstrip())


def _address_part(text: str, span: tuple[int, int]) -> bool:
    words = [w.rstrip(".") for w in text[span[0]:span[1]].split()]
    return 0 < len(words) <= _MAX_WORDS and all(_WORD.match(w) for w in words if w)


def _tail(text: str, span: tuple[int, int], anchor: int) -> int:
    """Where the address begins in this part: before the anchor, back over address words
    ("Lives at 12 Oak St" begins at 12; "Address: Flat 7" at Flat)."""
    lo = anchor
    for m in list(reversed(list(re.finditer(r"\S+", text[span[0]:anchor]))))[:_MAX_WORDS]:
        if not _WORD.match(m.group().rstrip(".")):
            break
        lo = span[0] + m.start()
    return lo


def _head(text: str, span: tuple[int, int], words: int = _MAX_WORDS) -> int:
    """Where the address ends in this part: after its address words ("Seattle WA 98101 with wife")."""
    hi = span[0]
    for m in list(re.finditer(r"\S+", text[span[0]:span[1]]))[:words]:
        if not _WORD.match(m.group().rstrip(".")) and hi > span[0]:
            break
        hi = span[0] + m.end()
    return hi - (text[hi - 1] == "." if hi > span[0] else 0)


def _joined(text: str, first: tuple[int, int], second: tuple[int, int], newline: bool = True) -> bool:
    """Whether two parts may belong to one address: one comma (or one line break) apart."""
    return text[first[1]:second[0]] in ((",", "\n", ",\n") if newline else (",",))
