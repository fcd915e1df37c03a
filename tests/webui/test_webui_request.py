"""The <nplora:…> prompt tag: parsing, defaults, round trips, and hostile input."""

from __future__ import annotations

import pytest

from lib_nplora.errors import ParameterError
from lib_nplora.params import FuseParams
from lib_nplora.app.index import LoraNameError
from lib_nplora.app.request import FusionRequest, PromptTagError, parse_items
from webui.standins.webui_modules import standin_parse_prompt


def items(tag: str) -> list[str]:
    """The tag's items as the WebUI hands them over (``extra_networks.parse_prompt``)."""
    (found,) = standin_parse_prompt(tag)["nplora"]
    return found.items


def test_minimal_tag_uses_the_papers_defaults():
    r = parse_items(items("<nplora:subject:watercolor>"))
    assert (r.content, r.style, r.source) == ("subject", "watercolor", "prompt")
    assert r.params == FuseParams()


def test_every_argument():
    r = parse_items(items("<nplora:a:b:mu=0.8:k=16:wc=0.7:ws=1.2:scope=all:method=nplora>"))
    assert r.params == FuseParams(mu=0.8, k=16, content_weight=0.7, style_weight=1.2, scope="all")


@pytest.mark.parametrize("tag,expected", [
    ("<nplora:a:b:hard>", {"hard": True}),
    ("<nplora:a:b:hard=true>", {"hard": True}),
    ("<nplora:a:b:hard=off>", {"hard": False}),
    ("<nplora:a:b:method=DIRECT>", {"method": "direct"}),
    ("<nplora:a:b:k=full>", {"k": None}),
    ("<nplora:a:b:energy=0.9>", {"energy": 0.9}),
    ("<nplora:a:b: mu = 2 >", {"mu": 2.0}),
    ("<nplora:a:b:MU=2>", {"mu": 2.0}),
])
def test_argument_spellings(tag, expected):
    assert parse_items(items(tag)).params == FuseParams(**expected)


def test_defaults_fill_what_the_tag_leaves_out():
    defaults = FuseParams(mu=1.5, k=8, scope="all")
    assert parse_items(items("<nplora:a:b>"), defaults=defaults).params == defaults
    assert parse_items(items("<nplora:a:b:mu=0.2>"), defaults=defaults).params == defaults.with_(mu=0.2)
    assert parse_items(items("<nplora:a:b:k=full>"), defaults=defaults).params.k is None
    # an energy cap in the tag replaces the default k instead of clashing with it
    assert parse_items(items("<nplora:a:b:energy=0.5>"), defaults=defaults).params.k is None


def test_tag_round_trip():
    for p in (FuseParams(), FuseParams(mu=0.1, k=4, content_weight=0.5, scope="all"),
              FuseParams(hard=True), FuseParams(method="direct", style_weight=2)):
        r = FusionRequest("my subject", "style_v2", p)
        back = parse_items(items(r.tag()))
        assert (back.content, back.style, back.params) == (r.content, r.style, p)


@pytest.mark.parametrize("name", ["0>", ">", "a:b", "x=1", "hard", "Hard"])
def test_a_name_no_tag_can_carry_is_refused_not_written_wrong(name):
    """Found by the fuzz test: ['dog', '0>'] parsed, and its tag <nplora:dog:0>> read back as style '0'."""
    with pytest.raises(PromptTagError, match="cannot be written"):
        FusionRequest("dog", name, FuseParams()).tag()
    if ">" in name:  # parsing refuses it too: a prompt tag ends at the first '>'
        with pytest.raises(PromptTagError, match="ends a prompt tag"):
            parse_items(["dog", name])


# Infotext round trips go through the WebUI's paste into the accordion: test_webui_ui.py
# (test_pasted_infotext_restores_the_accordion, test_pasting_an_image_without_np_lora_turns_it_off).


