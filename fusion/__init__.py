"""FusionLab: image + text classification with OCR, fused encoders and explanations."""
import os

# OpenMP threads that sleep rather than spin while waiting. With spinning (the default), EasyOCR's
# many tiny recognizer passes slowed 10x whenever anything else used a core (a browser, another
# session): 30 s instead of 3 s for one page on 2 cores. Read once, when torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# No machine here reaches a hub; `datasets` (export/import) must not try.
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
