"""Benchmarks (`python -m fusion bench WHAT --json`): speed and quality measured, not asserted in tests."""
