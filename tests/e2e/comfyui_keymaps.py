"""Run by ``test_e2e_comfyui.py`` with ComfyUI's Python, in the ComfyUI folder: the node pack's
patching against ComfyUI's real key maps of SD1.5, SDXL, FLUX.1, Chroma and Qwen-Image (and more, below).

For each architecture it builds ComfyUI's own model (``comfy.supported_models.<config>.get_model``)
and text-encoder model (the config's ``clip_target``) on the ``meta`` device (keys and shapes, no
memory), writes a content and a style LoRA with a module on every weight NP-LoRA's table lists
(rank 1) and runs what the NP-LoRA Loader runs: ``lora_key_map`` (ComfyUI's
``model_lora_keys_unet`` / ``model_lora_keys_clip``), ``comfy_patches`` (its ``load_lora``), the
engine's projection and ``project_patches``. Prints one JSON line per (architecture, format).

With ``more`` (both a125cd84 and 783545f6 have their configs) it runs, after those, ``MORE_CASES``:
Lumina-Image-2.0, Wan 14B / 5B / 1.3B, HiDream-I1, SD3.5 Large / Medium, built the same way as the
DiTs below (Wan's detection also reads ``head.modulation`` and the Conv3d ``patch_embedding``,
SD3's ``pos_embed`` and ``ln_q``: ``DETECTION_KEYS``), then ``VARIANT_CASES``: Wan T2V-14B,
Wan 2.2 I2V-A14B, VACE, camera, S2V, HuMo, Animate (14B), VACE and Fun-InP (1.3B) and SD3 Medium
(3.0), each from the table's weights less those it lacks plus its detection marker keys
(``VARIANTS``), a kohya file of the table modules it has (``extra_kinds``: the class's weights
beyond the table, block numbers ``N``). With ``dits`` (a ComfyUI with Z-Image and FLUX.2
configs: Comfy-Org 0.33.0, 783545f6; 0.3.64 has neither) it runs, after those, the DiTs
``DIT_CASES``: Z-Image, FLUX.2-dev,
FLUX.2-klein 4B and 9B. Their ComfyUI model comes from ComfyUI's own detection
(``comfy.model_detection.model_config_from_unet``) of a meta state dict holding NP-LoRA's table
weights under their original paths plus the few norm keys the detection looks for
(``DETECTION_KEYS``); each row then also says which config class ComfyUI picked, the dimensions
it derived (``dims``), the width of the text features its text encoder gives (``te_width``:
``len(layer)`` stacked hidden states of its Qwen3 / Mistral class, built on the meta device) and
where the table and ComfyUI's class differ (``layout_bad``: table weights missing or of another
shape; ``layout_extra``: 2-D weights of the class not in the table). ``detected`` is NP-LoRA's
``arch_of`` of that model (``lib_nplora.comfy.models``). A diffusers naming ComfyUI maps to no
weight of the model at all is one short row (``modules`` 0, ``host_unmapped``).

Formats: ``kohya`` (``lora_unet_<flat original path>``, fused weights as one module: FLUX/Chroma
qkv and linear1, which the engine splits and patches on row slices); ``peft`` (diffusers names,
``transformer.…`` with ``lora_A/B``, fused weights as their parts: ComfyUI itself maps those to row
slices of the fused weight; only the modules ComfyUI's map places on a weight of the model are
written, the others are counted as ``host_unmapped``: for Chroma the diffusers names ComfyUI
derives from FLUX.1's layout, which Chroma's guidance layer lacks); ``written``: the content is
the file NP-LoRA writes (``formats.writer.save_fused`` of the kohya pair's fusion, rank 2, fused
weights joined back), fused again with the kohya style; ``ldm`` (``diffusion_model.`` + original
path, ComfyUI's own saves) and ``ldm-peft`` (``diffusion_model.`` + diffusers path, ai-toolkit;
placed as ``peft``) for the DiTs. Every row counts the patches whose up / down factor does not fit
the rows / columns of the weight (or row slice) they land on (``misshaped``).

    python tests/e2e/comfyui_keymaps.py <repository root> <temp folder> [more] [dits]
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import torch

#: full UNet / DiT configs of the three models, as comfy.model_detection derives them from a checkpoint
SD15 = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            adm_in_channels=None, in_channels=4, model_channels=320, num_res_blocks=[2, 2, 2, 2],
            transformer_depth=[1, 1, 1, 1, 1, 1, 0, 0], channel_mult=[1, 2, 4, 4], transformer_depth_middle=1,
            use_linear_in_transformer=False, context_dim=768, num_heads=8,
            transformer_depth_output=[1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], use_temporal_attention=False,
            use_temporal_resblock=False)
SDXL = dict(use_checkpoint=False, image_size=32, out_channels=4, use_spatial_transformer=True, legacy=False,
            num_classes="sequential", adm_in_channels=2816, in_channels=4, model_channels=320,
            num_res_blocks=[2, 2, 2], transformer_depth=[0, 0, 2, 2, 10, 10], channel_mult=[1, 2, 4],
            transformer_depth_middle=10, use_linear_in_transformer=True, context_dim=2048, num_head_channels=64,
            transformer_depth_output=[0, 0, 0, 2, 2, 2, 10, 10, 10], use_temporal_attention=False,
            use_temporal_resblock=False)
FLUX = dict(image_model="flux", in_channels=16, patch_size=2, out_channels=16, vec_in_dim=768, context_in_dim=4096,
            hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38, axes_dim=[16, 56, 56],
            theta=10000, qkv_bias=True, guidance_embed=True)
#: as comfy/model_detection.py derives them (a125cd84); the same as tools/check_host_layouts.py
CHROMA = dict(image_model="chroma", in_channels=64, out_channels=64, patch_size=2, context_in_dim=4096,
              hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19, depth_single_blocks=38,
              axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, in_dim=64, out_dim=3072, hidden_dim=5120,
              n_layers=5)
QWENIMAGE = dict(image_model="qwen_image")
#: what comfy/model_detection.py of later revisions (783545f6) also sets for FLUX.1 and Chroma:
#: no text position dimensions, no vector_in for Chroma
LATER_FLUX_FIELDS = dict(txt_ids_dims=[], vec_in_dim=None)
#: (architecture, format) in the order printed
CASES = (("sd1", "kohya"), ("sdxl", "kohya"), ("flux", "kohya"), ("flux", "peft"), ("chroma", "kohya"),
         ("chroma", "peft"), ("chroma", "written"), ("qwenimage", "kohya"), ("qwenimage", "peft"),
         ("qwenimage", "written"))
DITS = ("zimage", "flux2", "flux2klein4b", "flux2klein9b")
DIT_CASES = tuple((arch, fmt) for arch in DITS for fmt in ("kohya", "ldm", "peft", "ldm-peft", "written"))
#: keys ComfyUI's detection (comfy/model_detection.py, 783545f6) requires that are no LoRA target
#: (norms, pad tokens), so not in the tables: the Lumina 2 / Z-Image branch needs the refiner's
#: k_norm (and takes ``pad_tokens_multiple`` from ``cap_pad_token``, as Z-Image-Turbo has it);
#: the FLUX branch needs the first double block's key_norm
DETECTION_KEYS = {"zimage": {"noise_refiner.0.attention.k_norm.weight": (128,), "cap_pad_token": (1, 3840),
                             "x_pad_token": (1, 3840)},
                  "flux2": {"double_blocks.0.img_attn.norm.key_norm.scale": (128,)}}
#: the DiTs both ComfyUIs (a125cd84 and 783545f6) have configs for, run with ``more``
MORE = ("lumina2", "wan14b", "wan5b", "wan1b", "hidream", "sd35l", "sd35m")
MORE_CASES = tuple((arch, fmt) for arch in MORE for fmt in ("kohya", "ldm", "peft", "ldm-peft", "written"))


def _wan_keys(dim: int, in_dim: int, image: bool = False, **extra) -> dict:
    """What Wan's detection reads besides the table's weights: ``head.modulation`` (a parameter:
    the hidden size), ``patch_embedding`` (Conv3d, not a LoRA target: the input channels), the
    image projection's first LayerNorm (``img_emb.proj.0``: I2V) and a variant's marker keys."""
    keys = {"head.modulation": (1, 2, dim), "patch_embedding.weight": (dim, in_dim, 1, 2, 2)}
    if image:
        keys["img_emb.proj.0.bias"] = (1280,)
    return dict(keys, **extra)


DETECTION_KEYS.update({
    # 783545f6's Lumina 2 branch needs the refiner's k_norm (head dim 2304 / 24); a125cd84's only cap_embedder.1
    "lumina2": {"noise_refiner.0.attention.k_norm.weight": (96,)},
    "wan14b": _wan_keys(5120, 36, image=True), "wan5b": _wan_keys(3072, 48), "wan1b": _wan_keys(1536, 16),
    "hidream": {},
    # the MMDiT branch reads pos_embed (max size) and the context block's ln_q (RMS qk-norm, as SD3.5 has)
    "sd35l": {"pos_embed": (1, 192 * 192, 2432), "joint_blocks.0.context_block.attn.ln_q.weight": (64,)},
    "sd35m": {"pos_embed": (1, 384 * 384, 1536), "joint_blocks.0.context_block.attn.ln_q.weight": (64,)}})
#: the I2V-only modules of the ``wan14b`` table (its superset: T2V models lack them)
WAN_IMAGE = (".cross_attn.k_img", ".cross_attn.v_img", "img_emb.")
#: variants of those models, run with ``more`` (kohya files of the table modules the variant's
#: class has with the table's shape): arch, variant -> (table modules left out, detection keys
#: instead of the arch's). The variants' own modules (VACE blocks, adapters) have no table.
VARIANTS = {
    ("wan14b", "t2v"): (WAN_IMAGE, _wan_keys(5120, 16)),  # Wan2.1-T2V-14B, Wan2.2-T2V-A14B
    ("wan14b", "i2v-a14b"): (WAN_IMAGE, _wan_keys(5120, 36)),  # Wan2.2-I2V-A14B: no CLIP image input
    ("wan14b", "vace"): (WAN_IMAGE, _wan_keys(5120, 16, **{"vace_patch_embedding.weight": (5120, 96, 1, 2, 2)},
                                              **{f"vace_blocks.{i}.after_proj.weight": (5120, 5120) for i in range(8)})),
    ("wan14b", "camera"): ((), _wan_keys(5120, 32, image=True, **{"control_adapter.conv.weight": (5120, 1536, 2, 2)})),
    ("wan14b", "s2v"): (WAN_IMAGE, _wan_keys(5120, 16, **{"casual_audio_encoder.encoder.final_linear.weight": (1, 1)})),
    ("wan14b", "humo"): (WAN_IMAGE, _wan_keys(5120, 36, **{"audio_proj.audio_proj_glob_1.layer.bias": (1,)})),
    ("wan14b", "animate"): ((), _wan_keys(5120, 36, image=True, **{"face_adapter.fuser_blocks.0.k_norm.weight": (1,)})),
    ("wan1b", "vace"): ((), _wan_keys(1536, 16, **{"vace_patch_embedding.weight": (1536, 96, 1, 2, 2)},
                                      **{f"vace_blocks.{i}.after_proj.weight": (1536, 1536) for i in range(15)})),
    ("wan1b", "i2v"): ((), _wan_keys(1536, 36, image=True)),  # Wan2.1-Fun-1.3B-InP: image cross-attention
    ("sd35m", "sd3-medium"): ((".attn2.",), {"pos_embed": (1, 192 * 192, 1536)}),  # SD3 Medium: no attn2, no qk-norm
}
VARIANT_CASES = tuple((arch, "kohya", variant) for arch, variant in VARIANTS)
#: the dimensions of ComfyUI's derived unet_config reported per DiT
DIMS = {"zimage": ("dim", "n_heads", "n_kv_heads", "n_layers", "cap_feat_dim", "ffn_dim_multiplier"),
        "flux2": ("hidden_size", "num_heads", "depth", "depth_single_blocks", "context_in_dim", "mlp_ratio",
                  "guidance_embed", "in_channels"),
        "lumina2": ("dim", "cap_feat_dim", "n_layers", "n_heads", "n_kv_heads"),
        "wan": ("dim", "ffn_dim", "num_layers", "num_heads", "in_dim", "out_dim", "model_type"),
        "hidream": ("num_layers", "num_single_layers", "num_attention_heads", "num_routed_experts"),
        "sd3": ("depth", "adm_in_channels", "pos_embed_max_size", "x_block_self_attn_layers", "qk_norm")}
#: architecture -> its DIMS / DETECTION_KEYS family
FAMILY = {"zimage": "zimage", "flux2": "flux2", "flux2klein4b": "flux2", "flux2klein9b": "flux2",
          "lumina2": "lumina2", "wan14b": "wan", "wan5b": "wan", "wan1b": "wan", "hidream": "hidream",
          "sd35l": "sd3", "sd35m": "sd3"}


class Patcher:
    """What the key map reads of a MODEL / CLIP: ``.model`` and ``.cond_stage_model``."""

    def __init__(self, model=None, cond=None):
        self.model, self.cond_stage_model = model, cond


def models(arch: str):
    if arch in DITS or arch in MORE:
        return dit_models(arch)[:2]
    import comfy.supported_models as sm

    config_cls, unet = {"sd1": (sm.SD15, SD15), "sdxl": (sm.SDXL, SDXL), "flux": (sm.Flux, FLUX),
                        "chroma": (sm.Chroma, CHROMA), "qwenimage": (sm.QwenImage, QWENIMAGE)}[arch]
    unet = dict(unet)
    if arch in ("flux", "chroma"):  # fields later revisions' params classes require and detection sets
        import dataclasses

        import comfy.ldm.chroma.model
        import comfy.ldm.flux.model
        params = comfy.ldm.flux.model.FluxParams if arch == "flux" else comfy.ldm.chroma.model.ChromaParams
        fields = {f.name for f in dataclasses.fields(params)}
        unet.update({k: v for k, v in LATER_FLUX_FIELDS.items() if k in fields and k not in unet})
    config = config_cls(unet)
    model = config.get_model({}, device="meta")
    target = config.clip_target()
    cond = target.clip(device="meta", dtype=torch.float16)
    return Patcher(model=model), Patcher(cond=cond)


def dit_models(arch: str, variant: str | None = None):
    """ComfyUI's model of a DiT as its detection builds it from a checkpoint with the table's
    weights (less what ``VARIANTS`` leaves out, plus ``DETECTION_KEYS`` or the variant's keys),
    and its text encoder for that model (the config's ``clip_target`` picks it from the
    checkpoint's text-encoder keys, so FLUX.2's are built by name: Mistral 3 24B for the dev
    model, Qwen3-4B / -8B for klein 4B / 9B, as its ``Flux2.clip_target`` pairs them; SD3's and
    HiDream's with all their encoders, as a full checkpoint has them)."""
    import comfy.model_detection
    import comfy.text_encoders.flux as te_flux
    import comfy.text_encoders.hidream as te_hidream
    import comfy.text_encoders.sd3_clip as te_sd3
    import lora_factory as lf

    family = "zimage" if arch == "zimage" else "flux2" if arch in DITS else arch
    left_out, keys = VARIANTS[arch, variant] if variant else ((), DETECTION_KEYS[family])
    sd = {r["name"].split(".", 1)[1] + ".weight": torch.empty(r["shape"], device="meta")
          for r in lf.table(arch) if r["name"].startswith("unet.") and ":" not in r["name"]
          and not any(p in r["name"] for p in left_out)}
    sd.update({k: torch.empty(shape, device="meta") for k, shape in keys.items()})
    config = comfy.model_detection.model_config_from_unet(sd, "")
    if config is None:
        raise RuntimeError(f"ComfyUI's detection found no model in the {arch} {variant or ''} checkpoint")
    model = config.get_model({}, device="meta")
    te = {"flux2": lambda: te_flux.flux2_te(), "flux2klein4b": lambda: te_flux.klein_te(model_type="qwen3_4b"),
          "flux2klein9b": lambda: te_flux.klein_te(model_type="qwen3_8b"), "sd35l": te_sd3.sd3_clip,
          "sd35m": te_sd3.sd3_clip, "hidream": te_hidream.hidream_clip}.get(arch)
    te = te() if te else config.clip_target().clip
    cond = te(device="meta", dtype=torch.float16)
    return Patcher(model=model), Patcher(cond=cond), config


def te_width(cond) -> int:
    """Width of the text features ComfyUI's text encoder hands the DiT: its LLM's hidden size times
    the hidden states it stacks (``Flux2TEModel.encode_token_weights``: ``layer`` [9, 18, 27] for
    Qwen3 and [10, 20, 30] for Mistral, stacked; Z-Image: one, ``layer="hidden"``)."""
    inner = getattr(cond, cond.clip)
    n = len(inner.layer) if isinstance(inner.layer, (list, tuple)) else 1
    return n * inner.transformer.model.config.hidden_size


def dit_layout(arch: str, model, left_out=()) -> dict:
    """Table vs ComfyUI's class: table weights missing or of another shape (``layout_absent``:
    missing, of the modules a variant leaves out), class 2-D weights not in the table
    (``layout_extra``: the first 20; ``extra_kinds``: all, block numbers as ``N``)."""
    import re

    import lora_factory as lf

    table = {r["name"].split(".", 1)[1]: list(r["shape"]) for r in lf.table(arch)
             if r["name"].startswith("unet.") and ":" not in r["name"]}
    have = {k[len("diffusion_model."):-len(".weight")]: list(v.shape) for k, v in model.model.state_dict().items()
            if k.startswith("diffusion_model.") and k.endswith(".weight") and v.dim() in (2, 4, 5)}
    gone = {p for p in table if p not in have and any(x in "unet." + p for x in left_out)}
    extra = sorted(set(have) - set(table))
    return {"layout_bad": sorted(p for p, shape in table.items() if have.get(p) != shape and p not in gone)[:20],
            "layout_absent": len(gone), "layout_extra": extra[:20],
            "extra_kinds": sorted({re.sub(r"\.\d+(?=\.|$)", ".N", p) for p in extra}),
            "layout_weights": len(table) - len(gone)}


def main() -> None:
    root, tmp, modes = Path(sys.argv[1]), Path(sys.argv[2]), set(sys.argv[3:])
    sys.path[:0] = [os.getcwd(), str(root), str(root / "tests")]  # ComfyUI's folder first
    import comfy.options

    comfy.options.enable_args_parsing()
    sys.argv[1:] = ["--cpu"]
    import comfy.utils
    import lora_factory as lf
    from lib_nplora.cache import Caches
    from lib_nplora.comfy.patching import comfy_patches, lora_key_map, project_patches
    from lib_nplora.comfy.projection import projected_downs
    from lib_nplora.formats.writer import save_fused
    from lib_nplora.fusion.merge import fuse
    from lib_nplora.params import FuseParams

    missing: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: missing.append(record.getMessage()) if "not loaded" in record.getMessage() else None
    logging.getLogger().addHandler(handler)
    built: dict = {}
    cases = CASES + ((MORE_CASES + VARIANT_CASES) if "more" in modes else ()) + (DIT_CASES if "dits" in modes else ())
    for case in cases:
        arch, fmt, variant = (case + (None,))[:3]
        left_out = VARIANTS[arch, variant][0] if variant else ()
        if (arch, variant) not in built:  # one architecture's meta models at a time
            try:
                built = {(arch, variant): dit_models(arch, variant) if arch in DITS + MORE
                         else models(arch) + (None,)}
            except Exception as e:  # a variant this ComfyUI cannot build: one row saying why
                print(json.dumps({"arch": arch, "format": fmt, "variant": variant, "modules": 0,
                                  "error": f"{type(e).__name__}: {e}"[:300]}), flush=True)
                built = {}
                continue
        model, clip, config = built[arch, variant]
        key_map = lora_key_map(model, clip)
        shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
        weights = set(shapes) | set(clip.cond_stage_model.state_dict())
        rows = [r for r in lf.table(arch) if ":" not in r["name"] and r["kind"] != "norm"
                and not any(p in r["name"] for p in left_out)]
        unmapped = 0
        if fmt in ("peft", "ldm-peft"):  # diffusers names: the modules diffusers has, fused ones as their parts
            prefix = "transformer." if fmt == "peft" else "diffusion_model."
            rows = [r for r in rows if r["name"].startswith("unet.") and (r["aliases"] or r.get("parts"))]
            placed = [r for r in rows if all(
                _target(key_map.get(prefix + lf.peft_key(arch, p).split(".", 1)[1])) in weights
                for p in (lf.parts_of(arch, r) or [r]))]
            off = [r for r in rows if r not in placed]  # an example of a name ComfyUI maps to no weight
            example = prefix + lf.peft_key(arch, (lf.parts_of(arch, off[0]) or off)[0]).split(".", 1)[1] if off else None
            unmapped, rows = len(rows) - len(placed), placed
            if not rows:  # the host maps no module of this naming: nothing to load
                print(json.dumps({"arch": arch, "format": fmt, "variant": variant, "detected": _detected(model),
                                  "modules": 0, "host_unmapped": unmapped,
                                  "unmapped_example": example}), flush=True)
                continue
        stem = f"{arch}_{fmt}_{variant}" if variant else f"{arch}_{fmt}"
        c_path, s_path = tmp / f"{stem}_c.safetensors", tmp / f"{stem}_s.safetensors"
        lf.make_lora(c_path, arch, rows, fmt="kohya" if fmt == "written" else fmt, rank=1, seed=1,
                     dtype=torch.float16)
        lf.make_lora(s_path, arch, rows, fmt="kohya" if fmt == "written" else fmt, rank=1, seed=2,
                     dtype=torch.float16)
        caches = Caches()
        if fmt == "written":
            kc, ks = caches.load_pair(c_path, s_path, arch)
            w_path = tmp / f"{stem}_fused.safetensors"
            save_fused(fuse(kc, ks, FuseParams(mu=0.5, scope="all"), dtype=torch.float16), w_path)
            c_path = w_path
        content, style = caches.load_pair(c_path, s_path, arch)
        downs, _ = projected_downs(content, style, FuseParams(mu=0.5, scope="all"), caches)
        sd_c, sd_s = (comfy.utils.load_torch_file(str(p), safe_load=True) for p in (c_path, s_path))
        missing.clear()
        patches_c, patches_s = comfy_patches(sd_c, key_map), comfy_patches(sd_s, key_map)
        cp = project_patches(patches_c, sd_c, content, downs)
        targets = {_target(k) for k in cp.patches}
        extra = {}
        if config is not None:
            extra = dict(dit_layout(arch, model, left_out), comfy_config=type(config).__name__,
                         dims={k: config.unet_config.get(k) for k in DIMS[FAMILY[arch]]})
            if arch in DITS:
                extra["te_width"] = te_width(clip.cond_stage_model)
        if fmt in ("peft", "ldm-peft") and unmapped:
            extra["unmapped_example"] = example
        print(json.dumps({"arch": arch, "format": fmt, "variant": variant, "detected": _detected(model),
                          "modules": len(rows),
                          "file_modules": len({k.rsplit(".lora_", 1)[0] for k in sd_c if ".lora_" in k}),
                          "host_unmapped": unmapped, "canonical": len(content.modules),
                          "projected": len(cp.projected), "to_project": len(downs), "missed": cp.missed,
                          "not_loaded": missing[:20], "patched_weights": len(targets),
                          "style_weights": len({_target(k) for k in patches_s}),
                          "off_model": sorted(t for t in targets if t not in weights)[:20],
                          "slices": sum(_sliced(k) for k in cp.patches),
                          "sliced_weights": len({k[0] for k in cp.patches if _sliced(k)}),
                          "untiled": _untiled(cp.patches, shapes)[:20],
                          "misshaped": (_misshaped(cp.patches, shapes) + _misshaped(patches_s, shapes))[:20],
                          **extra}), flush=True)


def _detected(model) -> str:
    """NP-LoRA's architecture of the ComfyUI model, or its refusal (``refused: <message>``)."""
    from lib_nplora.comfy.models import arch_of
    from lib_nplora.errors import ArchitectureError

    try:
        return arch_of(model)
    except ArchitectureError as e:
        return f"refused: {e}"


def _misshaped(patches: dict, shapes: dict) -> list[str]:
    """Patches whose factors do not fit what they land on: a LoRA adapter's up must have the rows
    of its weight (or row slice), its down the weight's columns (kernel included); a weight the
    model lacks is counted by ``off_model``."""
    bad = []
    for key, adapter in patches.items():
        name = _target(key)
        if name not in shapes or getattr(adapter, "name", None) != "lora":
            continue
        up, down = adapter.weights[0], adapter.weights[1]
        rows = key[1][2] if _sliced(key) else shapes[name][0]
        cols = 1
        for n in shapes[name][1:]:
            cols *= n
        if up.shape[0] != rows or down[0].numel() != cols or up.shape[1] != down.shape[0]:
            bad.append(f"{name} {tuple(up.shape)}x{tuple(down.shape)} on {shapes[name]}")
    return sorted(bad)


def _sliced(key) -> bool:
    """A patch key on a row slice of a weight: (name, (dim, start, length)[, function]); ComfyUI
    also keys whole weights with a transform as (name, None, function)."""
    return not isinstance(key, str) and key[1] is not None


def _untiled(patches: dict, shapes: dict) -> list[str]:
    """Weights patched on row slices whose slices do not tile all their rows exactly once (a
    part left out, overlapping or out of range); a whole-weight patch next to slices counts too."""
    rows: dict[str, list[tuple[int, int]]] = {}
    for k in patches:
        if _sliced(k):
            dim, start, length = k[1]
            rows.setdefault(k[0], []).append((start, length) if dim == 0 else (-1, 0))
    whole = {_target(k) for k in patches if not _sliced(k)}
    bad = []
    for weight, spans in rows.items():
        spans.sort()
        ends = [0] + [s + n for s, n in spans]
        if weight in whole or [s for s, _ in spans] != ends[:-1] or ends[-1] != shapes[weight][0]:
            bad.append(weight)
    return sorted(bad)


def _target(key) -> str | None:
    """The model weight of a key map value / patch key (a name, or (name, slice[, function]))."""
    return key if key is None or isinstance(key, str) else key[0]

if __name__ == "__main__":
    main()
