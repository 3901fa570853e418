"""Only managers get in: credentials, the login link, sessions, CSRF and Host checks.

:class:`Managers` knows who may act: named managers, each by the SHA-256 of a
token (``--managers FILE``: ``name hash`` per line) plus the token given with
``--token`` / ``SUTURE_DEMO_TOKEN`` (or a fresh random one), named
``manager``. A token is compared by its hash with :func:`hmac.compare_digest`
against every manager, so a wrong and a missing token cost the same.

:class:`AuthMiddleware` runs before the app on every request:

1. ``Host`` must be one this service answers (loopback names, the bound
   address, ``--allowed-host``): anything else is a ``421`` (a missing or
   malformed one a ``400``), so a DNS-rebinding page never reaches the app;
2. a state-changing request from a browser must be same-origin
   (``Sec-Fetch-Site`` and ``Origin`` checked): else ``403``;
3. an API call carrying a token in its query string is a ``401`` (credentials
   go in the ``Authorization`` header, never in a URL that proxies log);
4. the manager pages and ``/api/...`` need a manager: ``Authorization:
   Bearer <token>`` or the session cookie (``HttpOnly``, ``SameSite=Strict``,
   ``Secure`` over TLS) that the one-time login link or the login form set;
   ``/health``, ``/metrics``, the dashboard and the API docs are open to
   loopback peers and need the credential from elsewhere. A missing or wrong
   credential is a ``401`` with the same body either way.

The logged-in manager's name is ``request.state.manager`` (the routes pass it
as the transitions' ``actor``).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import secrets
from collections import OrderedDict
from collections.abc import Iterable
from contextlib import suppress
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from suture.clock import Clock
from suture.contrib import starlette as suture_web

__all__ = [
    "LOOPBACK_HOSTS",
    "SESSION_COOKIE",
    "AuthMiddleware",
    "Managers",
    "install_login",
    "is_loopback_host",
    "load_managers",
    "token_hash",
]

#: The ``Host`` names answered by default, and the peers that count as this machine.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
SESSION_COOKIE = "suture_session"
#: The name of the manager whose token is ``--token`` / ``SUTURE_DEMO_TOKEN`` (or random).
CONSOLE_MANAGER = "manager"
#: Paths open without a credential (the login itself and static assets).
_PUBLIC = ("/login", "/logout", "/static/", "/suture.js")
#: Paths open to loopback peers only; elsewhere they need a credential.
_LOOPBACK_OPEN = ("/health", "/metrics", "/dashboard", "/api/dashboard", "/api/docs", "/openapi")
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_FORWARDING = (b"forwarded", b"x-forwarded-for", b"x-real-ip", b"x-forwarded-host")
_QUERY_CREDENTIALS = frozenset({"token", "access_token", "api_key", "apikey", "session"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
_HASH = re.compile(r"^(?:sha256:)?([0-9a-f]{64})$")
_MAX_SESSIONS = 10_000


def token_hash(token: str) -> str:
    """The hex SHA-256 of ``token`` (``printf %s TOKEN | sha256sum`` prints the same)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_managers(path: str | Path) -> tuple[tuple[str, str], ...]:
    """``(name, sha256 hex)`` per manager from a file: ``name hash`` per line.

    Blank lines and lines starting with ``#`` are skipped; the hash may carry a
    ``sha256:`` prefix. A malformed line or a repeated name is a ``ValueError``
    naming the line (never echoing a hash).
    """
    managers: list[tuple[str, str]] = []
    seen: set[str] = set()
    text = Path(path).read_text("utf-8")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        match = _HASH.match(parts[1].lower()) if len(parts) == 2 else None
        if match is None or not _NAME.match(parts[0]):
            raise ValueError(
                f"{path}:{number}: expected 'name sha256-hex-of-token' "
                "(name: letters, digits, . _ @ -; hash: 64 hex digits)"
            )
        if parts[0] in seen:
            raise ValueError(f"{path}:{number}: manager {parts[0]!r} is listed twice")
        seen.add(parts[0])
        managers.append((parts[0], match.group(1)))
    if not managers:
        raise ValueError(f"{path}: no manager in the file")
    return tuple(managers)


