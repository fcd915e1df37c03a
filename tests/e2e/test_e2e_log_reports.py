"""The suite's reading of a host's console (no WebUI needed): which error reports concern NP-LoRA.

The console texts are in the format A1111 and every Forge print (``modules/errors.report``: each
message line after ``*** ``, the traceback indented by four spaces with its blank lines left
empty, then ``---``); the soft-inpainting report is the one Forge main ``dfdcbab`` prints when its
venv lacks ``joblib``.
"""

from __future__ import annotations

import textwrap
import traceback

from e2e_server import errors_naming

EXT = "/hosts/forge/extensions/nplora-e2e/"
NAMES = ["script: nplora.py", EXT]


def report(message: str, exc: BaseException) -> str:
    """A host error report of ``message`` with the traceback of ``exc``."""
    tb = "".join(traceback.format_exception(exc))
    return "\n".join(f"*** {line}" for line in message.splitlines()) + "\n" + textwrap.indent(tb, "    ") + "\n---"


def raised(code: str, filename: str) -> BaseException:
    try:
        exec(compile(code, filename, "exec"), {})
    except Exception as e:  # noqa: BLE001 - the exception is the sample
        return e
    raise AssertionError("the sample code did not raise")


HOST_SCRIPT = report("Error loading script: soft_inpainting.py",
                     raised("from joblib_not_installed_here import Parallel",
                            "/hosts/forge/extensions-builtin/soft-inpainting/scripts/soft_inpainting.py"))


def test_a_host_scripts_report_is_not_ours():
    log = "Launching Web UI\n" + HOST_SCRIPT + "\n[NP-LoRA] added 8 X/Y/Z plot axes\nRunning on local URL\n"
    assert errors_naming(log, NAMES) == []


def test_our_script_failing_to_load_is_reported_whole():
    ours = report("Error loading script: nplora.py", raised("raise ImportError('lib_nplora')", EXT + "scripts/nplora.py"))
    log = "start\n" + HOST_SCRIPT + "\n" + ours + "\nRunning on local URL\n"
    found = errors_naming(log, NAMES)
    assert len(found) == 1
    assert found[0].startswith("*** Error loading script: nplora.py") and "ImportError: lib_nplora" in found[0]
    assert "soft_inpainting" not in found[0]


def test_a_traceback_through_our_folder_counts_across_a_chained_exception():
    # a chained traceback has blank lines inside the report: the block goes on past them
    code = "try:\n    raise KeyError('k')\nexcept KeyError:\n    raise RuntimeError('in the hook')\n"
    ours = report("Error running process: /hosts/forge/modules/hook.py", raised(code, EXT + "lib_nplora/x.py"))
    assert "\n\n" in ours
    found = errors_naming("a\n" + ours + "\nb\n", NAMES)
    assert len(found) == 1 and "RuntimeError: in the hook" in found[0]


def test_the_next_unindented_line_ends_a_report():
    # without its closing '---' the host's report still ends at the first unindented line
    log = HOST_SCRIPT.replace("\n---", "") + "\n[NP-LoRA] loaded from " + EXT + "\n    indented, but after the end\n"
    assert errors_naming(log, NAMES) == []
