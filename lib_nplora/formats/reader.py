"""Read a LoRA file of any supported family into canonical form (a ``LoraSet``).

Steps: safe read (``safetensors_file``) -> group tensors by module stem and role (``keys``) ->
detect the base architecture from names, shapes and metadata -> resolve every stem to its
canonical module, checking shapes -> convert to low-rank factors (``convert``) or keep as a
passthrough module -> split FLUX fused weights into their parts.

Nothing is dropped silently: unknown keys, wrong shapes, NaN/Inf values and incomplete modules
raise a FormatError naming the file and module.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import arch as archmod
from ..arch import Architecture, ModuleSpec
from ..errors import ArchitectureError, FormatError
from ..fusion.checks import all_finite
from ..lora import PASSTHROUGH_TYPES, LoraModule, LoraSet, LowRank
from . import keys as K
from .convert import MAX_CONVERTED_RANK, convert
from .safetensors_file import read_file, read_header
from .untrusted import MAX_METADATA_DEPTH, UntrustedJSONError, loads_json, show, show_bare

#: Preference among architectures a file fits equally well (metadata decides first).
ARCH_PREFERENCE = ("sdxl", "sd1", "flux", "sd2", "qwenimage", "zimage", "flux2", "chroma", "wan14b", "wan5b",
                   "wan1b", "sd35l", "sd35m", "lumina2",
                   "hidream", "flux2klein4b", "flux2klein9b")

LOWRANK_KINDS = ("lora", "tucker", "loha", "lokr", "full")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64,
                torch.float8_e4m3fn, torch.float8_e5m2)


@dataclass
class _Group:
    stem: str
    roles: dict[str, torch.Tensor]
    keys: list[str]
    kind: str


def _group(path, tensors: dict[str, torch.Tensor]) -> tuple[dict[str, _Group], dict[str, torch.Tensor]]:
    all_keys = frozenset(tensors)
    stems: dict[str, dict[str, torch.Tensor]] = defaultdict(dict)
    src: dict[str, list[str]] = defaultdict(list)
    extras: dict[str, torch.Tensor] = {}
    unknown = []
    for key, t in tensors.items():
        if key.startswith(K.BUNDLE_PREFIX):
            extras[key] = t
            continue
        hit = K.split_key(key, all_keys)
        if hit is None:
            unknown.append(key)
            continue
        stem, role = hit
        if role in stems[stem]:
            raise FormatError(f"has two tensors for the {role!r} of one module ({show(src[stem][0])}, {show(key)})",
                              path=path, module=show_bare(stem))
        stems[stem][role] = t
        src[stem].append(key)
    if unknown:
        shown = ", ".join(show(k) for k in unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise FormatError(f"has {len(unknown)} tensor(s) that are not part of any known LoRA module type: {shown}",
                          path=path, hint="It may be another kind of file (a checkpoint, an embedding) "
                                          "or a LoRA variant NP-LoRA does not read")
    groups = {}
    for stem, roles in stems.items():
        kind = K.module_kind(set(roles))
        if kind is None:
            if set(roles) <= {"alpha", "scale"}:
                raise FormatError("has an alpha but no weights", path=path, module=show_bare(stem),
                                  hint="The file is incomplete")
            have = ", ".join(sorted(roles))
            raise FormatError(f"is incomplete: it has only {have}", path=path, module=show_bare(stem),
                              hint="A LoRA module needs both its down and up weights")
        groups[stem] = _Group(stem, roles, src[stem], kind)
    return groups, extras


_PEFT_FIELDS = ("r", "lora_alpha", "alpha_pattern", "rank_pattern", "use_rslora")
_PEFT_HINT = ("The file's lora_adapter_metadata is damaged; re-save the LoRA with diffusers/PEFT, "
              "or remove that metadata entry (the modules then keep a scale of 1)")
#: Characters of a module name. A pattern key with anything else is a regular expression,
#: which NP-LoRA never runs (a file must not choose a regex's cost).
_LITERAL_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-:")


def _peft_config(path, metadata: dict[str, str]) -> dict[str, dict]:
    """PEFT LoraConfig(s) that diffusers stores as JSON in ``lora_adapter_metadata``, checked.

    Pipeline saves prefix each key with its component ("unet.lora_alpha"); a single model's
    save does not. Returns component prefix ("" for unprefixed) -> config dict, each with
    ``lora_alpha`` a finite number, ``r`` a positive int, ``use_rslora`` a bool,
    ``alpha_pattern`` a dict of literal module names -> finite numbers and ``rank_pattern``
    a dict of names -> positive ints, where present.

    Raises:
        FormatError: the metadata is not such JSON (names the file and the key).
    """
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        data = loads_json(raw, max_depth=MAX_METADATA_DEPTH)
    except UntrustedJSONError as e:
        raise FormatError(f"has lora_adapter_metadata that cannot be read: {e}", path=path,
                          hint=_PEFT_HINT) from None
    if not isinstance(data, dict):
        raise FormatError("has lora_adapter_metadata that is not a JSON object", path=path, hint=_PEFT_HINT)
    configs: dict[str, dict] = defaultdict(dict)
    for key, value in data.items():
        prefix, dot, field = key.rpartition(".")
        if dot and field in _PEFT_FIELDS:
            configs[prefix][field] = _peft_value(path, key, field, value)
        elif key in _PEFT_FIELDS:
            configs[""][key] = _peft_value(path, key, key, value)
    return dict(configs)


def _is_number(x) -> bool:
    return type(x) in (int, float) and math.isfinite(x)


def _peft_value(path, key: str, field: str, value):
    """One PEFT config value, checked (see ``_peft_config``)."""
    def refuse(what: str):
        return FormatError(f"has lora_adapter_metadata whose {show(key)} {what}", path=path, hint=_PEFT_HINT)

    if field == "lora_alpha":
        if not _is_number(value):
            raise refuse(f"is {_kind(value)}, not a finite number")
        return float(value)
    if field == "r":
        if type(value) is not int or value < 1:
            raise refuse(f"is {_kind(value)}, not a positive integer")
        return value
    if field == "use_rslora":
        if type(value) is not bool:
            raise refuse(f"is {_kind(value)}, not true or false")
        return value
    # alpha_pattern / rank_pattern: module name -> number
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise refuse(f"is {_kind(value)}, not an object of module names")
    out = {}
    for name, v in value.items():
        ok = _is_number(v) if field == "alpha_pattern" else (type(v) is int and v >= 1)
        if not ok:
            want = "a finite number" if field == "alpha_pattern" else "a positive integer"
            raise refuse(f"gives {show(name)} {_kind(v)}, not {want}")
        if field == "alpha_pattern" and not (name and set(name) <= _LITERAL_NAME):
            raise FormatError(
                f"has lora_adapter_metadata whose {show(key)} key {show(name)} is a regular expression; "
                "NP-LoRA reads alpha_pattern keys as literal module names (a dotted suffix of the "
                "module path, as diffusers writes them) and never runs a regular expression from a file",
                path=path, hint="Re-save the LoRA with diffusers, which writes literal module names")
        out[name] = float(v) if field == "alpha_pattern" else v
    return out


def _kind(value) -> str:
    """What a JSON value is, for a message (never the value itself unless it is a number)."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "a boolean"
    if type(value) in (int, float):
        return repr(value) if math.isfinite(value) else ("NaN" if value != value else "infinite")
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def pattern_value(patterns: dict[str, float], module_path: str) -> float | None:
    """The value of the first key of ``patterns`` (in the file's order) that is ``module_path``
    or a dotted suffix of it; None if none is.

    This is PEFT's ``get_pattern_key`` (peft/utils/other.py: the first key for which
    ``re.match(rf"(.*\\.)?({key})$", module_path)`` matches wins) for keys that are literal module
    names, which is what diffusers and PEFT write; regex keys are refused by ``_peft_config``.
    A regex ``.`` also matches other characters, which no module name of the same length has.
    Cost: one dict look-up per dot in the path (no scan over the patterns).
    """
    best = None
    start = 0
    while True:
        hit = patterns.get(module_path[start:])
        if hit is not None and (best is None or hit[0] < best[0]):
            best = hit
        dot = module_path.find(".", start)
        if dot < 0:
            break
        start = dot + 1
    return best[1] if best is not None else None


