"""LoRA file formats: safe .safetensors I/O, the key grammar of every supported family, the
LyCORIS conversions, the reader (file -> canonical ``LoraSet``) and the writer (``FusedLora``
-> kohya file)."""
