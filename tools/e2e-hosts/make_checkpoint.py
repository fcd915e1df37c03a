"""Write an SD1.5 or SDXL checkpoint of random weights in the real checkpoint layout, from the host's own model code.

Run from the WebUI folder with its venv Python (prepare.py does)::

    venv/bin/python /path/to/make_checkpoint.py OUT.safetensors [--seed 0] [--model sd15|sdxl]

* A1111: instantiates the host's LDM model from its own ``configs/v1-inference.yaml`` with
  ``repositories/stable-diffusion-stability-ai`` (``ldm.models.diffusion.ddpm.LatentDiffusion``: UNet,
  AutoencoderKL, FrozenCLIPEmbedder), so the keys are exactly the ``state_dict()`` of the model A1111 loads
  a checkpoint into. The CLIP text model is built from the config in the HF cache (make_clip_files.py),
  never downloaded.
* Forge Classic (``ldm_patched``): see ``ldm_patched_model``.
* Forge main and Forge Neo: builds the three parts with Forge's own classes, as its loader does (``backend/loader.py``):
  ``IntegratedUNet2DConditionModel`` from the SD1.5 unet config that Forge's huggingface_guess derives from
  Forge's shipped ``backend/huggingface/runwayml/stable-diffusion-v1-5/unet/config.json``,
  ``IntegratedAutoencoderKL`` from the shipped vae config, ``CLIPTextModel`` from the shipped text encoder
  config; saved under the SD1 checkpoint prefixes (``model.diffusion_model.``, ``first_stage_model.``,
  ``cond_stage_model.transformer.``).

Weights are PyTorch's default initialisation from a fixed seed, except that the layers the model code
zero-initialises (the UNet's output convolution and residual/attention output projections) get small
random values: with them at zero the UNet's output would not depend on its input or on any LoRA.
Floating tensors are stored in float16 (as the common SD1.5 files are).

SDXL (``--model sdxl``; Forge Neo and Forge Classic): see ``neo_sdxl`` and ``ldm_patched_sdxl``. In
float32 the model would take ~10 GiB, so it is built with its parameters on the meta device and
each layer is materialised, initialised (PyTorch's default initialisation of its kind), cast to
float16 and written one at a time (the UNet) or kept in float16 (text encoders, VAE); the file is
written tensor by tensor in the safetensors format (``safetensors.save_file`` would first copy every
tensor into bytes), then read back with ``safetensors.safe_open`` and its keys and shapes run
through the host's own detection and split (``check_neo_sdxl``, ``check_ldm_patched_sdxl``): it
must be taken for SDXL and every key must land in a component with its shape.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

import torch


def a1111_model() -> torch.nn.Module:
    root = Path.cwd()
    sys.path[:0] = [str(root), str(root / "repositories" / "stable-diffusion-stability-ai")]
    import transformers
    from omegaconf import OmegaConf

    # the text model's weights come from the checkpoint: build it from the (cached) config only
    def from_config(cls, name, *args, **kwargs):
        return cls(transformers.CLIPTextConfig.from_pretrained(name, local_files_only=True))

    transformers.CLIPTextModel.from_pretrained = classmethod(from_config)
    from ldm.util import instantiate_from_config

    config = OmegaConf.load(root / "configs" / "v1-inference.yaml")
    return instantiate_from_config(config.model)


def forge_model() -> dict[str, torch.Tensor]:
    root = Path.cwd()
    # the paths Forge itself adds (modules/paths.py, modules_forge/initialization.py): Forge main
    # clones huggingface_guess into repositories/, Forge Neo ships it in modules_forge/packages/
    sys.path[:0] = [str(root), str(root / "repositories" / "huggingface_guess"), str(root / "packages_3rdparty"),
                    str(root / "modules_forge" / "packages")]
    sys.argv[1:] = ["--always-cpu"]  # backend.args parses the command line when imported
    from transformers import CLIPTextConfig, CLIPTextModel

    import huggingface_guess.detection as detection
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    repo = root / "backend" / "huggingface" / "runwayml" / "stable-diffusion-v1-5"
    unet_config = forge_unet_config(detection, repo / "unet", "Forge's SD1.5 unet/config.json")
    unet = IntegratedUNet2DConditionModel.from_config(unet_config)
    vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(repo / "vae"))
    clip = CLIPTextModel(CLIPTextConfig.from_pretrained(repo / "text_encoder"))
    for m in (unet, vae, clip):
        fill_zero_weights(m)
    out = {}
    for prefix, m in (("model.diffusion_model.", unet), ("first_stage_model.", vae),
                      ("cond_stage_model.transformer.", clip)):
        out.update({prefix + k: v for k, v in m.state_dict().items()})
    return out


def ldm_patched_model() -> dict[str, torch.Tensor]:
    """Forge Classic (``ldm_patched``, no ``backend/``): its own UNet config from its shipped
    ``configs/v1-inference.yaml`` through ``model_detection.convert_config`` and
    ``model_config_from_unet_config`` (SD15), ``sd1_clip.SD1ClipModel`` from its shipped
    ``sd1_clip_config.json``, its ``VAE`` from the yaml's first-stage config; keys from the
    model config's own ``state_dict_for_saving``."""
    from types import SimpleNamespace

    root = Path.cwd()
    sys.path[:0] = [str(root)]
    sys.argv[1:] = []  # modules.shared parses the command line when imported
    from ldm_patched.modules import args_parser

    args_parser.args.always_cpu = True  # Classic sets it from its command line; its parser reads []
    from modules import shared

    # ldm_patched reads these WebUI settings at import (the defaults of modules/shared_options.py)
    shared.opts = SimpleNamespace(sd_vae_tiled_ops=False, sd_vae_tiled_size=512, tile_overlap=64, tile_size=512,
                                  prefer_vae_precision_float16=False, fp8_storage=False,
                                  extra_networks_patch_inplace=False)
    from omegaconf import OmegaConf
    from ldm_patched.modules import model_detection, sd1_clip, sd as ldm_sd

    params = OmegaConf.to_container(OmegaConf.load(root / "configs" / "v1-inference.yaml").model.params)
    unet = dict(params["unet_config"]["params"])
    unet.update(use_checkpoint=False, legacy=False, adm_in_channels=None, dtype=torch.float32,
                use_linear_in_transformer=unet.get("use_linear_in_transformer", False),
                use_temporal_attention=False, use_temporal_resblock=False)
    config = model_detection.model_config_from_unet_config(model_detection.convert_config(unet))
    if config is None or type(config).__name__ != "SD15":
        sys.exit(f"ldm_patched took configs/v1-inference.yaml for {type(config).__name__}, not SD15")
    model = config.get_model({}, "")
    clip = sd1_clip.SD1ClipModel()
    # its own first-stage config (given whole: from an empty state dict ldm_patched would guess the
    # x4 upscaler's 3-level VAE, and images would come out at half size)
    first = params["first_stage_config"]["params"]
    vae = ldm_sd.VAE(sd={}, config={"params": {"embed_dim": first["embed_dim"], "ddconfig": first["ddconfig"]}})
    for m in (model.diffusion_model, clip, vae.first_stage_model):
        torch_default_init(m)  # ldm_patched's layers skip initialisation (its ops.disable_weight_init)
        fill_zero_weights(m)
    return model.state_dict_for_saving(clip.state_dict(), vae.first_stage_model.state_dict())


