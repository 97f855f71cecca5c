"""Small JPEG thumbnails of stored images for tables, made once and kept beside the images."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from fusion.core.atomic import write_bytes_atomic

SIZE = 96


def thumbnail(images_dir: Path, image_path: Path, sha256: str, size: int = SIZE) -> bytes | None:
    """The thumbnail's JPEG bytes, or None if the image can't be read (the table shows a blank)."""
    cached = images_dir / ".thumbs" / f"{sha256}-{size}.jpg"
    if cached.is_file():
        return cached.read_bytes()
    try:
        with Image.open(image_path) as img:
            img.draft("RGB", (size * 2, size * 2))  # JPEG: decode at a fraction of the size
            img.thumbnail((size, size))
            out = io.BytesIO()
            img.convert("RGB").save(out, format="JPEG", quality=80)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None
    write_bytes_atomic(cached, out.getvalue())
    return out.getvalue()


def data_url(jpeg: bytes | None) -> str | None:
    return None if jpeg is None else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()
