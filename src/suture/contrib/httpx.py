# Over ~400 lines on purpose: the sync and async twins side by side; decisions once in _Base.
"""A resilient httpx: retry, a breaker per host, Retry-After, timeouts, validated outcomes.

Install with the ``http`` extra. Two layers, sync and async alike:

* :class:`ResilientTransport` / :class:`AsyncResilientTransport` wrap any httpx
  transport, so an existing ``httpx.Client`` keeps its API::

      client = httpx.Client(transport=ResilientTransport())

  Each request runs, outer to inner: the retry policy, the circuit breaker of
  its host, the timeout, the call. Transient failures (connection errors,
  timeouts, 408/425/429/5xx) are retried with backoff and full jitter; a
  ``Retry-After`` (header, or the body's ``retryAfter``) sets the wait, and one
  longer than the policy's ``max_delay``, or ending past its deadline, ends the
  retries at once: the last answer comes back, its ``retry_after`` saying when;
  4xx answers are returned at once and never count against the breaker. Only
  idempotent methods are retried (GET, HEAD, OPTIONS, PUT, DELETE), POST and
  PATCH only when the request carries an ``Idempotency-Key`` header, when the
  method is listed in ``methods``, or when the request says
  ``extensions={"suture.retry": True}``. An open breaker raises
  :class:`suture.BreakerOpen` without calling the network. Inside
  :func:`suture.deadline`, each attempt's timeouts are no longer than what
  remains of it; an attempt is not started once it is spent, and a timeout
  the deadline set raises :class:`suture.DeadlineExceeded` (never counted
  against the host's breaker).

  An error answer (status >= 400) is validated: its first ``max_error_bytes``
  are read and the rest is never downloaded; the response handed back holds
  that prefix, and its :class:`suture.Outcome` is in
  ``response.extensions["suture.outcome"]`` (see :func:`outcome_of`).

* :class:`ResilientClient` / :class:`AsyncResilientClient` are ``httpx.Client``
  and ``httpx.AsyncClient`` with that transport built in, plus ``fetch()``,
  which never raises and returns the validated :class:`suture.Outcome`, whose
  ``attempts`` is the number of calls made (0 when a breaker refused at once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, Final, Literal

from suture.contrib import missing_extra

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra(__name__, "http", _exc) from _exc

from suture.breaker import BreakerConfig, CircuitBreaker
from suture.clock import SYSTEM_CLOCK, Clock
from suture.contrib.httpx_limits import (
    PausableLimiter,
    async_acquirer,
    pause_async,
    told_to_wait,
)
from suture.deadline import get_current
from suture.errors import BreakerOpen, DeadlineExceeded, Overloaded, ResponseError
from suture.responses import (
    Expect,
    Outcome,
    avalidate_response,
    outcome_from_exception,
    validate_response,
    with_attempts,
)
from suture.responses.reading import aread_prefix, read_prefix
from suture.retrying import Retry

_TIMEOUT_KEYS: Final = ("connect", "read", "write", "pool")

__all__ = [
    "IDEMPOTENT_METHODS",
    "OUTCOME_KEY",
    "AsyncResilientClient",
    "AsyncResilientTransport",
    "ResilientClient",
    "ResilientTransport",
    "outcome_of",
]

IDEMPOTENT_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
"""Methods retried by default (RFC 9110 §9.2.2)."""

OUTCOME_KEY: Final = "suture.outcome"
"""Where an error response carries its validated :class:`suture.Outcome`."""
ATTEMPTS_KEY: Final = "suture.attempts"
"""Where every response carries the number of attempts that produced it."""
RETRY_KEY: Final = "suture.retry"
"""Request extension: ``True`` retries this request whatever its method, ``False`` never."""
_CALLS_KEY: Final = "suture.calls"
"""Request extension set by ``fetch()``: a :class:`_Calls` counting the calls made."""

_DROPPED_HEADERS: Final = ("content-encoding", "content-length", "transfer-encoding")

BreakerScope = Literal["host", "client"] | CircuitBreaker | None


class RetryableResponse(ResponseError):
    """A transient error answer (a 503, say), raised inside an attempt so that retry
    and breaker see it; the transport returns its response when retries end."""

    def __init__(self, response: httpx.Response, outcome: Outcome) -> None:
        super().__init__(
            outcome.error or "request failed",
            status=outcome.status,
            retry_after=outcome.retry_after,
            transient=outcome.transient,
            outcome=outcome,
        )
        self.response = response


class _Calls:
    """How many calls the transport made for one ``fetch()`` (an outcome built from an
    exception or an open breaker has no response to carry the count)."""

    __slots__ = ("made",)

    def __init__(self) -> None:
        self.made = 0


def _count_call(request: httpx.Request) -> None:
    calls = request.extensions.get(_CALLS_KEY)
    if isinstance(calls, _Calls):
        calls.made += 1


def _counted(kwargs: dict[str, Any]) -> tuple[_Calls, dict[str, Any]]:
    calls = _Calls()
    extensions = dict(kwargs.get("extensions") or {})
    extensions[_CALLS_KEY] = calls
    return calls, {**kwargs, "extensions": extensions}


class _Base:
    """Everything the sync and async transports share; no I/O here."""

    def __init__(
        self,
        *,
        retry: Retry | None,
        breaker: BreakerScope,
        breaker_options: dict[str, Any] | None,
        methods: Iterable[str],
        timeout: httpx.Timeout | float | None,
        max_error_bytes: int,
        clock: Clock,
    ) -> None:
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry={retry!r}: expected a suture.Retry or None")
        if not (breaker in ("host", "client", None) or isinstance(breaker, CircuitBreaker)):
            raise ValueError(
                f"breaker={breaker!r}: expected 'host', 'client', a CircuitBreaker or None"
            )
        if isinstance(max_error_bytes, bool) or not isinstance(max_error_bytes, int):
            raise TypeError(f"max_error_bytes={max_error_bytes!r}: expected an integer")
        if max_error_bytes < 0:
            raise ValueError(f"max_error_bytes={max_error_bytes!r}: must be >= 0")
        self.clock = clock
        self.retry = (
            retry
            if retry is not None
            else Retry(attempts=3, initial_delay=0.5, max_delay=10.0, deadline=30.0, clock=clock)
        )
        self._once = self.retry.replace(attempts=1)
        self.methods = frozenset(m.upper() for m in methods)
        self.timeout = None if timeout is None else httpx.Timeout(timeout)
        self.max_error_bytes = max_error_bytes
        self._scope = breaker
        options = dict(breaker_options or {})
        options.setdefault("clock", clock)
        self._breaker_config = BreakerConfig.build(**options)  # a bad option fails here
        self._breakers: dict[str, CircuitBreaker] = {}
        self._lock = threading.Lock()

    def breaker_for(self, request: httpx.Request) -> CircuitBreaker | None:
        """The breaker that guards ``request``: its host's, the client's, or none."""
        scope = self._scope
        if scope is None:
            return None
        if isinstance(scope, CircuitBreaker):
            return scope
        key = "client" if scope == "client" else _host_key(request.url)
        found = self._breakers.get(key)
        if found is None:
            with self._lock:
                found = self._breakers.get(key)
                if found is None:
                    name = "http" if key == "client" else f"http:{key}"
                    found = CircuitBreaker.from_config(name, self._breaker_config)
                    self._breakers[key] = found
        return found

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers made so far, by host (or ``"client"``)."""
        return dict(self._breakers)

    def policy_for(self, request: httpx.Request) -> Retry:
        flag = request.extensions.get(RETRY_KEY)
        if flag is True:
            return self.retry
        if flag is False:
            return self._once
        if request.method.upper() in self.methods or "idempotency-key" in request.headers:
            return self.retry
        return self._once

    def prepare(self, request: httpx.Request) -> None:
        if self.timeout is not None:
            request.extensions["timeout"] = self.timeout.as_dict()

    def bound(self, request: httpx.Request) -> float | None:
        """Lower the attempt's timeouts to what remains of the request's deadline.

        Returns the remaining seconds when the deadline bounds this attempt
        (``None``: no deadline); raises :class:`suture.DeadlineExceeded` when it
        is spent, so no attempt starts that cannot finish.
        """
        request_deadline = get_current()
        if request_deadline is None:
            return None
        left = request_deadline.remaining()
        if left <= 0:
            raise DeadlineExceeded(f"before {_name(request)}", request_deadline.budget)
        given = request.extensions.get("timeout") or {}
        request.extensions["timeout"] = {
            key: left if given.get(key) is None or given[key] > left else given[key]
            for key in _TIMEOUT_KEYS
        }
        return left

    def cut_short(self, exc: Exception, left: float | None, request: httpx.Request) -> None:
        """A timeout the request's deadline set is the deadline's fault, not the host's."""
        request_deadline = get_current()
        if left is not None and request_deadline is not None and request_deadline.expired():
            raise DeadlineExceeded(
                f"{_name(request)} cut after {left:.3f}s", request_deadline.budget
            ) from exc

    def rebuild(self, request: httpx.Request, response: httpx.Response, body: bytes) -> Any:
        """An in-memory copy of an error response holding the body's first bytes."""
        headers = [
            (k, v) for k, v in response.headers.multi_items() if k.lower() not in _DROPPED_HEADERS
        ]
        copy = httpx.Response(
            response.status_code,
            headers=headers,
            content=body,
            request=request,
            extensions=dict(response.extensions),
        )
        return copy

    def judge(self, copy: httpx.Response, outcome: Outcome) -> httpx.Response:
        copy.extensions[OUTCOME_KEY] = outcome
        if outcome.transient:
            raise RetryableResponse(copy, outcome)
        return copy


