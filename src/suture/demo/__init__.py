"""The reference service: a manager's assistance queue and spam capture that heal themselves.

Needs the ``demo`` extra. ``suture demo`` serves it; :func:`create_app` builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from suture.demo.app import Settings, create_app

__all__ = ["Settings", "create_app"]


def __getattr__(name: str) -> Any:
    # Lazy: importing suture.demo must not import FastAPI and SQLAlchemy.
    if name in __all__:
        from suture.demo import app

        return getattr(app, name)
    raise AttributeError(f"module 'suture.demo' has no attribute {name!r}")
