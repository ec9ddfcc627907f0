"""`rigopt serve`: the main job as a local web page and a JSON API (FastAPI on uvicorn).

- `GET /`: one page (optimizer/serve/static/: HTML, CSS and JS shipped in the wheel; no CDN, no font, nothing
  fetched at run time) that asks the main question, draws the answer and keeps the question in the URL.
- `POST /api/cheapest|estimate|fleet|mixed|export`: the commands' `--json` answers; the bodies are the pydantic
  models of optimizer/serve/work.py (same bounds and defaults as the CLI); `GET /api/catalog/{models,gpus,nodes}`.
- `GET /docs` (Swagger UI served from the fastapi-offline package's own copy) and `/openapi.json`.

Solves never run on the event loop: a bounded pool of worker processes (`workers`, default 2) answers them, at most
`queue` requests wait (more get 503), and a request that takes longer than `time_limit_s` gets 504. A bad input is
a 400 with the CLI's one-line message (`{"error": "..."}`). Nothing is written to disk: exports are built in memory
and the zip is sent in the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from optimizer.limits import MAX_MESSAGE_CHARS, clip_line
from optimizer.serve.work import (
    CheapestRequest,
    EstimateRequest,
    ExportRequest,
    FleetRequest,
    MixedRequest,
    answer,
    worker_init,
)

ROUTES: list[tuple[str, type[BaseModel], str]] = [
    ("cheapest", CheapestRequest, "rigopt cheapest: the cheapest plan (or fleet) meeting the targets"),
    ("estimate", EstimateRequest, "rigopt estimate: memory and speed of one model on one accelerator"),
    ("fleet", FleetRequest, "rigopt fleet: the cheapest serving fleet for a request rate within SLAs"),
    ("mixed", MixedRequest, "rigopt mixed: the best plan over mixed GPUs you own"),
    ("export", ExportRequest, "rigopt export: launch scripts of a plan (files and a zip, from memory)"),
]
STATIC_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}


def _static() -> dict[str, tuple[bytes, str]]:
    """The page's files, read once from the installed package (never from the working directory)."""
    root = resources.files("optimizer.serve") / "static"
    out = {}
    for f in root.iterdir():
        suffix = "." + f.name.rsplit(".", 1)[-1]
        if f.is_file() and suffix in STATIC_TYPES:
            out[f.name] = (f.read_bytes(), STATIC_TYPES[suffix])
    return out


def _one_line(msg: str) -> str:
    return clip_line(msg, MAX_MESSAGE_CHARS)


def create_app(workers: int = 2, queue: int = 64, time_limit_s: float = 120.0) -> FastAPI:
    static = _static()
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx = multiprocessing.get_context("spawn")  # no fork of a threaded server; workers share nothing
        state["pool"] = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=worker_init)
        state["slots"] = asyncio.Semaphore(queue)
        try:
            yield
        finally:
            state["pool"].shutdown(wait=False, cancel_futures=True)

    app = FastAPIOffline(title="rigopt", version=_version(), lifespan=lifespan,
                         description="The cheapest hardware that runs a model at your context, speed and traffic.")

    @app.exception_handler(RequestValidationError)
    async def _bad_body(_: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": (), "msg": "bad request"}
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body") or "body"
        return JSONResponse({"error": _one_line(f"{loc}: {err.get('msg', 'bad value')}")}, status_code=400)

    async def run(kind: str, body: dict[str, Any]) -> JSONResponse:
        slots: asyncio.Semaphore = state["slots"]
        if slots.locked():
            return JSONResponse({"error": "busy: too many questions waiting, try again"}, status_code=503)
        async with slots:
            fut = asyncio.get_running_loop().run_in_executor(state["pool"], answer, kind, body)
            try:
                status, out = await asyncio.wait_for(fut, timeout=time_limit_s)
            except TimeoutError:
                return JSONResponse({"error": f"timed out after {time_limit_s:g} s"}, status_code=504)
        return JSONResponse(out, status_code=status)

    def route(kind: str, body: type[BaseModel], summary: str) -> None:
        async def endpoint(q: BaseModel) -> JSONResponse:
            return await run(kind, q.model_dump())
        endpoint.__annotations__ = {"q": body, "return": JSONResponse}  # FastAPI reads the body model from it
        endpoint.__name__ = f"api_{kind}"
        app.post(f"/api/{kind}", summary=summary)(endpoint)

    for kind, body, summary in ROUTES:
        route(kind, body, summary)

    @app.get("/api/catalog/{what}", summary="rigopt catalog models|gpus|nodes")
    async def api_catalog(what: str) -> JSONResponse:
        from optimizer.report import catalog
        fn = {"models": catalog.list_models, "gpus": catalog.list_gpus, "nodes": catalog.list_nodes}.get(what)
        if fn is None:
            return JSONResponse({"error": f"unknown catalogue '{_one_line(what)[:40]}' (models, gpus, nodes)"},
                                status_code=404)
        return JSONResponse(fn().model_dump(mode="json"))

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> Response:
        body, ctype = static["index.html"]
        return Response(body, media_type=ctype)

    @app.get("/static/{name}", include_in_schema=False)
    async def asset(name: str) -> Response:
        if name not in static:
            return JSONResponse({"error": "not found"}, status_code=404)
        body, ctype = static[name]
        return Response(body, media_type=ctype, headers={"Cache-Control": "no-cache"})

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("rigopt")
    except PackageNotFoundError:
        return "0"


def serve(host: str = "127.0.0.1", port: int = 8765, workers: int = 2) -> None:
    """Run the app with uvicorn (bound to 127.0.0.1 unless another address is named)."""
    import uvicorn
    uvicorn.run(create_app(workers=workers), host=host, port=port, log_level="warning")
