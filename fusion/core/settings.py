"""One typed settings object, read from the environment and an optional TOML file.

Precedence: explicit keyword > environment (FUSION_*) > $FUSION_HOME/fusion.toml > default.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fusion.core.errors import FusionError

REPO_ROOT = Path(__file__).resolve().parents[2]   # fusion/core/settings.py


@dataclass(frozen=True)
class Settings:
    home: Path = field(default_factory=lambda: REPO_ROOT / "data")  # workspace root
    device: str = "auto"              # auto | cpu | cuda | cuda:N
    ocr_max_side: int = 2560          # long side pages are shrunk to for OCR (plain EasyOCR's canvas)
    max_upload_mb: float = 25.0       # larger uploads are refused before decoding
    max_pixels: int = 40_000_000      # decompression-bomb guard (width * height)
    max_text_tokens: int = 128        # MiniLM was trained at 128 word pieces
    fusion: str = "concat"            # default strategy of newly trained models
    demo_project: str = "demo"
    database_url: str = ""            # any SQLAlchemy URL; "" is SQLite at <home>/fusion.db
    review_threshold: float = 0.6     # predictions less confident than this are flagged "needs review"
    auth: bool = False                # accounts and roles; off for a single local user
    session_minutes: int = 480        # a signed-in session expires after this long
    deidentify: bool = False          # redact names, dates, phones, addresses, record numbers in text
    demo_mode: bool = False           # for showing to an audience: turns de-identification on
    ocr_cache: str = ""               # OCR models built from EasyOCR's weights; "" is <home>/cache/ocr

    @property
    def redact_text(self) -> bool:
        return self.deidentify or self.demo_mode

    @property
    def projects_dir(self) -> Path:
        return self.home / "projects"

    def project_dir(self, name: str) -> Path:
        return self.projects_dir / name

    @property
    def ocr_cache_dir(self) -> Path:
        """OCR models built from the installed EasyOCR weights (fusion.imaging.ocr_runtime)."""
        return Path(self.ocr_cache) if self.ocr_cache else self.home / "cache" / "ocr"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    def resolved_device(self) -> str:
        import torch  # local: settings must stay cheap to import

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device


def describe_device(device: str) -> str:
    """"cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu (2 threads)": what the sidebar and jobs show."""
    import torch

    if device.startswith("cuda"):
        return f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    threads = torch.get_num_threads()
    return f"cpu ({threads} thread{'s' if threads > 1 else ''})"


_ENV = {
    "home": ("FUSION_HOME", Path),
    "device": ("FUSION_DEVICE", str),
    "ocr_max_side": ("FUSION_OCR_MAX_SIDE", int),
    "max_upload_mb": ("FUSION_MAX_UPLOAD_MB", float),
    "max_pixels": ("FUSION_MAX_PIXELS", int),
    "fusion": ("FUSION_STRATEGY", str),
    "database_url": ("FUSION_DATABASE_URL", str),
    "review_threshold": ("FUSION_REVIEW_THRESHOLD", float),
    "auth": ("FUSION_AUTH", "bool"),
    "session_minutes": ("FUSION_SESSION_MINUTES", int),
    "deidentify": ("FUSION_DEIDENTIFY", "bool"),
    "demo_mode": ("FUSION_DEMO_MODE", "bool"),
    "ocr_cache": ("FUSION_OCR_CACHE", str),
}


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise FusionError(f"expected a yes/no setting (1/0, true/false, yes/no, on/off), got {text!r}")


def _from_env(var: str, cast):
    text = os.environ[var]
    if cast == "bool":
        return _flag(text)
    try:
        return cast(text)
    except ValueError:
        raise FusionError(f"{var} must be {'a whole number' if cast is int else 'a number'}, got {text!r}") from None


def load_settings(**overrides) -> Settings:
    """Settings from env and $FUSION_HOME/fusion.toml; keyword overrides win."""
    values: dict = {}
    home = Path(overrides.get("home") or os.environ.get("FUSION_HOME") or Settings().home)
    toml_path = home / "fusion.toml"
    if toml_path.is_file():
        with open(toml_path, "rb") as f:
            values.update(tomllib.load(f))
    for name, (var, cast) in _ENV.items():
        if os.environ.get(var):
            values[name] = _from_env(var, cast)
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name: f.type for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(known)
    if unknown:
        raise FusionError(f"unknown settings in {toml_path} or overrides: {sorted(unknown)}")
    values["home"] = Path(values.get("home", home)).expanduser().resolve()
    return Settings(**values)
