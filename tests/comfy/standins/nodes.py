"""Stand-in for ComfyUI's ``nodes`` module, for what a node pack's entry can see of it: the node
registry ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS`` and ``load_custom_node`` (the real
one, a coroutine, imports ``<pack>/__init__.py`` as a package with ``importlib.util.spec_from_file_location`` and
merges the pack's two mappings into the registry)."""

from __future__ import annotations

import importlib.util
import os
import sys

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}


def load_custom_node(module_path: str) -> bool:
    name = os.path.basename(module_path)
    spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"),
                                                  submodule_search_locations=[module_path])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    NODE_CLASS_MAPPINGS.update(module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(module.NODE_DISPLAY_NAME_MAPPINGS)
    return True