def _apply_peft_alpha(path, groups: dict[str, "_Group"], metadata: dict[str, str]) -> None:
    """Give diffusers/PEFT modules the scale their LoraConfig defines (they carry no alpha keys).

    scale = alpha / r (alpha / sqrt(r) with rsLoRA); alpha from ``alpha_pattern`` (see
    ``pattern_value``) or ``lora_alpha``; r = the module's rank.

    Raises:
        FormatError: malformed metadata, or a scale that is not a finite float32.
    """
    configs = _peft_config(path, metadata)
    if not configs:
        return
    indexed = {p: {name: (i, v) for i, (name, v) in enumerate((cfg.get("alpha_pattern") or {}).items())}
               for p, cfg in configs.items()}
    for stem, g in groups.items():
        if "alpha" in g.roles or "scale" in g.roles or g.kind not in ("lora", "dora"):
            continue
        prefix, _, mpath = stem.partition(".")
        cfg = configs.get(prefix)
        if cfg is None:
            prefix, mpath = "", stem
            cfg = configs.get("")
        if not cfg or "lora_alpha" not in cfg:
            continue
        alpha = pattern_value(indexed[prefix], mpath)
        if alpha is None:
            alpha = cfg["lora_alpha"]
        r = g.roles["down"].shape[0]
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        t = torch.tensor(scale, dtype=torch.float32)
        if not bool(torch.isfinite(t)):
            raise FormatError(f"its lora_alpha {alpha:g} gives a scale that is not a finite float32 number",
                              path=path, module=show_bare(stem), hint=_PEFT_HINT)
        g.roles["scale"] = t


