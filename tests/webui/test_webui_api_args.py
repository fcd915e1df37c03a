"""An API job that the host handed an empty script-argument list (served in the window between
``Api.__init__`` adding its routes and computing the scripts' defaults) gets the host's defaults."""

from __future__ import annotations

import threading
from types import SimpleNamespace

from fastapi import FastAPI

from lib_nplora.webui import api_args, callbacks
from lib_nplora.webui import script as script_mod
from webui.standins.webui_modules import standin_scripts_module


class StandInApi:
    """``modules.api.api.Api`` as far as the repair sees it: bound-method route endpoints and the
    default-argument lists, empty until its ``__init__`` has called every script's ``ui()``."""

    def __init__(self, app: FastAPI):
        self.default_script_arg_txt2img = []
        self.default_script_arg_img2img = []
        app.add_api_route("/sdapi/v1/txt2img", self.text2imgapi, methods=["POST"])
        app.add_api_route("/sdapi/v1/img2img", self.img2imgapi, methods=["POST"])

    def finish(self):
        self.default_script_arg_txt2img = [0, True, 1.5, "a", None]
        self.default_script_arg_img2img = [0, False, 2.5]

    def text2imgapi(self):
        return {}

    def img2imgapi(self):
        return {}


def api_job(args=()):
    return SimpleNamespace(is_api=True, script_args=tuple(args))


def test_an_empty_api_job_waits_for_app_started_and_gets_the_hosts_defaults():
    app = FastAPI()
    api = StandInApi(app)
    fixer, lines = api_args.ApiScriptArgs(wait_s=600), []
    p, done = api_job(), threading.Event()

    def job():
        fixer.repair(p, False, log=lines.append)
        done.set()

    t = threading.Thread(target=job)
    t.start()
    assert not done.wait(0.3)  # cannot finish before app_started: the host's defaults are not there yet
    assert p.script_args == ()
    api.finish()
    fixer.app_started(app)
    t.join(600)
    assert done.is_set()
    assert p.script_args == (0, True, 1.5, "a", None)
    assert len(lines) == 1 and "gave it the 5 defaults" in lines[0]
    q = api_job()
    assert fixer.repair(q, True, log=lines.append)
    assert q.script_args == (0, False, 2.5)
    assert api.default_script_arg_img2img == [0, False, 2.5]


def test_jobs_with_arguments_and_ui_jobs_are_left_alone():
    app = FastAPI()
    api = StandInApi(app)
    api.finish()
    fixer = api_args.ApiScriptArgs(wait_s=600)
    fixer.app_started(app)
    given = api_job([0, False, 9.0, "b", 1])
    assert not fixer.repair(given, False)
    assert given.script_args == (0, False, 9.0, "b", 1)
    ui_job = SimpleNamespace(is_api=False, script_args=())
    assert not fixer.repair(ui_job, False)
    assert ui_job.script_args == ()


def test_no_api_route_or_no_start_says_so_and_changes_nothing():
    lines = []
    fixer = api_args.ApiScriptArgs(wait_s=0.01)
    p = api_job()
    assert not fixer.repair(p, False, log=lines.append)  # app_started never came (hang detector)
    assert p.script_args == () and "did not finish starting" in lines[-1]
    fixer.app_started(FastAPI())  # an app without the host's Api (e.g. no --api)
    assert not fixer.repair(p, False, log=lines.append)
    assert p.script_args == () and "defaults were not found" in lines[-1]


def test_the_script_and_the_callbacks_wire_the_repair():
    app = FastAPI()
    api = StandInApi(app)
    api.finish()
    fixer = api_args.ApiScriptArgs(wait_s=600)
    registered = {}
    standin_callbacks = SimpleNamespace(**{name: (lambda n: lambda f: registered.__setitem__(n, f))(name) for name in
                                           ("on_before_ui", "on_ui_settings", "on_model_loaded", "on_ui_tabs",
                                            "on_app_started")})
    callbacks.register_callbacks(standin_callbacks, get_api_args=lambda: fixer)
    registered["on_app_started"](None, app)
    Script = script_mod.make_script_class(standin_scripts_module(), get_api_args=lambda: fixer)
    script = Script()
    script.is_img2img = True
    p = api_job()
    script.before_process(p)
    assert p.script_args == (0, False, 2.5)
