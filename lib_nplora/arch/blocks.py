"""Block groups per architecture: the names that per-block mu (``FuseParams.block_mu``, the tag's
``mub=``) and the analysis's suggestions use.

Every canonical module name belongs to one *coarse* group and, inside the denoiser's numbered
blocks, to one *fine* group (a block at one depth). The fine names are LoRA Block Weight's
(``IN00``, ``M00``, ``OUT05``) for the UNets, so a user's habits carry over, and a letter of the
block list plus the depth for the DiTs (``D00``/``S00`` for double- and single-stream blocks,
as for FLUX). Tables, one per architecture:

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

FLUX.2, FLUX.2-klein 4B / 9B, Chroma (BFL layout, as FLUX)

| group | modules | fine groups: ``flux2`` / ``flux2klein4b`` / ``flux2klein9b`` / ``chroma`` |
|---|---|---|
| ``DOUBLE`` | ``unet.double_blocks.*`` | ``D00`` … ``D07`` / ``D04`` / ``D07`` / ``D18`` |
| ``SINGLE`` | ``unet.single_blocks.*`` | ``S00`` … ``S47`` / ``S19`` / ``S23`` / ``S37`` |
| ``BASE`` | ``img_in``, ``txt_in``, ``time_in``, the shared modulations, ``distilled_guidance_layer``, ``final_layer`` | |
| ``TE`` | the text encoder (``te1.``) | |

Z-Image, Lumina-Image-2.0 (NextDiT: two refiners, then the main layers)

| group | modules | fine groups: ``zimage`` / ``lumina2`` |
|---|---|---|
| ``NOISE`` | ``unet.noise_refiner.*`` (image tokens) | ``NR00`` ``NR01`` |
| ``CONTEXT`` | ``unet.context_refiner.*`` (caption tokens) | ``CR00`` ``CR01`` |
| ``LAYERS`` | ``unet.layers.*`` | ``L00`` … ``L29`` / ``L25`` |
| ``BASE`` | ``x_embedder``, ``t_embedder``, ``cap_embedder``, ``final_layer`` | |
| ``TE`` | the text encoder (``te1.``) | |

Qwen-Image (``unet.transformer_blocks.N``), Wan 14B / 5B / 1.3B (``unet.blocks.N``)

| group | modules | fine groups: ``qwenimage`` / ``wan14b`` / ``wan5b`` / ``wan1b`` |
|---|---|---|
| ``BLOCKS`` | ``unet.transformer_blocks.*`` / ``unet.blocks.*`` | ``B00`` … ``B59`` / ``B39`` / ``B29`` / ``B29`` |
| ``BASE`` | Qwen-Image: ``img_in``, ``txt_in``, ``time_text_embed``, ``norm_out``, ``proj_out``; Wan: ``time_embedding``, ``time_projection``, ``text_embedding``, ``img_emb``, ``head`` | |
| ``TE`` | the text encoder (``te1.``) | |

SD3.5 Large / Medium (SAI MMDiT, ``unet.joint_blocks.N``)

| group | modules | fine groups: ``sd35l`` / ``sd35m`` |
|---|---|---|
| ``JOINT`` | ``unet.joint_blocks.*`` (``x_block`` and ``context_block``) | ``J00`` … ``J37`` / ``J23`` |
| ``BASE`` | ``x_embedder``, ``context_embedder``, ``t_embedder``, ``y_embedder``, ``final_layer`` | |
| ``TE`` | CLIP-L, CLIP-G, T5 (``te1.`` … ``te3.``) | |

HiDream-I1 (``unet.double_stream_blocks.N`` / ``unet.single_stream_blocks.N``)

| group | modules | fine groups |
|---|---|---|
| ``DOUBLE`` | ``unet.double_stream_blocks.*`` | ``D00`` … ``D15`` |
| ``SINGLE`` | ``unet.single_stream_blocks.*`` | ``S00`` … ``S31`` |
| ``BASE`` | ``x_embedder``, ``t_embedder``, ``p_embedder``, the 49 ``caption_projection.N``, ``final_layer`` | |
| ``TE`` | CLIP-L, CLIP-G, T5, Llama (``te1.`` … ``te4.``) | |

The depths are the tables' (``tables/<arch>.json``; ``tests/core/test_arch_blocks.py`` checks
every numbered block of every table is in exactly one fine group). Numbered modules that are
not blocks (``time_embed.0``, ``caption_projection.48``, ``cap_embedder.1``) are ``BASE``.

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


def _bfl(double: int, single: int) -> tuple[BlockRun, ...]:
    return (BlockRun("double_blocks", "DOUBLE", "D", double), BlockRun("single_blocks", "SINGLE", "S", single))


def _nextdit(layers: int) -> tuple[BlockRun, ...]:
    return (BlockRun("noise_refiner", "NOISE", "NR", 2), BlockRun("context_refiner", "CONTEXT", "CR", 2),
            BlockRun("layers", "LAYERS", "L", layers))


#: architecture -> its numbered block runs (the tables above)
TABLES: dict[str, tuple[BlockRun, ...]] = {
    "sd1": _sd(12),
    "sd2": _sd(12),
    "sdxl": _sd(9),
    "flux": _bfl(19, 38),
    "zimage": _nextdit(30),
    "qwenimage": (BlockRun("transformer_blocks", "BLOCKS", "B", 60),),
    "flux2": _bfl(8, 48),
    "chroma": _bfl(19, 38),
    "wan14b": (BlockRun("blocks", "BLOCKS", "B", 40),),
    "wan5b": (BlockRun("blocks", "BLOCKS", "B", 30),),
    "wan1b": (BlockRun("blocks", "BLOCKS", "B", 30),),
    "sd35l": (BlockRun("joint_blocks", "JOINT", "J", 38),),
    "sd35m": (BlockRun("joint_blocks", "JOINT", "J", 24),),
    "lumina2": _nextdit(26),
    "hidream": (BlockRun("double_stream_blocks", "DOUBLE", "D", 16),
                BlockRun("single_stream_blocks", "SINGLE", "S", 32)),
    "flux2klein4b": _bfl(5, 20),
    "flux2klein9b": _bfl(8, 24),
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
