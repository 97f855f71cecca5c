"""EasyOCR's two networks run by ONNX Runtime on the CPU, built from its installed weights.

- CRAFT, the detector, in int8 (static quantization, per-channel weights, on the CPU's VNNI
  instructions): a 1000x760 form in 0.46 s against 2.3 s in torch's float32. Its activation
  ranges are measured on pages drawn here, so the same weights give the same model everywhere.
- The recogniser (VGG, BiLSTM, CTC) in float32: about twice as fast as easyocr's own CPU model
  (torch's dynamic int8, whose LSTM dominated a page's reading time), and exactly its float model.

Both are exported on first use (~40 s) into the workspace's cache with a manifest of hashes,
checked at every load; nothing is downloaded. On a GPU, easyocr's torch models run as they are.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import random
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from fusion.core.atomic import write_atomic

log = logging.getLogger(__name__)

RECIPE = 1                    # bump when the export or calibration below changes
CALIBRATION_PAGES = 8
CALIBRATION_SIDE = 1280       # the detection canvas read_text uses for a page


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _calibration_page(seed: int) -> np.ndarray:
    """A page of words in several sizes, some blurred and noisy like a scan, as RGB."""
    rng = random.Random(seed)
    page = Image.new("L", (rng.choice((760, 1000, 1280)), 1000), 255)
    draw = ImageDraw.Draw(page)
    words = "total invoice date page form name 2024 receipt abstract figure table cash no. $12.50".split()
    y = 20
    while y < page.height - 60:
        size = rng.choice((12, 16, 20, 28, 40))
        font = ImageFont.load_default(size=size)
        x = 20
        while x < page.width - 150:
            word = rng.choice(words)
            draw.text((x, y), word, font=font, fill=rng.randint(0, 90))
            x += int(font.getlength(word + "  ")) + rng.randint(0, 120)
        y += int(size * rng.uniform(1.3, 3.0))
    if seed % 2:
        page = page.filter(ImageFilter.GaussianBlur(0.8))
        noise = np.random.default_rng(seed).normal(0, 12, (page.height, page.width))
        page = Image.fromarray(np.clip(np.asarray(page) + noise, 0, 255).astype(np.uint8))
    return np.asarray(page.convert("RGB"))


def _detector_input(rgb: np.ndarray, canvas: int, mag: float) -> np.ndarray:
    """The CRAFT input easyocr.detection.test_net makes of an RGB page."""
    import cv2
    from easyocr.imgproc import normalizeMeanVariance, resize_aspect_ratio

    resized, _, _ = resize_aspect_ratio(rgb, canvas, interpolation=cv2.INTER_LINEAR, mag_ratio=mag)
    return np.transpose(normalizeMeanVariance(resized), (2, 0, 1))[None].astype(np.float32)


@contextlib.contextmanager
def _quiet_export():
    """torch.onnx's tracer warns about easyocr's Python-side shape checks and LSTM batch sizes;
    the graphs are checked against the torch models by tests/test_ocr.py."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_detector(net: torch.nn.Module, out: Path) -> None:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Pages(CalibrationDataReader):
        def __init__(self):
            self.pages = iter(range(CALIBRATION_PAGES))

        def get_next(self):
            seed = next(self.pages, None)
            if seed is None:
                return None
            return {"image": _detector_input(_calibration_page(seed), CALIBRATION_SIDE, 1.0)}

    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = Path(tmp) / "craft.onnx", Path(tmp) / "craft.pre.onnx"
        net = net.to(memory_format=torch.contiguous_format).eval()
        with _quiet_export():
            torch.onnx.export(net, (torch.zeros(1, 3, 256, 256),), str(fp32), input_names=["image"],
                              output_names=["y", "feature"], dynamic_axes={"image": {2: "h", 3: "w"}},
                              opset_version=17, dynamo=False)
        quant_pre_process(str(fp32), str(prepared))
        write_atomic(out, lambda tmp_out: quantize_static(
            str(prepared), str(tmp_out), Pages(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8))


class OnnxDetector:
    """Stands in for easyocr's torch detector: called with the input batch, returns (y, None)."""

    def __init__(self, path: Path):
        self.session = _session(path)

    def __call__(self, x: torch.Tensor):
        y = self.session.run(["y"], {"image": x.numpy().astype(np.float32, copy=False)})[0]
        return torch.from_numpy(y), None


class OnnxRecognizer:
    """Stands in for easyocr's recogniser: called with (crops, None), returns the logits."""

    def __init__(self, path: Path):
        self.session = _session(path)

    def __call__(self, x: torch.Tensor, text=None) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["logits"], {"image": x.numpy()})[0])


