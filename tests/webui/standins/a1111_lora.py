"""Stand-ins for A1111 1.10's builtin Lora extension (``extensions-builtin/Lora``: the modules
``network`` and ``networks``) and for the parts of a loaded ``sd_model`` they use.

Mirrored (AUTOMATIC1111/stable-diffusion-webui v1.10.1):

* ``network.NetworkOnDisk(name, filename)``: ``.name``, ``.filename``, ``.metadata``, ``.alias``,
  ``.shorthash``; ``network.Network(name, network_on_disk)``: ``.name``, ``.te_multiplier``,
  ``.unet_multiplier``, ``.dyn_dim``, ``.modules``, ``.bundle_embeddings``, ``.mtime``;
  ``network.NetworkWeights`` (namedtuple network_key, sd_key, w, sd_module);
  ``network.NetworkModule(net, weights)`` with ``multiplier()``, ``calc_scale()``,
  ``finalize_updown(updown, orig_weight, output_shape, ex_bias=None)`` and abstract
  ``calc_updown(orig_weight)``; ``network.ModuleType.create_module(net, weights)``.
* ``networks``: ``loaded_networks``, ``available_networks``, ``available_network_aliases``,
  ``module_types``, ``list_available_networks()``, ``assign_network_names_to_compvis_modules``,
  and the apply path of ``network_apply_weights(layer)`` that runs at every patched layer's
  forward: back the weight up once, and when the tuple of (name, te_multiplier,
  unet_multiplier, dyn_dim) of the loaded networks differs from the layer's last one, restore
  the backup and add every loaded network's update (for a MultiheadAttention only when the
  network has its ``_q_proj``, ``_k_proj``, ``_v_proj`` and ``_out_proj``).
"""

from __future__ import annotations

import os
from collections import namedtuple
from pathlib import Path

import torch

from . import torch_tree

# ---------------------------------------------------------------------------- network module

StandInNetworkWeights = namedtuple("NetworkWeights", ["network_key", "sd_key", "w", "sd_module"])


class StandInNetworkOnDisk:
    def __init__(self, name, filename, alias=None, shorthash="0123456789ab"):
        self.name = name
        self.filename = filename
        self.metadata = {}
        self.alias = alias or name
        self.hash = shorthash
        self.shorthash = shorthash

    def read_hash(self):
        pass


class StandInNetwork:
    def __init__(self, name, network_on_disk):
        self.name = name
        self.network_on_disk = network_on_disk
        self.te_multiplier = 1.0
        self.unet_multiplier = 1.0
        self.dyn_dim = None
        self.modules = {}
        self.bundle_embeddings = {}
        self.mtime = None
        self.mentioned_name = None


class StandInModuleType:
    def create_module(self, net, weights):
        return None


class StandInNetworkModule:
    def __init__(self, net, weights):
        self.network = net
        self.network_key = weights.network_key
        self.sd_key = weights.sd_key
        self.sd_module = weights.sd_module
        if hasattr(self.sd_module, "weight"):
            self.shape = self.sd_module.weight.shape
        elif isinstance(self.sd_module, torch.nn.MultiheadAttention):
            self.shape = self.sd_module.out_proj.weight.shape
        else:
            self.shape = None
        self.dim = None
        self.bias = weights.w.get("bias")
        self.alpha = weights.w["alpha"].item() if "alpha" in weights.w else None
        self.scale = weights.w["scale"].item() if "scale" in weights.w else None
        self.dora_scale = weights.w.get("dora_scale", None)

    def multiplier(self):
        return self.network.te_multiplier if "transformer" in self.sd_key[:20] else self.network.unet_multiplier

    def calc_scale(self):
        if self.scale is not None:
            return self.scale
        if self.dim is not None and self.alpha is not None:
            return self.alpha / self.dim
        return 1.0

    def finalize_updown(self, updown, orig_weight, output_shape, ex_bias=None):
        if self.bias is not None:
            updown = updown.reshape(self.bias.shape) + self.bias.to(orig_weight.device, dtype=updown.dtype)
            updown = updown.reshape(output_shape)
        if len(output_shape) == 4:
            updown = updown.reshape(output_shape)
        if orig_weight.size().numel() == updown.size().numel():
            updown = updown.reshape(orig_weight.shape)
        if ex_bias is not None:
            ex_bias = ex_bias * self.multiplier()
        updown = updown * self.calc_scale()
        if self.dora_scale is not None:
            raise NotImplementedError("the stand-in does not do DoRA")
        return updown * self.multiplier(), ex_bias

    def calc_updown(self, target):
        raise NotImplementedError()