def _host_key(url: httpx.URL) -> str:
    port = url.port
    return f"{url.host}:{port}" if port else url.host


def _name(request: httpx.Request) -> str:
    return f"http {request.method} {_host_key(request.url)}"


def _stamp(response: httpx.Response, attempts: int) -> httpx.Response:
    response.extensions[ATTEMPTS_KEY] = attempts
    outcome = response.extensions.get(OUTCOME_KEY)
    if isinstance(outcome, Outcome) and outcome.attempts != attempts:
        response.extensions[OUTCOME_KEY] = with_attempts(outcome, attempts)
    return response


class ResilientTransport(httpx.BaseTransport, _Base):
    """An httpx transport with retry, a breaker per host, Retry-After and timeouts.

    :param transport: the transport that does the I/O (default ``httpx.HTTPTransport()``).
    :param retry: the :class:`suture.Retry` policy; default 3 attempts, 0.5 s
        initial delay, 10 s max delay, 30 s deadline.
    :param breaker: ``"host"`` (a breaker per host and port, the default),
        ``"client"`` (one for everything), a :class:`suture.CircuitBreaker`, or ``None``.
    :param breaker_options: keyword options for the breakers made here.
    :param methods: methods retried without an ``Idempotency-Key`` header.
    :param timeout: per-attempt timeout overriding the client's (``None``: the client's).
    :param max_error_bytes: bytes of an error body read at most.
    :param rate_limit: a :class:`suture.RateLimiter` (or a
        :class:`~suture.contrib.redis_limits.RedisRateLimiter`): each attempt takes
        a token, inside the retry and outside the breaker, and an answer 429 or 503
        with ``Retry-After`` pauses it for every caller (see
        :mod:`suture.contrib.httpx_limits`).
    :param clock: for the default retry policy and the breakers.
    """

    def __init__(  # noqa: PLR0913 - keyword-only options of the transport
        self,
        transport: httpx.BaseTransport | None = None,
        *,
        retry: Retry | None = None,
        breaker: BreakerScope = "host",
        breaker_options: dict[str, Any] | None = None,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        timeout: httpx.Timeout | float | None = None,
        max_error_bytes: int = 65536,
        rate_limit: PausableLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _Base.__init__(
            self,
            retry=retry,
            breaker=breaker,
            breaker_options=breaker_options,
            methods=methods,
            timeout=timeout,
            max_error_bytes=max_error_bytes,
            clock=clock,
        )
        if rate_limit is not None and not isinstance(rate_limit, PausableLimiter):
            raise TypeError(
                f"rate_limit={rate_limit!r}: expected a rate limiter with acquire() and "
                "pause(seconds), or None"
            )
        self.rate_limit = rate_limit
        self.transport = transport if transport is not None else httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.prepare(request)
        policy = self.policy_for(request)
        if policy is not self._once:
            request.read()  # a streamed body must be replayable to be retried
        breaker = self.breaker_for(request)
        limiter = self.rate_limit
        attempts = 0
        try:
            for attempt in policy.attempts(name=_name(request)):
                with attempt:
                    attempts += 1
                    if limiter is not None:
                        limiter.acquire()
                    if breaker is None:
                        response = self._send(request)
                    else:
                        response = breaker.call(self._send, request)
                    return _stamp(response, attempts)
        except RetryableResponse as failed:
            return _stamp(failed.response, attempts)
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    def _send(self, request: httpx.Request) -> httpx.Response:
        _count_call(request)
        left = self.bound(request)
        try:
            response = self.transport.handle_request(request)
        except httpx.TimeoutException as exc:
            self.cut_short(exc, left, request)
            raise
        if response.status_code < 400:
            return response
        if self.rate_limit is not None and (wait := told_to_wait(response)) is not None:
            self.rate_limit.pause(wait)
        response.request = request
        body = read_prefix(response, self.max_error_bytes)
        copy = self.rebuild(request, response, body)
        return self.judge(copy, validate_response(copy, clock=self.clock))

    def close(self) -> None:
        self.transport.close()


class AsyncResilientTransport(httpx.AsyncBaseTransport, _Base):
    """The async twin of :class:`ResilientTransport` (same parameters)."""

    def __init__(  # noqa: PLR0913 - keyword-only options of the transport
        self,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        retry: Retry | None = None,
        breaker: BreakerScope = "host",
        breaker_options: dict[str, Any] | None = None,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        timeout: httpx.Timeout | float | None = None,
        max_error_bytes: int = 65536,
        rate_limit: Any = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        _Base.__init__(
            self,
            retry=retry,
            breaker=breaker,
            breaker_options=breaker_options,
            methods=methods,
            timeout=timeout,
            max_error_bytes=max_error_bytes,
            clock=clock,
        )
        self.rate_limit = rate_limit
        self._acquire = None if rate_limit is None else async_acquirer(rate_limit)
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.prepare(request)
        policy = self.policy_for(request)
        if policy is not self._once:
            await request.aread()
        breaker = self.breaker_for(request)
        acquire = self._acquire
        attempts = 0
        try:
            async for attempt in policy.attempts(name=_name(request)):
                with attempt:
                    attempts += 1
                    if acquire is not None:
                        await acquire()
                    if breaker is None:
                        response = await self._send(request)
                    else:
                        response = await breaker.acall(self._send, request)
                    return _stamp(response, attempts)
        except RetryableResponse as failed:
            return _stamp(failed.response, attempts)
        raise AssertionError("unreachable: the retry loop returns or raises")  # pragma: no cover

    async def _send(self, request: httpx.Request) -> httpx.Response:
        _count_call(request)
        left = self.bound(request)
        try:
            response = await self.transport.handle_async_request(request)
        except httpx.TimeoutException as exc:
            self.cut_short(exc, left, request)
            raise
        if response.status_code < 400:
            return response
        if self.rate_limit is not None and (wait := told_to_wait(response)) is not None:
            await pause_async(self.rate_limit, wait)
        response.request = request
        body = await aread_prefix(response, self.max_error_bytes)
        copy = self.rebuild(request, response, body)
        return self.judge(copy, await avalidate_response(copy, clock=self.clock))

    async def aclose(self) -> None:
        await self.transport.aclose()


# --- outcomes -----------------------------------------------------------------------


def outcome_of(
    response: httpx.Response,
    *,
    expect: Expect = "json",
    schema: Any = None,
    clock: Clock = SYSTEM_CLOCK,
) -> Outcome:
    """The :class:`suture.Outcome` of a response from a resilient transport.

    Error responses carry theirs already; a success is validated here (its body
    is read). The outcome's ``attempts`` says how many tries it took.
    """
    attempts = response.extensions.get(ATTEMPTS_KEY, 1)
    found = response.extensions.get(OUTCOME_KEY)
    if isinstance(found, Outcome):
        return found
    outcome = validate_response(response, expect=expect, schema=schema, clock=clock)
    return with_attempts(outcome, attempts) if isinstance(attempts, int) else outcome


def _failed_outcome(exc: Exception, url: str, calls: _Calls) -> Outcome:
    """The outcome of a request that ended in an error: an open breaker, our own rate
    limit or the network; ``attempts`` is the number of calls made (0: none)."""
    if isinstance(exc, Overloaded):
        return with_attempts(_overloaded_outcome(exc, url), calls.made)
    if isinstance(exc, BreakerOpen):
        return Outcome(
            ok=False,
            status=None,
            error=f"the service is unavailable (circuit {exc.name} is open)",
            retry_after=exc.retry_after,
            transient=False,
            url=url,
            attempts=calls.made,
        )
    return with_attempts(outcome_from_exception(exc, url=url), calls.made)


def _overloaded_outcome(exc: Overloaded, url: str) -> Outcome:
    """A refusal by our own rate limit: nothing more was sent."""
    return Outcome(
        ok=False,
        status=None,
        error="too many requests: our own rate limit refused this one",
        retry_after=exc.retry_after,
        transient=False,
        url=url,
    )


def _client_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    for key in ("transport", "mounts"):
        if key in kwargs:
            raise TypeError(
                f"{key}=: pass the inner transport as inner=..., the resilient one is built here"
            )
    return kwargs


class ResilientClient(httpx.Client):
    """An ``httpx.Client`` whose transport is a :class:`ResilientTransport`.

    ``inner`` is the transport doing the I/O (tests pass ``httpx.MockTransport``);
    ``retry``, ``breaker``, ``breaker_options``, ``methods``, ``attempt_timeout``,
    ``max_error_bytes``, ``rate_limit`` and ``clock`` configure the resilient
    transport; every other keyword goes to ``httpx.Client``.
    """

    def __init__(  # noqa: PLR0913 - keyword-only options of the transport it builds
        self,
        *,
        inner: httpx.BaseTransport | None = None,
        retry: Retry | None = None,
        breaker: BreakerScope = "host",
        breaker_options: dict[str, Any] | None = None,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        attempt_timeout: httpx.Timeout | float | None = None,
        max_error_bytes: int = 65536,
        rate_limit: PausableLimiter | None = None,
        clock: Clock = SYSTEM_CLOCK,
        **kwargs: Any,
    ) -> None:
        self.resilient = ResilientTransport(
            inner,
            retry=retry,
            breaker=breaker,
            breaker_options=breaker_options,
            methods=methods,
            timeout=attempt_timeout,
            max_error_bytes=max_error_bytes,
            rate_limit=rate_limit,
            clock=clock,
        )
        super().__init__(transport=self.resilient, **_client_kwargs(kwargs))

    def fetch(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        expect: Expect = "json",
        schema: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """Send a request and return its validated :class:`suture.Outcome`; never raises
        for a failed request (an open breaker and network errors become outcomes)."""
        calls, kwargs = _counted(kwargs)
        try:
            response = self.request(method, url, **kwargs)
        except (BreakerOpen, Overloaded, httpx.HTTPError) as exc:
            return _failed_outcome(exc, str(url), calls)
        return outcome_of(response, expect=expect, schema=schema, clock=self.resilient.clock)


class AsyncResilientClient(httpx.AsyncClient):
    """An ``httpx.AsyncClient`` whose transport is an :class:`AsyncResilientTransport`
    (same parameters as :class:`ResilientClient`)."""

    def __init__(  # noqa: PLR0913 - keyword-only options of the transport it builds
        self,
        *,
        inner: httpx.AsyncBaseTransport | None = None,
        retry: Retry | None = None,
        breaker: BreakerScope = "host",
        breaker_options: dict[str, Any] | None = None,
        methods: Iterable[str] = IDEMPOTENT_METHODS,
        attempt_timeout: httpx.Timeout | float | None = None,
        max_error_bytes: int = 65536,
        rate_limit: Any = None,
        clock: Clock = SYSTEM_CLOCK,
        **kwargs: Any,
    ) -> None:
        self.resilient = AsyncResilientTransport(
            inner,
            retry=retry,
            breaker=breaker,
            breaker_options=breaker_options,
            methods=methods,
            timeout=attempt_timeout,
            max_error_bytes=max_error_bytes,
            rate_limit=rate_limit,
            clock=clock,
        )
        super().__init__(transport=self.resilient, **_client_kwargs(kwargs))

    async def fetch(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        expect: Expect = "json",
        schema: Any = None,
        **kwargs: Any,
    ) -> Outcome:
        """The async :meth:`ResilientClient.fetch`."""
        calls, kwargs = _counted(kwargs)
        try:
            response = await self.request(method, url, **kwargs)
        except (BreakerOpen, Overloaded, httpx.HTTPError) as exc:
            return _failed_outcome(exc, str(url), calls)
        found = response.extensions.get(OUTCOME_KEY)
        if isinstance(found, Outcome):
            return found
        attempts = response.extensions.get(ATTEMPTS_KEY, 1)
        outcome = await avalidate_response(
            response, expect=expect, schema=schema, clock=self.resilient.clock
        )
        return with_attempts(outcome, attempts) if isinstance(attempts, int) else outcome
