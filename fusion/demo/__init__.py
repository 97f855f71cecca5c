"""The synthetic demo project: its documents, their vocabulary, and its first-run build."""