class StandInNormModule(StandInNetworkModule):
    """Mirrors ``network_norm.NetworkModuleNorm``: w_norm/b_norm added to a norm's weight/bias."""

    def __init__(self, net, weights):
        super().__init__(net, weights)
        self.w_norm = weights.w.get("w_norm")
        self.b_norm = weights.w.get("b_norm")

    def calc_updown(self, orig_weight):
        output_shape = self.w_norm.shape
        updown = self.w_norm.to(orig_weight.device)
        ex_bias = self.b_norm.to(orig_weight.device) if self.b_norm is not None else None
        return self.finalize_updown(updown, orig_weight, output_shape, ex_bias)


class StandInModuleTypeNorm(StandInModuleType):
    def create_module(self, net, weights):
        if all(x in weights.w for x in ["w_norm", "b_norm"]):
            return StandInNormModule(net, weights)
        return None


class StandInNetworkModuleNamespace:
    """What the adapter reads from the ``network`` module, under the real names."""

    Network = StandInNetwork
    NetworkOnDisk = StandInNetworkOnDisk
    NetworkWeights = StandInNetworkWeights
    NetworkModule = StandInNetworkModule
    ModuleType = StandInModuleType


network = StandInNetworkModuleNamespace

# ---------------------------------------------------------------------------- networks module


class StandInNetworks:
    """The ``networks`` module's state and functions (an instance per test: fresh globals)."""

    def __init__(self, lora_dir: str | os.PathLike | None = None):
        self.lora_dir = Path(lora_dir) if lora_dir else None
        self.loaded_networks: list = []
        self.available_networks: dict = {}
        self.available_network_aliases: dict = {}
        self.module_types = [StandInModuleTypeNorm()]
        self.list_calls = 0
        self.apply_errors: dict[str, int] = {}

    def list_available_networks(self):
        self.list_calls += 1
        self.available_networks.clear()
        self.available_network_aliases.clear()
        if self.lora_dir is None:
            return
        for path in sorted(self.lora_dir.rglob("*.safetensors")):
            entry = StandInNetworkOnDisk(path.stem, str(path))
            self.available_networks[path.stem] = entry
            self.available_network_aliases[path.stem] = entry
            self.available_network_aliases[entry.alias] = entry

    @staticmethod
    def assign_network_names_to_compvis_modules(sd_model):
        mapping = {}
        roots = []
        if getattr(sd_model, "is_sdxl", False):
            for i, embedder in enumerate(sd_model.conditioner.embedders):
                roots.append((f"{i}_", embedder.wrapped))
        else:
            roots.append(("", getattr(sd_model.cond_stage_model, "wrapped", sd_model.cond_stage_model)))
        roots.append(("", sd_model.model))
        for prefix, root in roots:
            for name, module in root.named_modules():
                key = prefix + name.replace(".", "_")
                mapping[key] = module
                module.network_layer_name = key
        sd_model.network_layer_mapping = mapping

    # -- the apply path (lora_patches' forward wrappers call this before each forward)
    def network_apply_weights(self, layer):
        name = getattr(layer, "network_layer_name", None)
        if name is None:
            return
        current = getattr(layer, "network_current_names", ())
        wanted = tuple((n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in self.loaded_networks)
        mha = isinstance(layer, torch.nn.MultiheadAttention)
        if getattr(layer, "network_weights_backup", None) is None and wanted != ():
            layer.network_weights_backup = ((layer.in_proj_weight.detach().clone(),
                                             layer.out_proj.weight.detach().clone()) if mha
                                            else layer.weight.detach().clone())
            bias = layer.out_proj.bias if mha else getattr(layer, "bias", None)
            layer.network_bias_backup = bias.detach().clone() if bias is not None else None
        if current == wanted:
            return
        with torch.no_grad():
            backup = getattr(layer, "network_weights_backup", None)
            if backup is not None:
                if mha:
                    layer.in_proj_weight.copy_(backup[0])
                    layer.out_proj.weight.copy_(backup[1])
                else:
                    layer.weight.copy_(backup)
            bias_backup = getattr(layer, "network_bias_backup", None)
            if bias_backup is not None:
                (layer.out_proj.bias if mha else layer.bias).copy_(bias_backup)
            for net in self.loaded_networks:
                module = net.modules.get(name)
                if module is not None and hasattr(layer, "weight"):
                    updown, ex_bias = module.calc_updown(layer.weight)
                    layer.weight.copy_((layer.weight.to(updown.dtype) + updown).to(layer.weight.dtype))
                    if ex_bias is not None and getattr(layer, "bias", None) is not None:
                        layer.bias += ex_bias
                    continue
                parts = [net.modules.get(f"{name}_{p}_proj") for p in ("q", "k", "v", "out")]
                if mha and all(parts):
                    q, k, v = layer.in_proj_weight.chunk(3, 0)
                    ups = [parts[i].calc_updown(w)[0] for i, w in enumerate((q, k, v))]
                    layer.in_proj_weight += torch.vstack(ups)
                    out, ex_bias = parts[3].calc_updown(layer.out_proj.weight)
                    layer.out_proj.weight += out
                    continue
                if module is not None:
                    self.apply_errors[net.name] = self.apply_errors.get(net.name, 0) + 1
        layer.network_current_names = wanted

    def forward_all(self, sd_model):
        """What one generation does to every patched layer: each runs its forward once (an MHA's
        ``out_proj`` never runs its own forward: the MHA reads its weight directly)."""
        for layer in sd_model.network_layer_mapping.values():
            if type(layer) is torch.nn.modules.linear.NonDynamicallyQuantizableLinear:
                continue
            if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.LayerNorm,
                                  torch.nn.GroupNorm, torch.nn.MultiheadAttention)):
                self.network_apply_weights(layer)


