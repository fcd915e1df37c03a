"""NP-LoRA: null-space projection fusion of a content LoRA and a style LoRA.

The package is a plain library (torch, safetensors, numpy); nothing in it imports a WebUI
except the ``lib_nplora.webui`` sub-package, which the extension's entry script loads.
"""

__version__ = "0.1.0"
