"""Passage corpora: every common on-disk format read into one memory-mapped, id-addressable collection.

- :mod:`~atlas_kit.passages.passage`: the :class:`Passage` type and :func:`passage_fields` /
  :func:`passage_text`, the one reading of "anything passage-like";
- :mod:`~atlas_kit.passages.records`: record validation and the JSON layouts (Atlas, BEIR, contents);
- :mod:`~atlas_kit.passages.readers`: file formats, detection and :func:`load_passages`;
- :mod:`~atlas_kit.passages.arrow`: the Arrow schema and streaming rows into a memory-mapped file;
- :mod:`~atlas_kit.passages.collection`: :class:`Passages`, appended and removed from in
  O(changed) (segments + tombstones, :mod:`~atlas_kit.passages.tombstones`).
"""
from atlas_kit.passages.collection import PassageIds, Passages
from atlas_kit.passages.passage import Passage, PassageLike, passage_fields, passage_text
from atlas_kit.passages.readers import FORMATS, load_passages

__all__ = ["Passage", "PassageLike", "Passages", "PassageIds", "load_passages", "passage_text", "passage_fields",
           "FORMATS"]
