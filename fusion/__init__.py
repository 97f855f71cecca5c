"""FusionLab: image + text classification with OCR, fused encoders and explanations."""