@pytest.mark.parametrize("tag,error,match", [
    # names that are paths
    ("<nplora:../../etc/passwd:b>", LoraNameError, "looks like a path"),
    ("<nplora:..:b>", LoraNameError, "looks like a path"),
    ("<nplora:a:sub/dir/style>", LoraNameError, "looks like a path"),
    ("<nplora:a:sub\\style>", LoraNameError, "looks like a path"),
    ("<nplora:a:C>", None, None),  # a one-letter name is fine (a drive needs "C:" which splits)
    ("<nplora:a:\x00x>", LoraNameError, "looks like a path"),
    ("<nplora: :b>", LoraNameError, "empty"),
    ("<nplora:" + "x" * 256 + ":b>", LoraNameError, "longer than"),
    # wrong number of names
    ("<nplora:onlyone>", PromptTagError, "exactly two"),
    ("<nplora:a:b:c>", PromptTagError, "exactly two"),
    ("<nplora:mu=0.5:k=4>", PromptTagError, "exactly two"),
    # numbers
    ("<nplora:a:b:mu=nan>", PromptTagError, "finite"),
    ("<nplora:a:b:mu=inf>", PromptTagError, "finite"),
    ("<nplora:a:b:mu=-inf>", PromptTagError, "finite"),
    ("<nplora:a:b:mu=1e400>", PromptTagError, "finite"),
    ("<nplora:a:b:mu=-1>", ParameterError, "mu must be between"),
    ("<nplora:a:b:mu=1e300>", ParameterError, "mu must be between"),
    ("<nplora:a:b:mu=abc>", PromptTagError, "not a number"),
    ("<nplora:a:b:k=0>", ParameterError, "k must be between"),
    ("<nplora:a:b:k=-4>", ParameterError, "k must be between"),
    ("<nplora:a:b:k=5000>", ParameterError, "k must be between"),
    ("<nplora:a:b:k=99999999999999999999>", PromptTagError, "out of range"),
    ("<nplora:a:b:k=2.5>", PromptTagError, "whole number"),
    ("<nplora:a:b:k=٣>", PromptTagError, "whole number"),  # non-ASCII digits
    ("<nplora:a:b:wc=1e9>", ParameterError, "content_weight"),
    ("<nplora:a:b:ws=nan>", PromptTagError, "finite"),
    ("<nplora:a:b:energy=2>", ParameterError, "energy"),
    ("<nplora:a:b:k=4:energy=0.5>", ParameterError, "either k or energy"),
    # missing or repeated arguments
    ("<nplora:a:b:mu=>", PromptTagError, "not a number"),
    ("<nplora:a:b:k=>", PromptTagError, "whole number"),
    ("<nplora:a:b:=3>", PromptTagError, "unknown argument"),
    ("<nplora:a:b:mu=1:mu=2>", PromptTagError, "given twice"),
    ("<nplora:a:b:hard:hard>", PromptTagError, "given twice"),
    ("<nplora:a:b:hard:hard=false>", PromptTagError, "given twice"),
    ("<nplora:a:b:MU=1:mu=2>", PromptTagError, "given twice"),
    # unknown or malformed arguments
    ("<nplora:a:b:alpha=1>", PromptTagError, "unknown argument"),
    ("<nplora:a:b:hard=maybe>", PromptTagError, "true or false"),
    ("<nplora:a:b:scope=vae>", ParameterError, "scope"),
    ("<nplora:a:b:method=ties>", ParameterError, "method"),
    ("<nplora:a:b:mu=1=2>", PromptTagError, "not a number"),
    # too long
    ("<nplora:a:b" + ":mu=1" * 20 + ">", PromptTagError, "too long"),
])
def test_hostile_tags_are_refused_with_the_tag_named(tag, error, match):
    if error is None:
        parse_items(items(tag))
        return
    with pytest.raises(error, match=match) as info:
        parse_items(items(tag))
    if error is not LoraNameError:
        assert "<nplora:" in str(info.value)  # the message names the tag


def test_huge_item_is_refused_before_any_parsing():
    with pytest.raises(PromptTagError, match="too long"):
        parse_items(["a", "b", "mu=" + "9" * 10_000])