def torch_default_init(model: torch.nn.Module) -> None:
    """PyTorch's own default initialisation for every layer, also where the model code's layer
    classes override ``reset_parameters`` to do nothing (ComfyUI-style ``disable_weight_init``
    ops: their weights would stay uninitialised memory); other parameters get N(0, 0.02)."""
    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.GroupNorm,
             torch.nn.LayerNorm, torch.nn.Embedding)
    done = set()
    with torch.no_grad():
        for m in model.modules():
            base = next((k for k in kinds if isinstance(m, k)), None)
            if base is not None:
                base.reset_parameters(m)
                done.update(id(p) for p in m.parameters(recurse=False))
        for _, p in model.named_parameters():
            if id(p) not in done and p.is_floating_point():
                p.normal_(0.0, 0.02)


def fill_zero_weights(model: torch.nn.Module) -> int:
    n = 0
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() >= 2 and not bool(p.any()):
                p.normal_(0.0, 0.02)
                n += 1
    return n


# ------------------------------------------------------------------------------------------ SDXL
LAYER_KINDS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.GroupNorm,
               torch.nn.LayerNorm, torch.nn.Embedding)


@contextlib.contextmanager
def parameters_on_meta():
    """Every parameter registered inside goes to the meta device (buffers stay real), as
    ``accelerate.init_empty_weights()`` does; Forge Classic's venv has no accelerate."""
    old = torch.nn.Module.register_parameter

    def register(module, name, param):
        old(module, name, param)
        if param is not None and param.device.type != "meta":
            kind = type(module._parameters[name])
            module._parameters[name] = kind(module._parameters[name].to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = register
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = old


def forge_unet_config(detection, unet_dir: Path, what: str) -> dict:
    """Forge's UNet config for a shipped diffusers ``unet/config.json``, derived as its loader does:
    huggingface_guess's ``unet_config_from_diffusers_unet`` on the diffusers UNet's shapes (built on
    the meta device), without the dtype entry."""
    from diffusers import UNet2DConditionModel

    with parameters_on_meta():
        shapes = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(unet_dir)).state_dict()
    config = detection.unet_config_from_diffusers_unet(shapes)
    if config is None:
        sys.exit(f"huggingface_guess found no unet config for {what}")
    return {k: v for k, v in config.items() if k != "dtype"}


