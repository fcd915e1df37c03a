"""The A1111 / Forge extension: only the code that imports a WebUI (``modules.*``, gradio).

The entry script ``scripts/nplora.py`` makes the ``Script`` class (``script``) and registers the
``callbacks``. The rest, one concept a module:

* ``runtime``    — the per-process ``Runtime``: host adapter, settings, fusion service; it is the
  ``HostContext`` of the tab and the REST API;
* ``precedence`` — which fusion a pass asks for (X/Y/Z over the prompt tag over the accordion);
* ``hooks``      — the job and pass hooks: fuse, hand to the host adapter, fresh cond caches;
* ``report``     — warnings, infotext, the console line, the UI toast;
* ``accordion``, ``xyz``, ``settings``, ``extra_network`` — the WebUI's widgets, axes, options, tag;
* ``hosts/``     — one adapter per WebUI LoRA stack (A1111, Forge, old Forge/reForge).

Everything host-agnostic (LoRA index, requests, fusion service, REST routes, tab) is in
``lib_nplora.app``.
"""
