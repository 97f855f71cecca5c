"""The prediction service that the pages and the CLI both call.

One Engine per process holds the encoders, the models it has loaded and a small LRU of image
features, so re-predicting an image with an edited caption costs one MiniLM pass and the
fusion head, not OCR and EfficientNet again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import torch
from PIL import Image
from threadpoolctl import threadpool_limits

from fusion.imaging import ocr
from fusion.ml.encoders import (CAPTION_MARK, ChunkCache, ImageEncoder, TextEncoder, load_encoders, load_image_encoder,
                       load_text_encoder, patches_of)
from fusion.ml.explain import Explanation, ForwardPass, explain
from fusion.ml.abstain import abstained, image_present
from fusion.ml.model import FusionModel
from fusion.ml.ood import fields as ood_fields
from fusion.ml.reasons import explanation_text, review_reasons
from fusion.core.project import Project
from fusion.core.settings import Settings, describe_device
from fusion.ml.zeroshot import project_zero_shot_model

FEATURE_CACHE_SIZE = 64  # images; 49x1280 floats each (~250 KB)
EXPLAINER_NICE = 10       # added to the explaining thread's CPU niceness
_explaining = threading.local()


def _explainer_thread() -> None:
    """Set up the thread that explains: it yields the CPU to predictions, page loads and other
    sessions (and, on a small machine, the browser painting the prediction) and leaves them a core.
    On 2 cores, with the browser on the same machine, this took a caption edit's new prediction
    from 0.41 s to 0.23 s (median time to the screen)."""
    if sys.platform == "linux":   # Linux nices single threads; elsewhere the id would name a process
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + EXPLAINER_NICE)
    # This thread's OpenMP team only: torch.set_num_threads would also shrink every thread
    # started later (each Streamlit run). torch sets the team size at a thread's first use: first.
    threadpool_limits(max(1, torch.get_num_threads() - 1), user_api="openmp")
    _explaining.here = True


def compose_text(ocr_text: str, caption: str) -> str:
    """What the text encoder reads: the page's text, then the user's caption or note after
    CAPTION_MARK, which the encoder reads in chunks of its own (never cut off by a long page)."""
    page, note = ((part or "").replace(CAPTION_MARK, " ").strip() for part in (ocr_text, caption))
    return f"{page}\n{CAPTION_MARK} {note}" if note else page


@dataclass
class Prediction:
    label: str
    confidence: float
    probs: dict[str, float]
    probs_image: dict[str, float]
    probs_text: dict[str, float]
    ocr_text: str
    caption: str
    model_version: str
    image_weight: float | None          # gated models: the learned weight of the image modality
    timings_ms: dict[str, float]
    ocr: ocr.OcrResult | None = None
    explanation: Explanation | None = field(default=None, repr=False)
    abstained: dict[str, str] = field(default_factory=dict)   # {head: why} (fusion.ml.abstain)
    ood_score: float | None = None      # fusion.ml.ood: above 1, unlike every trained class; None: no bank
    ood_parts: dict[str, float] = field(default_factory=dict)  # the image's and the text's alone
    image_size: tuple[int, int] = (0, 0)
    review_threshold: float = 0.6       # under this confidence, a prediction needs review

    @property
    def in_distribution(self) -> bool | None:
        return None if self.ood_score is None else self.ood_score <= 1.0

    @property
    def review_reasons(self) -> list[str]:
        return review_reasons(self.to_dict(explained=False))

    def to_dict(self, explained: bool = True) -> dict:
        d = {k: getattr(self, k) for k in ("label", "confidence", "probs", "probs_image", "probs_text",
                                            "ocr_text", "caption", "model_version", "image_weight", "timings_ms",
                                            "abstained", "ood_score", "in_distribution", "ood_parts",
                                            "review_threshold")}
        d["image_size"] = list(self.image_size)
        if self.explanation is not None:
            d["top_words"] = [[w, s] for w, s in self.explanation.top_words()]
            d["heatmap_peak"] = list(self.explanation.heatmap_peak)
            d["words_read"], d["words_total"] = self.explanation.words_read, self.explanation.words_total
        d["review_reasons"] = review_reasons(d)
        d["needs_review"] = bool(d["review_reasons"])
        if explained:
            d["explanation_text"] = explanation_text(d)
        return d


def _probs(labels: list[str], logits: torch.Tensor) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(labels, logits.softmax(-1)[0])}


@dataclass
class LoadedModel:
    model: FusionModel
    image_encoder: ImageEncoder      # the shared pretrained ones, or the version's fine-tuned copies
    text_encoder: TextEncoder


class Engine:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = settings.resolved_device()
        self.image_encoder: ImageEncoder = load_image_encoder().to(self.device)
        self.text_encoder = load_text_encoder(settings.max_text_tokens).to(self.device)
        self._models: dict[tuple[str, str], LoadedModel] = {}
        self._features: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.chunk_states = ChunkCache()     # a caption edit on a long page reads the caption alone
        self.line_states = ChunkCache(4096)  # the bare encoder's lines, for the zero-shot text prior: 6 MB
        self._lock = threading.Lock()  # Streamlit sessions share one engine
        # Explanations cost 3-4x a prediction: one at a time, on a thread of lower priority.
        self.explainer = ThreadPoolExecutor(1, thread_name_prefix="explainer", initializer=_explainer_thread)

    @property
    def device_name(self) -> str:
        return describe_device(self.device)

    # -- models ---------------------------------------------------------------------------
    def model_for(self, project: Project) -> "LoadedModel":
        """The project's active model with the encoders it reads (its own when it fine-tuned
        them), or the zero-shot model when none is trained yet."""
        version = project.active_model or "zero-shot"
        key = (str(project.directory), version)
        with self._lock:
            if key not in self._models:
                image_encoder, text_encoder = self.image_encoder, self.text_encoder
                if project.active_model:
                    directory = project.model_dir(version)
                    model = FusionModel.load(directory, self.device)
                    if model.config.finetuned_encoders:
                        image_encoder, text_encoder = load_encoders(directory, image_encoder, text_encoder, self.device)
                else:
                    model = project_zero_shot_model(project, self.settings.fusion, self.image_encoder,
                                                    self.text_encoder).to(self.device)
                self._models[key] = LoadedModel(model.requires_grad_(False).eval(), image_encoder, text_encoder)
            return self._models[key]

    def forget_models(self) -> None:
        """After a promotion or rollback: the next prediction loads the new active version."""
        with self._lock:
            self._models.clear()
            self._features.clear()  # keyed by encoder identity, which a freed encoder's id may reuse
            self.chunk_states.clear()

    # -- features -------------------------------------------------------------------------
    def read_text(self, image: Image.Image, progress=None) -> ocr.OcrResult:
        return ocr.read_text(image, max_side=self.settings.ocr_max_side, gpu=self.device.startswith("cuda"),
                             cache_dir=self.settings.ocr_cache_dir, progress=progress)

    def image_features(self, image: Image.Image, image_encoder: ImageEncoder | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixels (1,3,224,224), patches (1,49,1280)), cached by the image's content and encoder."""
        image_encoder = image_encoder or self.image_encoder
        key = hashlib.sha256(image.tobytes()).hexdigest() + f"{image.size}{id(image_encoder)}"
        with self._lock:
            if key in self._features:
                self._features.move_to_end(key)
                return self._features[key]
        pixels = ImageEncoder.preprocess([image]).to(self.device)
        with torch.no_grad():
            patches = patches_of(image_encoder(pixels))
        with self._lock:
            self._features[key] = (pixels, patches)
            while len(self._features) > FEATURE_CACHE_SIZE:
                self._features.popitem(last=False)
        return pixels, patches

    # -- the service ----------------------------------------------------------------------
    def explained(self, image: Image.Image, project: Project, caption: str = "",
                  ocr_result: ocr.OcrResult | None = None) -> Future[Prediction]:
        """The explained prediction, made on the explainer thread: a page can wait for it in steps
        and give up when the reviewer edits again."""
        return self.explainer.submit(self.predict, image, project, caption, ocr_result, True)

    def predict(self, image: Image.Image, project: Project, caption: str = "",
                ocr_result: ocr.OcrResult | None = None, with_explanation: bool = False) -> Prediction:
        """OCR (unless `ocr_result` is given: an edited caption never re-reads the page),
        encode, fuse and optionally explain (on the explainer thread)."""
        start = time.perf_counter()
        timings: dict[str, float] = {}

        def lap(name: str, t0: float) -> float:
            now = time.perf_counter()
            timings[name] = round((now - t0) * 1000, 1)
            return now

        t = start
        if ocr_result is None:
            ocr_result = self.read_text(image)
        t = lap("ocr", t)
        loaded = self.model_for(project)
        model = loaded.model
        text = compose_text(ocr_result.text, caption)
        pixels, patches = self.image_features(image, loaded.image_encoder)
        batch = loaded.text_encoder.tokenize([text]).to(self.device)
        with torch.no_grad():
            tokens, mask, attentions = loaded.text_encoder(batch, attentions=with_explanation,
                                                           cache=None if with_explanation else self.chunk_states)
            # the prior's lines are read by the bare encoder its prompts were embedded with
            lines = self.text_encoder.line_embeddings([text], self.line_states) if model.config.line_vote else None
            t = lap("encode", t)
            out = model(patches, tokens, mask, image_present(pixels), lines)
        labels = model.config.labels
        probs = _probs(labels, out.fused)
        label = max(probs, key=probs.get)
        t = lap("fuse", t)
        explanation = None
        if with_explanation:
            fwd = ForwardPass(pixels, patches, batch, tokens, mask, attentions, out, lines, text)
            args = (loaded.image_encoder, loaded.text_encoder, model, fwd, labels.index(label), image.size)
            explanation = explain(*args) if getattr(_explaining, "here", False) else \
                self.explainer.submit(explain, *args).result()
        lap("explain", t)
        timings["total"] = round((time.perf_counter() - start) * 1000, 1)
        return Prediction(
            label=label, confidence=probs[label], probs=probs,
            probs_image=_probs(labels, out.image), probs_text=_probs(labels, out.text),
            ocr_text=ocr_result.text, caption=caption, model_version=model.config.version,
            image_weight=None if out.gate is None else round(float(out.gate[0]), 4),
            timings_ms=timings, ocr=ocr_result, explanation=explanation,
            abstained=abstained(bool(out.text_present[0]), bool(out.image_present[0])),
            **ood_fields(None if out.ood is None else out.ood[0]), image_size=image.size, review_threshold=self.settings.review_threshold,
        )


# What an engine reads of the settings; the others (accounts, de-identification, limits, ...)
# must not load a second copy of the encoders.
ENGINE_SETTINGS = ("home", "device", "ocr_max_side", "max_text_tokens", "fusion", "review_threshold")


def get_engine(settings: Settings) -> Engine:
    """One engine per process and engine settings (Streamlit also wraps this in st.cache_resource)."""
    defaults = Settings()
    return _engine(dataclasses.replace(settings, **{f.name: getattr(defaults, f.name) for f in dataclasses.fields(settings)
                                                    if f.name not in ENGINE_SETTINGS}))


@functools.lru_cache(maxsize=4)
def _engine(settings: Settings) -> Engine:
    return Engine(settings)
