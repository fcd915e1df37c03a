"""The one parameter table (``lib_nplora.params.PARAMS``): every surface derived from it carries
every row — the prompt tag, the infotext, the REST body, the CLI, the accordion (and its paste-back),
the tab, the X/Y/Z axes — and ``FuseParams.from_values`` applies the table's rules.

Each test walks the table and looks for the row in what the surface actually built (a parsed tag,
a pydantic schema, an argparse parser, gradio components, AxisOptions), so a derivation that drops a
field fails here. Marked ``ui``: also runs under gradio 3.41 / pydantic 1 / fastapi 0.94.
"""

from __future__ import annotations

import dataclasses

import pytest

from lib_nplora.errors import ParameterError
from lib_nplora.params import (FUSE_PARAMS, PARAMS, REQUEST_PARAMS, UI_PARAMS, FuseParams, axis_params,
                               changes)
from lib_nplora.app.request import INFOTEXT, FusionRequest, parse_items
from webui.standins.webui_modules import standin_parse_prompt


def find_tags(prompt: str) -> list[list[str]]:
    """Items of each ``<nplora:…>`` tag, as the WebUI hands them over (``extra_networks.parse_prompt``)."""
    return [found.items for found in standin_parse_prompt(prompt).get("nplora", [])]


def from_infotext(info: dict) -> FusionRequest:
    """Read pasted image parameters back through the table's ``read`` (what the accordion's
    paste-back does per field), into a request."""
    kw = {p.name: p.read(info[p.infotext]) for p in FUSE_PARAMS if p.infotext in info}
    return FusionRequest(info[INFOTEXT["content"]], info.get(INFOTEXT["style"], ""),
                         FuseParams.from_values(None, **kw), source="infotext")

pytestmark = pytest.mark.ui

ROW_IDS = [p.name for p in PARAMS]
PARAM_ROWS = pytest.mark.parametrize("row", FUSE_PARAMS, ids=[p.name for p in FUSE_PARAMS])
ALL_ROWS = pytest.mark.parametrize("row", PARAMS, ids=ROW_IDS)


def with_example(row) -> FuseParams:
    """The library defaults with this row set to its example value."""
    return FuseParams().with_(**{row.name: row.example})


def request_with(row) -> FusionRequest:
    if row.is_param:
        return FusionRequest("dog", "ink", with_example(row))
    names = {"content": "dog", "style": "ink", row.name: row.example + "_x"}
    return FusionRequest(names["content"], names["style"])


def value_of(request: FusionRequest, row):
    return getattr(request.params, row.name) if row.is_param else getattr(request, row.name)


# ---------------------------------------------------------------------------- the table itself


def test_every_fuse_params_field_has_exactly_one_row():
    fields = [f.name for f in dataclasses.fields(FuseParams)]
    assert [p.name for p in FUSE_PARAMS] == fields
    assert len({p.name for p in PARAMS}) == len(PARAMS)
    assert len({p.tag for p in PARAMS if p.tag}) == len([p for p in PARAMS if p.tag])
    assert len({p.infotext for p in PARAMS}) == len(PARAMS)


@ALL_ROWS
def test_each_rows_example_is_valid_and_not_the_default(row):
    assert row.example is not None and row.example != row.default
    if row.is_param:
        assert getattr(with_example(row), row.name) == row.example


# ---------------------------------------------------------------------------- FuseParams.from_values


def test_from_values_rules():
    settings = FuseParams(mu=1.5, k=8, scope="all")
    assert FuseParams.from_values(settings) == settings  # nothing given: the settings
    assert FuseParams.from_values(settings, mu=None, k=None) == settings  # None = not given
    assert FuseParams.from_values(settings, energy=0.9) == settings.with_(k=None, energy=0.9)  # energy clears k
    assert FuseParams.from_values(FuseParams(energy=0.5), k=4) == FuseParams(k=4)  # and k clears energy
    with pytest.raises(ParameterError, match="either k or energy"):
        FuseParams.from_values(None, k=4, energy=0.5)
    assert FuseParams.from_values(settings, k="full").k is None  # the selector's text: full rank
    assert FuseParams.from_values(settings, k="0").k is None and FuseParams.from_values(None, k="16").k == 16
    with pytest.raises(ParameterError, match="k must be between"):
        FuseParams.from_values(None, k=0)  # a number is literal
    with pytest.raises(ParameterError, match="k must be 'full'"):
        FuseParams.from_values(None, k="lots")
    assert FuseParams.from_values(None, hard="false").hard is False  # not bool("false")
    assert FuseParams.from_values(None, hard=1, method="DIRECT", scope=" All ") == FuseParams(
        hard=True, method="direct", scope="all")
    with pytest.raises(ParameterError, match="hard must be true or false"):
        FuseParams.from_values(None, hard="maybe")
    with pytest.raises(ParameterError, match="unknown parameter 'alpha'"):
        FuseParams.from_values(None, alpha=1)
    with pytest.raises(ParameterError, match="unknown parameter 'content'"):
        changes(content="dog")


