"""Stand-ins for Forge's patcher backend and the model object that holds it.

Mirrored:

* Forge2 (lllyasviel/stable-diffusion-webui-forge ``dfdcbab6``), ``backend/patcher/lora.py``:
  ``model_lora_keys_unet(model, key_map={})``, ``model_lora_keys_clip(model, key_map={})`` (kohya
  key -> parameter key; both fill and return ``key_map``), ``load_lora(lora, to_load)`` ->
  ``(patch_dict, remaining_dict)`` with ``("lora", (up, down, alpha, mid, dora_scale))`` values,
  and ``LoraLoader.refresh(lora_patches, ...)``: when the list of patch identifiers changed, restore
  the backed-up weights and merge every identifier's patches (``alpha / rank`` scale, or 1 when
  alpha is None). ``backend/patcher/base.py``: ``ModelPatcher(model, load_device,
  offload_device)`` with ``lora_patches`` keyed by ``(filename, strength_patch, strength_model,
  online_mode)``, ``clone()`` (shallow copy of ``lora_patches``), keyword-only
  ``add_patches(*, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False)``
  (keeps keys the model has; returns them), ``refresh_loras()``. ``backend/patcher/clip.py``:
  ``CLIP`` with ``cond_stage_model``, ``patcher``, ``clone()``, forwarding ``add_patches``.
  ``backend/diffusion_engine/base.py``: ``ForgeObjects(unet, clip, vae, clipvision)`` with
  ``shallow_copy()``; the engine's ``forge_objects``, ``forge_objects_original``,
  ``forge_objects_after_applying_lora``, ``current_lora_hash``.
* old Forge / reForge ``ldm_patched.modules.lora`` and ``model_patcher``: ``load_lora(lora,
  to_load)`` returns the patch dict only; ``ModelPatcher.add_patches(patches, strength_patch=1.0,
  strength_model=1.0)`` appends to ``patches[key]`` (positional, no identifier) and returns the
  accepted keys; weights are merged when the patcher is loaded (``patch_model``) and restored by
  ``unpatch_model``.
* ``modules/processing.py``'s per-batch order (``standin_batch``): start from the originals,
  the builtin ``lora`` (rebuilds ``forge_objects_after_applying_lora`` only when its LoRA set
  changed), ``after_extra_networks_activate``, copy ``after_applying_lora`` into ``forge_objects``,
  conditioning (CLIP patcher loaded), sampling (UNet patcher loaded).
"""

from __future__ import annotations

import torch

from . import torch_tree

# ---------------------------------------------------------------------------- key maps, loader


def _clip_keys(model_keys, key_map):
    for k in model_keys:
        for prefix, loras in (("clip_l.transformer.text_model.encoder.layers.", ("lora_te_", "lora_te1_")),
                              ("clip_g.transformer.text_model.encoder.layers.", ("lora_te2_",))):
            if k.startswith(prefix) and k.endswith(".weight"):
                rest = k[len("clip_l.transformer."):-len(".weight")].replace(".", "_")
                for lora_prefix in loras:
                    key_map[lora_prefix + rest] = k
    return key_map


def model_lora_keys_unet(model, key_map={}):  # noqa: B006 - the real signature
    for k in model.state_dict():
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            key_map["lora_unet_" + k[len("diffusion_model."):-len(".weight")].replace(".", "_")] = k
    return key_map


def model_lora_keys_clip(model, key_map={}):  # noqa: B006 - the real signature
    return _clip_keys(model.state_dict().keys(), key_map)


def _patch_dict(lora, to_load):
    patch_dict, loaded = {}, set()
    for x, target in to_load.items():
        up, down, alpha = f"{x}.lora_up.weight", f"{x}.lora_down.weight", f"{x}.alpha"
        if up in lora:
            a = lora[alpha].item() if alpha in lora else None
            patch_dict[target] = ("lora", (lora[up], lora[down], a, None, None))
            loaded.update({up, down} | ({alpha} if alpha in lora else set()))
    return patch_dict, loaded


def load_lora(lora, to_load):
    patch_dict, loaded = _patch_dict(lora, to_load)
    return patch_dict, {k: v for k, v in lora.items() if k not in loaded}


