"""Fuzzed ``<nplora:…>`` tags: whatever a prompt holds, parsing ends in a valid request or one of
the project's own errors."""

import math

import pytest

from hypothesis import given, settings
from hypothesis import strategies as st

from lib_nplora.errors import NpLoraError
from lib_nplora.app.request import TAG, FusionRequest, parse_items
from webui.standins.webui_modules import standin_parse_prompt

WORDS = st.sampled_from(["dog", "ink", "..", "../x", "/etc/passwd", "C:\\x", "a/b", "", " ", "hard", "mu", "k",
                         "mu=0.5", "mu=-1", "mu=nan", "mu=inf", "mu=1e309", "k=0", "k=-4", "k=99999999999",
                         "k=full", "k=3.5", "wc=2", "ws=-0", "scope=all", "scope=vae", "method=direct",
                         "method=ties", "hard=true", "hard=maybe", "energy=0.9", "energy=2", "x=1", "=", "==",
                         "mu=0.5=1", "\x00", "dög", "a" * 300])
ITEMS = st.lists(WORDS | st.text(max_size=20), max_size=12)


@settings(max_examples=400, deadline=None)
@given(ITEMS)
def test_tag_items_parse_or_fail_cleanly(items):
    try:
        req = parse_items(items)
    except NpLoraError as e:
        assert str(e)
        return
    assert isinstance(req, FusionRequest)
    p = req.params
    assert math.isfinite(p.mu) and p.mu >= 0 and p.scope in ("unet", "all") and p.method in ("nplora", "direct")
    assert p.k is None or p.k >= 1
    for name in (req.content, req.style):
        # a name is looked up in the LoRA list, never opened: no folders and no "." / "..", but
        # dots inside a file stem ("0..", "v1..2") are legal names
        assert name and "/" not in name and "\\" not in name and name not in (".", "..")
    # the tag it writes parses back to the same request
    (found,) = standin_parse_prompt(req.tag())[TAG]  # as the WebUI finds and splits the tag
    again = parse_items(found.items)
    assert (again.content, again.style, again.params) == (req.content, req.style, req.params)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_prompt_gives_requests_or_clean_errors(prompt):
    """Whatever tags the WebUI finds in a prompt, each parses to a request or a project error."""
    for params in standin_parse_prompt(prompt).get(TAG, []):
        try:
            assert isinstance(parse_items(params.items), FusionRequest)
        except NpLoraError as e:
            assert str(e)


def test_an_item_with_a_colon_is_refused_naming_it():
    """The WebUIs split a tag on ':', so an item holding one came from elsewhere: it could not be
    written back as a tag (found by the fuzz test above: items ['dog', ':'])."""
    from lib_nplora.app.request import PromptTagError

    with pytest.raises(PromptTagError, match="cannot carry"):
        parse_items(["dog", ":"])
