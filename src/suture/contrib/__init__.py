"""Integrations with third-party libraries, one module each, imported only when used.

Each module needs one extra of the ``suture`` package; importing it without
that extra raises an :class:`ImportError` that names the extra to install:

====================================  ===========  ==========================================
module                                extra        brings
====================================  ===========  ==========================================
``suture.contrib.httpx``              ``http``     httpx
``suture.contrib.sqlalchemy``         ``sql``      SQLAlchemy with its asyncio support
``suture.contrib.sqlalchemy_pool``    ``sql``      SQLAlchemy with its asyncio support
``suture.contrib.redis``              ``redis``    redis-py
``suture.contrib.starlette``          ``web``      Starlette
``suture.contrib.prometheus``         ``metrics``  prometheus-client
``suture.contrib.starlette_metrics``  ``metrics``  prometheus-client, and Starlette (``web``)
``suture.contrib.otel``               ``otel``     the OpenTelemetry API
====================================  ===========  ==========================================
"""

from __future__ import annotations

__all__ = ["missing_extra"]


def missing_extra(module: str, extra: str, error: ImportError) -> ImportError:
    """The error to raise when ``module``'s third-party import failed: it names the extra.

    Used as ``except ImportError as exc: raise missing_extra(__name__, "http", exc) from exc``.
    """
    why = f"could not import {error.name}" if error.name else str(error)
    return ImportError(
        f"{module} needs the {extra!r} extra: pip install 'suture[{extra}]' ({why})",
        name=error.name,
    )
