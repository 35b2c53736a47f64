"""One passage, and the single reading of "anything passage-like" the library accepts.

Retrievers, the reader, rerankers and the demo all take passages in several shapes: a
:class:`Passage`, a search hit (anything with ``.title`` / ``.text``), a dict with ``"text"``
(and optionally ``"title"``), or a bare string (the text, no title). :func:`passage_fields` is the
one place that turns any of them into ``(title, text)``, so every component embeds and reads
identical strings.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, Union

__all__ = ["Passage", "PassageLike", "passage_fields", "passage_text"]


@dataclass(frozen=True)
class Passage:
    """One passage. ``metadata`` keeps every extra field of the source record (url, date, ...)."""

    id: str
    title: str
    text: str
    metadata: dict = field(default_factory=dict)


class _HasText(Protocol):
    title: Any
    text: Any


PassageLike = Union[Passage, _HasText, Mapping, str]


def passage_fields(p: PassageLike) -> tuple[str, str]:
    """``(title, text)`` of a passage-like value; a missing or null title is ``""``.

    A mapping must have a ``"text"`` key (a passage without text is a caller's bug, not an empty
    passage); an object must have a ``.text`` attribute.
    """
    if isinstance(p, str):
        return "", p
    if isinstance(p, Mapping):
        if "text" not in p:
            raise KeyError(f"a passage given as a dict needs a 'text' field (keys: {sorted(map(str, p))})")
        return str(p.get("title") or ""), str(p["text"] or "")
    return str(getattr(p, "title", "") or ""), str(p.text or "")


def passage_text(p: PassageLike, with_title: bool = True) -> str:
    """The text a dense/sparse retriever embeds: ``"title text"`` (Atlas/Contriever convention).

    The title is left out when it is empty or ``with_title`` is false. Works for anything
    :func:`passage_fields` reads, so every retriever embeds identical strings.
    """
    title, text = passage_fields(p)
    return f"{title} {text}" if with_title and title else text