def init_layer(m: torch.nn.Module) -> None:
    """Materialise ``m``'s own parameters on the CPU (float32) and give them PyTorch's default
    initialisation of the layer's kind (also for layer classes whose ``reset_parameters`` does
    nothing, ldm_patched's ``disable_weight_init``); other parameters get N(0, 0.02)."""
    own = dict(m.named_parameters(recurse=False))
    if not own:
        return
    for name, p in own.items():  # float32 on the CPU, then initialised
        m._parameters[name] = type(p)(torch.empty(p.shape, dtype=torch.float32), requires_grad=False)
    base = next((k for k in LAYER_KINDS if isinstance(m, k)), None)
    with torch.no_grad():
        if base is not None:
            base.reset_parameters(m)
        else:
            for p in m.parameters(recurse=False):
                p.normal_(0.0, 0.02)


def materialise_fp16(model: torch.nn.Module) -> torch.nn.Module:
    """Every layer of a meta-built model, initialised one at a time and kept in float16."""
    for m in model.modules():
        init_layer(m)
        for name, p in list(m._parameters.items()):
            if p is not None and p.is_floating_point():
                m._parameters[name] = type(p)(p.detach().to(torch.float16), requires_grad=False)
    return model


def layer_stream(model: torch.nn.Module, prefix: str):
    """(keys in order, generator of (key, float16 tensor)): the model's parameters one layer at a
    time, each materialised, initialised, cast and put back on the meta device once yielded."""
    order = []
    for mname, m in model.named_modules():
        for pname in m._parameters:
            if m._parameters[pname] is not None:
                order.append(prefix + (f"{mname}.{pname}" if mname else pname))
    buffers = [k for k, v in model.state_dict().items() if prefix + k not in set(order)]
    if buffers:
        sys.exit(f"the streamed model has state-dict entries that are not parameters: {buffers[:3]}")

    def gen():
        for mname, m in model.named_modules():
            if not any(p is not None for p in m._parameters.values()):
                continue
            init_layer(m)
            for pname, p in m._parameters.items():
                if p is not None:
                    yield prefix + (f"{mname}.{pname}" if mname else pname), p.detach().to(torch.float16)
            for pname, p in list(m._parameters.items()):
                if p is not None:
                    m._parameters[pname] = type(p)(p.detach().to("meta"), requires_grad=False)

    return order, gen()


ST_DTYPES = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16", torch.int64: "I64",
             torch.int32: "I32"}


