"""User-facing errors: each message says what was wrong and what is accepted.

The CLI prints `error: <message>` on one line and exits 2; pages show the message as-is.
"""


class FusionError(Exception):
    """Base for errors caused by input or environment, not by a bug."""


class BadImage(FusionError):
    """An upload that is not an image we can read (corrupt, wrong type, too large, empty)."""


class MissingWeights(FusionError):
    """A model weight package is not installed."""


class UnknownProject(FusionError):
    """No project of that name in the workspace."""
