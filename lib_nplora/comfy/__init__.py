"""The ComfyUI host: NP-LoRA as a node pack on the same engine.

One module a concept: ``inputs.py`` (node inputs from ``params.PARAMS``), ``folders.py`` (ComfyUI's
``loras`` folders as a ``LoraIndex``), ``models.py`` (which base architecture a loaded model is),
``projection.py`` (the projected content down factors, through the engine's cache),
``patching.py`` (ComfyUI's own key map and ``add_patches`` on clones), ``chart_image.py`` (the
analysis as an IMAGE), ``nodes.py`` (the node classes). The repository's ``__init__.py`` is
ComfyUI's entry; only this package imports ComfyUI's modules (``comfy.*``, ``folder_paths``), and
nothing outside it imports this package (``tests/core/test_isolation.py``).
"""
