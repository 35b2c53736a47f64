"""atlas_kit: retrieval-augmented few-shot learning in the style of Atlas (Izacard et al., 2022).

Data flows one way: passages -> retriever -> index -> (rerank) -> reader -> answer. Training adds
reader signal -> loss -> retriever. Top-level names are imported lazily so ``atlas-kit --help``
and light scripts do not pay for torch/transformers imports they do not use.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Atlas": "atlas_kit.api",
    "Answer": "atlas_kit.api",
    "Retriever": "atlas_kit.retriever",
    "Reader": "atlas_kit.reader",
    "Passage": "atlas_kit.passages",
    "Passages": "atlas_kit.passages",
    "load_passages": "atlas_kit.passages",
}

__all__ = [*_EXPORTS, "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from atlas_kit.api import Answer, Atlas
    from atlas_kit.passages import Passage, Passages, load_passages
    from atlas_kit.reader import Reader
    from atlas_kit.retriever import Retriever


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'atlas_kit' has no attribute {name!r}")
