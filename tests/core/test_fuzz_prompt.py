"""Fuzzed ``<nplora:…>`` tags: whatever a prompt holds, parsing ends in a valid request or one of
the project's own errors."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from lib_nplora.errors import NpLoraError
from lib_nplora.app.request import FusionRequest, find_tags, parse_items, strip_tags

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
        assert name and "/" not in name and "\\" not in name and ".." not in name
    # the tag it writes parses back to the same request
    again = parse_items(find_tags(req.tag())[0])
    assert (again.content, again.style, again.params) == (req.content, req.style, req.params)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_prompt_scanning_never_raises(prompt):
    tags = find_tags(prompt)
    assert isinstance(tags, list)
    assert "<nplora:" not in strip_tags(prompt) or ">" not in prompt.split("<nplora:", 1)[1]
