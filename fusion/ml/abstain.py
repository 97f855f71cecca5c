"""When a head abstains: it has nothing to read, so it neither votes nor drags the fusion.

- The text head abstains on a page with no word read and no caption: what it would say about an
  empty string is the label prompts' geometry, not evidence (a blank strip gave 36% to one class).
- The image head abstains on an image that carries nothing: uniform to within BLANK_SPREAD.
The fused head is then the other head alone (model.FusionModel.forward); with both abstaining it
is uniform.
"""
from __future__ import annotations

import torch

# Standard deviation over the encoder's 224x224 input (each colour channel's), in its (x - 127) / 128
# scale, under which an image is uniform: 2 grey levels of 255. A page with a line of text is above 20.
BLANK_SPREAD = 2.0 / 128
SPECIAL_TOKENS = 2        # [CLS] and [SEP]: an empty text's only tokens

TEXT_REASON = "no text was read on the page and there is no caption"
IMAGE_REASON = "the image is blank: one uniform colour"


def text_present(mask: torch.Tensor) -> torch.Tensor:
    """(B,) whether each text (mask (B, L) of its chunks' tokens) holds any word."""
    return mask.sum(1) > SPECIAL_TOKENS


def image_present(pixels: torch.Tensor) -> torch.Tensor:
    """(B,) whether each image (encoder input (B, 3, H, W), scaled or uint8) carries anything."""
    x = pixels.float()
    if pixels.dtype == torch.uint8:
        x = (x - 127.0) / 128.0
    return x.flatten(2).std(2).amax(1) > BLANK_SPREAD         # over the image, per channel: a tint is no content


def abstained(text: bool, image: bool) -> dict[str, str]:
    """{head: why} for the heads that abstained, given whether each had something to read."""
    return {head: reason for head, present, reason in (("text", text, TEXT_REASON), ("image", image, IMAGE_REASON))
            if not present}
