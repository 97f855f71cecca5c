"""Synthetic clinical documents for the built-in demo project. FAKE data only.

Every name, MRN, date and value is invented. The six classes are 3 layouts x 2 topics, built so
that each modality alone is confused on some classes and only the fused model separates all six:
  - layout (table / form / chart) is purely visual: an image encoder at 224 px sees the ruled grid,
    the checkboxes or the big line chart, but cannot read 18-30 px text;
  - topic (laboratory / cardiology) is purely textual: the same templates are rendered into any
    layout, and no layout ever adds a word, so a text encoder cannot tell the layouts apart.
Deterministic: item i of seed s uses random.Random(s*100003+i) and numpy default_rng(likewise),
and fonts come from Pillow itself (load_default(size=)), so the same seed gives byte-identical PNGs.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
import random
import re
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from fusion.demo.vocabulary import (CAPTIONS_SHARED, CAPTIONS_TOPIC, CONTEXT, DEPARTMENTS, DOCTORS, FACILITIES, FIRST,
                               LAST, NOTES_SHARED, NOTES_TOPIC, PANELS, WARDS)

GENERATOR_VERSION = 1  # bump when the output changes: cached demo folders are then regenerated

# label -> one-line description (used for zero-shot); order is fixed and defines index % 6.
LABELS: dict[str, str] = {
    "lab_results_table": "laboratory test results laid out in a ruled table",
    "lab_request_form": "laboratory test form with boxes, checkboxes and a signature line",
    "lab_trend_chart": "line chart or tracing of laboratory values with a short laboratory note",
    "cardiology_table": "cardiology measurements such as ECG intervals laid out in a ruled table",
    "cardiology_form": "cardiology form with boxes, checkboxes and a signature line",
    "cardiology_chart": "line chart or tracing of heart measurements with a short cardiology note",
}
LAYOUTS = ("table", "form", "chart")
TOPICS = ("laboratory", "cardiology")
LABEL_PARTS: dict[str, tuple[str, str]] = {  # label -> (layout, topic)
    "lab_results_table": ("table", "laboratory"), "lab_request_form": ("form", "laboratory"),
    "lab_trend_chart": ("chart", "laboratory"), "cardiology_table": ("table", "cardiology"),
    "cardiology_form": ("form", "cardiology"), "cardiology_chart": ("chart", "cardiology"),
}
SPLITS = ("train", "val", "test")

def _measures(spec: str) -> list[tuple[str, str, float, float, int]]:
    """ "name, unit, low..high; ..." -> [(name, unit, low, high, decimals)]"""
    out = []
    for item in spec.split("; "):
        name, unit, span = (part.strip() for part in item.split(","))
        lo, hi = span.split("..")
        out.append((name, unit, float(lo), float(hi), len(lo.partition(".")[2])))
    return out


@dataclass
class Document:
    """The words of one document, independent of how it is laid out."""
    title: str
    facility: str
    header: list[list[str]]   # lines of cells: patient, visit, topic context
    rows: list[list[str]]     # measurements: name, value, unit, reference range, flag (H/L/"")
    notes: list[str]
    footer: list[str]

    @property
    def text(self) -> str:
        lines = [self.title, self.facility, *[" ".join(c for c in cells if c)
                 for cells in (*self.header, *self.rows)], *self.notes, " ".join(self.footer)]
        return "\n".join(lines)


@dataclass
class DemoItem:
    file: str      # relative to the demo root, e.g. "images/0007.png"
    label: str
    text: str      # exactly the words rendered on the page
    caption: str   # short annotator note, often empty
    split: str     # train / val / test, from a hash of the file name


def _date(rng: random.Random, first: int, last: int) -> str:
    y, m, d = rng.randint(first, last), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{y}-{m:02d}-{d:02d}", f"{d:02d}/{m:02d}/{y}"])


def compose_document(topic: str, rng: random.Random) -> Document:
    """Fake words for one document of this topic. Takes no layout: text never reveals the layout."""
    title, spec = rng.choice(sorted(PANELS[topic].items()))
    measures = _measures(spec)
    doctor = rng.choice(DOCTORS)
    when = _date(rng, 2019, 2025)
    ctx, ctx_values, ctx_time = CONTEXT[topic]
    patient = f"Patient: {rng.choice(FIRST)} {rng.choice(LAST)}"
    header = [[patient, f"MRN {rng.randint(1000000, 9999999)}", f"DOB {_date(rng, 1935, 2004)}"],
              [f"Date: {when}", rng.choice(WARDS), f"Ordered by Dr. {rng.choice(DOCTORS)}"],
              [f"{ctx}: {rng.choice(ctx_values)}",
               f"{ctx_time} {rng.randint(6, 20):02d}:{rng.randint(0, 59):02d}"]]
    rows = []
    for name, unit, lo, hi, dec in sorted(rng.sample(measures, rng.randint(4, len(measures))),
                                          key=measures.index):
        span = hi - lo
        value = min(max(rng.gauss((lo + hi) / 2, span / 2.5), lo - span), hi + span)
        value = max(value, 0.0) if lo >= 0 else value
        flag = "H" if value > hi else "L" if value < lo else ""
        ref = f"{lo:.{dec}f} to {hi:.{dec}f}" if lo < 0 else f"{lo:.{dec}f}-{hi:.{dec}f}"
        rows.append([name, f"{value:.{dec}f}", unit, ref, flag])
    fill = {"date": _date(rng, 2018, 2024), "k": rng.choice([2, 3, 4, 6, 8, 12])}
    notes = [n.format(**fill) for n in (rng.choice(NOTES_SHARED), rng.choice(NOTES_TOPIC[topic]))]
    notes = rng.sample(notes, rng.choice([1, 2, 2]))
    status = rng.choice(["final", "final", "preliminary", "amended"])
    footer = [f"Reviewed by Dr. {doctor}", f"Status: {status}"]
    facility = f"{rng.choice(FACILITIES)} - {rng.choice(DEPARTMENTS[topic])}"
    return Document(title, facility, header, rows, notes, footer)


def compose_caption(topic: str, rng: random.Random) -> str:
    r = rng.random()
    if r < 0.5:
        return ""
    return rng.choice(CAPTIONS_SHARED if r < 0.8 else CAPTIONS_TOPIC[topic])


# ---------------------------------------------------------------- drawing
@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's own scalable font (Aileron): on every machine, so output is identical everywhere.
    return ImageFont.load_default(size=size)


@lru_cache(maxsize=4096)
def _text_width(size: int, s: str) -> float:
    return _font(size).getlength(s)


_POSTERIZE = np.round(np.round(np.arange(256) / 255 * 31) * 255 / 31).astype(np.uint8)


class Canvas:
    """Draws, or (draw=False) only measures, so a layout can size the page before painting it.

    Pages are drawn in grey levels (255 paper, 0 ink) and coloured at the end by a palette running
    from the ink colour to the paper colour: one byte a pixel keeps rotation, blur and PNG cheap.
    """
    paper, ink = 255, 0

    def __init__(self, w: int, h: int, size: int, margin: int, draw: bool):
        self.w, self.h, self.size, self.margin = w, h, size, margin
        self.font, self.big = _font(size), _font(size + 8)
        self.lh = round(size * 1.5)
        self.img = Image.new("L", (w, h), self.paper) if draw else None
        self.d = ImageDraw.Draw(self.img) if draw else None
        self.max_x = 0.0

    @property
    def avail(self) -> int:
        return self.w - 2 * self.margin

    def width(self, s: str, big: bool = False) -> float:
        return _text_width(self.size + 8 if big else self.size, s)

    def text(self, x: float, y: float, s: str, big: bool = False) -> float:
        w = self.width(s, big)
        self.max_x = max(self.max_x, x + w)
        if self.d and s:
            # no stroke "bold": it closes the dot of the i and OCR then reads "Studles"
            self.d.text((x, y), s, font=self.big if big else self.font, fill=self.ink)
        return w

    def line(self, pts, width: int, fill=None):
        if self.d:
            self.d.line([tuple(map(float, p)) for p in pts], width=width, joint="curve",
                        fill=self.ink if fill is None else fill)

    def rect(self, box, width: int = 0, outline=None, fill=None):
        self.max_x = max(self.max_x, box[2])
        if self.d:
            outline = (self.ink if outline is None else outline) if width else None
            self.d.rectangle(box, outline=outline, fill=fill, width=width)


def _heading(c: Canvas, doc: Document, y: float) -> float:
    c.text(c.margin, y, doc.title, big=True)
    y += c.lh + 8
    c.text(c.margin, y, doc.facility)
    return y + c.lh * 1.4


def _cells_line(c: Canvas, cells: list[str], y: float, x0: float, width: float) -> float:
    """Cells of one line spread over `width` (equal shares, or packed where they don't fit)."""
    cells = [s for s in cells if s]
    share, gap, x = width / len(cells), c.size * 1.5, x0
    for i, s in enumerate(cells):
        x = max(x + c.text(x, y, s) + gap, x0 + share * (i + 1))
    return y + c.lh


def _grid(c: Canvas, rows: list[list[str]], y: float, rng: random.Random, lw: int, shade) -> float:
    """A ruled table: every row and column boundary drawn, outer border heavier."""
    pad, n = round(c.size * 0.55), max(len(r) for r in rows)
    widths = [max(c.width(r[i]) if i < len(r) else 0 for r in rows) + 2 * pad for i in range(n)]
    extra = c.avail * rng.uniform(0.85, 1.0) - sum(widths)
    if extra > 0:
        widths = [w + extra * w / sum(widths) for w in widths]
    xs = [c.margin + sum(widths[:i]) for i in range(n + 1)]
    rh = c.lh + pad
    zebra = rng.random() < 0.5
    for r, cells in enumerate(rows):
        top = y + r * rh
        if shade is not None and (r == 0 and not zebra or zebra and r % 2 == 1):
            c.rect((xs[0], top, xs[-1], top + rh), fill=shade)
        for i, s in enumerate(cells):
            c.text(xs[i] + pad, top + pad * 0.6, s)
    bottom = y + len(rows) * rh
    for r in range(len(rows) + 1):
        c.line([(xs[0], y + r * rh), (xs[-1], y + r * rh)], lw)
    for x in xs:
        c.line([(x, y), (x, bottom)], lw)
    c.rect((xs[0], y, xs[-1], bottom), width=lw + 1)
    return bottom


def _layout_table(c: Canvas, doc: Document, rng: random.Random, np_rng) -> float:
    lw = rng.choice([2, 2, 3, 4])
    shade = 255 - rng.randint(18, 40)
    y = _heading(c, doc, c.margin)
    if rng.random() < 0.7:
        y = _grid(c, doc.header, y, rng, lw, None) + c.lh * 0.8
    else:
        for cells in doc.header:
            y = _cells_line(c, cells, y, c.margin, c.avail)
        y += c.lh * 0.5
    rows = doc.rows
    if rng.random() < 0.4:  # value and unit in one cell
        rows = [[r[0], f"{r[1]} {r[2]}".strip(), *r[3:]] for r in doc.rows]
    y = _grid(c, rows, y, rng, lw, shade) + c.lh * 0.8
    for note in doc.notes:
        c.text(c.margin, y, note)
        y += c.lh
    return _cells_line(c, doc.footer, y + c.lh * 0.5, c.margin, c.avail)


def _checkbox(c: Canvas, x: float, y: float, s: float, lw: int, checked: bool, round_: bool):
    box = (x, y, x + s, y + s)
    if c.d:
        (c.d.ellipse if round_ else c.d.rectangle)(box, outline=c.ink, width=lw)
        if checked:
            tick = [(x + s * .2, y + s * .55), (x + s * .42, y + s * .8), (x + s * .85, y + s * .2)]
            c.d.line(tick, fill=c.ink, width=lw + 1, joint="curve")


def _layout_form(c: Canvas, doc: Document, rng: random.Random, np_rng) -> float:
    lw, round_ = rng.choice([2, 2, 3]), rng.random() < 0.3
    band = 255 - rng.randint(15, 35) if rng.random() < 0.6 else None
    pad, s = round(c.size * 0.6), round(c.size * 0.95)
    left, right = c.margin + pad, c.w - c.margin - pad
    y = _heading(c, doc, c.margin + pad)

    def section(y_top: float, y_bottom: float):
        if band:
            c.rect((c.margin, y_top - pad * 1.6, c.w - c.margin, y_top - pad * 0.6), fill=band)
        c.rect((c.margin, y_top - pad * 0.6, c.w - c.margin, y_bottom), width=lw)

    y += pad * 1.6
    top = y
    for cells in doc.header:  # fill-in fields: each cell underlined
        x = left
        for cell in cells:
            w = c.text(x, y, cell)
            c.line([(x, y + c.lh * 0.9), (x + w + pad, y + c.lh * 0.9)], 1)
            x += max(w + 2 * pad, (right - left) / len(cells))
        y += c.lh * 1.2
    section(top, y)
    y += pad * 3.2
    top = y
    name_w = max(c.width(r[0]) for r in doc.rows)
    val_w = max(c.width(f"{r[1]} {r[2]}".strip()) for r in doc.rows) + 2 * pad
    for r in doc.rows:  # checkbox, name, value in a box, range
        _checkbox(c, left, y + (c.lh - s) / 2 - 2, s, lw, rng.random() < 0.6, round_)
        c.text(left + s + pad, y, r[0])
        xv = left + s + 2 * pad + name_w + pad
        c.rect((xv, y - pad * 0.4, xv + val_w, y + c.lh - pad * 0.2), width=1)
        c.text(xv + pad, y, f"{r[1]} {r[2]}".strip())
        c.text(xv + val_w + 2 * pad, y, f"{r[3]}  {r[4]}".strip())
        y += c.lh + pad
    section(top, y)
    y += pad * 3.2
    top = y
    for note in doc.notes:  # notes on ruled write-in lines
        c.text(left, y, note)
        c.line([(left, y + c.lh), (right, y + c.lh)], 1)
        y += c.lh * 1.3
    section(top, y)
    y += pad * 2
    w = c.text(left, y + c.lh * 0.6, doc.footer[0])  # signature: a scribble over a heavy line
    x0, base = left + w + 2 * pad, y + c.lh * 1.5
    x1 = x0 + max(c.avail * 0.2, min(c.avail * 0.4, right - x0 - 2 * pad))
    c.line([(x0, base), (x1, base)], lw + 1)
    t, f = np.linspace(0, 1, 120), rng.uniform(4, 8)
    sx = x0 + (x1 - x0) * (0.1 + 0.7 * t + 0.04 * np.sin(2 * np.pi * f * t + rng.uniform(0, 3)))
    wobble = np.sin(2 * np.pi * f * t * rng.uniform(0.9, 1.2)) * np.sin(np.pi * t) ** 0.5
    sy = base - c.lh * (0.5 + 0.4 * wobble)
    c.line(list(zip(sx, sy)), lw)
    y = base + c.lh * 0.6
    _checkbox(c, left, y + (c.lh - s) / 2, s, lw, True, round_)
    c.text(left + s + pad, y, doc.footer[1])
    return y + c.lh


def _trace(kind: str, n: int, rng: random.Random, np_rng) -> np.ndarray:
    """A curve in [0, 1]: slow trend with markers, monitor-like wave, or periodic sharp peaks."""
    t = np.linspace(0, 1, n)
    if kind == "trend":
        v = np.cumsum(np_rng.normal(0, 1, n))
    elif kind == "wave":
        v = sum(np_rng.uniform(0.3, 1) * np.sin(2 * np.pi * (f * t + np_rng.uniform())) for f in
                np_rng.uniform(1, 12, 3)) + np_rng.normal(0, 0.03, n)
    else:
        period, width = rng.uniform(0.08, 0.2), rng.uniform(0.004, 0.012)
        phase = (t + np_rng.uniform()) % period - period * 0.4
        v = (np.exp(-(phase / width) ** 2) - 0.3 * np.exp(-((phase - 2.5 * width) / width) ** 2)
             + 0.25 * np.exp(-((phase - period * 0.35) / (period * 0.08)) ** 2)
             + np_rng.normal(0, 0.02, n))
    return (v - v.min()) / (np.ptp(v) + 1e-9)


def _panel(c: Canvas, box, rng: random.Random, np_rng, lw: int):
    x0, y0, x1, y1 = box
    bg = rng.choice([232, 242, None])
    grid = (bg or c.paper) - rng.randint(35, 60)
    if bg:
        c.rect(box, fill=bg)
    step = rng.choice([16, 20, 25])
    for i, x in enumerate(np.arange(x0, x1, step)):
        c.line([(x, y0), (x, y1)], 2 if i % 5 == 0 else 1, grid)
    for i, y in enumerate(np.arange(y0, y1, step)):
        c.line([(x0, y), (x1, y)], 2 if i % 5 == 0 else 1, grid)
    c.rect(box, width=lw)
    kind = rng.choice(["trend", "wave", "peaks"])
    k = rng.choice([1, 2, 3]) if kind != "trend" else rng.choice([1, 2])
    color = rng.choice([0, 0, 40, 70])
    band = (y1 - y0) / k
    for j in range(k):
        n = rng.randint(8, 16) if kind == "trend" else int(x1 - x0)
        v = _trace(kind, n, rng, np_rng)
        xs = np.linspace(x0 + 10, x1 - 10, n)
        ys = y0 + band * j + band * (0.85 - 0.7 * v)
        c.line(list(zip(xs, ys)), lw + (1 if kind == "trend" else 0), color)
        if kind == "trend" and c.d:
            r = lw + 3
            for x, y in zip(xs, ys):
                c.d.ellipse((x - r, y - r, x + r, y + r), fill=color)


def _layout_chart(c: Canvas, doc: Document, rng: random.Random, np_rng) -> float:
    lw = rng.choice([2, 2, 3])
    y = _heading(c, doc, c.margin)
    for cells in doc.header:
        y = _cells_line(c, cells, y, c.margin, c.avail)
    y += c.lh * 0.5
    widths = [max(c.width(r[i]) for r in doc.rows) for i in range(5)]
    block_w = sum(widths) + 4 * c.size * 1.2
    side = rng.random() < 0.35 and c.avail - block_w > c.avail * 0.4
    place = "side" if side else rng.choice(["above", "below"])
    chart_h = c.avail * rng.uniform(0.38, 0.55)
    if place == "above":
        _panel(c, (c.margin, y, c.w - c.margin, y + chart_h), rng, np_rng, lw)
        y += chart_h + c.lh * 0.8
    top = y
    for r in doc.rows:  # aligned columns without rules
        x = c.margin
        for i, s in enumerate(r):
            c.text(x, y, s)
            x += widths[i] + c.size * 1.2
        y += c.lh
    if place == "side":
        y = max(y, top + chart_h * 0.6)
        box = (c.margin + block_w + c.size, top - c.lh * 0.3, c.w - c.margin, y)
        _panel(c, box, rng, np_rng, lw)
    y += c.lh * 0.6
    if place == "below":
        _panel(c, (c.margin, y, c.w - c.margin, y + chart_h), rng, np_rng, lw)
        y += chart_h + c.lh * 0.8
    for note in doc.notes:
        c.text(c.margin, y, note)
        y += c.lh
    return _cells_line(c, doc.footer, y + c.lh * 0.4, c.margin, c.avail)


_LAYOUT_FNS = {"table": _layout_table, "form": _layout_form, "chart": _layout_chart}


def render_document(doc: Document, layout: str, rng: random.Random, np_rng) -> Image.Image:
    """Lay `doc` out as `layout` on a randomly sized, tinted, slightly rotated and degraded page.

    Returns a palette ("P") image; the PNG on disk is this image, so it decodes to the same RGB.
    """
    w = rng.randint(800, 1100)
    extra = rng.uniform(0.0, 0.3)  # blank space below the content, as a fraction of the width
    margin, size = rng.randint(36, 80), rng.randint(18, 30)
    paper = np.array([rng.randint(242, 255), rng.randint(238, 253), rng.randint(225, 248)])
    ink = np.array(rng.choice([(20, 20, 20), (45, 45, 50), (20, 30, 85), (0, 0, 0), (60, 25, 25)]))
    layout_fn = _LAYOUT_FNS[layout]
    state, np_state = rng.getstate(), np_rng.bit_generator.state
    while True:  # measure; shrink the font (not below 18 px), then widen the page, until it fits
        probe = Canvas(w, 10, size, margin, draw=False)
        height = layout_fn(probe, doc, rng, np_rng)
        rng.setstate(state)
        np_rng.bit_generator.state = np_state
        if probe.max_x <= w - margin + 1:
            break
        if size > 18:
            size = max(18, size - 2)
        else:
            w = int(probe.max_x + margin + 1)
    h = int(height + margin + w * extra)
    c = Canvas(w, h, size, margin, draw=True)
    layout_fn(c, doc, rng, np_rng)
    a = np.asarray(c.img)
    if rng.random() < 0.75:  # a page fed in slightly askew (OpenCV: 5x faster than PIL's rotate)
        rot = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-2, 2), 1.0)
        a = cv2.warpAffine(a, rot, (w, h), flags=cv2.INTER_LINEAR, borderValue=c.paper)
    if rng.random() < 0.35:  # a slightly soft scan
        a = cv2.GaussianBlur(a, (0, 0), rng.uniform(0.4, 0.9))
    a = a.copy()
    k = int(np_rng.integers(0, w * h // 10000 + 1))  # dust specks
    ys, xs = np_rng.integers(0, h - 1, k), np_rng.integers(0, w - 1, k)
    for dy in (0, 1):
        for dx in (0, 1):
            a[ys + dy, xs + dx] = np.minimum(a[ys + dy, xs + dx], 90)
    a = _POSTERIZE[a]  # 32 grey levels: files half the size, no visible change
    page = Image.fromarray(a)  # putpalette makes it "P": grey v -> ink + (paper - ink) * v / 255
    palette = ink[None, :] + (paper - ink)[None, :] * np.arange(256)[:, None] / 255
    page.putpalette(np.round(palette).astype(np.uint8).tobytes())
    return page


# ---------------------------------------------------------------- items, files, manifest
def split_of(file: str) -> str:
    """Stable ~70/15/15 split from a hash of the file name (not of the seed or the label)."""
    h = int.from_bytes(hashlib.sha256(file.encode()).digest()[:8], "big") % 100
    return SPLITS[0] if h < 70 else SPLITS[1] if h < 85 else SPLITS[2]


def label_of(index: int) -> str:
    return list(LABELS)[index % len(LABELS)]


def _render_page(index: int, seed: int) -> tuple[Image.Image, DemoItem]:
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    label = label_of(index)
    layout, topic = LABEL_PARTS[label]
    rng = random.Random(seed * 100003 + index)
    np_rng = np.random.default_rng(seed * 100003 + index)
    doc = compose_document(topic, rng)
    caption = compose_caption(topic, rng)
    page = render_document(doc, layout, rng, np_rng)
    file = f"images/{index:04d}.png"
    return page, DemoItem(file, label, doc.text, caption, split_of(file))


def render_item(index: int, seed: int = 0) -> tuple[Image.Image, DemoItem]:
    """Item `index` of the demo set for `seed`, in RGB as generate() writes it. Deterministic."""
    page, item = _render_page(index, seed)
    return page.convert("RGB"), item


def _atomic_write(path: Path, write: Callable[[Path], None]):
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # two writers never share a temp
    write(tmp)
    os.replace(tmp, path)


def load_manifest(root: Path) -> list[DemoItem]:
    path = Path(root) / "manifest.csv"
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        want = [fl.name for fl in fields(DemoItem)]
        if reader.fieldnames != want:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {want}")
        return [DemoItem(**row) for row in reader]


def _is_current(root: Path, n: int, seed: int) -> bool:
    try:
        meta = json.loads((root / "demo.json").read_text())
        items = load_manifest(root)
    except (OSError, ValueError):
        return False
    return (meta == {"n": n, "seed": seed, "version": GENERATOR_VERSION} and len(items) == n
            and all((root / it.file).is_file() for it in items))


def generate(root: Path, n: int = 480, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> list[DemoItem]:
    """Write n images under root/images and root/manifest.csv; reuse them if already complete.

    The manifest is removed first and written last, so an interrupted run is detected and redone.
    """
    if n < len(LABELS):
        raise ValueError(f"n must be at least {len(LABELS)} (one item per class), got {n}")
    root = Path(root)
    if _is_current(root, n, seed):
        return load_manifest(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").unlink(missing_ok=True)
    items = []
    for i in range(n):
        page, item = _render_page(i, seed)
        _atomic_write(root / item.file, lambda p: page.save(p, format="PNG", compress_level=3))
        items.append(item)
        if progress:
            progress(i + 1, n)
    keep = {Path(it.file).name for it in items}
    for old in (root / "images").glob("*.png"):  # images of an earlier, larger n
        if re.fullmatch(r"\d{4,}\.png", old.name) and old.name not in keep:
            old.unlink(missing_ok=True)
    _atomic_write(root / "demo.json", lambda p: p.write_text(
        json.dumps({"n": n, "seed": seed, "version": GENERATOR_VERSION})))

    def write_manifest(p: Path):
        with open(p, "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(DemoItem)])
            writer.writeheader()
            writer.writerows(asdict(it) for it in items)
    _atomic_write(root / "manifest.csv", write_manifest)
    return items
