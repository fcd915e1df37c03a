"""ComfyUI's entry for this repository as a custom node pack (``ComfyUI/custom_nodes/<this folder>``).

ComfyUI's ``nodes.load_custom_node`` imports this file as a package and reads
``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS``. The nodes (``lib_nplora/comfy/``) are
imported only when ComfyUI is the one loading (its ``nodes`` module with ``load_custom_node`` and
its ``folder_paths`` are loaded), so importing this folder anywhere else (pytest collecting the
repository as a package, a WebUI, plain Python) loads nothing and needs nothing; the WebUIs never
import this file (they load ``scripts/``).
"""

import sys

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}

if hasattr(sys.modules.get("nodes"), "load_custom_node") and "folder_paths" in sys.modules:
    from .lib_nplora.comfy.nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