def test_label():
    assert [p.label() for p in (FuseParams(), FuseParams(mu=2, hard=True), FuseParams(method="direct", hard=True))] == [
        "mu=0.5", "hard projection", "direct merge"]
    assert [p.label(compact=True) for p in (FuseParams(mu=0.25), FuseParams(hard=True),
                                           FuseParams(method="direct"))] == ["mu0.25", "hard", "direct"]


# ---------------------------------------------------------------------------- prompt tag, infotext


@PARAM_ROWS
def test_tag_round_trip_of_each_row(row):
    request = request_with(row)
    tag = request.tag()
    items = find_tags(tag)[0]
    assert any(i == row.tag or i.startswith(row.tag + "=") for i in items[2:]), tag
    assert parse_items(items).params == request.params


def test_tag_round_trip_is_exact_for_every_combination():
    """All rows at once (energy alone: it clashes with k), and values that no longer hide each
    other: a direct merge written as plain ``method=direct`` read back without its hard flag."""
    everything = FuseParams().with_(**{p.name: p.example for p in FUSE_PARAMS if p.name != "energy"})
    for params in (everything, everything.with_(k=None, energy=0.9), FuseParams(method="direct", hard=True, mu=0.8),
                   FuseParams(mu=0.1234567)):
        back = parse_items(find_tags(FusionRequest("dog", "ink", params).tag())[0])
        assert back.params == params


@ALL_ROWS
def test_infotext_round_trip_of_each_row(row):
    request = request_with(row)
    info = request.infotext()
    assert info[row.infotext] == row.text(value_of(request, row))
    assert INFOTEXT[row.name] == row.infotext
    back = from_infotext(info)
    assert back is not None and (back.content, back.style, back.params) == (
        request.content, request.style, request.params)


# ---------------------------------------------------------------------------- REST body (pydantic 1 and 2)


def _schema_fields(model) -> dict:
    schema = model.model_json_schema() if hasattr(model, "model_json_schema") else model.schema()
    return schema["properties"], set(schema.get("required", []))


WRONG_JSON = {"lora": 5, "number": "0.5", "flag": 1, "choice": "nope", "rank": 4.0, "blocks": 0.5}


@ALL_ROWS
def test_rest_body_has_each_row_strictly_typed(row):
    pydantic = pytest.importorskip("pydantic")
    from lib_nplora.app.rest import FuseBody, PairBody, request_from

    for model in (PairBody, FuseBody):
        props, required = _schema_fields(model)
        assert row.name in props
        assert (row.name in required) == (not row.is_param)
    body = {"content": "dog", "style": "ink", row.name: row.example}
    request = request_from(PairBody(**body), FuseParams())
    assert value_of(request, row) == row.example
    with pytest.raises(pydantic.ValidationError):
        PairBody(**dict(body, **{row.name: WRONG_JSON[row.kind]}))
    with pytest.raises(pydantic.ValidationError):
        PairBody(**dict(body, **{row.name + "_typo": row.example}))


def test_rest_omitted_fields_come_from_the_settings():
    from lib_nplora.app.rest import PairBody, request_from

    settings = FuseParams(mu=1.5, k=8, scope="all")
    got = request_from(PairBody(content="dog", style="ink"), settings).params
    for row in FUSE_PARAMS:
        expected = getattr(settings, row.name) if row.from_settings else row.default
        assert getattr(got, row.name) == expected, row.name


# ---------------------------------------------------------------------------- CLI


def _cli_args(row) -> list[str]:
    if row.cli_const is not None or row.kind == "flag":
        return [row.cli_flag]
    return [row.cli_flag, row.text(row.example)]


@PARAM_ROWS
def test_cli_fuse_has_each_row_and_analyze_the_analysis_rows(row):
    from lib_nplora import cli

    parser = cli.build_parser()
    ns = parser.parse_args(["fuse", "c.safetensors", "s.safetensors", "-o", "o.safetensors", *_cli_args(row)])
    assert getattr(cli._params(ns), row.name) == row.example
    assert cli._params(parser.parse_args(["fuse", "c", "s", "-o", "o"])) == FuseParams()
    if row.analysis:
        ns = parser.parse_args(["analyze", "c.safetensors", "s.safetensors", *_cli_args(row)])
        assert getattr(cli._params(ns), row.name) == row.example
    else:
        with pytest.raises(SystemExit):
            parser.parse_args(["analyze", "c", "s", *_cli_args(row)])


def test_cli_groups_exclude_each_other():
    from lib_nplora import cli

    parser = cli.build_parser()
    by_group: dict = {}
    for row in FUSE_PARAMS:
        if row.group:
            by_group.setdefault(row.group, []).append(row)
    assert by_group
    for rows in by_group.values():
        with pytest.raises(SystemExit):
            parser.parse_args(["fuse", "c", "s", "-o", "o", *_cli_args(rows[0]), *_cli_args(rows[1])])


# ---------------------------------------------------------------------------- accordion, tab, X/Y/Z


