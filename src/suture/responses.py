"""Response validation (issue 6 fills this in)."""

from __future__ import annotations

__all__ = ["Outcome"]


class Outcome:
    """Placeholder: the validated outcome of an HTTP response."""
