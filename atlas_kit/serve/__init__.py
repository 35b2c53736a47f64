"""HTTP serving: a FastAPI app (JSON API, OpenAI-compatible chat, web page) over a live Atlas model,
with request batching and admin-only index hot swap. Needs the extra: ``pip install "atlas_kit[serve]"``.

    from atlas_kit.serve import create_app
    app = create_app(atlas, store="indexes", admin_token=load_admin_token())
"""
from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f'atlas_kit.serve needs the "serve" extra: pip install "atlas_kit[serve]" ({e})') from e

from atlas_kit.serve.app import create_app
from atlas_kit.serve.auth import TOKEN_ENV, load_admin_token
from atlas_kit.serve.batcher import Batcher
from atlas_kit.serve.server import load_atlas, serve

__all__ = ["create_app", "load_admin_token", "load_atlas", "serve", "Batcher", "TOKEN_ENV"]