def merge(weight: torch.Tensor, patches) -> torch.Tensor:
    """``merge_lora_to_weight`` for "lora" patches: W + strength * alpha/rank * up @ down."""
    w = weight.detach().to(torch.float32).clone()
    for strength, value, strength_model, *_ in patches:
        kind, (up, down, alpha, mid, dora) = value
        assert kind == "lora" and mid is None and dora is None
        scale = alpha / down.shape[0] if alpha is not None else 1.0
        delta = up.flatten(1).float() @ down.flatten(1).float()
        w = w * strength_model + strength * scale * delta.reshape(w.shape)
    return w.to(weight.dtype)


# ---------------------------------------------------------------------------- Forge2 patchers


class StandInLoraLoader:
    def __init__(self, model):
        self.model = model
        self.backup = {}
        self.loaded_hash = str([])
        self.merges = 0

    @torch.no_grad()
    def refresh(self, lora_patches, offload_device=torch.device("cpu"), force_refresh=False):
        hashes = str(list(lora_patches.keys()))
        if hashes == self.loaded_hash and not force_refresh:
            return
        all_patches = {}
        for _ident, patches in lora_patches.items():
            for key, current in patches.items():
                all_patches[key] = all_patches.get(key, []) + current
        params = dict(self.model.named_parameters())
        for key, w in self.backup.items():
            params[key].copy_(w)
        self.backup = {}
        for key, current in all_patches.items():
            self.backup[key] = params[key].detach().clone()
            params[key].copy_(merge(params[key], current))
        self.loaded_hash = hashes
        self.merges += 1


class StandInModelPatcher:
    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None, **kwargs):
        self.model = model
        self.lora_patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.load_device = load_device
        self.offload_device = offload_device
        if not hasattr(model, "lora_loader"):
            model.lora_loader = StandInLoraLoader(model)
        self.lora_loader = model.lora_loader

    def clone(self):
        n = StandInModelPatcher(self.model, self.load_device, self.offload_device)
        n.lora_patches = self.lora_patches.copy()
        n.object_patches = self.object_patches.copy()
        return n

    def add_patches(self, *, filename, patches, strength_patch=1.0, strength_model=1.0, online_mode=False):
        ident = (filename, strength_patch, strength_model, online_mode)
        model_keys = {k for k, _ in self.model.named_parameters()}
        accepted, this = set(), {}
        for k, v in patches.items():
            if k in model_keys:
                accepted.add(k)
                this.setdefault(k, []).append([strength_patch, v, strength_model, None, None])
        self.lora_patches[ident] = this
        return accepted

    def refresh_loras(self):
        self.lora_loader.refresh(lora_patches=self.lora_patches, offload_device=self.offload_device)


