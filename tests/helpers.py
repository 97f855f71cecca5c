"""What several test modules share (no test module imports another)."""
from __future__ import annotations

import io
import time

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 48) -> bytes:
    """A small PNG that no other seed produces: random noise on a seed-dependent tint."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    pixels[0, 0] = [seed % 256, (seed // 256) % 256, (seed // 65536) % 256]
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def wait_for(check, timeout: float, what: str, every: float = 0.1):
    """check()'s first truthy value, polled every `every` s; AssertionError after `timeout` s."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = check()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