def _check_values(path, g: _Group) -> None:
    """Floating-point, finite, non-empty; float8 and float64 become float32 (the math's dtype)."""
    for role, t in list(g.roles.items()):
        if t.dtype not in FLOAT_DTYPES:
            raise FormatError(f"tensor {role!r} has dtype {str(t.dtype).replace('torch.', '')}, "
                              "not a floating-point type", path=path, module=show_bare(g.stem))
        if t.dtype not in (torch.float16, torch.bfloat16, torch.float32):
            t = g.roles[role] = t.to(torch.float32)
        if not all_finite(t):
            raise FormatError(f"tensor {role!r} contains NaN or infinite values", path=path, module=show_bare(g.stem),
                              hint="The file is corrupt or came from a diverged training run")
        if role not in ("alpha", "scale") and t.numel() == 0:
            raise FormatError(f"tensor {role!r} is empty", path=path, module=show_bare(g.stem))


def _prod(shape) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _io_shape(g: _Group) -> tuple[int, int] | None:
    """(out, flattened in) that the module's update has, from tensor shapes alone."""
    t = g.roles
    try:
        if g.kind in ("lora", "dora"):
            return t["up"].shape[0], _prod(t["down"].shape[1:])
        if g.kind == "tucker":
            return t["up"].shape[0], t["down"].shape[1] * _prod(t["mid"].shape[2:])
        if g.kind == "loha":
            if "hada_t1" in t:
                return t["hada_w1_a"].shape[1], t["hada_w1_b"].shape[1] * _prod(t["hada_t1"].shape[2:])
            return t["hada_w1_a"].shape[0], _prod(t["hada_w1_b"].shape[1:])
        if g.kind == "lokr":
            def side(i):
                w = t.get(f"lokr_w{i}")
                if w is not None:
                    return w.shape[0], _prod(w.shape[1:])
                a, b = t[f"lokr_w{i}_a"], t[f"lokr_w{i}_b"]
                if i == 2 and "lokr_t2" in t:
                    return a.shape[1], b.shape[1] * _prod(t["lokr_t2"].shape[2:])
                return a.shape[0], _prod(b.shape[1:])
            (p1, q1), (p2, q2) = side(1), side(2)
            return p1 * p2, q1 * q2
        if g.kind == "full":
            return t["diff"].shape[0], _prod(t["diff"].shape[1:])
    except (KeyError, IndexError):
        return None
    return None


