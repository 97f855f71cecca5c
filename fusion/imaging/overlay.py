"""Pictures of a prediction for people: OCR boxes, heatmaps over the image, coloured words."""
from __future__ import annotations

import html

import cv2
import numpy as np
from PIL import Image, ImageDraw


def draw_boxes(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    out = image.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 500))
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0, y0, x1, y1), outline=(0, 120, 255), width=width)
    return out


def black_out(image: Image.Image, boxes: list[tuple[int, int, int, int]], pad: int = 2) -> Image.Image:
    """The image with these boxes filled black (a little wider: OCR boxes hug the ink)."""
    if not boxes:
        return image
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        out = image.copy()
    else:    # palette, CMYK, 16-bit: black is not simply 0 there
        out = image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    draw = ImageDraw.Draw(out)
    fill = {"RGB": (0, 0, 0), "RGBA": (0, 0, 0, 255), "L": 0, "LA": (0, 255)}[out.mode]
    for x0, y0, x1, y1 in boxes:
        draw.rectangle((x0 - pad, y0 - pad, x1 + pad, y1 + pad), fill=fill)
    return out


def blend_heatmap(image: Image.Image, heatmap: np.ndarray, opacity: float = 0.5) -> Image.Image:
    """Jet-coloured heatmap (H, W in [0, 1]) over the image; opacity 0 shows the image alone."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    colored = cv2.applyColorMap(np.uint8(255 * np.clip(heatmap, 0, 1)), cv2.COLORMAP_JET)[:, :, ::-1]
    return Image.fromarray(np.uint8((1 - opacity) * rgb + opacity * colored.astype(np.float32)))


def colored_words_html(words: list[tuple[str, float]]) -> str:
    """Words as HTML spans, green for positive scores, red for negative; text is escaped, never run."""
    spans = []
    for word, score in words:
        alpha = min(abs(score), 1.0) * 0.85
        color = f"rgba(22,163,74,{alpha:.2f})" if score >= 0 else f"rgba(220,38,38,{alpha:.2f})"
        spans.append(f'<span title="{score:+.2f}" style="background:{color};padding:1px 3px;'
                     f'border-radius:3px;margin:1px;display:inline-block">{html.escape(word)}</span>')
    return "<div style='line-height:2'>" + " ".join(spans) + "</div>"
