"""Starting a server from command-line choices: which model, which index, which store, where to bind.

With no model given it serves what ``atlas-kit demo`` leaves behind (``runs/demo/model`` and the
index it was saved with). ``--index`` takes ``NAME@VERSION`` (or ``NAME``: its published version)
from the store, or an index folder.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from atlas_kit.api import CONFIG_NAME, Atlas
from atlas_kit.index.store import IndexStore

__all__ = ["DEMO_MODEL", "load_atlas", "serve"]

log = logging.getLogger(__name__)

DEMO_MODEL = Path("runs/demo/model")


def _model_folder(model: str | os.PathLike | None) -> Path:
    if model is None:
        if not (DEMO_MODEL / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"no model at {DEMO_MODEL}: run `atlas-kit demo` first, or pass --model RUN_OR_FOLDER")
        return DEMO_MODEL
    folder = Path(model)
    if (folder / CONFIG_NAME).is_file():
        return folder
    if (folder / "model" / CONFIG_NAME).is_file():  # a run folder
        return folder / "model"
    raise FileNotFoundError(f"{folder} is neither a saved model ({CONFIG_NAME}) nor a run folder with model/")


def load_atlas(model: str | os.PathLike | None = None, index: str | None = None,
               store: str | os.PathLike = "indexes", device: str | None = None) -> Atlas:
    """The model to serve, with ``index`` (store ref or folder) in place of the one it was saved with."""
    folder = _model_folder(model)
    atlas = Atlas.from_pretrained(folder, device=device)
    if index is not None:
        if (Path(index) / "manifest.json").is_file():
            from atlas_kit.index import load_index

            new = load_index(index, retriever=atlas.retriever)
        else:
            new = IndexStore(store).load(index, retriever=atlas.retriever)
        atlas.swap_index(new)
    _name_from_store(atlas.index, IndexStore(store))
    return atlas


def _name_from_store(index, store: IndexStore) -> None:
    """Give an index loaded by path the ``NAME@VERSION`` ref it has when its folder is in the store."""
    path = getattr(index, "path", None)
    if getattr(index, "ref", None) or not path:
        return
    folder = Path(path).resolve()
    if store.root.is_dir() and folder.parent.parent == store.root.resolve():
        index.ref = f"{folder.parent.name}@{folder.name}"


def serve(atlas: Atlas, store: str | os.PathLike = "indexes", host: str = "127.0.0.1", port: int = 8000,
          admin_token: str | None = None, window_ms: float = 0.0, max_batch: int = 32) -> None:
    """Run the app with uvicorn until interrupted (binds 127.0.0.1 unless told otherwise)."""
    import uvicorn

    from atlas_kit.serve.app import create_app

    if host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("serving on %s: reachable from other machines; put TLS in front of it", host)
    if admin_token is None:
        log.info("no admin token set: /v1/index/swap and /v1/index/publish are disabled")
    app = create_app(atlas, store, admin_token=admin_token, window_ms=window_ms, max_batch=max_batch)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False)
