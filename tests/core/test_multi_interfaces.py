"""Several LoRAs and per-block mu through the interfaces: the prompt tag's LoRA sets and mub=
presets (and their round trips), the REST API's lists of names with weights (the old body still
valid), the CLI's repeated --content/--style, the metadata's merged_from and nplora block, the
analysis per content, and the per-block sliders' text editing."""

import json

import pytest
from safetensors import safe_open

import lora_factory as F
from lib_nplora.app import block_sliders
from lib_nplora.app.request import FusionRequest, PromptTagError, parse_items, parse_set, set_text
from lib_nplora.errors import ParameterError
from lib_nplora.params import FuseParams
from webui.standins.webui_modules import standin_parse_prompt


def items(tag: str) -> list[str]:
    (found,) = standin_parse_prompt(tag)["nplora"]
    return found.items


# ------------------------------------------------------------------------------------ prompt tag

@pytest.mark.parametrize("tag,contents,styles,params", [
    ("<nplora:dog:ink>", (("dog", 1.0),), (("ink", 1.0),), FuseParams()),
    # the old two-name tag keeps its meaning, '+' inside a name included (our own output names)
    ("<nplora:dog+ink_nplora_mu0.5:oil>", (("dog+ink_nplora_mu0.5", 1.0),), (("oil", 1.0),), FuseParams()),
    ("<nplora:dog + hat*0.5:ink + oil*0.3>", (("dog", 1.0), ("hat", 0.5)), (("ink", 1.0), ("oil", 0.3)),
     FuseParams()),
    ("<nplora:dog +hat* -1.5 :ink>", (("dog", 1.0), ("hat", -1.5)), (("ink", 1.0),), FuseParams()),
    ("<nplora:dog:ink:mu=0.5:mub=IN:0.2,OUT:1.0>", (("dog", 1.0),), (("ink", 1.0),),
     FuseParams(block_mu="IN:0.2,OUT:1")),
    ("<nplora:dog:ink:mub=MID:hard:hard>", (("dog", 1.0),), (("ink", 1.0),), FuseParams(block_mu="MID:hard", hard=True)),
    ("<nplora:dog:mub=out05:0:ink:chain>", (("dog", 1.0),), (("ink", 1.0),), FuseParams(block_mu="OUT05:0", chain=True)),
    ("<nplora:dog:ink:mub=>", (("dog", 1.0),), (("ink", 1.0),), FuseParams()),
])
def test_tag_sets_and_block_presets(tag, contents, styles, params):
    r = parse_items(items(tag))
    assert (r.contents, r.styles, r.params) == (contents, styles, params)
    back = parse_items(items(r.tag()))
    assert (back.content, back.style, back.params) == (r.content, r.style, r.params)


@pytest.mark.parametrize("tag,error,match", [
    ("<nplora:dog:ink:mub=IN>", PromptTagError, "without a value"),
    ("<nplora:dog:ink:mub=IN:0.2,OUT>", PromptTagError, "without a value"),
    ("<nplora:dog:ink:mub=IN:-1>", ParameterError, "between 0"),
    ("<nplora:dog:ink:mub=IN:x>", ParameterError, "number"),
    ("<nplora:dog*nan:ink>", ParameterError, "between"),
    ("<nplora:dog*big:ink>", ParameterError, "must be a number"),
    ("<nplora:dog + dog:ink>", ParameterError, "given twice"),
    ("<nplora:" + " + ".join(f"c{i}" for i in range(9)) + ":ink>", ParameterError, "at most 8"),
    ("<nplora:dog + :ink>", Exception, "empty"),
])
def test_bad_sets_and_presets_are_refused_with_the_tag_named(tag, error, match):
    with pytest.raises(error, match=match) as e:
        parse_items(items(tag))
    assert "<nplora:" in str(e.value) or "name" in str(e.value)


def test_infotext_carries_the_sets_and_the_preset():
    r = parse_items(items("<nplora:dog + hat*0.5:ink:mub=IN:0.2,OUT:hard:chain>"))
    info = r.infotext()
    assert info["NP-LoRA content"] == "dog + hat*0.5" and info["NP-LoRA style"] == "ink"
    assert info["NP-LoRA block mu"] == "IN:0.2,OUT:hard" and info["NP-LoRA chain"] == "True"


@pytest.mark.parametrize("name", ["x*2", "a + b"])
def test_names_a_set_cannot_carry_are_refused_in_lists(name):
    with pytest.raises(ParameterError, match="cannot be listed"):
        FusionRequest.of_sets([(name, 1.0)], ["ink"])


@pytest.mark.parametrize("name", ["+lead", "trail+", "a:b"])
def test_names_a_tag_cannot_carry_are_refused_not_written_wrong(name):
    with pytest.raises(PromptTagError, match="cannot be written"):
        FusionRequest(name, "ink").tag()