@pytest.fixture(scope="module")
def built():
    gr = pytest.importorskip("gradio")
    from lib_nplora.webui import accordion
    from webui.standins.webui_modules import standin_ui_components

    with gr.Blocks():
        acc = accordion.build(gr, standin_ui_components(gr), lambda s: "acc_" + s, lambda: ["dog", "ink"],
                              lambda: None, FuseParams())
    return gr, acc


def _paste(component, key, info):
    """The WebUI's paste of one field (infotext_utils.connect_paste)."""
    v = key(info) if callable(key) else info.get(key)
    if isinstance(v, dict):
        return v.get("value")
    if v is None or isinstance(v, bool):
        return v
    return type(component.value)(v) if component.value is not None else v


@pytest.mark.parametrize("row", UI_PARAMS, ids=[p.name for p in UI_PARAMS])
def test_accordion_has_each_ui_row_and_pastes_it_back(built, row):
    gr, acc = built
    from lib_nplora.webui.accordion import ARG_NAMES, UiValues

    assert ARG_NAMES[0] == "enabled" and row.name in ARG_NAMES
    component = acc.inputs[ARG_NAMES.index(row.name)]
    assert component.elem_id == "acc_" + row.name and component.label == row.label
    assert row.infotext in acc.paste_field_names()
    request = request_with(row)
    info = {"Steps": "20", **request.infotext()}
    fields = acc.infotext_fields(gr)
    assert len(fields) == len(ARG_NAMES)
    values = [_paste(c, key, info) for c, key in fields]
    ui = UiValues.from_args(values)
    got = ui.params()
    if row.is_param:
        assert getattr(FuseParams.from_values(None, **got), row.name) == row.example
    else:
        assert getattr(ui, row.name) == value_of(request, row)


def test_accordion_argument_order_is_the_shipped_one():
    """The WebUI API passes the accordion's values by position: the table may only append."""
    from lib_nplora.webui.accordion import ARG_NAMES

    assert ARG_NAMES[:10] == ("enabled", "content", "style", "content_weight", "style_weight", "mu", "hard", "k",
                              "scope", "method")


def test_tab_has_each_ui_row(tmp_path):
    pytest.importorskip("gradio")
    from lib_nplora.app.context import HostContext
    from lib_nplora.app.index import DirectoryIndex
    from lib_nplora.app.tab import FIELDS, _request, build_tab, elem_id

    blocks = build_tab(HostContext("standalone", index=lambda: DirectoryIndex(tmp_path)))
    comps = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    for row in UI_PARAMS:
        assert elem_id(row) in comps and comps[elem_id(row)].label == row.label, row.name
        assert row.name in FIELDS
        values = [row.example if name == row.name else comps[elem_id(next(p for p in UI_PARAMS if p.name == name))].value
                  for name in FIELDS]
        if not row.is_param:
            values[FIELDS.index("content" if row.name == "style" else "style")] = "x"
        else:
            values[FIELDS.index("content")], values[FIELDS.index("style")] = "dog", "ink"
        request = _request(*values)
        assert value_of(request, row) == (row.ui_value(row.example) if not row.is_param else row.example)


class P:
    pass


@pytest.mark.parametrize("row", axis_params(), ids=[p.name for p in axis_params()])
def test_xyz_has_an_axis_for_each_row_that_names_one(row):
    from lib_nplora.webui import xyz
    from webui.standins.webui_modules import standin_xyz_module, standin_xyz_scripts_data

    module = standin_xyz_module()
    xyz.register(standin_xyz_scripts_data(module), lambda: ["dog", "ink"], lambda name, role: None)
    axes = {o.label: o for o in module.axis_options}
    axis = axes[xyz.LABEL_PREFIX + row.axis]
    x = axis.type(row.text(row.example)) if row.kind != "lora" else row.example
    axis.confirm(P(), [x])
    p = P()
    axis.apply(p, x, [x])
    overrides = xyz.overrides(p)
    assert list(overrides) == [xyz.ATTR_PREFIX + row.name]
    if row.is_param:
        assert getattr(FuseParams().with_(**xyz.param_changes(overrides)), row.name) == row.example
    else:
        assert overrides[xyz.ATTR_PREFIX + row.name] == row.example


def test_rows_without_an_axis_have_none():
    from lib_nplora.webui import xyz
    from webui.standins.webui_modules import standin_xyz_module, standin_xyz_scripts_data

    module = standin_xyz_module()
    added = xyz.register(standin_xyz_scripts_data(module), lambda: [], lambda name, role: None)
    assert added == len([p for p in PARAMS if p.axis]) + 1  # and the LoRA-set axis (content and style at once)
    labels = {o.label for o in module.axis_options}
    for row in PARAMS:
        assert any(label.startswith(xyz.LABEL_PREFIX) and row.axis and label.endswith(row.axis) for label in labels) \
            == bool(row.axis)


def test_request_params_is_names_then_fuse_params():
    assert [p.name for p in REQUEST_PARAMS] == ["content", "style"] + [f.name for f in dataclasses.fields(FuseParams)]
