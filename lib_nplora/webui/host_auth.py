"""The WebUI's own access rules, read from its command line (``modules.shared.cmd_opts``), so that
NP-LoRA's routes require exactly what the host's ``/sdapi/v1/*`` routes require.

What AUTOMATIC1111 1.10.1 and Forge (a fork of it for these parts) do, and what follows for us:

* The host's API exists only with ``--api`` (``webui.py`` creates ``Api(app)`` only then) or with
  ``--nowebui`` (API only, on its own FastAPI app; ``app_started`` gets ``demo=None``). Our REST
  routes exist under the same condition (``serves_api``).
* ``--api-auth "u1:p1,u2:p2"``: every ``/sdapi/v1/*`` route gets a dependency that requires HTTP
  Basic with one of those pairs (``Api.auth``: 401 "Incorrect username or password" with
  ``WWW-Authenticate: Basic``). Our routes require the same pairs (``credentials``). An entry
  without a colon stops the host at start-up; here it matches nothing (we never fail open).
* ``--gradio-auth`` / ``--gradio-auth-path``: the host passes them to gradio's ``launch(auth=)``;
  gradio then requires its login cookie on every route, the queue's included, so the tab's
  actions are covered by the host itself (``gradio_auth`` is reported for information only).
* ``--cors-allow-origins`` (comma-separated) and ``--cors-allow-origins-regex``: origins the host
  lets read its responses; we let them act too (``allowed_origins``, ``allowed_origin_regex``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..app.guard import AccessRules


@dataclass(frozen=True)
class HostRules:
    """What the WebUI's command line says about who may reach its API and UI."""

    serves_api: bool = False
    credentials: dict[str, str] | None = field(default=None, repr=False)
    gradio_auth: bool = False
    allowed_origins: tuple[str, ...] = ()
    allowed_origin_regex: str | None = None

    def access(self) -> AccessRules:
        return AccessRules(allowed_origins=self.allowed_origins, allowed_origin_regex=self.allowed_origin_regex,
                           credentials=self.credentials)


def parse_api_auth(value: str | None) -> dict[str, str] | None:
    """``--api-auth``'s "user:password[,user2:password2]" as {user: password}; None when unset."""
    if not value:
        return None
    credentials: dict[str, str] = {}
    for entry in value.split(","):
        user, sep, password = entry.partition(":")
        if sep:
            credentials[user] = password
    return credentials


def read(cmd_opts) -> HostRules:
    """The rules from a WebUI's ``cmd_opts`` (any object with its attribute names; a missing
    attribute reads as the flag's default)."""
    def opt(name, default=None):
        return getattr(cmd_opts, name, default)

    origins = opt("cors_allow_origins")
    return HostRules(
        serves_api=bool(opt("api", False) or opt("nowebui", False)),
        credentials=parse_api_auth(opt("api_auth")),
        gradio_auth=bool(opt("gradio_auth") or opt("gradio_auth_path")),
        allowed_origins=tuple(o for o in origins.split(",") if o) if origins else (),
        allowed_origin_regex=opt("cors_allow_origins_regex") or None,
    )


def current() -> HostRules:
    """The running WebUI's rules (``modules.shared.cmd_opts``); outside a WebUI, the defaults
    (no API, nothing allowed beyond the page's own origin)."""
    try:
        from modules import shared
    except ImportError:
        return HostRules()
    return read(getattr(shared, "cmd_opts", None))
