"""Pages as images: decoding uploads (and DICOM), reading their text (OCR), overlays, thumbnails."""
