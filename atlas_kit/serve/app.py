"""The FastAPI app: JSON endpoints over a :class:`~atlas_kit.serve.service.Service`, and the web page.

    POST /v1/retrieve           {"questions": [str], "k": int} -> {"results": [[passage]], "index"}
    POST /v1/ask                {"question": str, "k": int} -> {"answer", "passages", "index"}
    POST /v1/chat/completions   OpenAI-compatible; the last user message is the question
    GET  /v1/index              the live index: name, version, kind, count, retriever fingerprint
    GET  /v1/indexes            the versions in the index store
    POST /v1/index/swap         {"ref": "NAME@VERSION"}  (admin: Authorization: Bearer TOKEN)
    POST /v1/index/publish      {"ref": "NAME@VERSION", "swap": bool}  (admin)
    GET  /healthz, GET /v1/stats, GET / (the page), GET /docs (OpenAPI)

Errors are JSON with a ``detail``: 422 names the invalid field, 401/403 refuse admin calls, 404 an
unknown ref, 409 an index built by another encoder, 413 a body over the limit; an unexpected error
is logged and answered 500 without a traceback.
"""
from __future__ import annotations

import logging
import time
import uuid
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from atlas_kit.api import Atlas
from atlas_kit.index.base import IndexMismatchError
from atlas_kit.index.store import IndexStore
from atlas_kit.serve import schemas as S
from atlas_kit.serve.auth import AdminAuth
from atlas_kit.serve.limits import BodySizeLimit
from atlas_kit.serve.service import NoReaderError, Service