def _fits(spec: ModuleSpec, io: tuple[int, int] | None, kind: str, arch: Architecture) -> bool:
    """Does a module of this kind and update shape fit the base-model weight ``spec``?"""
    if spec.kind == "generic":  # a text-encoder module without a table: its factors decide
        return True
    if kind in ("norm", "diff_b"):
        return spec.kind == "norm" or kind == "diff_b"
    if io is None:
        return kind in ("ia3", "glora", "oft")  # shapes of multiplicative types are not checked
    if spec.kind == "norm":
        return False
    out, inn = io
    if inn != spec.in_features:
        return False
    if out == spec.out_features:
        return True
    if spec.parts:  # a partial fused weight (XLabs single-block qkv covers q, k, v only)
        total = 0
        for p in spec.parts:
            total += arch.modules[p].out_features
            if out == total:
                return True
    return False


def _resolve_all(a: Architecture, groups: dict[str, _Group]):
    resolved, missing, misfit = {}, [], []
    for stem, g in groups.items():
        hit = K.resolve_stem(a, stem)
        if hit is None:
            missing.append(stem)
            continue
        spec = a.modules[hit[0]]
        if not _fits(spec, _io_shape(g), g.kind, a):
            misfit.append((stem, spec))
            continue
        resolved[stem] = hit
    return resolved, missing, misfit


def detect_architecture(path, groups: dict[str, _Group], metadata: dict[str, str], want: str | None = None):
    """Pick the base architecture: every module must resolve with a fitting shape.

    Returns:
        (Architecture, candidates, resolved stems -> (canonical, swapped)).
    """
    results = {}
    for name in archmod.ARCH_NAMES:
        a = archmod.get(name)
        results[name] = (a, *_resolve_all(a, groups))
    candidates = tuple(n for n in archmod.ARCH_NAMES if not results[n][2] and not results[n][3])
    if want is not None:
        if want not in candidates:
            a, _, missing, misfit = results[want]
            raise _mismatch_error(path, a, missing, misfit)
        return results[want][0], candidates, results[want][1]
    if not candidates:
        best = max(archmod.ARCH_NAMES, key=lambda n: len(results[n][1]))
        a, resolved, missing, misfit = results[best]
        if not resolved:
            known = ", ".join(archmod.ARCH_LABELS[n] for n in archmod.ARCH_NAMES)
            raise ArchitectureError(
                f"is not a LoRA for {known}: none of its module names is known "
                f"(first: {show_bare(next(iter(groups), '-'))})", path=path,
                hint=f"NP-LoRA fuses LoRAs for {known}")
        raise _mismatch_error(path, a, missing, misfit)
    hint = archmod.arch_from_metadata(metadata)
    if hint in candidates:
        chosen = hint
    else:
        naming = _naming_hint(groups)
        chosen = next((n for n in naming if n in candidates), None) \
            or next(n for n in ARCH_PREFERENCE if n in candidates)
    return results[chosen][0], candidates, results[chosen][1]


def _naming_hint(groups: dict[str, _Group]) -> tuple[str, ...]:
    """Tie-break for files that fit several models: kohya's SD1/SD2 trainer writes diffusers
    block names (``lora_unet_down_blocks_…``), its SDXL trainer the SGM names
    (``lora_unet_input_blocks_…``)."""
    diffusers = sum(1 for s in groups if s.startswith(("lora_unet_down_blocks_", "lora_unet_mid_block_",
                                                         "lora_unet_up_blocks_")))
    sgm = sum(1 for s in groups if s.startswith(("lora_unet_input_blocks_", "lora_unet_middle_block_",
                                                   "lora_unet_output_blocks_")))
    if diffusers > sgm:
        return ("sd1", "sd2")
    if sgm > diffusers:
        return ("sdxl",)
    return ()