class StandInCLIP:
    def __init__(self, model_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = model_dict
        self.tokenizer = None
        self.patcher = StandInModelPatcher(self.cond_stage_model)

    def clone(self):
        n = StandInCLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        n.tokenizer = self.tokenizer
        return n

    def add_patches(self, *args, **kwargs):
        return self.patcher.add_patches(*args, **kwargs)


class StandInForgeObjects:
    def __init__(self, unet, clip, vae, clipvision):
        self.unet, self.clip, self.vae, self.clipvision = unet, clip, vae, clipvision

    def shallow_copy(self):
        return StandInForgeObjects(self.unet, self.clip, self.vae, self.clipvision)


class StandInKModel(torch.nn.Module):
    """The UNet patcher's model: ``diffusion_model`` plus Forge's ``storage_dtype``."""

    def __init__(self, diffusion_model):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.storage_dtype = torch.float32


class StandInForgeModel:
    """A loaded Forge model (SDXL layout: UNet + clip_l/clip_g in HF layout)."""

    def __init__(self, unet_rows, te1_rows, te2_rows=(), patcher=StandInModelPatcher, clip=StandInCLIP):
        self.is_sdxl, self.is_sd1, self.is_sd2, self.is_sd3 = True, False, False, False
        dm = torch_tree.tree(unet_rows, lambda n: n.split(".", 1)[1])
        te = torch.nn.Module()
        for i, row in enumerate(te1_rows):
            torch_tree.put(te, "clip_l.transformer." + _hf(row["name"]),
                           torch_tree.layer("linear", row["shape"], 500 + i))
        for i, row in enumerate(te2_rows):
            torch_tree.put(te, "clip_g.transformer." + _hf(row["name"]),
                           torch_tree.layer("linear", row["shape"], 700 + i))
        unet = patcher(StandInKModel(dm))
        self.forge_objects = StandInForgeObjects(unet, clip(te), None, None)
        self.forge_objects_original = self.forge_objects.shallow_copy()
        self.forge_objects_after_applying_lora = self.forge_objects.shallow_copy()
        self.current_lora_hash = str([])

    def weights(self) -> dict[str, torch.Tensor]:
        out = {"unet." + k: v.detach().clone() for k, v in self.forge_objects_original.unet.model.named_parameters()}
        out.update({"te." + k: v.detach().clone()
                    for k, v in self.forge_objects_original.clip.cond_stage_model.named_parameters()})
        return out


def _hf(canonical: str) -> str:
    path = canonical.split(".", 1)[1]
    return path if path.startswith("text_model.") else "text_model." + path


def standin_builtin_lora(sd, loras: list[tuple[str, dict]]):
    """The builtin ``load_networks``: early return when the set is unchanged, else rebuild
    ``forge_objects_after_applying_lora`` from the originals with each (filename, kohya dict)."""
    h = str([name for name, _ in loras])
    if sd.current_lora_hash == h:
        return
    sd.current_lora_hash = h
    unet, clip = sd.forge_objects_original.unet, sd.forge_objects_original.clip
    for name, lora_sd in loras:
        km = model_lora_keys_unet(unet.model, {})
        km = model_lora_keys_clip(clip.cond_stage_model, km)
        patches, _ = load_lora(lora_sd, km)
        unet, clip = unet.clone(), clip.clone()
        unet.add_patches(filename=name, patches=patches)
        clip.add_patches(filename=name, patches=patches)
    sd.forge_objects.unet, sd.forge_objects.clip = unet, clip
    sd.forge_objects_after_applying_lora = sd.forge_objects.shallow_copy()


def standin_batch(sd, hook, loras=(), builtin=None):
    """One batch iteration of Forge's processing, with ``hook()`` as after_extra_networks_activate;
    the weights then are what sampling would use."""
    sd.forge_objects = sd.forge_objects_original.shallow_copy()
    (builtin or standin_builtin_lora)(sd, list(loras))
    hook()
    sd.forge_objects = sd.forge_objects_after_applying_lora.shallow_copy()
    load(sd.forge_objects.clip)   # conditioning
    load(sd.forge_objects.unet)   # sampling


def load(patcher_or_clip):
    """``memory_management.load_model_gpu``: the patcher's weights are refreshed on load."""
    patcher = getattr(patcher_or_clip, "patcher", patcher_or_clip)
    if hasattr(patcher, "refresh_loras"):
        patcher.refresh_loras()
    else:
        patcher.patch_model()


# ---------------------------------------------------------------------------- ldm_patched


def ldm_load_lora(lora, to_load):
    """reForge's ``load_lora``: the patch dict only."""
    return _patch_dict(lora, to_load)[0]


class StandInLdmLoraModule:
    """``ldm_patched.modules.lora`` (what the forge_ldm adapter imports)."""

    model_lora_keys_unet = staticmethod(model_lora_keys_unet)
    model_lora_keys_clip = staticmethod(model_lora_keys_clip)
    load_lora = staticmethod(ldm_load_lora)


class StandInLdmModelPatcher:
    """``ldm_patched.modules.model_patcher.ModelPatcher``: appended patches, merged on load."""

    _merged: dict = {}  # model id -> the patcher whose patches are merged (one model loaded at a time)

    def __init__(self, model, load_device=None, offload_device=None, size=0, current_device=None,
                 weight_inplace_update=False):
        self.model = model
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}

    def clone(self):
        n = StandInLdmModelPatcher(self.model)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.object_patches = self.object_patches.copy()
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        keys = dict(self.model.state_dict())
        p = set()
        for k, v in patches.items():
            if k in keys:
                p.add(k)
                self.patches.setdefault(k, []).append((strength_patch, v, strength_model, None, None))
        return list(p)

    @torch.no_grad()
    def patch_model(self):
        current = StandInLdmModelPatcher._merged.get(id(self.model))
        if current is self:
            return
        if current is not None:
            current.unpatch_model()
        params = dict(self.model.named_parameters())
        for key, plist in self.patches.items():
            self.backup[key] = params[key].detach().clone()
            params[key].copy_(merge(params[key], plist))
        StandInLdmModelPatcher._merged[id(self.model)] = self

    @torch.no_grad()
    def unpatch_model(self):
        params = dict(self.model.named_parameters())
        for key, w in self.backup.items():
            params[key].copy_(w)
        self.backup = {}
        StandInLdmModelPatcher._merged.pop(id(self.model), None)


