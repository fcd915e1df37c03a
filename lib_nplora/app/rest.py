"""REST API on the host's FastAPI app (and in standalone mode):

* ``POST /nplora/v1/fuse``    fuse two LoRAs by name and write the result into the LoRA folder;
* ``POST /nplora/v1/analyze`` per-module and per-block overlap numbers as JSON;
* ``GET  /nplora/v1/status``  version, host, LoRA count, cache use.

Bodies are validated strictly (unknown fields, wrong types: 422): numbers must be JSON numbers,
flags JSON booleans, names JSON strings; nothing is coerced ("0.5" is not a number, 1 is not
true). Names resolve only through the host's LoRA index. Library errors become clear 4xx answers ``{"detail": message}``: 400 bad
parameters, names or file names; 404 unknown LoRA; 409 the file exists (send ``overwrite``);
422 a LoRA file that cannot be fused (format, architecture, module types). Before any of that,
every route checks who is asking (``guard``, rules from ``HostContext.access``): the host's HTTP
Basic credentials when it has some (401), an ``Origin``/``Referer`` that is the page's own or one
the host allows (403), and ``Content-Type: application/json`` on POST (415). Routes are plain
functions, so FastAPI runs them on its thread pool; the fusion service is thread-safe.
Works with pydantic 1 (A1111, fastapi 0.94) and pydantic 2 (Forge, fastapi 0.104).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Literal, Optional, Union

import pydantic
from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr
from fastapi import FastAPI, HTTPException

from .. import __version__
from ..errors import (ArchitectureError, FormatError, NpLoraError, OutputExistsError, ParameterError,
                      UnsafeFileError, UnsupportedModuleError)
from ..params import FUSE_PARAMS, REQUEST_PARAMS, FuseParams, Param
from .context import HostContext
from .guard import SAFE_METHODS, RequestRefused, check_basic_auth, check_json_content_type, check_origin, headers_of
from .index import LoraNameError, LoraNotFoundError
from .request import MAX_SET, FusionRequest, PromptTagError, parse_set
from .service import OutputNameError, default_output_name

PREFIX = "/nplora/v1"
_V2 = int(pydantic.VERSION.split(".")[0]) >= 2


class _Strict(pydantic.BaseModel):
    if _V2:
        model_config = {"extra": "forbid"}
    else:
        class Config:
            extra = "forbid"


#: a JSON number (an integer or a float; never a string or a boolean)
Number = Union[StrictInt, StrictFloat]


class LoraRef(_Strict):
    """One LoRA of a list, with its own weight (on top of the side's ``content_weight`` / ``style_weight``)."""

    name: StrictStr = pydantic.Field(..., max_length=255, description="LoRA name (file stem or alias)")
    weight: Number = pydantic.Field(1.0, description="its own weight (default 1)")


#: per-block mu as JSON: "IN:0.2,OUT:hard" or {"IN": 0.2, "OUT": "hard"}
BlockMuJSON = Union[StrictStr, Dict[StrictStr, Union[Number, Literal["hard"]]]]

#: kind -> JSON type (strict: nothing is coerced)
_JSON_TYPES = {"lora": StrictStr, "number": Number, "flag": StrictBool, "rank": StrictInt, "blocks": BlockMuJSON}


def _body_field(p: Param) -> tuple:
    """One table row as a body field: (annotation, pydantic.Field). A LoRA name is required (one
    name, a LoRA set's text ``"dog + hat*0.5"``, or a list of {name, weight}); a field whose
    default is None or the host's setting is optional (null = not given)."""
    if p.kind == "lora":
        return Union[StrictStr, List[LoraRef]], pydantic.Field(
            ..., description=p.doc + "; several: a list of {\"name\", \"weight\"} (at most 8)")
    kind = Literal[p.choices] if p.kind == "choice" else _JSON_TYPES[p.kind]
    if p.from_settings or p.default is None:
        doc = p.doc + (" (omitted: the host's setting)" if p.from_settings else "")
        return Optional[kind], pydantic.Field(None, description=doc)
    return kind, pydantic.Field(p.default, description=p.doc)


#: a content + style pair and the fusion parameters: one field per table row (``params.PARAMS``)
PairBody = pydantic.create_model("PairBody", __base__=_Strict, **{p.name: _body_field(p) for p in REQUEST_PARAMS})
PairBody.__module__ = __name__


class FuseBody(PairBody):
    name: Optional[StrictStr] = pydantic.Field(None, max_length=255,
                                               description="file name in the LoRA folder, without folders")
    overwrite: StrictBool = False
    dtype: Literal["fp16", "bf16", "fp32"] = "fp16"


def _dump(model: pydantic.BaseModel) -> dict:
    return model.model_dump() if _V2 else model.dict()


MAX_NAME_TEXT = 255 * 8


def request_from(body: PairBody, defaults: FuseParams) -> FusionRequest:
    """A FusionRequest from a validated body; omitted mu/scope come from the host's settings.
    A name may be a LoRA set's text or a list of {name, weight} (``FusionRequest.of_sets``).

    Raises:
        ParameterError, LoraNameError: a bad list, name or weight (400).
    """
    d = _dump(body)
    params = FuseParams.from_values(defaults, **{p.name: d[p.name] for p in FUSE_PARAMS})
    sides = []
    for side in ("content", "style"):
        value = d[side]
        if isinstance(value, str):
            if len(value) > MAX_NAME_TEXT:
                raise ParameterError(f"the {side} name is longer than {MAX_NAME_TEXT} characters")
            sides.append(list(parse_set(value, f"{side} LoRA name")))
        else:
            if len(value) > MAX_SET:
                raise ParameterError(f"at most {MAX_SET} {side} LoRAs, got {len(value)}")
            sides.append([(ref["name"], ref["weight"]) for ref in value])
    return FusionRequest.of_sets(sides[0], sides[1], params, source="api")


def http_error(e: Exception) -> HTTPException:
    """The HTTP answer for a library error."""
    if isinstance(e, OutputExistsError):
        return HTTPException(409, str(e))
    if isinstance(e, LoraNotFoundError):
        return HTTPException(404, str(e))
    if isinstance(e, LoraNameError):
        return HTTPException(400, str(e))
    if isinstance(e, (ParameterError, OutputNameError, PromptTagError)):
        return HTTPException(400, str(e))
    if isinstance(e, (FormatError, ArchitectureError, UnsafeFileError, UnsupportedModuleError)):
        return HTTPException(422, str(e))
    return HTTPException(400 if isinstance(e, NpLoraError) else 500, str(e))


def guarded_route_class(ctx: HostContext):
    """An ``APIRoute`` class whose routes check ``ctx.access()`` before FastAPI reads the body:
    credentials (401 with ``WWW-Authenticate: Basic``), origin (403), JSON content type on routes
    that act (415). The checks come first, so no body is parsed for a request that may not act."""
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute

    class GuardedRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()
            acts = bool(set(self.methods or ()) - SAFE_METHODS)

            async def guarded(request):
                headers = headers_of(request.headers)
                try:
                    rules = ctx.access()
                    check_basic_auth(headers, rules)
                    check_origin(headers, request.url.scheme, rules, method=request.method)
                    if acts:
                        check_json_content_type(headers)
                except RequestRefused as e:
                    extra = {"WWW-Authenticate": "Basic"} if e.status == 401 else None
                    return JSONResponse({"detail": str(e)}, status_code=e.status, headers=extra)
                return await handler(request)

            return guarded

    return GuardedRoute


def register(app: FastAPI, ctx: HostContext) -> None:
    """Add the NP-LoRA routes to ``app`` (a WebUI's or the standalone server's), guarded by
    ``ctx.access()`` (see ``guarded_route_class``)."""
    from fastapi import APIRouter

    from ..formats.writer import OUTPUT_DTYPES

    def fuse(body: FuseBody):
        try:
            request = request_from(body, ctx.defaults())
            index = ctx.index()
            saved = ctx.service.save(index, request, body.name or default_output_name(request),
                                     overwrite=body.overwrite, dtype=OUTPUT_DTYPES[body.dtype], device=ctx.device())
        except NpLoraError as e:
            raise http_error(e) from None
        path = Path(saved.path)
        try:
            tag = request.tag()
        except PromptTagError:  # saved all the same; a name no prompt tag can carry
            tag = None
        return {"name": path.stem, "file": path.name, "sha256": saved.sha256, "tensors": saved.tensors,
                "metadata": saved.metadata, "tag": tag}

    def analyze(body: PairBody):
        try:
            request = request_from(body, ctx.defaults())
            result = ctx.service.analyze(ctx.index(), request, device=ctx.device())
        except NpLoraError as e:
            raise http_error(e) from None
        return result.to_dict()

    def status():
        try:
            loras = len(ctx.index().entries())
        except Exception:  # the host's list may be unavailable while it starts
            loras = None
        return {"version": __version__, "host": ctx.host, "model_arch": ctx.model_arch(), "loras": loras,
                "cache": ctx.service.caches.stats().to_dict()}

    router = APIRouter(route_class=guarded_route_class(ctx))
    router.add_api_route(f"{PREFIX}/fuse", fuse, methods=["POST"], summary="Fuse two LoRAs and save the result")
    router.add_api_route(f"{PREFIX}/analyze", analyze, methods=["POST"], summary="Overlap analysis of a LoRA pair")
    router.add_api_route(f"{PREFIX}/status", status, methods=["GET"], summary="Version, host and cache use")
    app.include_router(router)
