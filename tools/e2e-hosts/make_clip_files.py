"""Write the CLIP ViT-L/14 tokenizer and config into a local Hugging Face cache, for offline A1111.

Run with the host's venv Python (it uses the host's transformers)::

    venv/bin/python make_clip_files.py HF_HOME [--from DIR]

A1111's SD1 text encoder (ldm's FrozenCLIPEmbedder) calls
``CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")`` and builds ``CLIPTextModel``
from that repository's config (the weights come from the checkpoint). Offline, both need the files
in ``HF_HOME/hub/models--openai--clip-vit-large-patch14/snapshots/<rev>/``.

The BPE data is CLIP's own: ``--from DIR`` copies vocab.json and merges.txt from a folder (e.g. Forge's
``backend/huggingface/runwayml/stable-diffusion-v1-5/tokenizer``); without it they are derived from
``bpe_simple_vocab_16e6.txt.gz`` that the open_clip package ships, by the construction of CLIP's
simple tokenizer (256 byte symbols, the same with ``</w>``, the first 48,894 merges, then
``<|startoftext|>`` and ``<|endoftext|>``: 49,408 tokens). The config is the ViT-L/14 CLIP
configuration (text: 12 layers of width 768, 12 heads, MLP 3072, 77 positions, quick_gelu).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

REPO = "openai/clip-vit-large-patch14"
N_MERGES = 49152 - 256 - 2  # CLIP's simple tokenizer keeps these many merges


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def derive_from_open_clip(out: Path) -> str:
    import open_clip.tokenizer as oct  # the host's open_clip

    bpe = Path(oct.default_bpe())
    with gzip.open(bpe) as f:
        lines = f.read().decode("utf-8").split("\n")[1:N_MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    if len(merges) != N_MERGES or any(len(m) != 2 for m in merges):
        sys.exit(f"{bpe}: not CLIP's BPE merges list")
    vocab = list(bytes_to_unicode().values())
    vocab += [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (out / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                    encoding="utf-8")
    return f"derived from {bpe}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_home", type=Path)
    ap.add_argument("--from", dest="src", type=Path, help="folder with vocab.json and merges.txt")
    a = ap.parse_args()

    from transformers import CLIPConfig, CLIPTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        raw.mkdir()
        if a.src:
            for f in ("vocab.json", "merges.txt"):
                shutil.copyfile(a.src / f, raw / f)
            origin = f"copied from {a.src}"
        else:
            origin = derive_from_open_clip(raw)
        staged = Path(tmp) / "snapshot"
        tok = CLIPTokenizer(str(raw / "vocab.json"), str(raw / "merges.txt"), model_max_length=77)
        tok.save_pretrained(str(staged))
        config = CLIPConfig(
            text_config=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                             max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu",
                             projection_dim=768),
            vision_config=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                               num_hidden_layers=24, patch_size=14, image_size=224, hidden_act="quick_gelu",
                               projection_dim=768),
            projection_dim=768)
        config.save_pretrained(str(staged))
        digest = hashlib.sha1()
        for f in sorted(staged.iterdir()):
            digest.update(f.name.encode() + f.read_bytes())
        rev = digest.hexdigest()
        cache = a.hf_home / "hub" / ("models--" + REPO.replace("/", "--"))
        snap = cache / "snapshots" / rev
        if not snap.exists():
            snap.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(staged, snap)
        (cache / "refs").mkdir(parents=True, exist_ok=True)
        (cache / "refs" / "main").write_text(rev)

    # read back through the cache, offline, as the host will
    tok = CLIPTokenizer.from_pretrained(REPO, cache_dir=str(a.hf_home / "hub"), local_files_only=True)
    ids = tok("a photo of a cat")["input_ids"]
    if len(tok) != 49408 or ids[0] != 49406 or ids[-1] != 49407:
        sys.exit(f"tokenizer check failed: {len(tok)} tokens, {ids}")
    print(f"CLIP-L files ({origin}) in {snap}; 'a photo of a cat' -> {ids}")


if __name__ == "__main__":
    main()
