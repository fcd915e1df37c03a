"""Stand-in for ComfyUI's ``folder_paths`` (the model folders and their file lists).

Mirrored: ``folder_names_and_paths[name] = ([folders], {extensions})``; ``get_folder_paths(name)``
(a copy of the folder list); ``get_filename_list(name)``: every file under each folder, recursively,
with a listed extension, as a path relative to its folder with "/" separators, sorted, first folder
first; ``get_full_path(name, filename)``: the filename normalised by
``os.path.relpath(os.path.join("/", filename), "/")`` (so no ``..`` leaves the folder), the first
folder holding it as a file, else None.
"""

from __future__ import annotations

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
folder_names_and_paths: dict[str, tuple[list[str], set[str]]] = {"loras": ([], supported_pt_extensions)}


def get_folder_paths(folder_name: str) -> list[str]:
    return folder_names_and_paths[folder_name][0][:]


def get_filename_list(folder_name: str) -> list[str]:
    folders, exts = folder_names_and_paths[folder_name]
    out: list[str] = []
    for folder in folders:
        found = []
        for dirpath, _, files in os.walk(folder, followlinks=True):
            for f in files:
                if os.path.splitext(f)[1].lower() in exts:
                    found.append(os.path.relpath(os.path.join(dirpath, f), folder).replace(os.sep, "/"))
        out += [f for f in sorted(found) if f not in out]
    return out


def get_full_path(folder_name: str, filename: str) -> str | None:
    if folder_name not in folder_names_and_paths:
        return None
    filename = os.path.relpath(os.path.join("/", filename), "/")
    for x in folder_names_and_paths[folder_name][0]:
        full_path = os.path.join(x, filename)
        if os.path.isfile(full_path):
            return full_path
    return None
