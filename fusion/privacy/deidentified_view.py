"""What screens and outputs show of de-identified text beyond the text itself: an explanation's
coloured and top words, the OCR word boxes to black out on a page, a prediction's JSON, and a
caption edited around its placeholders. The rules are in fusion.privacy.deidentify."""
from __future__ import annotations

from fusion.privacy.deidentify import PLACEHOLDER, find_phi, redact


def word_offsets(text: str, words: list[str]) -> list[tuple[int, int] | None]:
    """Where each word lies in `text` (which holds them in order, e.g. OCR's reading-order text
    or the words joined by spaces); None for a word not found."""
    offsets, pos = [], 0
    for word in words:
        at = text.find(word, pos) if word else -1
        offsets.append((at, at + len(word)) if at >= 0 else None)
        pos = at + len(word) if at >= 0 else pos
    return offsets


def phi_words(text: str, words: list[str]) -> list[bool]:
    """For each word of `text`, whether any of it is PHI (e.g. to black out its OCR box)."""
    spans = find_phi(text)
    return [where is None or any(where[0] < s.end and s.start < where[1] for s in spans)
            if spans else False for where in word_offsets(text, words)]


def redact_words(words: list[str], text: str | None = None) -> list[str]:
    """Each word as it shows once its text is redacted. `text` is the text the words were split
    from (its line breaks end a name); without it, the words joined by spaces. A span over
    several words shows its placeholder on the first and leaves the others "" (so scores can
    stay one per word)."""
    text = " ".join(words) if text is None else text
    spans = find_phi(text)
    if not spans:
        return list(words)
    out = []
    for where, word in zip(word_offsets(text, words), words):
        if where is None:                      # not in the text as given: judge the word alone
            out.append(redact(word))
            continue
        start, end = where
        pieces, pos = [], start
        for span in spans:
            if span.end <= start or span.start >= end:
                continue
            pieces.append(text[pos:max(pos, span.start)])
            if span.start >= start:            # the span starts in this word: its placeholder shows here
                pieces.append(span.placeholder)
            pos = max(pos, min(end, span.end))
        out.append("".join(pieces) + text[pos:end])
    return out


def redact_scored(pairs: list[tuple[str, float]], text: str) -> list[tuple[str, float]]:
    """Scored words (an explanation's attribution or attention) as they show when redacted: a
    placeholder carries the strongest score of the words it hides."""
    shown_words = redact_words([w for w, _ in pairs], text)
    out: list[tuple[str, float]] = []
    for (word, score), display in zip(pairs, shown_words):
        if display:
            out.append((display, score))
        elif out:                                # hidden inside the placeholder before it
            out[-1] = (out[-1][0], max(out[-1][1], score, key=abs))
    return out


def phi_boxes(text: str, words) -> list[tuple[int, int, int, int]]:
    """The boxes of the OCR words of `text` that hold PHI, to black out on the page image.
    `words`: OCR words (with .text and .box) or their stored dicts ({"text", "box"})."""
    def get(word, key):
        return word[key] if isinstance(word, dict) else getattr(word, key)
    flags = phi_words(text, [get(w, "text") for w in words])
    return [tuple(get(w, "box")) for w, hidden in zip(words, flags) if hidden]


def redact_prediction(data: dict, explanation=None) -> dict:
    """A prediction's to_dict() as shown de-identified: its page text and caption redacted, its
    top words taken from the redacted words (a placeholder where a name was), and its reason in
    words said from those."""
    from fusion.ml.pipeline import compose_text   # here: the privacy rules load without torch
    from fusion.ml.reasons import explanation_text

    out = dict(data, ocr_text=redact(data.get("ocr_text")), caption=redact(data.get("caption")))
    if explanation is not None and "top_words" in out:
        text = compose_text(data.get("ocr_text") or "", data.get("caption") or "")
        out["top_words"] = [[w, s] for w, s in top_words(explanation, text, redacted=True)]
    if "explanation_text" in out:      # said again from the redacted words
        out["explanation_text"] = explanation_text(out)
    return out


def top_words(explanation, text: str, redacted: bool, n: int = 5) -> list[tuple[str, float]]:
    """An explanation's n words most for its class (of `text`, what it explained); redacted, a
    placeholder stands in for the words it hides."""
    if not redacted:
        return explanation.top_words(n)
    return sorted(redact_scored(explanation.word_attribution, text), key=lambda ws: ws[1], reverse=True)[:n]


def restore_placeholders(edited: str, original: str) -> str:
    """An edit of the redacted text back onto the original: when the edit kept the placeholders
    as shown (same kinds, same order), each gets its original words back, so editing around a
    hidden name keeps the name. Otherwise the edit is taken as typed."""
    spans = find_phi(original)
    kept = PLACEHOLDER.findall(edited)
    if not spans or kept != [s.placeholder for s in spans]:
        return edited
    values = iter(original[s.start:s.end] for s in spans)
    return PLACEHOLDER.sub(lambda _: next(values), edited)