def test_set_text_round_trip():
    refs = (("dog", 1.0), ("hat", 0.1 + 0.2), ("a+b", -2.0))
    assert parse_set(set_text(refs)) == refs


# ------------------------------------------------------------------------------------ REST, CLI

@pytest.fixture
def folder(tmp_path):
    rows = F.select("sdxl", "attn", ("unet", "te1"), blocks=("input_blocks.4.1.", "output_blocks.2.1.", "layers.0."))
    for i, name in enumerate(("dog", "hat", "ink", "oil")):
        F.make_lora(tmp_path / f"{name}.safetensors", "sdxl", rows[i % 2::1], rank=2 + i, seed=i,
                    metadata={"ss_tag_frequency": json.dumps({name: {name: 1}})})
    return tmp_path


def _rest(folder):
    pytest.importorskip("fastapi")
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_nplora.app.context import HostContext
    from lib_nplora.app.index import DirectoryIndex
    from lib_nplora.app.rest import register
    from lib_nplora.app.service import FusionService
    from lib_nplora.cache import Caches

    app = FastAPI()
    register(app, HostContext("standalone", index=lambda: DirectoryIndex(folder), service=FusionService(Caches())))
    return TestClient(app)


def _meta(path):
    with safe_open(str(path), "pt") as f:
        return f.metadata()