# ---------------------------------------------------------------------------- models


class StandInSdModel:
    """A loaded A1111 model: ``.model.diffusion_model`` and the text encoder(s) as real modules."""

    def __init__(self, arch: str, unet_rows, te_rows, te2_blocks: int = 0):
        self.is_sdxl = arch == "sdxl"
        self.is_sd2 = arch == "sd2"
        self.is_sd1 = arch == "sd1"
        self.is_sd3 = False
        self.model = torch_tree.tree(unet_rows, lambda n: "diffusion_model." + n.split(".", 1)[1])
        te = torch_tree.tree(te_rows, _clip_l_path)
        if self.is_sdxl:
            open_clip = torch.nn.Module()
            for i in range(te2_blocks):
                torch_tree.put(open_clip, f"model.transformer.resblocks.{i}.attn",
                               _mha(1280, 20, seed=2000 + i))
                torch_tree.put(open_clip, f"model.transformer.resblocks.{i}.mlp.c_fc",
                               torch_tree.layer("linear", (5120, 1280), seed=3000 + i))
            self.conditioner = _Holder(embedders=[_Holder(wrapped=te), _Holder(wrapped=open_clip)])
        else:
            self.cond_stage_model = _Holder(wrapped=te)


class _Holder:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def _clip_l_path(canonical: str) -> str:
    return "transformer." + canonical.split(".", 1)[1]


def _mha(dim: int, heads: int, seed: int) -> torch.nn.MultiheadAttention:
    g = torch.Generator().manual_seed(seed)
    m = torch.nn.MultiheadAttention(dim, heads)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    return m


def snapshot(sd_model) -> dict[str, torch.Tensor]:
    """Every weight and bias of the model, cloned (for exact before/after comparisons)."""
    out = {}
    for key, layer in sd_model.network_layer_mapping.items():
        for pname, p in layer.named_parameters(recurse=False):
            out[f"{key}.{pname}"] = p.detach().clone()
    return out
