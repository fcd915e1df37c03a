"""Write an SD1.5 checkpoint of random weights in the real checkpoint layout, from the host's own model code.

Run from the WebUI folder with its venv Python (prepare.py does)::

    venv/bin/python /path/to/make_checkpoint.py OUT.safetensors [--seed 0]

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
"""

from __future__ import annotations

import argparse
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
    from accelerate import init_empty_weights
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import huggingface_guess.detection as detection
    from backend.nn.unet import IntegratedUNet2DConditionModel
    from backend.nn.vae import IntegratedAutoencoderKL

    repo = root / "backend" / "huggingface" / "runwayml" / "stable-diffusion-v1-5"
    with init_empty_weights():  # only the shapes, to let Forge derive its unet config
        shapes = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(repo / "unet")).state_dict()
    unet_config = detection.unet_config_from_diffusers_unet(shapes)
    if unet_config is None:
        sys.exit("huggingface_guess found no unet config for Forge's SD1.5 unet/config.json")
    unet_config = {k: v for k, v in unet_config.items() if k != "dtype"}
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    forge = Path("modules_forge").is_dir()
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
