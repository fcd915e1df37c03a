"""ComfyUI's ``loras`` folders as the app's ``LoraIndex``: names are ComfyUI's own list entries
(``sub/name.safetensors``, relative to one of the folders), and only a listed name becomes a file.

Only ``.safetensors`` files are offered: NP-LoRA never unpickles a ``.pt`` / ``.ckpt``. Fused
files are saved into the first ``loras`` folder (ComfyUI's default, ``models/loras``).
"""

from __future__ import annotations

from pathlib import Path

import folder_paths

from ..app.index import LoraEntry, LoraIndex, LoraNotFoundError

FOLDER = "loras"
SUFFIX = ".safetensors"


def lora_names() -> list[str]:
    """The ``.safetensors`` entries of ComfyUI's LoRA list, in its order."""
    return [n for n in folder_paths.get_filename_list(FOLDER) if n.lower().endswith(SUFFIX)]


class ComfyLoraIndex(LoraIndex):
    """The LoRAs ComfyUI lists, by their list names."""

    @property
    def folder(self) -> Path:
        return Path(folder_paths.get_folder_paths(FOLDER)[0]).resolve()

    def entries(self) -> dict[str, LoraEntry]:
        out = {}
        for name in lora_names():
            path = folder_paths.get_full_path(FOLDER, name)
            if path is not None:
                out[name] = LoraEntry(Path(name).stem, path)
        return out

    def resolve(self, name: str, what: str = "LoRA") -> LoraEntry:
        """The entry of a list name (exactly as ComfyUI lists it; nothing else is opened).

        Raises:
            LoraNotFoundError: not in the list (or not a .safetensors file).
        """
        listed = isinstance(name, str) and name in lora_names()
        path = folder_paths.get_full_path(FOLDER, name) if listed else None
        if path is None:
            shown = name if isinstance(name, str) else type(name).__name__
            raise LoraNotFoundError(f"the {what} {shown!r} is not in ComfyUI's loras list",
                                    hint="Pick a .safetensors file from the list (press R in ComfyUI to "
                                         "refresh it after adding files)")
        return LoraEntry(Path(name).stem, path)

    def names(self, arch: str | None = None) -> list[str]:
        return lora_names()