def write_safetensors(path: Path, shapes: dict, tensors, metadata: dict) -> None:
    """Write the safetensors format tensor by tensor: ``shapes`` key -> (shape, dtype) in file
    order, ``tensors`` yields (key, tensor) in the same order. To a temporary name, then renamed."""
    header, offset = {"__metadata__": metadata}, 0
    for key, (shape, dtype) in shapes.items():
        n = dtype.itemsize
        for d in shape:
            n *= d
        header[key] = {"dtype": ST_DTYPES[dtype], "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    tmp = path.with_name(path.name + f".{os.getpid()}.part")
    keys = iter(shapes)
    try:
        with open(tmp, "wb") as f:
            f.write(len(raw).to_bytes(8, "little"))
            f.write(raw)
            for key, t in tensors:
                want = next(keys)
                if key != want or tuple(t.shape) != tuple(shapes[key][0]) or t.dtype != shapes[key][1]:
                    raise RuntimeError(f"tensor {key} {tuple(t.shape)} {t.dtype} out of plan (expected {want})")
                f.write(t.contiguous().view(torch.uint8).numpy().tobytes() if t.dim() else
                        t.reshape(1).view(torch.uint8).numpy().tobytes())
            if next(keys, None) is not None:
                raise RuntimeError("fewer tensors than planned")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_sdxl(out: Path, saved: dict, unet: torch.nn.Module, unet_prefix: str, seed: int) -> int:
    """``saved``: the host's checkpoint dict, UNet entries on the meta device; those are streamed
    from ``unet`` layer by layer, the rest (float16 already) written as they are."""
    order, stream = layer_stream(unet, unet_prefix)
    meta = {k for k, v in saved.items() if v.device.type == "meta"}
    if meta != set(order):
        sys.exit(f"the host's saved UNet keys differ from its model's: {sorted(meta ^ set(order))[:5]}")
    rest = [k for k in saved if k not in meta]
    shapes = {k: (tuple(saved[k].shape), torch.float16) for k in order}
    for k in rest:
        v = saved[k]
        shapes[k] = (tuple(v.shape), torch.float16 if v.is_floating_point() else v.dtype)

    def tensors():
        yield from stream
        for k in rest:
            v = saved[k]
            yield k, (v.to(torch.float16) if v.is_floating_point() else v)

    write_safetensors(out, shapes, tensors(), {"nplora_e2e": "random SDXL weights, seed %d" % seed})
    return len(shapes)


def neo_sdxl():
    """Forge Neo: its own ``backend/`` classes as its loader builds them for SDXL
    (``backend/loader.py``): ``IntegratedUNet2DConditionModel`` from the unet config its
    huggingface_guess derives from the shipped ``stabilityai/stable-diffusion-xl-base-1.0/unet``
    config, ``IntegratedAutoencoderKL`` from the shipped vae config, ``IntegratedCLIP`` with
    ``CLIPTextModel`` from ``text_encoder`` (CLIP-L) and ``text_encoder_2`` (CLIP-G, with its text
    projection); the CLIP keys put in the checkpoint layout by huggingface_guess's own
    ``SDXL.process_clip_state_dict_for_saving``. Returns (saved dict, unet, unet prefix)."""
    root = Path.cwd()
    sys.path[:0] = [str(root), str(root / "modules_forge" / "packages")]
    sys.argv[1:] = ["--always-cpu"]
    from transformers import CLIPTextConfig, CLIPTextModel

    import huggingface_guess.detection as detection
    from huggingface_guess import model_list
    from backend.nn.clip import IntegratedCLIP
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    repo = root / "backend" / "huggingface" / "stabilityai" / "stable-diffusion-xl-base-1.0"
    unet_config = forge_unet_config(detection, repo / "unet", "Neo's SDXL unet/config.json")
    guess = detection.model_config_from_unet_config(unet_config)
    if type(guess).__name__ != "SDXL":
        sys.exit(f"huggingface_guess took the shipped SDXL unet config for {type(guess).__name__}")
    with parameters_on_meta():
        unet = IntegratedUNet2DConditionModel.from_config(unet_config)
        vae = IntegratedAutoencoderKL.from_config(IntegratedAutoencoderKL.load_config(repo / "vae"))
        clip_l = IntegratedCLIP(CLIPTextModel, CLIPTextConfig.from_pretrained(repo / "text_encoder"))
        clip_g = IntegratedCLIP(CLIPTextModel, CLIPTextConfig.from_pretrained(repo / "text_encoder_2"),
                                add_text_projection=True)
    clip = {}
    for name, m in (("clip_l", clip_l), ("clip_g", clip_g)):
        clip.update({f"{name}.{k}": v for k, v in materialise_fp16(m).state_dict().items()})
    saved = {"model.diffusion_model." + k: v for k, v in unet.state_dict().items()}
    saved.update({"first_stage_model." + k: v for k, v in materialise_fp16(vae).state_dict().items()})
    saved.update(guess.process_clip_state_dict_for_saving(clip))
    return saved, unet, "model.diffusion_model."


def ldm_patched_sdxl():
    """Forge Classic: the UNet config Classic itself builds its SDXL UNet from when it loads a
    checkpoint (``model_detection.detect_unet_config``: its fixed entries, ``image_size`` 32
    included, and the architecture read off the weights), here with the architecture from its own
    ``configs/sd_xl_base.yaml`` through ``model_detection.convert_config``; the model config from
    ``model_config_from_unet_config`` (SDXL, which adds ``num_heads``/``num_head_channels`` as
    its ``unet_extra_config``); its ``sdxl_clip.SDXLClipModel`` (CLIP-L + CLIP-G), its ``VAE`` from
    the yaml's first-stage config; keys from the model config's own ``state_dict_for_saving``.
    ``check_ldm_patched_sdxl`` reads the config back off the written file with
    ``detect_unet_config`` and requires it to be this one. Returns (saved dict, unet, unet
    prefix, unet config)."""
    params, model_detection, sdxl_clip, ldm_sd = _ldm_patched_setup("sd_xl_base.yaml")
    yaml_unet = model_detection.convert_config(dict(params["network_config"]["params"]))
    unet = {k: yaml_unet[k] for k in LDM_PATCHED_ARCH_KEYS}
    # detect_unet_config's fixed entries (a non-video SDXL UNet)
    unet.update(use_checkpoint=False, image_size=32, use_spatial_transformer=True, legacy=False,
                dtype=torch.float32, use_temporal_resblock=False, use_temporal_attention=False)
    config = model_detection.model_config_from_unet_config(unet)
    if config is None or type(config).__name__ != "SDXL":
        sys.exit(f"ldm_patched took configs/sd_xl_base.yaml for {type(config).__name__}, not SDXL")
    first = params["first_stage_config"]["params"]
    with parameters_on_meta():
        model = config.get_model({}, "")
        clip = sdxl_clip.SDXLClipModel()
        vae = ldm_sd.VAE(sd={}, config={"params": {"embed_dim": first["embed_dim"], "ddconfig": first["ddconfig"]}})
    clip_sd = materialise_fp16(clip).state_dict()
    vae_sd = materialise_fp16(vae.first_stage_model).state_dict()
    saved = model.state_dict_for_saving(clip_sd, vae_sd)
    # CLIP-L's pooled projection (identity) and logit scale: Classic saves them under names its own
    # process_clip_state_dict never maps back (it takes only conditioner.embedders.0.transformer.),
    # and SDXL checkpoints do not carry them; CLIP-L keeps its defaults on load
    for k in ("conditioner.embedders.0.text_projection", "conditioner.embedders.0.logit_scale"):
        saved.pop(k, None)
    return saved, model.diffusion_model, "model.diffusion_model.", dict(config.unet_config)


# the entries of ldm_patched's detect_unet_config that it reads off the weights
LDM_PATCHED_ARCH_KEYS = ("num_classes", "adm_in_channels", "in_channels", "out_channels", "model_channels",
                         "num_res_blocks", "transformer_depth", "transformer_depth_output", "channel_mult",
                         "transformer_depth_middle", "use_linear_in_transformer", "context_dim")


def _ldm_patched_setup(yaml_name: str):
    from types import SimpleNamespace

    root = Path.cwd()
    sys.path[:0] = [str(root)]
    sys.argv[1:] = []
    from ldm_patched.modules import args_parser

    args_parser.args.always_cpu = True
    from modules import shared

    shared.opts = SimpleNamespace(sd_vae_tiled_ops=False, sd_vae_tiled_size=512, tile_overlap=64, tile_size=512,
                                  prefer_vae_precision_float16=False, fp8_storage=False,
                                  extra_networks_patch_inplace=False)
    from omegaconf import OmegaConf
    from ldm_patched.modules import model_detection, sdxl_clip, sd as ldm_sd

    params = OmegaConf.to_container(OmegaConf.load(root / "configs" / yaml_name).model.params)
    return params, model_detection, sdxl_clip, ldm_sd


def meta_state_dict(path: Path) -> dict:
    """The file's keys and shapes, read back with safetensors, as meta tensors."""
    from safetensors import safe_open

    out = {}
    with safe_open(str(path), framework="pt") as f:
        for k in f.keys():
            s = f.get_slice(k)
            dtype = {"F16": torch.float16, "F32": torch.float32, "I64": torch.int64, "I32": torch.int32,
                     "BF16": torch.bfloat16}[s.get_dtype()]
            out[k] = torch.empty(s.get_shape(), dtype=dtype, device="meta")
    return out


def compare(part: str, got: dict, want: dict, ignore=()) -> None:
    missing = [k for k in want if k not in got and not any(i in k for i in ignore)]
    extra = [k for k in got if k not in want and not any(i in k for i in ignore)]
    wrong = [k for k in got if k in want and tuple(got[k].shape) != tuple(want[k].shape)]
    if missing or extra or wrong:
        sys.exit(f"{part}: the host's loader would not load this file: missing {missing[:3]}, "
                 f"unexpected {extra[:3]}, wrong shapes {wrong[:3]}")


def check_neo_sdxl(path: Path, saved: dict, unet: torch.nn.Module) -> str:
    """Neo's ``split_state_dict`` steps (``backend/loader.py``) on the file's keys: its guess must
    be SDXL, and the unet, vae, text_encoder and text_encoder_2 parts must have the keys and
    shapes of the models built for them."""
    import huggingface_guess
    from backend.loader import preprocess_state_dict
    from backend.state_dict import try_filter_state_dict

    sd = preprocess_state_dict(meta_state_dict(path))
    guess = huggingface_guess.guess(sd)
    if type(guess).__name__ != "SDXL":
        sys.exit(f"Neo's huggingface_guess takes the file for {type(guess).__name__}, not SDXL")
    targets = guess.clip_target(sd)
    sd = guess.process_vae_state_dict(sd)
    parts = {"unet": try_filter_state_dict(sd, guess.unet_key_prefix), "vae": try_filter_state_dict(sd, guess.vae_key_prefix)}
    sd = guess.process_clip_state_dict(sd)
    for k, v in targets.items():
        parts[v] = try_filter_state_dict(sd, [k + "."])
    compare("unet", parts["unet"], unet.state_dict())
    want_vae = {k[len("first_stage_model."):]: v for k, v in saved.items() if k.startswith("first_stage_model.")}
    compare("vae", parts["vae"], want_vae)
    from transformers import CLIPTextConfig, CLIPTextModel
    from backend.nn.clip import IntegratedCLIP

    repo = Path.cwd() / "backend" / "huggingface" / "stabilityai" / "stable-diffusion-xl-base-1.0"
    with parameters_on_meta():
        for comp, proj in (("text_encoder", False), ("text_encoder_2", True)):
            m = IntegratedCLIP(CLIPTextModel, CLIPTextConfig.from_pretrained(repo / comp), add_text_projection=proj)
            compare(comp, parts[comp], m.state_dict(),
                    ignore=("transformer.text_projection.weight", "position_ids", "logit_scale"))
    left = [k for k in sd if not any(k.startswith(p) for p in ("clip_l.", "clip_g."))]
    return f"Neo takes it for SDXL: {', '.join(f'{k} {len(v)}' for k, v in parts.items())} tensors" + \
        (f", left over {left[:3]}" if left else "")


def check_ldm_patched_sdxl(path: Path, unet: torch.nn.Module, built_config: dict) -> str:
    """Classic's ``load_checkpoint_guess_config`` steps (``modules_forge/forge_loader.py``) on the
    file's keys: ``model_config_from_unet`` must give SDXL, ``detect_unet_config`` the config the
    UNet was built from (``built_config``), the UNet, VAE and CLIP parts the keys and shapes of the
    models built for them."""
    from ldm_patched.modules import model_detection, sdxl_clip, utils

    sd = meta_state_dict(path)
    config = model_detection.model_config_from_unet(sd, "model.diffusion_model.", torch.float32)
    if config is None or type(config).__name__ != "SDXL":
        sys.exit(f"Classic's model_detection takes the file for {type(config).__name__}, not SDXL")
    detected = model_detection.detect_unet_config(sd, "model.diffusion_model.", torch.float32)
    built = {k: v for k, v in built_config.items() if k not in config.unet_extra_config}
    if detected != built:
        diff = {k: (detected.get(k), built.get(k)) for k in set(detected) | set(built) if detected.get(k) != built.get(k)}
        sys.exit(f"Classic reads another UNet config off the file than the one it was built from: {diff}")
    got_unet = {k[len("model.diffusion_model."):]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}
    compare("unet", got_unet, unet.state_dict())
    vae_sd = config.process_vae_state_dict(utils.state_dict_prefix_replace(sd, {"first_stage_model.": ""},
                                                                           filter_keys=True))
    clip_sd = {k[len("cond_stage_model."):]: v for k, v in config.process_clip_state_dict(dict(sd)).items()
               if k.startswith("cond_stage_model.")}
    with parameters_on_meta():
        clip = sdxl_clip.SDXLClipModel()
    compare("clip", clip_sd, clip.state_dict(), ignore=("position_ids", "clip_l.text_projection", "clip_l.logit_scale"))
    return f"Classic takes it for SDXL: unet {len(got_unet)}, vae {len(vae_sd)}, clip {len(clip_sd)} tensors"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", choices=("sd15", "sdxl"), default="sd15")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    forge = Path("modules_forge").is_dir()
    if a.model == "sdxl":
        if not forge:
            sys.exit("--model sdxl is made for Forge Neo and Forge Classic only")
        classic = not Path("backend").is_dir()
        with torch.no_grad():
            saved, unet, prefix, *built = ldm_patched_sdxl() if classic else neo_sdxl()
            a.out.parent.mkdir(parents=True, exist_ok=True)
            n = write_sdxl(a.out, saved, unet, prefix, a.seed)
            print(f"wrote {a.out}: {n} tensors, {a.out.stat().st_size / 2**30:.2f} GiB "
                  f"({'forge ldm_patched' if classic else 'forge backend'} model code)")
            print(check_ldm_patched_sdxl(a.out, unet, *built) if classic else check_neo_sdxl(a.out, saved, unet))
        return
    if forge and not Path("backend").is_dir():  # Forge Classic: ldm_patched backend
        sd = ldm_patched_model()
    elif forge:
        sd = forge_model()
    else:
        model = a1111_model()
        fill_zero_weights(model)
        sd = model.state_dict()
    from safetensors.torch import save_file

    tensors = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = a.out.with_name(a.out.name + f".{os.getpid()}.part")
    save_file(tensors, str(tmp), metadata={"nplora_e2e": "random SD1.5 weights, seed %d" % a.seed})
    os.replace(tmp, a.out)
    n = sum(v.numel() for v in tensors.values())
    code = ("forge ldm_patched" if not Path("backend").is_dir() else "forge backend") if forge else "a1111"
    print(f"wrote {a.out}: {len(tensors)} tensors, {n / 1e6:.0f} M values ({code} model code)")


if __name__ == "__main__":
    main()