__all__ = ["create_app"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20


def create_app(
    atlas: Atlas,
    store: IndexStore | str | None = "indexes",
    *,
    admin_token: str | None = None,
    window_ms: float = 0.0,
    max_batch: int = 32,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> FastAPI:
    """The app serving ``atlas``.

    Args:
        atlas: the live model (with an index; with a reader for ask and chat).
        store: the index store where swap/publish refs resolve (default ``indexes/``).
        admin_token: the bearer token for admin endpoints (see :func:`~atlas_kit.serve.auth.load_admin_token`);
            None disables them.
        window_ms / max_batch: request batching (``max_batch=1``: off).
        max_body_bytes: larger request bodies are refused with 413.
    """
    store = store if isinstance(store, IndexStore) else IndexStore(store or "indexes")
    service = Service(atlas, store, window_ms=window_ms, max_batch=max_batch)
    admin = AdminAuth(admin_token)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = FastAPI(title="atlas_kit", version=_version(), lifespan=lifespan,
                  description="Retrieval-augmented answers from a live Atlas model, with index hot swap.")
    app.state.service = service
    app.add_middleware(BodySizeLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)

    # ------------------------------------------------------------------ query endpoints
    @app.post("/v1/retrieve", response_model=S.RetrieveResponse, tags=["query"])
    async def retrieve(req: S.RetrieveRequest) -> S.RetrieveResponse:
        """Top-``k`` passages for each question (optionally reranked from ``candidates``)."""
        version, results = await service.retrieve(req.questions, req.k, req.candidates)
        return S.RetrieveResponse(results=results, index=version)

    @app.post("/v1/ask", response_model=S.AskResponse, tags=["query"])
    async def ask(req: S.AskRequest) -> S.AskResponse:
        """The reader's answer from the top-``k`` passages, the passages, and the index version."""
        version, passages, text = await service.ask(req.question, req.k, req.candidates)
        return S.AskResponse(question=req.question, answer=text, passages=passages, index=version)

    @app.post("/v1/chat/completions", response_model=S.ChatResponse, tags=["query"])
    async def chat_completions(req: S.ChatRequest) -> S.ChatResponse:
        """OpenAI-compatible chat completion: the last user message is the question, the answer the
        assistant message; the passages and index version come in extra fields."""
        question = next((m.content for m in reversed(req.messages) if m.role == "user" and m.content.strip()), None)
        if question is None:
            raise HTTPException(422, "messages: needs at least one non-empty message with role 'user'")
        if len(question) > S.MAX_QUESTION_CHARS:
            raise HTTPException(422, f"messages: the last user message has more than {S.MAX_QUESTION_CHARS} characters")
        version, passages, text = await service.ask(question, req.k, None, req.max_tokens)
        prompt_tokens, completion_tokens = service.count_tokens(question), service.count_tokens(text)
        return S.ChatResponse(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=req.model,
            choices=[S.ChatChoice(message=S.ChatChoiceMessage(content=text))],
            usage=S.ChatUsage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                              total_tokens=prompt_tokens + completion_tokens),
            passages=passages, index=version,
        )

    # ------------------------------------------------------------------ index endpoints
    @app.get("/v1/index", response_model=S.IndexInfo, tags=["index"])
    async def index() -> S.IndexInfo:
        """The live index."""
        return service.info()

    @app.get("/v1/indexes", response_model=S.StoreListing, tags=["index"])
    async def indexes() -> S.StoreListing:
        """Every version in the index store (``current``: the published one of its name)."""
        return S.StoreListing(indexes=service.listing())

    @app.post("/v1/index/swap", response_model=S.SwapResponse, tags=["admin"], dependencies=[Depends(admin)])
    async def swap(req: S.RefRequest) -> S.SwapResponse:
        """Point the live model at ``NAME@VERSION`` from the store (no restart, no retraining)."""
        info, previous = await service.swap(req.ref)
        return S.SwapResponse(index=info, previous=previous)

    @app.post("/v1/index/publish", response_model=S.PublishResponse, tags=["admin"], dependencies=[Depends(admin)])
    async def publish(req: S.PublishRequest) -> S.PublishResponse:
        """Make ``NAME@VERSION`` the store's current version (``swap``: and the live index)."""
        info, swapped = await service.publish(req.ref, swap=req.swap)
        return S.PublishResponse(published=req.ref, swapped=swapped, index=info)

    # ------------------------------------------------------------------ operations
    @app.get("/healthz", response_model=S.Health, tags=["ops"])
    async def healthz() -> S.Health:
        return S.Health(index=service.info(), reader=service.has_reader)

    @app.get("/v1/stats", tags=["ops"])
    async def stats() -> dict[str, Any]:
        """Batching counters: model calls, requests and questions served, the largest batch."""
        st = service.batcher.stats
        return {"calls": st.calls, "requests": st.requests, "items": st.items, "largest_batch": st.largest,
                "window_ms": service.batcher.window * 1000, "max_batch": service.batcher.max_batch,
                "admin": admin.enabled}

    # ------------------------------------------------------------------ the page
    static = resources.files("atlas_kit.serve") / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(static / "index.html"), media_type="text/html")

    return app


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = jsonable_encoder([{"loc": e.get("loc", ()), "msg": e.get("msg"), "type": e.get("type")}
                                   for e in exc.errors()])
        message = "; ".join(f"{_field(e.get('loc', ()))}: {e.get('msg')}" for e in errors)
        return JSONResponse({"detail": message, "errors": errors}, status_code=422)

    def handler(status: int):
        async def respond(_req: Request, exc: Exception) -> JSONResponse:
            return JSONResponse({"detail": str(exc).strip("'\"")}, status_code=status)
        return respond

    app.add_exception_handler(IndexMismatchError, handler(409))
    app.add_exception_handler(FileNotFoundError, handler(404))
    app.add_exception_handler(PermissionError, handler(403))
    app.add_exception_handler(NoReaderError, handler(501))

    @app.exception_handler(Exception)
    async def unexpected(req: Request, exc: Exception) -> JSONResponse:
        log.exception("error serving %s %s", req.method, req.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the server log"}, status_code=500)


def _field(loc: Any) -> str:
    parts = [str(p) for p in loc if p != "body"]
    return ".".join(parts) if parts else "body"


def _version() -> str:
    from atlas_kit import __version__

    return __version__
