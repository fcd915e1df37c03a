"""The per-block row of sliders under the per-block mu text box (tab and accordion).

The sliders are an editor for the ``block_mu`` text (``params.parse_block_mu``), not request
fields of their own: moving one rewrites its group's entry in the text box, which stays the one
value the request, the infotext and the WebUI API carry (so the accordion's positional
arguments do not change). A slider at its lowest value (``GLOBAL``) removes its group's entry:
that group follows the global mu. Groups are the coarse denoiser groups of ``arch.blocks`` of
the architectures the host runs (``IN``, ``MID``, ``OUT`` for SD on A1111; on Forge Neo also
``DOUBLE``, ``SINGLE``, ``NOISE``, ``CONTEXT``, ``LAYERS``, ``BLOCKS``; every group in the
standalone tab); depths (``IN04``) and ``hard`` are typed into the text box.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..arch import blocks
from ..errors import ParameterError
from ..params import MU_MAX, BlockMu, block_mu_text, parse_block_mu

#: a slider's value meaning "no entry: the global mu"
GLOBAL = -0.05


def slider_groups(archs: Iterable[str] | None = None) -> tuple[str, ...]:
    """The coarse denoiser groups of ``archs`` (None: every architecture with a table), in
    table order, once each."""
    wanted = None if archs is None else set(archs)
    out: dict[str, None] = {}
    for arch in blocks.TABLES:
        if wanted is None or arch in wanted:
            out.update((r.group, None) for r in blocks.runs(arch))
    return tuple(out)


def with_group(text: str, group: str, value: float | None) -> str:
    """``text`` with ``group``'s entry set to mu ``value`` (None or below 0: removed).

    A text that does not parse is left as it is (the box shows the user's own typing; the
    request reports the error)."""
    try:
        entries = {b.group: b for b in parse_block_mu(text or "")}
    except ParameterError:
        return text
    if value is None or value < 0:
        entries.pop(group, None)
    else:
        entries[group] = BlockMu(group, float(value))
    return block_mu_text(tuple(sorted(entries.values())))


def slider_values(text: str, groups: tuple[str, ...] | None = None) -> dict[str, float]:
    """Each slider's position for ``text`` (``GLOBAL`` where the group has no entry or is hard)."""
    try:
        entries = {b.group: b for b in parse_block_mu(text or "")}
    except ParameterError:
        entries = {}
    return {g: (entries[g].mu if g in entries and not entries[g].hard else GLOBAL)
            for g in (slider_groups() if groups is None else groups)}


def build(gr, textbox, elem_id: Callable[[str], str], archs: Iterable[str] | None = None) -> dict:
    """A row of sliders, one per ``slider_groups(archs)``, each rewriting its entry in ``textbox``.

    Args:
        archs: the architectures the host runs (None: all; the standalone tab).

    Returns:
        group -> slider component.
    """
    groups = slider_groups(archs)
    start = slider_values(getattr(textbox, "value", "") or "", groups)
    sliders = {}
    with gr.Row():
        for group in groups:
            sliders[group] = gr.Slider(minimum=GLOBAL, maximum=MU_MAX, step=0.05, value=start[group],
                                       label=f"mu {group} (left end: global mu)", elem_id=elem_id(f"mub_{group}"))
    for group, slider in sliders.items():
        event = getattr(slider, "release", None) or slider.change  # gradio 3.41 has no release event
        event(fn=lambda text, value, g=group: with_group(text, g, value), inputs=[textbox, slider],
                       outputs=[textbox])
    return sliders
