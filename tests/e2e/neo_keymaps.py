"""Run by ``test_e2e_neo_keymaps.py`` with Forge Neo's Python, in the Neo folder: the files NP-LoRA
writes for the DiTs Neo runs, through Neo's own LoRA key mapping and loading.

For each model (FLUX.1, Chroma, Z-Image, Qwen-Image, Lumina 2, Wan 14B / 1.3B) it builds Neo's own
model class on the ``meta`` device with the config its detection builds (``tools/check_host_layouts.py``'s
``NEO`` table), writes a content and a style LoRA (kohya names, rank 1) with a module on every weight
of NP-LoRA's table, fuses them (mu 0.5) and saves the result with ``formats.writer.save_fused``,
then does what Neo's ``extensions-builtin/sd_forge_lora/networks.py`` ``load_lora_for_models`` does
with a file: ``backend.patcher.lora.model_lora_keys_unet`` of the model, Z-Image's
``convert_z_image_lora`` where Neo applies it (a model with ``final_layer.adaLN_modulation.1``:
Z-Image, and also FLUX.1 and Lumina 2),
``load_lora`` with those keys. Prints one JSON line per model: keys left unmatched, patches whose
target is not a weight of the model or has another shape.

``model_lora_keys_unet`` reads three things of Neo's model wrapper (``backend.modules.k_model.KModel``):
``state_dict()`` (the DiT's under ``diffusion_model.``), ``config.huggingface_repo`` (Neo's
``huggingface_guess/model_list.py`` names) and ``diffusion_model.config``; ``KModelView`` offers
exactly those (a stand-in for the wrapper, holding Neo's real model class).

    python tests/e2e/neo_keymaps.py <repository root> <temp folder>
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import torch

#: arch -> Neo's huggingface_repo for it (modules_forge/packages/huggingface_guess/model_list.py, 283cb2c4)
REPOS = {"flux": "black-forest-labs/FLUX.1-dev", "chroma": "Chroma", "zimage": "Tongyi-MAI/Z-Image-Turbo",
         "qwenimage": "Qwen/Qwen-Image", "lumina2": "neta-art/Neta-Lumina", "wan14b": "Wan-AI/Wan2.1-I2V-14B",
         "wan1b": "Wan-AI/Wan2.1-T2V-14B"}
#: FLUX.1-dev as Neo's detection builds it (backend/nn/flux.py IntegratedFluxTransformer2DModel)
FLUX = ("backend.nn.flux", "IntegratedFluxTransformer2DModel", dict(
    in_channels=16, out_channels=16, patch_size=2, vec_in_dim=768, context_in_dim=4096, hidden_size=3072, mlp_ratio=4.0, num_heads=24, depth=19,
    depth_single_blocks=38, axes_dim=[16, 56, 56], theta=10000, qkv_bias=True, guidance_embed=True))


class KModelView:
    """What ``model_lora_keys_unet`` reads of Neo's ``KModel`` (stand-in; Neo's model class inside)."""

    def __init__(self, diffusion_model: torch.nn.Module, config: dict, repo: str):
        self.diffusion_model = diffusion_model
        if not hasattr(diffusion_model, "config"):
            diffusion_model.config = dict(config)
        self.config = SimpleNamespace(huggingface_repo=repo)

    def state_dict(self):
        return {f"diffusion_model.{k}": v for k, v in self.diffusion_model.state_dict().items()}


def neo_imports(root: Path):
    """Make Neo's ``backend`` importable as Neo does, run from the Neo folder; returns the
    ``tools/check_host_layouts.py`` module (its ``NEO`` configs)."""
    # Neo's folder first, and its vendored packages as modules_forge/initialization.py adds them
    sys.path[:0] = [os.getcwd(), str(Path.cwd() / "modules_forge" / "packages"), str(root), str(root / "tests")]
    sys.argv[1:] = ["--always-cpu"]  # backend.args parses the command line when imported
    spec = importlib.util.spec_from_file_location("check_host_layouts", root / "tools" / "check_host_layouts.py")
    layouts = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(layouts)
    import backend.memory_management  # noqa: F401  (first, as Neo imports it: backend.patcher.lora needs it loaded)
    return layouts


def main() -> None:
    root, tmp = Path(sys.argv[1]), Path(sys.argv[2])
    layouts = neo_imports(root)
    from backend.patcher.lora import load_lora, model_lora_keys_unet
    from safetensors.torch import load_file

    import lora_factory as lf
    from lib_nplora.cache import Caches
    from lib_nplora.formats.writer import save_fused
    from lib_nplora.fusion.merge import fuse
    from lib_nplora.params import FuseParams

    models = dict(layouts.NEO, flux=FLUX)
    for arch in ("flux", "chroma", "zimage", "qwenimage", "lumina2", "wan14b", "wan1b"):
        module, cls, cfg = models[arch]
        with torch.device("meta"):
            dit = getattr(importlib.import_module(module), cls)(**cfg)
        view = KModelView(dit, cfg, REPOS[arch])
        shapes = {k: tuple(v.shape) for k, v in view.state_dict().items()}
        rows = [r for r in lf.table(arch) if ":" not in r["name"] and r["kind"] != "norm"
                and r["name"].startswith("unet.")]
        c_path, s_path, out = (tmp / f"{arch}_{n}.safetensors" for n in ("c", "s", "fused"))
        lf.make_lora(c_path, arch, rows, rank=1, seed=1, dtype=torch.float16)
        lf.make_lora(s_path, arch, rows, rank=1, seed=2, dtype=torch.float16)
        content, style = Caches().load_pair(c_path, s_path, arch)
        fused = fuse(content, style, FuseParams(mu=0.5), dtype=torch.float16)
        save_fused(fused, out)
        lora = load_file(str(out))
        # a fresh map: Neo's model_lora_keys_unet(model, key_map={}) fills its mutable default, so in
        # one Neo process the keys of every model loaded before stay in it (and, after a Z-Image,
        # networks.py converts every LoRA as Z-Image's: harmless here, the conversion touches
        # only diffusers ``.attention.to_*`` keys, which NP-LoRA never writes)
        keys = model_lora_keys_unet(view, {})
        converted = "diffusion_model.final_layer.adaLN_modulation.1" in keys
        if converted:  # as networks.py does for Z-Image
            from backend.nn._z_lora import convert_z_image_lora
            lora = convert_z_image_lora(lora)
        patches, unmatched = load_lora(lora, keys)
        bad = []
        for target, patch in patches.items():
            name = target[0] if isinstance(target, tuple) else target
            kind, (up, down, *_rest) = patch[0], patch[1]
            rows_of = target[1][2] if isinstance(target, tuple) else shapes.get(name, (None,))[0]
            if name not in shapes or kind != "lora" or tuple(up.shape[:1]) != (rows_of,) or \
                    down.shape[1] != shapes[name][1]:
                bad.append(str(target))
        print(json.dumps({"arch": arch, "file_modules": len(fused.modules), "keys": len(lora),
                          "patches": len(patches), "unmatched": sorted(unmatched)[:10],
                          "unmatched_count": len(unmatched), "bad_targets": bad[:10], "z_image_conversion": converted}),
              flush=True)


if __name__ == "__main__":
    main()
