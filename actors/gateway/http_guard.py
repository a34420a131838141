"""The HTTP app's guard: who may call it, and what a request body may be.

Every request passes these checks, in order, before a route runs or a byte of
its body is read (``AccessGuard``, an ASGI middleware); the first refusal wins:

1. ``Host`` must name this server: a loopback name (``127.0.0.1``, ``localhost``,
   ``[::1]``), the bind host, or one of ``PARALLEL_AGENTS_HTTP_ALLOWED_HOSTS``;
   else **421**. A DNS-rebinding page reaches loopback under its own name.
2. An ``Origin`` header, when sent, must be this server's own origin (the same
   host and port as ``Host``); else **403**. Browsers send it on cross-site posts.
3. With ``PARALLEL_AGENTS_API_TOKEN`` set, every route but the open ones needs
   ``Authorization: Bearer <token>``; else **401**. Open: ``GET /health`` (it shows
   only ``healthy`` without the token) and ``GET /`` (the page holds no data).
4. A declared ``Content-Length`` above the cap: **413** at once.

A caller is known by its token: ``http:<sha256(token)[:12]>``, or ``http:anonymous``
when no token is configured (loopback only). Routes scope tasks to that identity.

``task_body`` reads a ``POST /tasks`` body with the same cap (a chunked body has no
length to check up front) and says exactly what is wrong with it; ``task_documents``
reads the documents it carries (413 past a limit, 422 for a file that is refused).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, ValidationError, model_validator
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from actors.config import Settings
from actors.engine.documents import (
    ACCEPTED,
    Document,
    check_limits,
    check_size,
    read_document,
    text_document,
)
from actors.errors import DocumentLimitError, UserInputError

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
ANY_HOST = "*"
ANONYMOUS = "http:anonymous"
# (method, path) a caller without the token may use.
OPEN_ROUTES = frozenset({("GET", "/health"), ("GET", "/")})


class DocumentIn(BaseModel):
    """One document of a ``POST /tasks`` body: its text, or its bytes in base64 (a PDF)."""

    name: str = Field(strict=True, min_length=1, description="the file's name, e.g. notes.md")
    text: str | None = Field(
        default=None, strict=True, description="the document's text (plain text or Markdown)"
    )
    data_base64: str | None = Field(
        default=None, strict=True, description=f"the file's bytes in base64: {ACCEPTED}"
    )

    @model_validator(mode="after")
    def _one_content(self) -> DocumentIn:
        if (self.text is None) == (self.data_base64 is None):
            raise ValueError("give either text or data_base64")
        return self


class TaskIn(BaseModel):
    """The body of ``POST /tasks``."""

    text: str = Field(strict=True, description="the request, as a user would type it")
    quick_answer: bool | None = Field(
        default=None,
        strict=True,
        description="a short quick take first, while the plan runs (default: the server's "
        "PARALLEL_AGENTS_QUICK_ANSWER)",
    )
    documents: list[DocumentIn] = Field(
        default=[], description="documents the request is about, attached after it"
    )
    cost_limit_usd: float | None = Field(
        default=None,
        gt=0,
        description="the task stops at this cost and answers with what finished (default: "
        "the server's PARALLEL_AGENTS_TASK_BUDGET_USD)",
    )
    conversation_id: str | None = Field(
        default=None,
        strict=True,
        min_length=1,
        max_length=64,
        description="follow up in this conversation of yours (the id a task's answer gave); "
        "without it the task opens a conversation named after itself",
    )


def _inlined(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$defs`` written in place: the OpenAPI page resolves no ``$defs``."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# The body ``POST /tasks`` reads by hand, for the OpenAPI page.
TASK_BODY_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _inlined(TaskIn.model_json_schema())}},
    }
}
# The dashboard page runs only its own inline script, talks only to this server and
# cannot be framed (no clickjacking of its cancel-free, read-only view).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'unsafe-inline'; "
    "style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


class Refusal(Exception):
    """A request refused before it reached a route: HTTP status, reason, extra headers."""

    def __init__(self, status: int, detail: str, headers: Mapping[str, str] | None = None):
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.status, self.detail, self.headers))


def body_limit(settings: Settings) -> int:
    """Bytes a task body may have: the longest allowed request and documents' text with
    every character JSON-escaped as a surrogate pair (12 bytes), one file of the largest
    size in base64, and room for the envelopes. Several large PDFs in one body are refused
    with 413 (send them as separate requests, or as text); a bound per body keeps one
    request from holding tens of megabytes in the app."""
    text = 12 * (settings.max_request_chars + settings.max_documents_chars)
    one_file = 4 * math.ceil(settings.max_document_bytes / 3)
    return text + one_file + settings.max_documents * 1024 + 4096


def is_public(settings: Settings) -> bool:
    """True when the app listens beyond loopback."""
    return settings.http_host not in LOOPBACK_HOSTS


@dataclass(frozen=True)
class AccessPolicy:
    """What ``AccessGuard`` enforces, built once from the settings."""

    hosts: frozenset[str]  # lower-case host names without port; ANY_HOST accepts any
    token_sha256: bytes | None  # digest of the API token; None: no token configured
    max_body_bytes: int

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessPolicy:
        extra = {h.strip().lower() for h in settings.http_allowed_hosts.split(",") if h.strip()}
        bind = settings.http_host.strip("[]").lower()
        hosts = LOOPBACK_HOSTS | extra | ({bind} - WILDCARD_BINDS)
        token = settings.api_token
        digest = hashlib.sha256(token.get_secret_value().encode()).digest() if token else None
        return cls(frozenset(hosts), digest, body_limit(settings))

    def check(self, method: str, path: str, headers: Headers) -> None:
        """Raise ``Refusal`` unless the request may reach its route."""
        host = headers.get("host", "")
        if not self._host_allowed(host):
            raise Refusal(421, f"this server does not answer for host {host[:100]!r}")
        origin = headers.get("origin")
        if origin is not None and not _same_origin(origin, host):
            raise Refusal(403, f"cross-origin request from {origin[:100]!r} refused")
        if (method, path) not in OPEN_ROUTES and not self.authenticated(headers):
            raise Refusal(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            raise Refusal(
                413,
                f"the body is {length[:20]} bytes; the limit is {self.max_body_bytes:,}",
                {"Connection": "close"},
            )

    def authenticated(self, headers: Headers) -> bool:
        """True when no token is configured or the right one is presented."""
        if self.token_sha256 is None:
            return True
        given = _bearer(headers)
        return given is not None and hmac.compare_digest(
            hashlib.sha256(given.encode()).digest(), self.token_sha256
        )

    def caller(self, headers: Headers) -> str:
        """The identity tasks are owned by (call after ``check`` has passed)."""
        given = _bearer(headers)
        if self.token_sha256 is None or given is None:
            return ANONYMOUS
        return "http:" + hashlib.sha256(given.encode()).hexdigest()[:12]

    def _host_allowed(self, host: str) -> bool:
        if ANY_HOST in self.hosts:
            return bool(host)
        try:
            parts = urlsplit(f"//{host}")
            name, _ = parts.hostname, parts.port  # .port raises on a port that is no number
        except ValueError:  # ... or on an unclosed bracket
            return False
        return bool(host) and name is not None and name.rstrip(".") in self.hosts


def _bearer(headers: Headers) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def _same_origin(origin: str, host: str) -> bool:
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def route_path(scope: Scope) -> str:
    """The path below the app's mount point (Serve mounts an app at its route prefix)."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] in ("", "/"):
        path = path[len(root) :]
    return path or "/"


