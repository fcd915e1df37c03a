"""Who may make a request act: origin, Host, content type and HTTP Basic checks, shared by the
REST routes (``rest``), the tab's actions (``tab``) and the standalone server (``standalone``).

No gradio or fastapi import at module level: the checks work on plain header mappings (lower-case
names), so the REST routes, a ``gr.Request`` of gradio 3.41 or 4.x and a raw ASGI scope all use
the same functions.

The rules, and why:

* **Cross-site requests.** A page on another origin can make the browser send a "simple" POST
  (no ``Content-Type``, or ``text/plain``) without a preflight, and open a websocket, to
  ``127.0.0.1``. Browsers always name the page's origin in ``Origin`` on such requests (``null``
  for an opaque one), and usually in ``Referer``. A request that acts is refused unless its
  ``Origin`` (else its ``Referer``) is the origin it was sent to (same scheme, host and port as
  its ``Host``) or one the host allows explicitly (A1111/Forge ``--cors-allow-origins`` and
  ``--cors-allow-origins-regex``). A request with neither header (curl, scripts, the WebUI's own
  server-side calls) is not a browser's cross-site request and is allowed. ``X-Forwarded-Host``
  is never trusted: a host with a permissive CORS preflight (gradio 4's on a non-local address)
  would let a foreign page set it.
* **JSON bodies** must say ``Content-Type: application/json`` (optionally ``; charset=utf-8``):
  a browser cannot send that cross-site without a preflight, and FastAPI would otherwise parse a
  body that has no content type as JSON. Anything else is 415.
* **DNS rebinding.** A foreign page whose name resolves to 127.0.0.1 is same-origin with
  itself, so the standalone server also checks the ``Host`` header: only the names it is served
  under pass (``allowed_hosts``).
* **Host auth.** With ``credentials`` set (the WebUI's ``--api-auth``), every route needs HTTP
  Basic with one of those user/password pairs, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from ..errors import NpLoraError

_DEFAULT_PORT = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HTTP_SCHEME = {"http": "http", "https": "https", "ws": "http", "wss": "https"}
#: the names a server bound to this machine is always reachable under
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
#: methods that never act (a cross-site GET still gets its Origin checked, never its Referer:
#: following a link from another site is a navigation, not an attack)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_MAX_HEADER = 2048  # longer Origin/Referer/Host values are refused, never parsed


class RequestRefused(NpLoraError, PermissionError):
    """A request from where it does not belong (foreign origin or Host, missing credentials).

    ``status`` is the HTTP status to answer with (401, 403 or 415).
    """

    def __init__(self, problem: str, *, status: int = 403, hint: str | None = None):
        self.status = status
        super().__init__(problem, hint=hint)


@dataclass(frozen=True)
class AccessRules:
    """What a request must satisfy to act.

    Attributes:
        allowed_origins: origins allowed besides the request's own, as ``scheme://host[:port]``
            (``"*"`` allows every origin, as it does for the host's CORS setting).
        allowed_origin_regex: a regular expression (from the host's own command line, never from
            a request or a file) that an allowed origin matches in full.
        credentials: user -> password for HTTP Basic; None: no credentials needed. An empty
            mapping refuses everyone (an ``--api-auth`` that names no valid pair).
        allowed_hosts: Host names accepted (without port; None: any). Entries ``"*ip"`` accept
            any IP literal (a server bound to every interface).
    """

    allowed_origins: tuple[str, ...] = ()
    allowed_origin_regex: str | None = None
    credentials: Mapping[str, str] | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] | None = None

    def origin_allowed(self, origin: str) -> bool:
        """True when the host explicitly allows ``origin`` (``scheme://host[:port]``, as a browser
        sends it: the list is compared with default ports made explicit, the regex sees it as is)."""
        parsed = parse_origin(origin)
        if parsed is None:
            return False
        if "*" in self.allowed_origins:
            return True
        if any(parse_origin(allowed) == parsed for allowed in self.allowed_origins):
            return True
        if self.allowed_origin_regex:
            try:
                return re.fullmatch(self.allowed_origin_regex, origin.strip()) is not None
            except re.error:
                return False
        return False


def headers_of(obj) -> dict[str, str]:
    """A plain ``{lower-case name: value}`` dict from any header mapping (starlette ``Headers``,
    a dict, gradio 3's attribute object). For repeated names the first value wins."""
    out: dict[str, str] = {}
    if obj is None:
        return out
    items = obj.items() if hasattr(obj, "items") else obj
    for name, value in items:
        key = str(name).lower()
        if key not in out:
            out[key] = value if isinstance(value, str) else str(value)
    return out


def parse_origin(value: str | None) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an Origin or a URL (a Referer), or None when it is not an
    http(s)/ws(s) origin (``"null"``, garbage, over-long). Host is lower-case, IPv6 without
    brackets; the port is explicit (80/443 by default)."""
    if not value or len(value) > _MAX_HEADER:
        return None
    try:
        u = urlsplit(value.strip())
        scheme = u.scheme.lower()
        if scheme not in _HTTP_SCHEME or not u.hostname or u.username is not None:
            return None
        port = u.port or _DEFAULT_PORT[scheme]
    except ValueError:
        return None
    return _HTTP_SCHEME[scheme], u.hostname.lower(), port


def parse_host(value: str | None, scheme: str = "http") -> tuple[str, int] | None:
    """(host, port) of a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), or None."""
    if not value or len(value) > _MAX_HEADER or any(c in value for c in "/@?#\\ \t"):
        return None
    parsed = parse_origin(f"{scheme}://{value.strip()}")
    return None if parsed is None else parsed[1:]


def request_origin(headers: Mapping[str, str], method: str = "POST") -> str | None:
    """The origin a browser says the request comes from: ``Origin``, else (for methods that act)
    the ``Referer``; None when the request names none (not a browser's cross-site request)."""
    origin = headers.get("origin")
    if origin is not None:
        return origin
    if method.upper() in SAFE_METHODS:
        return None
    return headers.get("referer")


def check_origin(headers: Mapping[str, str], scheme: str, rules: AccessRules | None = None,
                 method: str = "POST") -> None:
    """Refuse (``RequestRefused``, 403) a request whose origin is neither its own nor allowed.

    Args:
        headers: lower-case header names.
        scheme: the scheme the request came in on (``http``/``https``/``ws``/``wss``).
        method: the HTTP method (``GET``/``HEAD``/``OPTIONS`` are checked on ``Origin`` only).
    """
    rules = rules or AccessRules()
    claimed = request_origin(headers, method)
    if claimed is None:
        return
    origin = parse_origin(claimed)
    own = parse_host(headers.get("host"), _HTTP_SCHEME.get(scheme.lower(), "http"))
    if origin is not None and own is not None and origin == (_HTTP_SCHEME.get(scheme.lower(), "http"), *own):
        return
    if origin is not None and rules.origin_allowed(_origin_text(claimed)):
        return
    shown = "an opaque origin" if origin is None else _shown(origin)
    raise RequestRefused(
        f"refused a request from {shown}: NP-LoRA acts only on requests from its own page",
        hint="Use NP-LoRA from its own page; to reach a WebUI through a proxy or another address, add that "
             "address to the WebUI's --cors-allow-origins")


def check_host(headers: Mapping[str, str], rules: AccessRules) -> None:
    """Refuse (403) a request whose ``Host`` is not one the server is served under (DNS rebinding)."""
    if rules.allowed_hosts is None:
        return
    parsed = parse_host(headers.get("host"))
    if parsed is not None and host_allowed(parsed[0], rules.allowed_hosts):
        return
    raise RequestRefused("refused a request for a host name this server is not served under",
                         hint="Open the server at http://127.0.0.1:PORT/ (or the name given to --host)")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    host = host.lower().strip("[]")
    names = {a.lower().strip("[]") for a in allowed}
    if host in names:
        return True
    if "*ip" in names:
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return False
    return False


def check_json_content_type(headers: Mapping[str, str]) -> None:
    """Refuse (415) a body that does not say ``Content-Type: application/json``."""
    value = headers.get("content-type") or ""
    media, _, params = value.partition(";")
    ok = media.strip().lower() == "application/json"
    for param in filter(None, (p.strip() for p in params.split(";"))):
        name, _, v = param.partition("=")
        if name.strip().lower() == "charset" and v.strip().strip('"').lower() not in ("utf-8", "utf8"):
            ok = False
    if not ok:
        raise RequestRefused("the body must be JSON sent with Content-Type: application/json", status=415,
                             hint="Send the header Content-Type: application/json")


def check_basic_auth(headers: Mapping[str, str], rules: AccessRules) -> None:
    """Refuse (401) a request without the host's HTTP Basic credentials, when it has some."""
    if rules.credentials is None:
        return
    user, password = _basic(headers.get("authorization"))
    matched = False
    for name, secret in rules.credentials.items():  # every pair compared, in constant time each
        same_user = hmac.compare_digest(name.encode("utf-8"), user)
        same_password = hmac.compare_digest(secret.encode("utf-8"), password)
        matched |= same_user and same_password
    if not matched:
        raise RequestRefused("incorrect username or password", status=401,
                             hint="Send the WebUI's --api-auth credentials with HTTP Basic authentication")


def _basic(value: str | None) -> tuple[bytes, bytes]:
    if not value or len(value) > _MAX_HEADER:
        return b"\0", b"\0"  # no credentials: compared all the same, never matches a real pair
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "basic":
        return b"\0", b"\0"
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"\0", b"\0"
    user, sep, password = decoded.partition(b":")
    if not sep:
        return b"\0", b"\0"
    return user, password


def _origin_text(value: str) -> str:
    """``scheme://netloc`` of an Origin or Referer, as sent (lower-case), for the host's regex."""
    u = urlsplit(value.strip())
    return f"{u.scheme.lower()}://{u.netloc.lower()}"


def _shown(origin: tuple[str, str, int]) -> str:
    scheme, host, port = origin
    netloc = f"[{host}]" if ":" in host else host
    return f"{scheme}://{netloc}" + ("" if port == _DEFAULT_PORT[scheme] else f":{port}")


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def served_hosts(bind: str) -> tuple[str, ...]:
    """The Host names a server bound to ``bind`` answers: the loopback names, ``bind`` itself,
    and for a wildcard bind (``0.0.0.0``, ``::``, empty) any IP literal and this machine's names."""
    names = list(LOOPBACK_HOSTS)
    bind = (bind or "").strip().strip("[]").lower()
    if bind in ("", "0.0.0.0", "::"):
        import socket

        names.append("*ip")
        for name in (socket.gethostname(), socket.getfqdn()):
            if name:
                names.append(name.lower())
    else:
        names.append(bind)
    return tuple(dict.fromkeys(names))


def check_gradio_request(request, rules: AccessRules) -> None:
    """``check_origin`` for a ``gr.Request`` (gradio 3.41: an attribute object over the queue
    websocket's headers and ``ws://`` URL; gradio 4: the real starlette request); None (a direct
    call, no HTTP request behind it) passes."""
    if request is None:
        return
    try:
        headers = headers_of(getattr(request, "headers", None))
    except Exception:
        headers = {}
    try:
        scheme = urlsplit(str(getattr(request, "url", "") or "")).scheme or "http"
    except Exception:
        scheme = "http"
    check_origin(headers, scheme, rules, method="POST")


class GuardMiddleware:
    """ASGI middleware for the standalone server: every request (every path, gradio's own and
    websockets included) must name an allowed ``Host``; every request that names a foreign
    ``Origin`` (and every one that acts and names a foreign ``Referer``) is refused with 403."""

    def __init__(self, app, rules: AccessRules):
        self.app = app
        self.rules = rules

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = headers_of((k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", ()))
        method = scope.get("method", "GET") if scope["type"] == "http" else "POST"  # a websocket acts
        try:
            check_host(headers, self.rules)
            check_origin(headers, scope.get("scheme", "http"), self.rules, method=method)
        except RequestRefused as e:
            await _refuse(scope, send, e)
            return
        await self.app(scope, receive, send)


async def _refuse(scope, send, error: RequestRefused) -> None:
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    import json

    body = json.dumps({"detail": str(error)}).encode("utf-8")
    await send({"type": "http.response.start", "status": error.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