def is_loopback_host(host: str) -> bool:
    """True for a loopback name or address (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    with suppress(ValueError):
        address = ipaddress.ip_address(host)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return address.is_loopback
    return False


class Managers:
    """Who may act, their sessions and the one-time login links.

    :param managers: ``(name, sha256 hex of the token)`` pairs.
    :param token: a plain token for the manager named ``manager`` (``None``: none).
    """

    def __init__(
        self,
        managers: Iterable[tuple[str, str]] = (),
        *,
        token: str | None = None,
        clock: Clock,
        link_ttl: float = 3600.0,
        session_ttl: float = 12 * 3600.0,
    ) -> None:
        self._hashes: list[tuple[str, bytes]] = [
            (name, bytes.fromhex(digest)) for name, digest in managers
        ]
        if token is not None:
            if not token:
                raise ValueError("token='': a manager token cannot be empty")
            self._hashes.append((CONSOLE_MANAGER, bytes.fromhex(token_hash(token))))
        self.clock = clock
        self.link_ttl = link_ttl
        self.session_ttl = session_ttl
        self._links: dict[bytes, tuple[str, float]] = {}
        self._sessions: OrderedDict[bytes, tuple[str, float]] = OrderedDict()

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self._hashes]

    def add_internal(self, name: str) -> str:
        """A fresh random token for an in-process client (the synthetic traffic)."""
        token = secrets.token_urlsafe(32)
        self._hashes.append((name, bytes.fromhex(token_hash(token))))
        return token

    def check(self, token: str | None) -> str | None:
        """The manager whose token this is, else None; same work for a wrong or missing one."""
        digest = hashlib.sha256((token or "").encode("utf-8", "surrogatepass")).digest()
        found = None
        for name, expected in self._hashes:  # every one compared: no early exit
            if hmac.compare_digest(digest, expected) and token:
                found = name
        return found

    # --- one-time login links ------------------------------------------------------

    def login_link(self, name: str = CONSOLE_MANAGER) -> str:
        """A code that logs ``name`` in once, within ``link_ttl`` seconds."""
        if name not in self.names:
            raise ValueError(f"name={name!r}: not a manager")
        code = secrets.token_urlsafe(32)
        self._links[hashlib.sha256(code.encode()).digest()] = (name, self.clock.now())
        return code

    def redeem(self, code: str) -> str | None:
        """The manager a login code names, once; None for a used, expired or unknown code."""
        key = hashlib.sha256(code.encode("utf-8", "surrogatepass")).digest()
        entry = self._links.pop(key, None)
        if entry is None or self.clock.now() - entry[1] > self.link_ttl:
            return None
        return entry[0]

    # --- sessions ------------------------------------------------------------------

    def open_session(self, name: str) -> str:
        """A new session id for ``name`` (the cookie's value)."""
        session = secrets.token_urlsafe(32)
        self._sessions[hashlib.sha256(session.encode()).digest()] = (name, self.clock.now())
        while len(self._sessions) > _MAX_SESSIONS:
            self._sessions.popitem(last=False)
        return session

    def session(self, session: str | None) -> str | None:
        """The manager of a live session, else None."""
        if not session:
            return None
        key = hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest()
        entry = self._sessions.get(key)
        if entry is None:
            return None
        if self.clock.now() - entry[1] > self.session_ttl:
            del self._sessions[key]
            return None
        return entry[0]

    def close_session(self, session: str | None) -> None:
        if session:
            self._sessions.pop(
                hashlib.sha256(session.encode("utf-8", "surrogatepass")).digest(), None
            )


# --- the middleware -----------------------------------------------------------------


def _host_name(value: str) -> str | None:
    """The name part of a ``Host`` header (no port, lower case), None when malformed."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        if end < 0 or (value[end + 1 :] and not re.fullmatch(r":\d{1,5}", value[end + 1 :])):
            return None
        return value[1:end]
    name, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    if not name or not re.fullmatch(r"[a-z0-9.\-_]+", name):
        return None
    return name.rstrip(".")


def _starts(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(
        path == p or path.startswith(p if p.endswith("/") else p + "/") or path.startswith(p + ".")
        for p in prefixes
    )


def _error(status: int, message: str, code: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        suture_web.error_body(message, code=code), status_code=status, headers=headers or None
    )


def login_page() -> str:
    return resources.files("suture.demo").joinpath("static", "login.html").read_text("utf-8")


class AuthMiddleware:
    """Host allow-list, same-origin writes, and a manager's credential (see the module)."""

    def __init__(
        self, app: ASGIApp, *, managers: Managers, allowed_hosts: Iterable[str] = LOOPBACK_HOSTS
    ) -> None:
        self.app = app
        self.managers = managers
        self.allowed_hosts = frozenset(h.lower().strip("[]") for h in allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _refusal(self, scope: Scope) -> Response | None:  # noqa: PLR0911 - one answer per check
        headers: dict[bytes, str] = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name, value.decode("latin-1"))
        host = _host_name(headers.get(b"host", ""))
        if host is None:
            return _error(400, "The Host header is missing or not valid.", "bad_host")
        if host not in self.allowed_hosts:
            return _error(421, "This server does not answer for that host.", "misdirected")
        method = scope["method"]
        if method not in _SAFE_METHODS and not self._same_origin(headers, scope):
            return _error(403, "Cross-origin requests cannot change anything here.", "cross_origin")
        path = scope["path"]
        if path.startswith("/api/") and scope.get("query_string"):
            query = parse_qs(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            if _QUERY_CREDENTIALS & {k.lower() for k in query}:
                return _error(
                    401,
                    "Credentials go in the Authorization header, never in the URL.",
                    "credentials_in_query",
                )
        if _starts(path, _PUBLIC):
            return None
        if _starts(path, _LOOPBACK_OPEN) and self._loopback_peer(scope, headers):
            return None
        manager = self._manager(headers)
        if manager is None:
            if method == "GET" and "text/html" in headers.get(b"accept", ""):
                return HTMLResponse(login_page(), status_code=401)
            return _error(
                401,
                "A manager's credential is required.",
                "unauthorized",
                **{"WWW-Authenticate": 'Bearer realm="suture"'},
            )
        scope.setdefault("state", {})["manager"] = manager
        return None

    def _manager(self, headers: dict[bytes, str]) -> str | None:
        authorization = headers.get(b"authorization")
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            return self.managers.check(token.strip() if scheme.lower() == "bearer" else None)
        session = _cookie(headers.get(b"cookie", ""), SESSION_COOKIE)
        if session is None:
            self.managers.check(None)  # the same work as a wrong token
            return None
        return self.managers.session(session)

    @staticmethod
    def _same_origin(headers: dict[bytes, str], scope: Scope) -> bool:
        """False when a browser says the request came from another site or origin.

        ``Sec-Fetch-Site`` first (a browser sets it, a page cannot): only
        ``same-origin`` and ``none`` (typed, bookmarked) pass. Without it, an
        ``Origin`` must be this server's own (a form posted under
        ``Referrer-Policy: no-referrer`` says ``null``: refused). A request with
        neither is not a browser's cross-origin one (browsers send ``Origin`` on
        every cross-origin write).
        """
        site = headers.get(b"sec-fetch-site")
        if site is not None:
            return site in ("same-origin", "none")
        origin = headers.get(b"origin")
        if origin is None:
            return True
        expected = f"{scope.get('scheme', 'http')}://{headers.get(b'host', '')}".lower()
        return origin.lower() == expected

    @staticmethod
    def _loopback_peer(scope: Scope, headers: dict[bytes, str]) -> bool:
        if any(name in headers for name in _FORWARDING):
            return False
        client = scope.get("client")
        return client is not None and is_loopback_host(str(client[0]))


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None


# --- the login routes ---------------------------------------------------------------


def session_answer(request: Request, managers: Managers, name: str) -> Response:
    """A ``303`` to the manager page that sets the session cookie for ``name``."""
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        managers.open_session(name),
        max_age=int(managers.session_ttl),
        path="/",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


def refused_login() -> HTMLResponse:
    return HTMLResponse(login_page(), status_code=401)


def install_login(app: Starlette, managers: Managers) -> None:
    """``/login`` (the one-time link and the token form), ``/logout`` and ``/api/manager/me``."""

    async def login(request: Request) -> Response:
        if request.method == "GET":
            code = request.query_params.get("code")
            if code is None:
                return HTMLResponse(login_page())
            name = managers.redeem(code)
            return refused_login() if name is None else session_answer(request, managers, name)
        body = (await request.body()).decode("utf-8", "replace")
        token = parse_qs(body).get("token", [""])[0]
        name = managers.check(token)
        return refused_login() if name is None else session_answer(request, managers, name)

    async def logout(request: Request) -> Response:
        managers.close_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def me(request: Request) -> Response:
        return JSONResponse({"success": True, "manager": request.state.manager})

    app.router.routes[:0] = [
        Route("/login", login, methods=["GET", "POST"], name="login"),
        Route("/logout", logout, methods=["POST"], name="logout"),
        Route("/api/manager/me", me, methods=["GET"], name="manager_me"),
    ]
