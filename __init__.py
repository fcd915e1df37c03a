"""ComfyUI's entry for this repository as a custom node pack (``ComfyUI/custom_nodes/<this folder>``).

ComfyUI imports this file as a package and reads ``NODE_CLASS_MAPPINGS`` and
``NODE_DISPLAY_NAME_MAPPINGS``. The nodes (``lib_nplora/comfy/``) are imported only when ComfyUI's
own modules are there, so importing this folder anywhere else (pytest, a WebUI, plain Python) loads
nothing and needs nothing; the WebUIs never import this file (they load ``scripts/``).
"""

import importlib.util

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

if importlib.util.find_spec("folder_paths") is not None and importlib.util.find_spec("comfy") is not None:
    from .lib_nplora.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
