"""Index kinds by name, and :func:`load_index`, which opens any index folder by the kind its
manifest records.

Each index class registers itself (``@register``) where it is defined, so code that dispatches on a
kind (``load_index``, a hybrid loading its members) needs no import of the concrete classes - that
is what kept ``index/__init__`` and ``hybrid_index`` importing each other before.
"""
from __future__ import annotations

import importlib
import inspect
import os
from typing import Any, TypeVar

from atlas_kit.index.base import Index, read_manifest

__all__ = ["INDEX_KINDS", "FOLDER_KINDS", "register", "index_class", "load_index"]

INDEX_KINDS: dict[str, type[Index]] = {}

# Folders in the index-folder format that are not retrieval indexes, by kind -> (module, class):
# kept as names so that index/ never imports the packages built on top of it.
FOLDER_KINDS: dict[str, tuple[str, str]] = {
    "kv_memory": ("atlas_kit.memory.kv_memory", "KVMemory"),
    "emat_memory": ("atlas_kit.memory.emat_memory", "QAMemory"),
}

T = TypeVar("T", bound=type)


def register(cls: T) -> T:
    """Class decorator: make ``cls`` loadable by its ``kind``."""
    INDEX_KINDS[cls.kind] = cls  # type: ignore[attr-defined]
    return cls


def index_class(kind: Any, where: Any = "index") -> type[Index]:
    """The registered class of ``kind``; ``ValueError`` naming ``where`` for an unknown kind."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"{where}: unknown index kind {kind!r} (known: {sorted(INDEX_KINDS)})")
    return INDEX_KINDS[kind]


def _accepts(cls: type, name: str) -> bool:
    params = inspect.signature(cls.load).parameters  # type: ignore[attr-defined]
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def load_index(folder: str | os.PathLike, retriever: Any = None, allow_mismatch: bool = False, **kwargs: Any) -> Index:
    """Open any index folder, dispatching on the ``kind`` its manifest records.

    ``retriever``/``allow_mismatch`` go to loaders that take them (dense, hybrid and
    Elasticsearch indexes check the encoder; a hybrid's kind is only known from its members).
    """
    kind = read_manifest(folder).get("kind")
    if kind in FOLDER_KINDS:  # other folders in the index format (a memory), imported when met
        module, name = FOLDER_KINDS[kind]
        return getattr(importlib.import_module(module), name).load(folder, **kwargs)
    if kind not in INDEX_KINDS:
        raise ValueError(f"{folder}: unknown index kind {kind!r} (known: {sorted([*INDEX_KINDS, *FOLDER_KINDS])})")
    cls = INDEX_KINDS[kind]
    if cls.needs_embeddings or _accepts(cls, "retriever"):
        return cls.load(folder, retriever=retriever, allow_mismatch=allow_mismatch, **kwargs)  # type: ignore[attr-defined]
    return cls.load(folder, **kwargs)  # type: ignore[attr-defined]