class _Recognizer(torch.nn.Module):
    """easyocr's VGG-BiLSTM-CTC model with its height pooling written as a mean, which ONNX
    can export (AdaptiveAvgPool2d((None, 1)) has no fixed output size)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.model.FeatureExtraction(x).permute(0, 3, 1, 2).mean(3)
        return self.model.Prediction(self.model.SequenceModeling(features))


def float_recognizer(weights: Path, character: str) -> torch.nn.Module:
    """easyocr's english_g2 recogniser in float32, loaded by easyocr itself (its CPU Reader keeps
    only a dynamically quantized copy)."""
    from easyocr.recognition import get_recognizer

    model, _ = get_recognizer("generation2", {"input_channel": 1, "output_channel": 256, "hidden_size": 256},
                              character, {}, {}, str(weights), device="cpu", quantize=False)
    return model.eval()


def _export_recognizer(weights: Path, character: str, out: Path) -> None:
    model = float_recognizer(weights, character)
    with _quiet_export():
        write_atomic(out, lambda tmp: torch.onnx.export(
            _Recognizer(model), (torch.zeros(1, 1, 64, 256),), str(tmp), input_names=["image"],
            output_names=["logits"], dynamic_axes={"image": {0: "batch", 3: "width"}}, opset_version=17,
            dynamo=False))


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _cached(name: str, weights: Path, cache_dir: Path, build) -> Path:
    """`cache_dir`/<name>-<key>.onnx, built by `build(path)` unless a file whose hash its manifest
    records is already there. The key covers the source weights, the exporting packages and RECIPE."""
    import fcntl

    versions = {p: importlib.metadata.version(p) for p in ("torch", "onnxruntime", "onnx")}
    key = hashlib.sha256(json.dumps([_sha256(weights), versions, RECIPE]).encode()).hexdigest()[:16]
    model, manifest = cache_dir / f"{name}-{key}.onnx", cache_dir / f"{name}-{key}.json"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)     # one process exports; the others wait, then load it
        try:
            recorded = json.loads(manifest.read_text())["sha256"] if manifest.exists() else None
        except (ValueError, KeyError):
            recorded = None
        if recorded is None or not model.exists() or _sha256(model) != recorded:
            log.info("exporting %s from %s to ONNX in %s", name, weights.name, cache_dir)
            build(model)
            write_atomic(manifest, lambda tmp: tmp.write_text(json.dumps(
                {"sha256": _sha256(model), "source": str(weights), "source_sha256": _sha256(weights),
                 "versions": versions, "recipe": RECIPE}, indent=1)))
    return model


def onnx_models(detector: torch.nn.Module, detector_weights: Path, recognizer_weights: Path, character: str,
                cache_dir: Path) -> tuple[OnnxDetector, OnnxRecognizer]:
    """The int8 CRAFT and the float32 recogniser for these weights, built into `cache_dir` the
    first time (~40 s)."""
    craft = _cached("craft-int8", detector_weights, cache_dir, lambda out: _export_detector(detector, out))
    recognizer = _cached("recognizer", recognizer_weights, cache_dir,
                         lambda out: _export_recognizer(recognizer_weights, character, out))
    return OnnxDetector(craft), OnnxRecognizer(recognizer)
