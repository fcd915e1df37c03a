"""The WebUI extension and the NP-LoRA tab, as a thin layer over the library.

Modules that import nothing of a WebUI (importable and testable anywhere):

* ``index``   — the LoRA list; names resolve only through it, never as paths;
* ``request`` — the ``<nplora:…>`` prompt tag, infotext labels, ``FusionRequest``;
* ``service`` — fuse / analyze / save by name, through the byte-bounded caches.

Modules that need a WebUI (``modules.*``) or gradio are imported only by the entry script
``scripts/nplora.py`` or by the standalone server.
"""
