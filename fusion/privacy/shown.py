"""What a person may see: the one place that decides, asked by every page, the CLI and export.

`Shown.under(settings)` decides once from the workspace's settings (FUSION_DEIDENTIFY,
FUSION_DEMO_MODE); `Shown(True)` is an export's explicit choice. De-identifying, every caption,
page text, file name, history row, scored word, prediction and OCR reading goes through the PHI
rules (fusion.privacy.deidentify; words and boxes: fusion.privacy.deidentified_view); otherwise
each passes through as stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from fusion.privacy import deidentified_view as view
from fusion.privacy.deidentify import apply_spans, find_phi, redact


@dataclass(frozen=True)
class Shown:
    redacting: bool

    @classmethod
    def under(cls, settings) -> "Shown":
        return cls(bool(settings.redact_text))

    def text(self, text: str | None) -> str:
        """A caption, a page's text, a user's note: redacted when de-identifying."""
        return redact(text) if self.redacting else (text or "")

    def filename(self, name: str | None) -> str:
        """A file name: its underscores read as spaces by the rules ("John_Smith_ecg.png" ->
        "[NAME]_ecg.png"), so a name joined by them is found like one in a sentence."""
        if not self.redacting or not name:
            return name or ""
        return apply_spans(name, find_phi(name.replace("_", " ")))

    def history(self, row) -> dict[str, str | None]:
        """A history row's texts: old and new caption and page text (None where the row has none)."""
        texts = {k: getattr(row, k) for k in ("old_caption", "new_caption", "old_text", "new_text")}
        return {k: None if v is None else self.text(v) for k, v in texts.items()}

    def words(self, words: list[str], text: str | None = None) -> list[str]:
        """OCR words as shown (a hidden span's placeholder on its first word, "" on the rest)."""
        return view.redact_words(words, text) if self.redacting else list(words)

    def scored_words(self, pairs: list[tuple[str, float]], text: str) -> list[tuple[str, float]]:
        """An explanation's per-word scores as shown (a placeholder carries the words it hides)."""
        return view.redact_scored(pairs, text) if self.redacting else pairs

    def top_words(self, explanation, text: str, n: int = 5) -> list[tuple[str, float]]:
        return view.top_words(explanation, text, self.redacting, n)

    def boxes_to_hide(self, text: str, words) -> list[tuple[int, int, int, int]]:
        """The OCR word boxes to black out on the page image (none when not de-identifying)."""
        return view.phi_boxes(text, words) if self.redacting and words else []

    def prediction(self, prediction) -> dict:
        """A prediction's JSON (to_dict), with its text, top words and reason as shown."""
        data = prediction.to_dict()
        return view.redact_prediction(data, prediction.explanation) if self.redacting else data

    def reason(self, prediction) -> str:
        return self.prediction(prediction)["explanation_text"]

    def reading(self, result) -> dict:
        """An OCR reading's JSON (to_dict), its text and words as shown."""
        data = result.to_dict()
        if self.redacting:
            shown = view.redact_words([w["text"] for w in data["words"]], result.text)
            data["words"] = [dict(w, text=s) for w, s in zip(data["words"], shown)]
            data["text"] = redact(result.text)
        return data

    def edit(self, edited: str, original: str) -> str:
        """What a person typed into a redacted text box, back onto the original: the hidden
        words come back where the placeholders were kept."""
        return view.restore_placeholders(edited, original) if self.redacting else edited
