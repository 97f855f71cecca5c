"""User text (file names, captions, page text, user names) inside Streamlit elements that render
markdown (st.markdown, st.error, st.toast, st.caption...): shown as typed, never as formatting.

Streamlit never runs HTML in markdown unless asked to (unsafe_allow_html), but markdown itself
would still turn a file name like `[x](http://..)` or `![x](http://tracker/pixel.png)` into a
link or a remote image, `$..$` into math and `**x**` into bold. HTML-bearing output (the
word colouring) escapes with html.escape instead: see fusion.imaging.overlay.colored_words_html.
"""
from __future__ import annotations

import re

# Inline markdown punctuation, Streamlit's $math$ and :color[...], and the ":" of bare
# http:// autolinks: backslash-escaped.
_INLINE = re.compile(r"([\\`*_\[\]~$|:])")
# At the start of a line these begin a heading, list, quote or rule.
_BLOCK_START = re.compile(r"^(\s*\d*)([#>+\-=.)])")
# Line breaks would start new blocks; other controls, and bidi overrides that reorder what
# follows them on screen (a name that reads "scan.png" but is "gnp.exe"), are made visible.
_BREAKS = re.compile(r"[\t\r\n\v\f]+")
_HIDDEN = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
REPLACEMENT = "\ufffd"


def literal(text: str, limit: int = 300) -> str:
    """`text` as markdown that renders exactly as the text, on one line, cut to `limit` characters."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit - 1] + "…"
    text = _HIDDEN.sub(REPLACEMENT, _BREAKS.sub(" ", text))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _INLINE.sub(r"\\\1", text)
    return _BLOCK_START.sub(lambda m: m.group(1) + "\\" + m.group(2), text)
