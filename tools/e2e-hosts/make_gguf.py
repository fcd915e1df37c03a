"""Split an SD1.5 / SDXL checkpoint the way GGUF users have it: the UNet as a ``.gguf`` file, its
linear weights quantized with the host's own ``gguf`` package (Forge Neo ships it in
``modules_forge/packages/gguf``, Forge main in ``packages_3rdparty/gguf``), and the VAE and the text
encoder(s) as safetensors files for the host's "VAE / Text Encoder" choice
(``forge_additional_modules``).

Run from the Forge Neo (or Forge main) folder with its venv Python::

    venv/bin/python /path/to/make_gguf.py IN.safetensors MODELS [--qtype Q8_0]

writes ``MODELS/Stable-diffusion/<name>-<qtype>.gguf`` (the ``model.diffusion_model.…`` keys),
``MODELS/VAE/<name>.vae.safetensors`` (``first_stage_model.…``) and
``MODELS/text_encoder/<name>-te.safetensors`` (``cond_stage_model.…`` / ``conditioner.…``), each
under its checkpoint name: Neo's loader (``backend/loader.replace_state_dict``) recognises the VAE
and CLIP parts by those keys. UNet weights of two dimensions whose rows are whole quantization
blocks (the attention and feed-forward linears) are quantized with ``gguf.quants.quantize``; the
other UNet tensors (convolutions, norms, biases) are stored unquantized in float16 (float32 where the
input has it). Neo's loader reads each tensor of a ``.gguf`` file as a ``ParameterGGUF``,
``memory_management.state_dict_dtype`` takes the UNet for ``gguf`` storage, and its LoRA patcher
dequantizes, merges and quantizes such weights again (``backend/patcher/lora.py``). (A whole
checkpoint in one ``.gguf`` does not load there: the text encoder refuses ``ParameterGGUF``
tensors.) Each file is written under a temporary name and renamed when complete.

Prints the ``--ui-settings-file`` JSON that starts the host with that choice.

Found on Forge Neo ``283cb2c4`` (2026-12-02): the files load as meant (``Using Detected UNet Type:
gguf``, ``GGUF state dict: {'Q8_0': 184}``, VAE and text encoder taken from the two files), then the
SD1.5 UNet fails to build, before any LoRA is involved: ``ParameterGGUF.shape`` is a ``torch.Size``
of the reader's ``numpy.uint64`` dimensions, the detected UNet config's channel counts come out as
``numpy.float64`` and ``nn.Conv2d`` refuses them (``TypeError: empty(): argument 'size' ...``).
Forge main ``dfdcbab`` has the same ``ParameterGGUF`` (not run). So an SD1.5 / SDXL GGUF does not run
on that Neo revision at all; a FLUX or Qwen-Image GGUF (what GGUF users run there) is too large for a
CPU test machine. ``tests/e2e/test_e2e_low_bit.py`` takes a ``.gguf`` checkpoint wherever one loads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

UNET = "model.diffusion_model."
VAE = "first_stage_model."
TEXT_ENCODERS = ("cond_stage_model.", "conditioner.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("input", type=Path, help="an SD1.5 / SDXL checkpoint (.safetensors)")
    ap.add_argument("models", type=Path, help="a models folder (the host's --model-ref)")
    ap.add_argument("--qtype", default="Q8_0", help="a GGMLQuantizationType name (default Q8_0)")
    ap.add_argument("--arch", default="sd1", help="general.architecture of the file (default sd1)")
    args = ap.parse_args(argv)
    for packages in (Path.cwd() / "modules_forge" / "packages", Path.cwd() / "packages_3rdparty"):
        if (packages / "gguf").is_dir():
            sys.path.insert(0, str(packages))
            break
    else:
        ap.error("run this from a Forge Neo or Forge main folder: no modules_forge/packages/gguf or "
                 "packages_3rdparty/gguf here")
    import gguf
    import torch
    from safetensors import safe_open
    from safetensors.torch import save_file

    qtype = gguf.GGMLQuantizationType[args.qtype]
    block, _ = gguf.GGML_QUANT_SIZES[qtype]
    name = args.input.name.removesuffix(".safetensors")
    unet_out = args.models / "Stable-diffusion" / f"{name}-{args.qtype}.gguf"
    vae_out = args.models / "VAE" / f"{name}.vae.safetensors"
    te_out = args.models / "text_encoder" / f"{name}-te.safetensors"
    for out in (unet_out, vae_out, te_out):
        out.parent.mkdir(parents=True, exist_ok=True)

    def stored(t: torch.Tensor) -> torch.Tensor:
        return t if not t.is_floating_point() or t.dtype == torch.float32 else t.to(torch.float16)

    tmp = unet_out.with_name(unet_out.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), args.arch)
    quantized = kept = 0
    vae, te = {}, {}
    with safe_open(str(args.input), framework="pt") as f:
        for key in f.keys():
            t = f.get_tensor(key)
            if key.startswith(VAE):
                vae[key] = stored(t).contiguous()
            elif key.startswith(TEXT_ENCODERS):
                te[key] = stored(t).contiguous()
            elif not key.startswith(UNET):
                continue
            elif t.is_floating_point() and t.dim() == 2 and t.shape[-1] % block == 0:
                writer.add_tensor(key, gguf.quants.quantize(t.to(torch.float32).numpy(), qtype), raw_dtype=qtype)
                quantized += 1
            else:
                writer.add_tensor(key, stored(t).numpy())
                kept += 1
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, unet_out)
    for out, part in ((vae_out, vae), (te_out, te)):
        tmp = out.with_name(out.name + ".tmp")
        save_file(part, str(tmp))
        os.replace(tmp, out)
    print(f"{unet_out}: {quantized} UNet weights in {args.qtype}, {kept} UNet tensors unquantized", file=sys.stderr)
    print(f"{vae_out}: {len(vae)} tensors; {te_out}: {len(te)} tensors", file=sys.stderr)
    print(json.dumps({"forge_additional_modules": [str(vae_out.resolve()), str(te_out.resolve())]}))
    return 0 if quantized and vae and te else 1


if __name__ == "__main__":
    sys.exit(main())
