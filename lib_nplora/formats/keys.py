"""The key grammar of LoRA files: which tensor plays which role in which module, and which base
model module a source module name stands for.

A source key is ``<module stem><suffix>``: the suffix gives the tensor's role (``.lora_down.weight``
= down, ``.lora_B.weight`` = up, ``.hada_w1_a``, ``.alpha``, ...); the stem names the module in
one of the naming families below, resolved to a canonical name through ``lib_nplora.arch``:

===============  ===================================================================
kohya / A1111    ``lora_unet_input_blocks_4_1_…_to_q``, ``lora_unet_down_blocks_0_…``,
                 ``lora_te_…``, ``lora_te1_…``, ``lora_te2_…``, ``lora_te3_…`` (T5)
LDM dotted       ``diffusion_model.input_blocks.4.1.…`` (ComfyUI), ``unet.input_blocks…``
bare (DiTs)      ``transformer_blocks.0.attn.to_q`` (DiffSynth, ComfyUI), ``layers.0.attention.qkv``
diffusers/PEFT   ``unet.down_blocks.1.…attn1.to_q``, ``transformer.transformer_blocks.0.attn.to_q``,
                 ``text_encoder.text_model.…``, ``text_encoder_2.…``, ``base_model.model.…``;
                 old spellings ``…attn1.processor.to_q_lora…``, ``…self_attn.to_q_lora…``
LyCORIS/OneTr.   ``lycoris_<diffusers path>``, ``lora_transformer_<diffusers path>``
XLabs (FLUX)     ``double_blocks.0.processor.qkv_lora1`` (img qkv), ``qkv_lora2`` (txt qkv),
                 ``proj_lora1/2``, ``single_blocks.0.processor.qkv_lora`` / ``proj_lora``
===============  ===================================================================
"""

from __future__ import annotations

import re

from ..arch import Architecture

#: suffix -> role. Checked longest first, so ".lora.up.weight" wins over ".up.weight".
SUFFIX_ROLES: dict[str, str] = {
    ".lora_down.weight": "down", ".lora_up.weight": "up", ".lora_mid.weight": "mid",
    ".lora_A.weight": "down", ".lora_B.weight": "up",
    ".lora_A.default.weight": "down", ".lora_B.default.weight": "up",
    "_lora.down.weight": "down", "_lora.up.weight": "up",
    ".lora.down.weight": "down", ".lora.up.weight": "up",
    ".lora_linear_layer.down.weight": "down", ".lora_linear_layer.up.weight": "up",
    ".down.weight": "down", ".up.weight": "up",
    ".alpha": "alpha", ".scale": "scale", ".bias": "bias",
    ".dora_scale": "dora_scale", ".lora_magnitude_vector": "dora_scale",
    ".lora_magnitude_vector.weight": "dora_scale",
    ".hada_w1_a": "hada_w1_a", ".hada_w1_b": "hada_w1_b", ".hada_w2_a": "hada_w2_a",
    ".hada_w2_b": "hada_w2_b", ".hada_t1": "hada_t1", ".hada_t2": "hada_t2",
    ".lokr_w1": "lokr_w1", ".lokr_w1_a": "lokr_w1_a", ".lokr_w1_b": "lokr_w1_b",
    ".lokr_w2": "lokr_w2", ".lokr_w2_a": "lokr_w2_a", ".lokr_w2_b": "lokr_w2_b",
    ".lokr_t2": "lokr_t2",
    ".diff": "diff", ".diff_b": "diff_b",
    ".w_norm": "w_norm", ".b_norm": "b_norm",
    ".on_input": "on_input",
    ".a1.weight": "a1.weight", ".a2.weight": "a2.weight", ".b1.weight": "b1.weight",
    ".b2.weight": "b2.weight",
    ".oft_blocks": "oft_blocks", ".oft_diag": "oft_diag", ".rescale": "rescale",
    ".constraint": "constraint",
}
_SUFFIXES = sorted(SUFFIX_ROLES, key=len, reverse=True)

#: role -> the suffix a kohya / LyCORIS file writes it under (the inverse of SUFFIX_ROLES, in the
#: spelling A1111's and Forge's loaders read): what passthrough modules are written back with.
KOHYA_SUFFIX: dict[str, str] = {}
for _suffix, _role in SUFFIX_ROLES.items():
    if _suffix.startswith(".") and not _suffix.startswith((".lora_A", ".lora_B", ".lora.", ".lora_linear",
                                                           ".down.", ".up.", ".lora_magnitude")):
        KOHYA_SUFFIX.setdefault(_role, _suffix)
KOHYA_SUFFIX["ia3_weight"] = ".weight"

BUNDLE_PREFIX = "bundle_emb."


