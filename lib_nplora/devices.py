"""Where fusion math runs: the one place a device name becomes a ``torch.device``.

``torch.device`` accepts many names NP-LoRA cannot compute on here (``meta`` has no data,
``xla``/``hpu``/``xpu``/``privateuseone`` need backends this code is not written for, ``cuda``
on a machine without CUDA, ``cuda:7`` on a one-GPU machine). Every entry point (the CLI's
``--device``, the library's ``fuse_files``/``analyze_files``/``fuse``/``analyze``, the WebUI's
"Fusion device" setting behind the tab and the REST API) goes through :func:`resolve_device`,
which accepts only

* ``auto``: the first CUDA GPU when one is available, else the CPU;
* ``cpu``;
* ``cuda`` / ``cuda:N``: when CUDA is available and GPU N exists;
* ``mps``: when Apple's MPS backend is available;

and refuses everything else with one form of ``ParameterError``: the value, why, and the names
that work on this machine.
"""

from __future__ import annotations

import torch

from .errors import ParameterError

#: the device names NP-LoRA computes on (when available)
KINDS = ("auto", "cpu", "cuda", "cuda:N", "mps")

#: device types whose tensors the fusion math runs on
COMPUTE_TYPES = ("cpu", "cuda", "mps")


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    try:
        return bool(mps is not None and mps.is_available())
    except Exception:  # an old or partial build
        return False


def _cuda_count() -> int:
    try:
        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken driver reads as no GPU
        return 0


def usable() -> list[str]:
    """The device names that work on this machine, e.g. ``["auto", "cpu", "cuda", "cuda:0"]``."""
    names = ["auto", "cpu"]
    n = _cuda_count()
    if n:
        names += ["cuda"] + [f"cuda:{i}" for i in range(n)]
    if _mps_available():
        names.append("mps")
    return names


def _refuse(value: object, why: str) -> ParameterError:
    text = str(value)
    shown = repr(text if len(text) <= 40 else text[:40] + "…")
    return ParameterError(f"device {shown} cannot be used: {why}",
                          hint=f"Use one of: {', '.join(usable())}")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """The ``torch.device`` for a device name, or a ParameterError.

    Args:
        device: "auto" (or None), "cpu", "cuda", "cuda:N", "mps" (case and surrounding spaces
            ignored), or a ``torch.device`` of those types.

    Raises:
        ParameterError: anything else, or a device this machine does not have; the message
            names the value and the devices that work here.
    """
    if device is None:
        device = "auto"
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise _refuse(device, f"a device must be text, got {type(device).__name__}")
    text = device.strip().lower()
    if text == "auto":
        return torch.device("cuda" if _cuda_count() else "cpu")
    if text == "cpu":
        return torch.device("cpu")
    kind, sep, index = text.partition(":")
    if kind == "cuda" and (not sep or (index.isascii() and index.isdigit() and len(index) <= 4)):
        n = _cuda_count()
        if not n:
            raise _refuse(device, "no CUDA GPU is available on this machine")
        if sep and int(index) >= n:
            raise _refuse(device, f"there is no CUDA GPU {int(index)} (this machine has {n})")
        return torch.device(text if sep else "cuda")
    if text in ("mps", "mps:0"):
        if not _mps_available():
            raise _refuse(device, "Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    why = "NP-LoRA computes only on auto, cpu, cuda, cuda:N or mps"
    try:
        torch.device(text)
    except (RuntimeError, TypeError, ValueError):
        why = f"not a device name ({why})"
    raise _refuse(device, why)


def host_device(device) -> torch.device | None:
    """A WebUI's own compute device (``modules.devices.device``) when fusion can run on it.

    The WebUI already computes on its device, so it is taken as available; one of another type
    (DirectML's ``privateuseone``, ``xpu``, ``meta``, anything unreadable) gives None, and the
    caller falls back to the CPU.
    """
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        return None
    return dev if dev.type in COMPUTE_TYPES else None