def test_rest_lists_of_names_with_weights_and_the_old_body(folder):
    c = _rest(folder)
    body = {"content": [{"name": "dog"}, {"name": "hat", "weight": 0.5}],
            "style": [{"name": "ink", "weight": 1.0}, {"name": "oil", "weight": 0.25}],
            "block_mu": {"IN": 0.2, "OUT": "hard"}, "chain": True, "name": "four", "dtype": "fp32"}
    r = c.post("/nplora/v1/fuse", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["tag"] == "<nplora:dog + hat*0.5:ink + oil*0.25:mub=IN:0.2,OUT:hard:chain>"
    meta = _meta(folder / "four.safetensors")
    block = json.loads(meta["nplora"])
    assert [(i["name"], i["weight"]) for i in block["contents"] + block["styles"]] == [
        ("dog", 1.0), ("hat", 0.5), ("ink", 1.0), ("oil", 0.25)]
    assert all(len(i["sha256"]) == 64 for i in block["contents"] + block["styles"])
    assert block["block_mu"] == "IN:0.2,OUT:hard" and block["block_c"] == {"IN": 0.2 / 1.2, "OUT": 1.0}
    assert block["chain"] is True
    assert meta["modelspec.merged_from"].count("(content,") == 2 and "oil (style, " in meta["modelspec.merged_from"]
    assert set(json.loads(meta["ss_tag_frequency"])) == {"content: dog", "content 2: hat", "style: ink",
                                                         "style 2: oil"}
    # the same as a set's text, and the old one-name body, still valid
    r = c.post("/nplora/v1/fuse", json={"content": "dog + hat*0.5", "style": "ink + oil*0.25", "name": "four",
                                        "block_mu": "IN:0.2,OUT:hard", "chain": True, "dtype": "fp32",
                                        "overwrite": True})
    assert r.status_code == 200, r.text
    assert r.json()["sha256"] == _rest_sha(folder, "four")
    r = c.post("/nplora/v1/fuse", json={"content": "dog", "style": "ink", "name": "two"})
    assert r.status_code == 200 and json.loads(_meta(folder / "two.safetensors")["nplora"])["styles"][0]["name"] == "ink"
    # refused: unknown names, bad weights, too many, bad groups, the output onto an input
    for bad, status in (({"content": [{"name": "nope"}], "style": "ink"}, 404),
                        ({"content": [{"name": "dog", "weight": "1"}], "style": "ink"}, 422),
                        ({"content": [{"name": "dog", "w": 1}], "style": "ink"}, 422),
                        ({"content": [{"name": f"d{i}"} for i in range(9)], "style": "ink"}, 400),
                        ({"content": "dog", "style": "ink", "block_mu": "OUT12:1"}, 400),
                        ({"content": "dog + hat", "style": "ink", "name": "hat", "overwrite": True}, 400)):
        r = c.post("/nplora/v1/fuse", json=bad)
        assert r.status_code in (status, 409), (bad, r.status_code, r.text)
    assert (folder / "hat.safetensors").stat().st_size > 0
    r = c.post("/nplora/v1/analyze", json={"content": [{"name": "dog"}, {"name": "hat"}], "style": "ink + oil"})
    assert r.status_code == 200, r.text
    a = r.json()
    assert [o["content"] for o in a["contents"]] == ["dog", "hat"] and a["between"][0]["of"] == "dog"
    assert any(g["group"] == "IN" for g in a["groups"])


def _rest_sha(folder, name):
    from lib_nplora.formats.reader import load_lora
    return load_lora(folder / f"{name}.safetensors").sha256


def test_cli_several_contents_and_styles(folder, tmp_path, capsys):
    from lib_nplora.cli import main

    out = tmp_path / "o.safetensors"
    assert main(["fuse", "--content", str(folder / "dog.safetensors"), "--content", str(folder / "hat.safetensors"),
                 "0.5", "--style", str(folder / "ink.safetensors"), "--style", str(folder / "oil.safetensors"), "2",
                 "--block-mu", "MID:hard,IN:0", "--chain", "-o", str(out), "--dtype", "fp32"]) == 0
    block = json.loads(_meta(out)["nplora"])
    assert [i["weight"] for i in block["contents"] + block["styles"]] == [1.0, 0.5, 1.0, 2.0]
    assert block["block_mu"] == "IN:0,MID:hard" and block["chain"]
    # the positional pair still works, and mixes with the options (positional first)
    out2 = tmp_path / "o2.safetensors"
    assert main(["fuse", str(folder / "dog.safetensors"), str(folder / "ink.safetensors"), "--style",
                 str(folder / "oil.safetensors"), "-o", str(out2)]) == 0
    assert [i["name"] for i in json.loads(_meta(out2)["nplora"])["styles"]] == ["ink", "oil"]
    assert main(["analyze", "--content", str(folder / "dog.safetensors"), "--content", str(folder / "hat.safetensors"),
                 "--style", str(folder / "ink.safetensors")]) == 0
    text = capsys.readouterr().out
    assert "content dog: overlap" in text and "with content dog's directions" in text and "per-block mu" in text
    assert main(["fuse", "--content", str(folder / "dog.safetensors"), "x", "--style", str(folder / "ink.safetensors"),
                 "-o", str(tmp_path / "bad.safetensors")]) == 1
    assert "not a number" in capsys.readouterr().err and not (tmp_path / "bad.safetensors").exists()


# ------------------------------------------------------------------------------------ sliders

def test_block_sliders_edit_the_preset_text():
    # the groups of the architectures a host runs, in table order; all of them for the standalone tab
    assert block_sliders.slider_groups(("sd1", "sdxl")) == ("IN", "MID", "OUT")
    assert block_sliders.slider_groups(("sdxl", "flux")) == ("IN", "MID", "OUT", "DOUBLE", "SINGLE")
    assert block_sliders.slider_groups(("sdxl", "zimage", "qwenimage", "wan14b")) == (
        "IN", "MID", "OUT", "NOISE", "CONTEXT", "LAYERS", "BLOCKS")
    assert block_sliders.slider_groups()[:5] == ("IN", "MID", "OUT", "DOUBLE", "SINGLE")
    text = block_sliders.with_group("", "IN", 0.2)
    assert text == "IN:0.2"
    text = block_sliders.with_group("OUT05:hard,IN:0.2", "MID", 1.0)
    assert text == "IN:0.2,MID:1,OUT05:hard"  # typed depth groups and hard are kept
    assert block_sliders.with_group(text, "IN", block_sliders.GLOBAL) == "MID:1,OUT05:hard"
    assert block_sliders.with_group("IN:x", "MID", 1.0) == "IN:x"  # the user's unparsable typing stays
    assert block_sliders.slider_values("MID:1,OUT:hard")["MID"] == 1.0
    assert block_sliders.slider_values("MID:1,OUT:hard")["OUT"] == block_sliders.GLOBAL


# ------------------------------------------------------------------------------------ analysis

def test_analysis_names_the_groups_where_projection_matters(folder):
    from lib_nplora.analysis import MATTERS, analyze_set
    from lib_nplora.app.chart import analysis_html
    from lib_nplora.formats.reader import load_lora

    dog, hat, ink, oil = (load_lora(folder / f"{n}.safetensors") for n in ("dog", "hat", "ink", "oil"))
    # hat is ink's own update: it lies entirely in ink's subspace, dog does not
    a = analyze_set([(dog, 1.0), (ink, 1.0)], [(ink, 1.0), (oil, 0.5)], FuseParams())
    by = {o.content: o.overlap for o in a.contents}
    assert by["ink"] > 0.99 and by["dog"] < 0.9
    assert [(o.content, o.of) for o in a.between] == [("ink", "dog")]
    coarse = {g.group: g for g in a.groups if g.coarse}
    assert set(coarse) == {"IN", "OUT", "TE"}
    assert all(g.matters == (g.overlap >= MATTERS) for g in a.groups)
    text = analysis_html(a)
    assert "mub=GROUP:MU" in text and "inside the joint style subspace" in text
    # one content and one style: the pair analysis, with its groups
    pair = analyze_set([(dog, 1.0)], [(ink, 1.0)], FuseParams())
    assert pair.contents == [] and {g.group for g in pair.groups if g.coarse} == {"IN", "OUT", "TE"}
    assert hat  # a fourth input the folder holds
