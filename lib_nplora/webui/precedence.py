"""Which fusion a pass asks for, strongest source first:

1. X/Y/Z axis values on the cell's processing object (``p.nplora_mu`` ...), over whatever
   request they modify; an NP-LoRA axis turns NP-LoRA on for the plot;
2. the first ``<nplora:CONTENT:STYLE:…>`` tag of the pass's prompt (arguments it leaves out come
   from the settings' defaults);
3. the accordion, when enabled.
"""

from __future__ import annotations

from ..app.index import LoraNameError
from ..app.request import TAG, FusionRequest, parse_items
from ..errors import ParameterError
from ..params import FuseParams
from . import xyz
from .accordion import UiValues


def tag_items(extra_network_data) -> list[list[str]]:
    """Items of the pass's ``<nplora:…>`` tags (the WebUI's ``ExtraNetworkParams`` per tag)."""
    params_list = (extra_network_data or {}).get(TAG) or []
    return [list(getattr(params, "items", params)) for params in params_list]


def request_for_pass(ui: UiValues, tag_items: list[list[str]], overrides: dict,
                     defaults: FuseParams) -> tuple[FusionRequest | None, list[str]]:
    """The fusion a pass asks for (None: none), and notes for the user.

    Raises:
        PromptTagError, ParameterError, LoraNameError: a malformed tag, value or name.
    """
    notes: list[str] = []
    request: FusionRequest | None = None
    if tag_items:
        if len(tag_items) > 1:
            notes.append(f"the prompt has {len(tag_items)} <{TAG}:…> tags; only the first is used")
        request = parse_items(tag_items[0], defaults=defaults)
    elif ui.enabled or overrides:
        content, style = ui.lora("content"), ui.lora("style")
        if (not content and "nplora_content" not in overrides) or (not style and "nplora_style" not in overrides):
            raise LoraNameError("NP-LoRA is on but the content or the style LoRA is not chosen",
                                hint="Pick both in the NP-LoRA accordion")
        params = FuseParams.from_values(defaults, **ui.params())  # the accordion's values, else the settings'
        request = FusionRequest(str(content or ""), str(style or ""), params, source="ui")
    if request is None:
        return None, notes
    if overrides:
        try:
            params = request.params.with_(**xyz.param_changes(overrides))
        except ParameterError as e:
            raise ParameterError(f"X/Y/Z plot: {e.problem}", hint=e.hint) from None
        request = FusionRequest(str(overrides.get("nplora_content", request.content)),
                                str(overrides.get("nplora_style", request.style)), params, source="xyz")
    return request, notes
