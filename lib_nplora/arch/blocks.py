"""Block groups per architecture: the names that per-block mu (``FuseParams.block_mu``, the tag's
``mub=``) and the analysis's suggestions use.

Every canonical module name belongs to one *coarse* group and, inside the denoiser's numbered
blocks, to one *fine* group (a block at one depth). The fine names are LoRA Block Weight's
(``IN00``, ``M00``, ``OUT05``), so a user's habits carry over. Tables, one per architecture:

SD1 / SD2 (LDM UNet, ``unet.input_blocks.N`` / ``middle_block`` / ``output_blocks.N``)

| group | modules | fine groups |
|---|---|---|
| ``IN`` | ``unet.input_blocks.*`` | ``IN00`` … ``IN11`` |
| ``MID`` | ``unet.middle_block.*`` | ``M00`` |
| ``OUT`` | ``unet.output_blocks.*`` | ``OUT00`` … ``OUT11`` |
| ``BASE`` | the rest of the UNet (``time_embed``, ``out``) | |
| ``TE`` | the text encoder (``te.``) | |

SDXL (SGM UNet: the same paths, 9 input and 9 output blocks, plus ``label_emb``)

| group | modules | fine groups |
|---|---|---|
| ``IN`` | ``unet.input_blocks.*`` | ``IN00`` … ``IN08`` |
| ``MID`` | ``unet.middle_block.*`` | ``M00`` |
| ``OUT`` | ``unet.output_blocks.*`` | ``OUT00`` … ``OUT08`` |
| ``BASE`` | ``time_embed``, ``label_emb``, ``out`` | |
| ``TE`` | both text encoders (``te1.``, ``te2.``) | |

FLUX (BFL transformer, ``unet.double_blocks.N`` / ``unet.single_blocks.N``)

| group | modules | fine groups |
|---|---|---|
| ``DOUBLE`` | ``unet.double_blocks.*`` | ``D00`` … ``D18`` |
| ``SINGLE`` | ``unet.single_blocks.*`` | ``S00`` … ``S37`` |
| ``BASE`` | ``img_in``, ``txt_in``, ``time_in``, ``final_layer``, … | |
| ``TE`` | CLIP-L and T5 (``te1.``, ``te3.``) | |

An architecture without a table here (one added later) has the groups ``BASE`` (the whole
denoiser) and ``TE``, so per-block mu works there at that granularity. A value is looked up
fine group first, then coarse group, then the global mu. ``TE`` matters only with
``scope=all`` (text encoders are not projected otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import is_text_encoder

BASE, TE = "BASE", "TE"


@dataclass(frozen=True)
class BlockRun:
    """A numbered run of denoiser blocks: ``unet.<path>.<N>.*`` for N < ``depth``.

    Attributes:
        path: the canonical path segment (``input_blocks``).
        group: the coarse group's name (``IN``).
        fine: the fine groups' prefix (``IN`` -> ``IN00``); "" = no fine groups.
        depth: how many blocks the architecture has.
    """

    path: str
    group: str
    fine: str
    depth: int

    def fine_name(self, index: int) -> str:
        return f"{self.fine}{index:02d}"


def _sd(depth: int) -> tuple[BlockRun, ...]:
    return (BlockRun("input_blocks", "IN", "IN", depth), BlockRun("middle_block", "MID", "M", 1),
            BlockRun("output_blocks", "OUT", "OUT", depth))


#: architecture -> its numbered block runs (the tables above)
TABLES: dict[str, tuple[BlockRun, ...]] = {
    "sd1": _sd(12),
    "sd2": _sd(12),
    "sdxl": _sd(9),
    "flux": (BlockRun("double_blocks", "DOUBLE", "D", 19), BlockRun("single_blocks", "SINGLE", "S", 38)),
}


def runs(arch: str) -> tuple[BlockRun, ...]:
    return TABLES.get(arch, ())


def groups(arch: str) -> tuple[str, ...]:
    """Coarse groups of ``arch``, in model order (``IN``, ``MID``, ``OUT``, ``BASE``, ``TE``)."""
    return tuple(r.group for r in runs(arch)) + (BASE, TE)


def fine_groups(arch: str) -> tuple[str, ...]:
    """Fine groups of ``arch`` in model order (``IN00`` … ``M00`` … ``OUT08``)."""
    return tuple(r.fine_name(i) for r in runs(arch) for i in range(r.depth))


def all_groups(arch: str) -> frozenset[str]:
    return frozenset(groups(arch) + fine_groups(arch))


def group_of(arch: str, name: str) -> tuple[str, str | None]:
    """(coarse group, fine group or None) of a canonical module name.

    ``unet.input_blocks.4.1.proj_in`` on SDXL -> ("IN", "IN04"); ``unet.middle_block.1.…`` ->
    ("MID", "M00"); ``te1.…`` -> ("TE", None); ``unet.time_embed.0`` -> ("BASE", None).
    """
    if is_text_encoder(name):
        return TE, None
    _, _, path = name.partition(".")
    head, _, rest = path.partition(".")
    for r in runs(arch):
        if head != r.path:
            continue
        if r.depth == 1:
            return r.group, r.fine_name(0)
        index, _, _ = rest.partition(".")
        if index.isdigit() and len(index) <= 3 and int(index) < r.depth:
            return r.group, r.fine_name(int(index))
        return r.group, None
    return BASE, None
