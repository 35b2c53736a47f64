"""Source records -> passage rows: field validation and the JSON record layouts (Atlas, BEIR, contents).

Every reader maps a record to a :data:`Row` ``(id, title, text, metadata)`` through
:func:`record_to_row`; errors name the place (``where``: file and line, or record number) and the
field, because a silently mangled passage shows up much later as an unexplainable retrieval miss.
"""
from __future__ import annotations

from typing import Any

__all__ = ["Row", "RESERVED", "check_row", "record_to_row", "split_contents", "detect_schema"]

Row = tuple[str, str, str, dict]  # (id, title, text, metadata)
# field names that carry the passage itself; in metadata they are nested under "metadata" on export
RESERVED = frozenset({"id", "_id", "title", "text", "contents", "metadata"})


# ---------------------------------------------------------------------- record -> row
def check_row(pid: Any, title: Any, text: Any, where: str, id_key: str = "id", text_key: str = "text") -> Row:
    """Validate one passage's fields: ids are non-blank strings or integers, text a non-blank
    string, title a string or missing (``true`` is never turned into ``"True"``)."""
    if pid is None or pid == "":
        raise ValueError(f"{where}: missing field '{id_key}'")
    if isinstance(pid, bool) or not isinstance(pid, (str, int)):
        raise ValueError(f"{where}: field '{id_key}' must be a string or an integer, got {type(pid).__name__}")
    if isinstance(pid, str) and not pid.strip():
        raise ValueError(f"{where}: field '{id_key}' is blank")
    if text is None:
        raise ValueError(f"{where}: missing field '{text_key}'")
    if not isinstance(text, str):
        raise ValueError(f"{where}: field '{text_key}' must be a string, got {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{where}: field '{text_key}' is empty")
    if title is not None and not isinstance(title, str):
        raise ValueError(f"{where}: field 'title' must be a string, got {type(title).__name__}")
    return str(pid), "" if title is None else title, text, {}


def split_contents(contents: str) -> tuple[str, str]:
    """Pyserini/FlashRAG ``contents``: first line is the title (FlashRAG quotes it), the rest is text.

    Single-line contents (e.g. MS MARCO in Pyserini) are all text: calling the whole passage a title
    would leave nothing to read.
    """
    if "\n" not in contents:
        return "", contents.strip()
    title, _, text = contents.partition("\n")
    title = title.strip()
    if len(title) >= 2 and title[0] == title[-1] == '"':
        title = title[1:-1].strip()
    return title, text.strip()


def record_to_row(rec: dict[str, Any], schema: str, where: str) -> Row:
    """Map one source record to (id, title, text, metadata) for ``schema`` (atlas / beir / contents).

    Every field that is not part of the passage is kept in metadata; a ``"metadata"`` object
    (BEIR's own field, or what :meth:`~atlas_kit.passages.Passages.to_jsonl` nests) is merged in rather than nested.
    """
    id_key = "_id" if schema == "beir" else "id"
    if schema == "contents":
        contents = rec.get("contents")
        pid, _, _, _ = check_row(rec.get(id_key), "", contents, where, id_key, "contents")
        title, text = split_contents(str(contents))
        used = (id_key, "contents")
    else:
        pid, title, text, _ = check_row(rec.get(id_key), rec.get("title"), rec.get("text"), where, id_key)
        used = (id_key, "title", "text")
    meta = {k: v for k, v in rec.items() if k not in used}
    nested = meta.get("metadata")
    if isinstance(nested, dict):
        del meta["metadata"]
        meta = {**nested, **meta}
    return pid, title, text, meta


def detect_schema(rec: dict[str, Any]) -> str:
    """Which JSON record layout this is, from one record's keys."""
    if "contents" in rec and "text" not in rec:
        return "contents"
    if "_id" in rec and "id" not in rec:
        return "beir"
    return "atlas"