class AccessGuard:
    """ASGI middleware applying an ``AccessPolicy`` before the app sees a request.

    ``policy`` is a callable so one app object can serve deployments with different
    settings (Serve builds the middleware before a replica's settings are known).
    """

    def __init__(self, app: ASGIApp, policy: Callable[[], AccessPolicy]) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        try:
            self._policy().check(scope["method"], route_path(scope), Headers(scope=scope))
        except Refusal as refusal:
            await _send_error(send, refusal)
            return
        await self._app(scope, receive, send)


async def _send_error(send: Send, refusal: Refusal) -> None:
    body = json.dumps({"detail": refusal.detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    headers += [(k.lower().encode(), v.encode()) for k, v in refusal.headers.items()]
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def task_body(request: Request, max_bytes: int) -> TaskIn:
    """A ``POST /tasks`` body, or ``Refusal`` naming what is wrong.

    415 unless JSON; 413 past ``max_bytes`` (read no further); 400 for bytes that are
    not UTF-8 JSON (NUL outside a string escape, nesting past pydantic's recursion
    limit, ...); 422 for JSON of the wrong shape (``{"text": 5}``, a list, no text).
    """
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise Refusal(415, f"send the body as Content-Type: application/json, not {kind!r}")
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > max_bytes:
            raise Refusal(413, f"the body is over the limit of {max_bytes:,} bytes")
    try:
        body = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refusal(
            400, f"the body is not valid UTF-8 (bad byte at position {exc.start})"
        ) from None
    try:
        return TaskIn.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_input=False, include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            reason = str(errors[0]["msg"]).removeprefix("Invalid JSON: ")
            raise Refusal(400, f"the body is not valid JSON: {reason}") from None
        raise Refusal(422, "; ".join(_describe(error) for error in errors)) from None


def _describe(error: Mapping[str, Any]) -> str:
    where = ".".join(str(part) for part in error["loc"]) or "body"
    return f"{where}: {error['msg']}"


def task_documents(body: TaskIn, settings: Settings) -> list[Document]:
    """The body's documents, read and checked (a PDF is parsed: call it off the event loop).

    ``Refusal`` 413 past a size or count limit, 422 for a file that is refused (its type,
    bad base64, no text) naming the file and what is accepted.
    """
    try:
        documents = [_document(given, settings) for given in body.documents]
        check_limits(documents, settings)
    except DocumentLimitError as exc:
        raise Refusal(413, str(exc)) from None
    except UserInputError as exc:
        raise Refusal(422, str(exc)) from None
    return documents


def _document(given: DocumentIn, settings: Settings) -> Document:
    if given.text is not None:
        return text_document(given.name, given.text, settings)
    assert given.data_base64 is not None
    # 4 base64 characters carry 3 bytes: refuse an oversized file before decoding it.
    encoded = "".join(given.data_base64.split())  # line-wrapped base64 (``base64`` does so)
    check_size(given.name, len(encoded) // 4 * 3, settings)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise UserInputError(f"{given.name}: data_base64 is not valid base64") from None
    return read_document(given.name, data, settings)
