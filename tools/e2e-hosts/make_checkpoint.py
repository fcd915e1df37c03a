"""Write an SD1.5 checkpoint of random weights in the real checkpoint layout, from the host's own model code.

Run from the WebUI folder with its venv Python (prepare.py does)::

    venv/bin/python /path/to/make_checkpoint.py OUT.safetensors [--seed 0]

* A1111: instantiates the host's LDM model from its own ``configs/v1-inference.yaml`` with
  ``repositories/stable-diffusion-stability-ai`` (``ldm.models.diffusion.ddpm.LatentDiffusion``: UNet,
  AutoencoderKL, FrozenCLIPEmbedder), so the keys are exactly the ``state_dict()`` of the model A1111 loads
  a checkpoint into. The CLIP text model is built from the config in the HF cache (make_clip_files.py),
  never downloaded.
* Forge: builds the three parts with Forge's own classes, as its loader does (``backend/loader.py``):
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
    if forge:
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
    print(f"wrote {a.out}: {len(tensors)} tensors, {n / 1e6:.0f} M values ({'forge' if forge else 'a1111'} model code)")


if __name__ == "__main__":
    main()
