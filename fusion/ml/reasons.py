"""The reason in words: one or two plain sentences built from a prediction's own numbers (which
head decided, whether image and text agree, the words and the image region that weighed most,
and why it is flagged). Never canned: every clause comes from a field of the prediction.

Both functions read a prediction as `Prediction.to_dict()` gives it (or as de-identification
redacted it), so what is said is what is shown.
"""
from __future__ import annotations

WORDS_NAMED = 3


def _top(probs: dict[str, float]) -> tuple[str, float]:
    label = max(probs, key=probs.get)
    return label, probs[label]


def review_reasons(d: dict) -> list[str]:
    """Why a prediction needs a person's review; empty when it does not. Image and text disagreeing
    is said (explanation_text) but is not a reason on its own: in a project whose classes need both
    (the demo's), the single heads disagree on 4 pages in 5 that the fused head gets right."""
    reasons = []
    if d.get("in_distribution") is False:
        parts = {head: v for head, v in (d.get("ood_parts") or {}).items() if head not in (d.get("abstained") or {})}
        which = f" (its {max(parts, key=parts.get)} most)" if parts else ""
        reasons.append(f"the page is unlike every class this model was trained on{which}: "
                       f"out-of-distribution score {d['ood_score']:.2f}, flagged above 1")
    if d["confidence"] < d.get("review_threshold", 0.0):
        reasons.append(f"{d['confidence']:.0%} is under the {d['review_threshold']:.0%} review threshold")
    return reasons


def region(peak: list[int] | tuple[int, int], size: list[int] | tuple[int, int]) -> str:
    """Where on the page a point lies, in words: "upper left", "centre", "lower half"..."""
    (x, y), (width, height) = peak, size
    rows = ("upper", "middle", "lower")[min(2, 3 * y // max(height, 1))]
    cols = ("left", "centre", "right")[min(2, 3 * x // max(width, 1))]
    if rows == "middle" and cols == "centre":
        return "centre"
    if cols == "centre":
        return f"{rows} part"
    return f"{rows} {cols}" if rows != "middle" else f"{cols} side"


def explanation_text(d: dict) -> str:
    abstained = d.get("abstained") or {}
    head = {0: "Fused", 1: "Image alone" if "text" in abstained else "Text alone", 2: "No head"}[len(abstained)]
    if len(abstained) == 2:
        sentences = [f"Nothing to read ({abstained['image']}; {abstained['text']}): no class is more likely "
                     f"than another."]
    elif d.get("in_distribution") is False:
        sentences = [f"None of these. Closest class ({head.lower()}): {d['label']} ({d['confidence']:.0%})."]
    else:
        sentences = [f"{head}: {d['label']} ({d['confidence']:.0%})."]
    evidence = []
    if "text" not in abstained:
        label, p = _top(d["probs_text"])
        words = [w for w, s in d.get("top_words") or [] if s > 0][:WORDS_NAMED]
        evidence.append(f"the text says {label} ({p:.0%})" + (f" (words: {', '.join(words)})" if words else ""))
    if "image" not in abstained:
        label, p = _top(d["probs_image"])
        where = f", weighing most in the {region(d['heatmap_peak'], d['image_size'])} of the page" \
            if d.get("heatmap_peak") and all(d.get("image_size") or [0]) else ""
        evidence.append(f"the image says {label} ({p:.0%}){where}")
    if evidence and len(abstained) < 2:
        sentence = "; ".join(evidence)
        sentences.append(sentence[0].upper() + sentence[1:] + ".")
    for head_name, why in abstained.items():
        if len(abstained) < 2:
            sentences.append(f"The {head_name} head abstained: {why}.")
    if not abstained:
        image, text = _top(d["probs_image"])[0], _top(d["probs_text"])[0]
        if image == text:
            sentences.append("Image and text agree.")
        else:
            side = {text: " and sides with the text", image: " and sides with the image"}.get(d["label"], "")
            sentences.append(f"They disagree: the fused head weighs both{side}.")
    reasons = d.get("review_reasons", review_reasons(d))
    if reasons:
        sentences.append("Needs review: " + "; ".join(reasons) + ".")
    return " ".join(sentences)
