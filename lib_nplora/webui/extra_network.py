"""``<nplora:…>`` as a registered extra network of the WebUI.

The WebUIs strip every ``<name:…>`` tag from the prompt and hand the parsed items to the extra
network registered under that name (an unregistered name only logs "Skipping unknown extra
network"). Activation order is the prompt's, and the builtin ``lora`` may come after this one, so
``activate`` only records the request; the model is touched in the Script's
``after_extra_networks_activate`` hook, which runs after every extra network.

Registration must happen in ``on_before_ui``: the registry is cleared after scripts are loaded.
"""

from __future__ import annotations

from ..app.request import TAG


def make_extra_network(extra_networks):
    """An instance of ``NpLoraExtraNetwork``, a subclass of the host's ``ExtraNetwork``."""

    class NpLoraExtraNetwork(extra_networks.ExtraNetwork):
        def __init__(self):
            super().__init__(TAG)

        def activate(self, p, params_list):
            # Items of every <nplora:…> tag of this pass, for the Script hook (which also reads
            # them from extra_network_data); [] when the prompt has none.
            p.nplora_prompt_items = [list(params.items) for params in params_list]

        def deactivate(self, p):
            pass

    return NpLoraExtraNetwork()


def register(extra_networks) -> None:
    """Register ``<nplora:…>`` (idempotent: re-registering replaces the previous instance)."""
    extra_networks.register_extra_network(make_extra_network(extra_networks))
