"""The application layer: what every host shares, with no WebUI imports.

* ``index``      — the LoRA list; names resolve only through it, never as paths;
* ``request``    — the ``<nplora:…>`` prompt tag, infotext labels, ``FusionRequest``;
* ``service``    — fuse / analyze / save by name, through the byte-bounded caches;
* ``context``    — ``HostContext``: what a host gives the app (its name, index, service, settings);
* ``rest``       — the ``/nplora/v1`` routes (fastapi, pydantic);
* ``tab``, ``chart`` — the NP-LoRA tab (gradio 3.41 and 4.x) and its overlap chart;
* ``standalone`` — the tab and REST API over a folder, without a WebUI (``python -m lib_nplora serve``).

``index``, ``request``, ``service`` and ``context`` import neither gradio nor fastapi; ``rest``,
``tab`` and ``standalone`` import them lazily, only when a host or ``serve`` asks for them.
"""