def _mismatch_error(path, a: Architecture, missing, misfit) -> FormatError:
    if misfit:
        stem, spec = misfit[0]
        return FormatError(
            f"does not fit {a.label}'s {spec.name} (weight shape {list(spec.shape)})"
            + (f"; {len(misfit) - 1} more modules do not fit either" if len(misfit) > 1 else ""),
            path=path, module=show_bare(stem),
            hint="The file is corrupt, or it was made for a different base model")
    shown = ", ".join(show_bare(m) for m in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
    return FormatError(f"has {len(missing)} module(s) that {a.label} does not have: {shown}",
                       path=path, hint="The file mixes base models or uses an unknown naming scheme")


def _swap_halves(t: torch.Tensor) -> torch.Tensor:
    h = t.shape[0] // 2
    return torch.cat([t[h:], t[:h]], dim=0)


def _split_parts(a: Architecture, spec: ModuleSpec, module: LoraModule) -> list[LoraModule]:
    """Split a low-rank update of a fused weight into its parts (row slices; exact)."""
    out, offset = [], 0
    rows = module.factors.out_features
    for part in spec.parts:
        pspec = a.modules[part]
        if offset >= rows:
            break
        stop = offset + pspec.out_features
        out.append(LoraModule(part, module.kind, module.factors.rows(offset, stop),
                              source_keys=module.source_keys, note=module.note, lossy=module.lossy))
        offset = stop
    return out


def load_lora(path: str | os.PathLike, *, arch: str | None = None,
              max_converted_rank: int = MAX_CONVERTED_RANK) -> LoraSet:
    """Read a LoRA .safetensors file into canonical form.

    Args:
        path: the file.
        arch: force this architecture (used when pairing a file that fits several).
        max_converted_rank: rank cap for LoHa/LoKr/full conversions (larger are truncated).

    Raises:
        UnsafeFileError, FormatError, ArchitectureError: with the file and module named.
    """
    path = os.fsdecode(path)  # a bytes path (os.fsencode) reads too
    header, tensors, digest = read_file(path)
    groups, extras = _group(path, tensors)
    if not groups:
        raise FormatError("contains no LoRA modules", path=path,
                          hint="It is empty or not a LoRA file")
    for g in groups.values():
        _check_values(path, g)
    _apply_peft_alpha(path, groups, header.metadata)
    a, candidates, resolved = detect_architecture(path, groups, header.metadata, arch)
    modules: dict[str, LoraModule] = {}
    warnings: list[str] = []
    families = set()
    for stem, g in groups.items():
        name, swapped = resolved[stem]
        families.add(K.stem_family(stem))
        if name in modules:
            raise FormatError(f"names the module {name} twice ({show(modules[name].source_keys[0])} and {show(g.keys[0])})",
                              path=path, module=show_bare(stem))
        spec = a.modules[name]
        if g.kind in LOWRANK_KINDS:
            conv = convert(g.kind, g.roles, path=path, module=show_bare(stem), max_rank=max_converted_rank)
            f = conv.factors
            if swapped:
                f = LowRank(_swap_halves(f.up), f.down, f.scale,
                            _swap_halves(f.bias) if f.bias is not None else None)
            if spec.kind == "conv" and g.kind == "lora" and g.roles["down"].dim() == 4:
                kind = "locon"
            else:
                kind = g.kind
            module = LoraModule(name, kind, f, source_keys=tuple(g.keys), note=conv.note, lossy=conv.lossy)
            if conv.lossy:
                warnings.append(f"{name}: {conv.note}")
            if spec.parts:
                for part in _split_parts(a, spec, module):
                    modules[part.name] = part
            else:
                modules[name] = module
        else:
            assert g.kind in PASSTHROUGH_TYPES, g.kind
            if swapped:
                raise FormatError(f"{g.kind} module on a weight stored with swapped halves cannot be "
                                  "carried over", path=path, module=show_bare(stem))
            modules[name] = LoraModule(name, g.kind, None, tensors=dict(g.roles), source_keys=tuple(g.keys))
            warnings.append(f"{name}: {g.kind} module is not a low-rank update; it is carried over unchanged")
    for name in [n for n in modules if ":" in n]:
        parent = name.split(":", 1)[0]
        if parent in modules:
            raise FormatError("has a module on a fused weight and on its parts at once",
                              path=path, module=parent)
    fmt = families.pop() if len(families) == 1 else "mixed"
    return LoraSet(path=path, name=Path(path).stem, arch=a.name, arch_candidates=candidates, format=fmt,
                   metadata=header.metadata, modules=modules, extras=extras, sha256=digest,
                   warnings=warnings)


def stated_arch(lora: LoraSet) -> str | None:
    """The architecture a file's metadata names (``arch_from_metadata``), if its keys fit it too;
    None when the metadata names none, or one the tensors contradict (the keys win)."""
    said = archmod.arch_from_metadata(lora.metadata)
    return said if said in lora.arch_candidates else None


def common_arch(loras: list[LoraSet]) -> str:
    """The one architecture several files are read for (no loaded model to follow).

    The keys first: an architecture every file fits. Where files fit several (a LoRA on layers
    that FLUX.1 and Chroma share, a CLIP-L-only file), their metadata decides: one that a file's
    metadata names is preferred, and two files whose metadata name different models that both
    fit are refused, as files whose keys differ are. Else by ``ARCH_PREFERENCE``.

    Raises:
        ArchitectureError: no architecture fits every file, or the metadata of two files name
            different ones (names both files and both models).
    """
    common = [a for a in ARCH_PREFERENCE if all(a in lora.arch_candidates for lora in loras)]
    if not common:
        first = loras[0]
        other = next((lora for lora in loras if lora.arch != first.arch), loras[-1])
        raise archmod.pair_mismatch(first.name, first.arch, other.name, other.arch)
    said = [(lora, a) for lora in loras if (a := stated_arch(lora)) is not None]
    for lora, a in said[1:]:
        if a != said[0][1]:
            raise archmod.pair_mismatch(said[0][0].name, said[0][1], lora.name, a, by_metadata=True)
    if said and said[0][1] in common:
        return said[0][1]
    if len({lora.arch for lora in loras}) == 1 and loras[0].arch in common:
        return loras[0].arch
    return common[0]


def load_pair(content_path, style_path, *, arch: str | None = None,
              load: Callable[..., LoraSet] | None = None, **kw) -> tuple[LoraSet, LoraSet]:
    """Read a content and a style LoRA that must share one base architecture.

    A file that fits several architectures (e.g. a CLIP-L-only LoRA: SD1, SDXL or FLUX) is read
    for the one the other file is made for, or for ``arch`` (``common_arch``'s rule).

    Args:
        arch: read both files for this architecture (the loaded model's); None: ``common_arch``.
        load: reads one file, ``load(path, arch=None)`` (default ``load_lora`` with ``kw``;
            ``cache.Caches.load`` reads through the cache).

    Raises:
        ArchitectureError: the two files were made for different base models (names both).
        FormatError: a file does not fit ``arch`` (names the file and module), or as ``load_lora``.
    """
    if load is None:
        def load(path, arch=None):
            return load_lora(path, arch=arch, **kw)
    if arch is not None:
        return load(content_path, arch=arch), load(style_path, arch=arch)
    content, style = load(content_path), load(style_path)
    target = common_arch([content, style])
    return (content if content.arch == target else load(content_path, arch=target),
            style if style.arch == target else load(style_path, arch=target))


@dataclass(frozen=True)
class Peek:
    """What a file's header alone says (no tensor data read)."""

    path: str
    arch: str
    arch_candidates: tuple[str, ...]
    format: str
    modules: int
    metadata: dict[str, str]


def peek(path: str | os.PathLike) -> Peek:
    """Architecture and format of a LoRA file from its header (names and shapes) only.

    Cheap enough to run over a whole LoRA folder when building a list.

    Raises:
        UnsafeFileError, FormatError, ArchitectureError: as ``load_lora`` would.
    """
    path = os.fsdecode(path)
    header = read_header(path)
    groups, _ = _group(path, header.tensors)
    if not groups:
        raise FormatError("contains no LoRA modules", path=path, hint="It is empty or not a LoRA file")
    a, candidates, resolved = detect_architecture(path, groups, header.metadata)
    families = {K.stem_family(stem) for stem in groups}
    fmt = families.pop() if len(families) == 1 else "mixed"
    return Peek(path, a.name, candidates, fmt, len(groups), header.metadata)
