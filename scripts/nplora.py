"""NP-LoRA for AUTOMATIC1111 1.x, Forge and reForge: the `<nplora:CONTENT:STYLE>` prompt tag, the
NP-LoRA accordion, X/Y/Z plot axes, infotext and settings.

The WebUI imports this file with the extension folder on ``sys.path``; everything else lives in
``lib_nplora.webui`` (one adapter per host in ``lib_nplora/webui/hosts/``).
"""

import modules.scripts as scripts
from modules import script_callbacks

from lib_nplora.webui import callbacks as nplora_callbacks
from lib_nplora.webui import script as nplora_script

Script = nplora_script.make_script_class(scripts)
nplora_callbacks.register_callbacks(script_callbacks)
