"""The A1111 / Forge extension: only the code that imports a WebUI (``modules.*``, gradio).

The entry script ``scripts/nplora.py`` loads ``script``; it builds the accordion, X/Y/Z axes and
settings, and applies fused LoRAs through ``hosts/`` (one adapter per WebUI LoRA stack). Everything
host-agnostic (LoRA index, requests, fusion service, REST routes, tab) is in ``lib_nplora.app``.
"""
