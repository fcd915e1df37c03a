"""Stand-in for ComfyUI's ``comfy`` package: only the modules the node pack imports
(``comfy.lora``, ``comfy.lora_convert``, ``comfy.utils``, ``comfy.weight_adapter``; ``comfy.model_base``
and ``comfy.supported_models`` for the model types) and a
``model_patcher`` with the ``ModelPatcher`` / CLIP behaviour it relies on."""