def split_key(key: str, all_keys: set[str] | frozenset[str]) -> tuple[str, str] | None:
    """Split a tensor key into (module stem, role), or None if no suffix matches.

    IA3's plain ``.weight`` counts only next to its ``.on_input`` flag.
    """
    for suffix in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            return key[: -len(suffix)], SUFFIX_ROLES[suffix]
    if key.endswith(".weight"):
        stem = key[: -len(".weight")]
        if stem + ".on_input" in all_keys:
            return stem, "ia3_weight"
    return None


def module_kind(roles: set[str]) -> str | None:
    """The module type a set of roles describes, or None if incomplete/unknown."""
    if "dora_scale" in roles and {"up", "down"} <= roles:
        return "dora"
    if {"up", "down"} <= roles:
        return "tucker" if "mid" in roles else "lora"
    if any(r.startswith("hada_") for r in roles):
        return "loha"
    if any(r.startswith("lokr_") for r in roles):
        return "lokr"
    if "diff" in roles:
        return "full"
    if "diff_b" in roles:
        return "diff_b"
    if "w_norm" in roles or "b_norm" in roles:
        return "norm"
    if "ia3_weight" in roles:
        return "ia3"
    if any(r in roles for r in ("a1.weight", "a2.weight", "b1.weight", "b2.weight")):
        return "glora"
    if "oft_blocks" in roles or "oft_diag" in roles:
        return "oft"
    return None


_XLABS = re.compile(r"^(double_blocks|single_blocks)\.(\d+)\.processor\.(qkv_lora|proj_lora)([12]?)$")
_XLABS_TARGETS = {
    ("double_blocks", "qkv_lora", "1"): "img_attn.qkv", ("double_blocks", "qkv_lora", "2"): "txt_attn.qkv",
    ("double_blocks", "proj_lora", "1"): "img_attn.proj", ("double_blocks", "proj_lora", "2"): "txt_attn.proj",
    ("single_blocks", "qkv_lora", ""): "linear1", ("single_blocks", "proj_lora", ""): "linear2",
}

_KOHYA = re.compile(r"^lora_(unet|te[0-9]?)_(.+)$")
_TE_OLD = {"to_q": "q_proj", "to_k": "k_proj", "to_v": "v_proj", "to_out": "out_proj"}


def stem_family(stem: str) -> str:
    """Naming family of a module stem, for reporting ("kohya", "diffusers", "xlabs", ...)."""
    if _KOHYA.match(stem):
        return "kohya"
    if stem.startswith("lycoris_"):
        return "lycoris"
    if stem.startswith("lora_transformer_"):
        return "onetrainer"
    if _XLABS.match(stem):
        return "xlabs"
    if stem.startswith(("diffusion_model.", "model.diffusion_model.")):
        return "ldm"
    if stem.startswith("base_model.model."):
        return "peft"
    return "diffusers"


def _clean_dotted(component: str, path: str) -> str:
    """Undo the old diffusers attention-processor spellings."""
    if ".processor." in path or path.startswith("processor."):
        path = path.replace(".processor.", ".")
        if path.endswith(".to_out"):
            path += ".0"
    if component.startswith("te"):
        head, _, last = path.rpartition(".")
        if last in _TE_OLD and head.endswith("self_attn"):
            path = f"{head}.{_TE_OLD[last]}"
    return path


def resolve_stem(arch: Architecture, stem: str) -> tuple[str, bool] | None:
    """Canonical module name for a source stem in ``arch``: (name, halves swapped), or None."""
    m = _KOHYA.match(stem)
    if m:
        return arch.lookup(m.group(1), m.group(2))
    if stem.startswith("lycoris_"):
        return arch.lookup("unet", stem[len("lycoris_"):])
    if stem.startswith("lora_transformer_"):
        return arch.lookup("unet", stem[len("lora_transformer_"):])
    m = _XLABS.match(stem)
    if m:
        target = _XLABS_TARGETS.get((m.group(1), m.group(3), m.group(4)))
        return arch.lookup("unet", f"{m.group(1)}.{m.group(2)}.{target}") if target else None
    if stem.startswith("model.diffusion_model."):
        return arch.lookup("unet", stem[len("model.diffusion_model."):])
    if "." not in stem:
        return None
    prefix, path = stem.split(".", 1)
    if prefix == "diffusion_model":
        return arch.lookup("unet", path)
    if prefix == "base_model" and path.startswith("model."):
        path = path[len("model."):]
        for component in ("unet", "te", "te1"):
            hit = arch.lookup(component, _clean_dotted(component, path))
            if hit:
                return hit
        return None
    component = arch.pipeline_component(prefix)
    if component is None and prefix in ("unet", "te", "te1", "te2", "te3"):
        component = prefix
    if component is None:
        return arch.lookup("unet", stem) if arch.spec.bare_paths else None
    return arch.lookup(component, _clean_dotted(component, path))
