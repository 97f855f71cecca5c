"""Searching a project's items while de-identification is on: a search finds only what the
screen shows.

The store searches the stored text, names included. Listed as they are, its hits would tell
whoever searches which pages hold the name they typed, although every page then shows [NAME].
So while de-identifying, the store's matches are checked against the redacted text: an item is
listed only if its file name, caption or page text as shown (fusion.privacy.shown) still holds
every searched word (the last one may be the start of a word, as in the store's search). Redacting costs about
half a millisecond an item, so only the first MAX_CHECKED matches (in the chosen order) are checked.
"""
from __future__ import annotations

import re

from fusion.privacy.shown import Shown
from fusion.store.labeling import Item, ItemFilter, Page, Store

MAX_CHECKED = 1000


def visible_match(item: Item, words: list[str]) -> bool:
    """Whether every word is in what the item shows de-identified (the last one as a prefix)."""
    visible = Shown(True)
    shown = " ".join((visible.filename(item.filename), visible.text(item.caption), visible.text(item.ocr_text)))
    shown = shown.lower()
    tokens = set(re.findall(r"\w+", shown))
    *whole, last = words
    return all(w in tokens for w in whole) and any(t.startswith(last) for t in tokens)


def list_items(store: Store, project_name: str, where: ItemFilter, offset: int = 0, limit: int = 50,
               deidentified: bool = False) -> Page:
    """store.list_items; `deidentified`: a search matches only the text as it is shown redacted."""
    words = re.findall(r"\w+", where.search.lower())
    if not deidentified or not words:
        return store.list_items(project_name, where, offset=offset, limit=limit)
    found = store.list_items(project_name, where, limit=MAX_CHECKED)
    kept = [item for item in found.items if visible_match(item, words)]
    return Page(kept[offset:offset + limit], len(kept), found.total > MAX_CHECKED or found.total_is_capped)
