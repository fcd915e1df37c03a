"""Run by the WebUI at every launch (``--skip-install`` skips it): fast and idempotent.

NP-LoRA needs torch, safetensors and numpy, which every WebUI already has, so this normally does
nothing; a missing safetensors or numpy (a broken environment) is installed with the WebUI's pip.
torch is never installed from here: it belongs to the WebUI's own setup.
"""

import importlib.util

REQUIREMENTS = {"safetensors": "safetensors>=0.4", "numpy": "numpy"}


def _installed(name: str) -> bool:
    try:
        import launch

        return launch.is_installed(name)
    except (ImportError, AttributeError):
        return importlib.util.find_spec(name) is not None


def main() -> None:
    if not _installed("torch"):
        print("NP-LoRA: torch is not installed; install the WebUI's requirements first")
        return
    for name, spec in REQUIREMENTS.items():
        if not _installed(name):
            import launch

            launch.run_pip(f"install {spec}", f"NP-LoRA requirement: {spec}")


main()