class StandInLdmCLIP:
    def __init__(self, model_dict=None, no_init=False):
        if no_init:
            return
        self.cond_stage_model = model_dict
        self.patcher = StandInLdmModelPatcher(self.cond_stage_model)

    def clone(self):
        n = StandInLdmCLIP(no_init=True)
        n.patcher = self.patcher.clone()
        n.cond_stage_model = self.cond_stage_model
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        return self.patcher.add_patches(patches, strength_patch, strength_model)


def standin_ldm_builtin_lora(sd, loras: list[tuple[str, dict]]):
    """reForge's ``load_networks`` (same early return; ldm patchers)."""
    h = str([name for name, _ in loras])
    if sd.current_lora_hash == h:
        return
    sd.current_lora_hash = h
    unet, clip = sd.forge_objects_original.unet, sd.forge_objects_original.clip
    for _name, lora_sd in loras:
        km = model_lora_keys_unet(unet.model, {})
        km = model_lora_keys_clip(clip.cond_stage_model, km)
        patches = ldm_load_lora(lora_sd, km)
        unet, clip = unet.clone(), clip.clone()
        unet.add_patches(patches, 1.0)
        clip.add_patches(patches, 1.0)
    sd.forge_objects.unet, sd.forge_objects.clip = unet, clip
    sd.forge_objects_after_applying_lora = sd.forge_objects.shallow_copy()


# ---------------------------------------------------------------------------- GGUF storage
#
# Mirrored: Forge Neo's ``modules_forge/packages/gguf/quants.py`` at 283cb2c4 and Forge main's
# ``packages_3rdparty/gguf/quants.py``. Every quant type is a class with ``block_size``,
# ``type_size`` and the classmethod ``quantize_blocks_pytorch``: ``(blocks, block_size, type_size,
# parent)`` in Neo (``parent``: the ParameterGGUF, read for ``computation_dtype``), ``(blocks,
# block_size, type_size)`` in Forge main; in both the base class's raises
# ``NotImplementedError("Low bit LoRA for this data type is not implemented yet…")`` and only Q4_0,
# Q5_0 and Q8_0 define their own. The GGUF parameter carries its type as ``gguf_cls``;
# ``LoraLoader.refresh`` offline dequantizes, merges, then calls ``gguf_cls.quantize_pytorch``
# (-> ``quantize_blocks_pytorch``).


class StandInGGUFQuant:
    block_size, type_size = 32, 34

    @classmethod
    def quantize_blocks_pytorch(cls, blocks, block_size, type_size, parent):
        raise NotImplementedError("Low bit LoRA for this data type is not implemented yet.")


class StandInQ8_0(StandInGGUFQuant):
    """A type with a PyTorch quantizer (the bytes are not GGML's: only that it returns matters)."""

    @classmethod
    def quantize_blocks_pytorch(cls, blocks, block_size, type_size, parent):
        return torch.zeros(blocks.shape[0], type_size, dtype=torch.uint8)


class StandInQ4_K(StandInGGUFQuant):
    block_size, type_size = 256, 144


class StandInForgeMainGGUFQuant:
    """Forge main's signature (no ``parent``)."""

    block_size, type_size = 32, 34

    @classmethod
    def quantize_blocks_pytorch(cls, blocks, block_size, type_size):
        raise NotImplementedError("Low bit LoRA for this data type is not implemented yet.")


class StandInForgeMainQ8_0(StandInForgeMainGGUFQuant):
    @classmethod
    def quantize_blocks_pytorch(cls, blocks, block_size, type_size):
        return torch.zeros(blocks.shape[0], type_size, dtype=torch.uint8)


class StandInForgeMainQ6_K(StandInForgeMainGGUFQuant):
    block_size, type_size = 256, 210


def as_gguf(module: torch.nn.Module, key: str, gguf_cls) -> None:
    """Mark ``module``'s parameter at ``key`` as stored in ``gguf_cls`` (Neo's ``ParameterGGUF``
    keeps its type in ``gguf_cls``; the values stay float so the stand-in loader can merge them)."""
    *path, name = key.split(".")
    owner = module
    for part in path:
        owner = getattr(owner, part)
    getattr(owner, name).gguf_cls = gguf_cls
