"""Stand-in for ``comfy.lora_convert``: ``convert_lora(sd)``. The real one renames the keys of
three special formats (BFL control LoRAs, Wan Fun, USO) and returns every other state dict as it
is; these tests use none of those formats."""


def convert_lora(sd):
    return sd
