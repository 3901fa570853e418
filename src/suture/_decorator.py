"""The one typed ``__call__`` that every suture decorator shares.

``Retry``, ``CircuitBreaker``, ``Timeout`` and ``Policy`` are all used as
``@thing`` on ``def`` and ``async def`` alike. This base holds the overloads
(so a type checker keeps the wrapped signature and return type through
``ParamSpec``), the check that the argument is callable, the choice between
the sync and the async wrapper (made once, at decoration time), and the tag
``__suture_<tag>__`` that points from the wrapper back to its decorator.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ClassVar, ParamSpec, TypeVar, overload

__all__ = ["Decorator"]

P = ParamSpec("P")
T = TypeVar("T")


class Decorator:
    """Base of suture's decorators: subclasses implement the two ``_decorate_*`` methods."""

    __slots__ = ()

    #: Names the decorator in errors and in the wrapper's ``__suture_<tag>__`` attribute.
    _tag: ClassVar[str] = "decorator"

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate ``fn`` (``def`` or ``async def``)."""
        if not callable(fn):
            raise TypeError(f"{self._tag}: expected a function to decorate, got {fn!r}")
        if inspect.iscoroutinefunction(fn):
            wrapped = self._decorate_async(fn)
        else:
            wrapped = self._decorate_sync(fn)
        return self._tagged(wrapped)

    def _tagged(self, wrapped: Callable[P, Any]) -> Callable[P, Any]:
        """Tag ``wrapped`` as this decorator's (what finds the policy behind a function)."""
        setattr(wrapped, f"__suture_{self._tag}__", self)
        return wrapped

    def _decorate_sync(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        raise NotImplementedError

    def _decorate_async(
        self, fn: Callable[..., Coroutine[Any, Any, Any]]
    ) -> Callable[..., Coroutine[Any, Any, Any]]:
        raise NotImplementedError
