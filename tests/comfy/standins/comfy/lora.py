"""Stand-in for ``comfy.lora``: ``load_lora``, ``model_lora_keys_unet``, ``model_lora_keys_clip``.

Mirrored:

* ``load_lora(lora, to_load, log_missing=True)``: per LoRA key stem ``x`` of ``to_load`` (stem ->
  model key), ``x.alpha`` read with ``.item()``; each adapter class's ``load`` tried in turn (one
  shared ``loaded_keys`` set); the patch stored under ``to_load[x]``; then
  ``logging.warning("lora key not loaded: {}")`` for every file key no adapter read.
* ``model_lora_keys_unet(model, key_map)``: for every ``diffusion_model.*.weight`` of
  ``model.state_dict()``: ``lora_unet_<path with '.' -> '_'>`` and the dotted ``diffusion_model.<path>``
  (the generic format); then for each diffusers weight name of the UNet: ``lora_unet_<flat>``,
  ``lycoris_<flat>`` and the dotted name with and without ``unet.`` (``.to_`` -> ``.processor.to_``,
  ``.to_out.0`` -> ``.to_out``). The real code gets those names from
  ``comfy.utils.unet_to_diffusers(unet_config)``; the stand-in model carries them as
  ``model.diffusers_keys`` (diffusers name -> LDM path). Then, for a ``model_base.QwenImage``, per
  ``diffusion_model.<path>.weight``: ``<path>``, ``transformer.<path>`` and ``lycoris_<flat path>``.
  Not mirrored: the ``model_base.Flux`` branch (also taken by ``Chroma(Flux)``): the
  ``flux_to_diffusers`` names and the ``linear1_qkv`` slice; the real-ComfyUI test covers them.
* ``model_lora_keys_clip(model, key_map)``: ``text_encoders.<key>`` for every weight; per layer b and
  each of ``LORA_CLIP_MAP``: clip_l -> ``lora_te_…`` and ``lora_te1_…``, clip_g -> ``lora_te2_…`` when
  clip_l is present (else ``lora_te_…``), with ``text_encoder(_2).text_model.encoder.layers.…``;
  T5 ``t5xxl.transformer.*`` -> ``lora_te{2|3}_<path>`` as the real index rule gives for FLUX
  (clip_l present, no clip_g: both te2 and te3); ``lora_te2_text_projection`` /
  ``lora_prior_te_text_projection`` (clip_g) and ``lora_te1_text_projection`` (clip_l).
"""

from __future__ import annotations

import logging

from . import model_base, weight_adapter

LORA_CLIP_MAP = {
    "mlp.fc1": "mlp_fc1",
    "mlp.fc2": "mlp_fc2",
    "self_attn.k_proj": "self_attn_k_proj",
    "self_attn.q_proj": "self_attn_q_proj",
    "self_attn.v_proj": "self_attn_v_proj",
    "self_attn.out_proj": "self_attn_out_proj",
}


def load_lora(lora, to_load, log_missing=True):
    patch_dict = {}
    loaded_keys = set()
    for x in to_load:
        alpha_name = f"{x}.alpha"
        alpha = None
        if alpha_name in lora:
            alpha = lora[alpha_name].item()
            loaded_keys.add(alpha_name)
        for adapter_cls in weight_adapter.adapters:
            adapter = adapter_cls.load(x, lora, alpha, None, loaded_keys)
            if adapter is not None:
                patch_dict[to_load[x]] = adapter
                loaded_keys.update(adapter.loaded_keys)
    if log_missing:
        for x in lora:
            if x not in loaded_keys:
                logging.warning("lora key not loaded: {}".format(x))
    return patch_dict


def model_lora_keys_unet(model, key_map={}):
    for k in model.state_dict():
        if k.startswith("diffusion_model.") and k.endswith(".weight"):
            key_lora = k[len("diffusion_model."):-len(".weight")].replace(".", "_")
            key_map[f"lora_unet_{key_lora}"] = k
            key_map[k[:-len(".weight")]] = k
    for k, ldm in getattr(model, "diffusers_keys", {}).items():
        if k.endswith(".weight"):
            unet_key = f"diffusion_model.{ldm}"
            key_lora = k[:-len(".weight")].replace(".", "_")
            key_map[f"lora_unet_{key_lora}"] = unet_key
            key_map[f"lycoris_{key_lora}"] = unet_key
            for p in ("", "unet."):
                diffusers_lora_key = "{}{}".format(p, k[:-len(".weight")].replace(".to_", ".processor.to_"))
                if diffusers_lora_key.endswith(".to_out.0"):
                    diffusers_lora_key = diffusers_lora_key[:-2]
                key_map[diffusers_lora_key] = unet_key
    if isinstance(model, model_base.QwenImage):
        for k in model.state_dict():
            if k.startswith("diffusion_model.") and k.endswith(".weight"):
                key_lora = k[len("diffusion_model."):-len(".weight")]
                key_map[key_lora] = k
                key_map[f"transformer.{key_lora}"] = k
                key_map[f"lycoris_{key_lora.replace('.', '_')}"] = k
    return key_map


def model_lora_keys_clip(model, key_map={}):
    sdk = model.state_dict().keys()
    for k in sdk:
        if k.endswith(".weight"):
            key_map[f"text_encoders.{k[:-len('.weight')]}"] = k
    clip_l_present = False
    clip_g_present = False
    for b in range(32):
        for c in LORA_CLIP_MAP:
            k = f"clip_l.transformer.text_model.encoder.layers.{b}.{c}.weight"
            if k in sdk:
                key_map[f"lora_te_text_model_encoder_layers_{b}_{LORA_CLIP_MAP[c]}"] = k
                key_map[f"lora_te1_text_model_encoder_layers_{b}_{LORA_CLIP_MAP[c]}"] = k
                clip_l_present = True
                key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
            k = f"clip_g.transformer.text_model.encoder.layers.{b}.{c}.weight"
            if k in sdk:
                clip_g_present = True
                if clip_l_present:
                    key_map[f"lora_te2_text_model_encoder_layers_{b}_{LORA_CLIP_MAP[c]}"] = k
                    key_map[f"text_encoder_2.text_model.encoder.layers.{b}.{c}"] = k
                else:
                    key_map[f"lora_te_text_model_encoder_layers_{b}_{LORA_CLIP_MAP[c]}"] = k
                    key_map[f"text_encoder.text_model.encoder.layers.{b}.{c}"] = k
    for k in sdk:
        if k.endswith(".weight") and k.startswith("t5xxl.transformer."):
            l_key = k[len("t5xxl.transformer."):-len(".weight")]
            t5_index = 1
            if clip_g_present:
                t5_index += 1
            if clip_l_present:
                t5_index += 1
                if t5_index == 2:
                    key_map[f"lora_te{t5_index}_{l_key.replace('.', '_')}"] = k
                    t5_index += 1
            key_map[f"lora_te{t5_index}_{l_key.replace('.', '_')}"] = k
    k = "clip_g.transformer.text_projection.weight"
    if k in sdk:
        key_map["lora_prior_te_text_projection"] = k
        key_map["lora_te2_text_projection"] = k
    k = "clip_l.transformer.text_projection.weight"
    if k in sdk:
        key_map["lora_te1_text_projection"] = k
    return key_map
