"""The script arguments of an API request that reached the WebUI before its API was set up.

Mechanism (A1111 1.10 and Forge share it, ``modules/api/api.py``): ``Api.__init__`` adds the
``/sdapi/v1/txt2img`` and ``/img2img`` routes to an app that is already serving (the UI is launched
with ``prevent_thread_lock`` before ``create_api``), and only *then* computes
``default_script_arg_txt2img`` / ``_img2img`` (it starts as ``[]`` and is filled by calling every
script's ``ui()`` again; on Forge, a second or two on CPU). A request in that window copies the
empty list: the job runs with ``p.script_args == ()``, every always-on script gets no arguments, and
Forge's built-in ones fail with "not enough values to unpack (expected N, got 0)". The window closes
before the ``app_started`` callbacks run. It happens with or without NP-LoRA installed. (An even
earlier window, before ``default_script_arg_txt2img`` exists at all, answers HTTP 500 with an
``AttributeError`` before any script runs: the host's own, out of reach of an extension.)

What NP-LoRA does about it: ``app_started`` records the app; NP-LoRA's ``before_process`` (an
always-on script, so the host calls it on every job) sees an API job whose argument list is empty,
waits (bounded) for ``app_started``, and puts the host's own default arguments in place, so the
later hooks (``process``, ``process_before_every_sampling``...) of every script get theirs. An empty
list can only come from that window (the defaults always hold at least the selectable-script index),
and in that window the host could not have applied any of the request's own script arguments (it
fails with an ``IndexError`` when they are given), so the defaults are exactly what the request
asked for.
"""

from __future__ import annotations

import threading

from .report import LOG_PREFIX

WAIT_S = 300.0  # hang detector only: the host's set-up takes seconds
_ROUTES = {False: ("/sdapi/v1/txt2img", "default_script_arg_txt2img"),
           True: ("/sdapi/v1/img2img", "default_script_arg_img2img")}


class ApiScriptArgs:
    """Knows the host's ``Api`` object once ``app_started`` has run, and repairs an empty argument list."""

    def __init__(self, wait_s: float = WAIT_S):
        self.wait_s = wait_s
        self._started = threading.Event()
        self._app = None

    def app_started(self, app) -> None:
        self._app = app
        self._started.set()

    def defaults(self, is_img2img: bool) -> list | None:
        """The host's default script arguments for the tab (None when no ``Api`` route is found)."""
        path, attr = _ROUTES[bool(is_img2img)]
        for route in getattr(self._app, "routes", None) or []:
            if getattr(route, "path", None) != path:
                continue
            api = getattr(getattr(route, "endpoint", None), "__self__", None)
            values = getattr(api, attr, None)
            if isinstance(values, list) and values:
                return values
        return None

    def repair(self, p, is_img2img: bool, log=print) -> bool:
        """Give an API job that the host handed no script arguments the host's defaults.

        Returns True when ``p.script_args`` was replaced.
        """
        if not getattr(p, "is_api", False) or len(getattr(p, "script_args", None) or ()) != 0:
            return False
        if not self._started.wait(self.wait_s):
            log(f"{LOG_PREFIX} this API request has no script arguments and the WebUI did not finish "
                f"starting within {self.wait_s:.0f} s; the scripts run without their settings")
            return False
        values = self.defaults(is_img2img)
        if values is None:
            log(f"{LOG_PREFIX} this API request has no script arguments and the WebUI's API defaults "
                f"were not found; the scripts run without their settings")
            return False
        p.script_args = tuple(values)
        log(f"{LOG_PREFIX} this API request reached the WebUI before its API had set the scripts' "
            f"default arguments; gave it the {len(values)} defaults")
        return True


_INSTANCE = ApiScriptArgs()


def instance() -> ApiScriptArgs:
    return _INSTANCE
