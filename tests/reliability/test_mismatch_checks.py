"""Retriever/index mismatch checks without gaps."""
from __future__ import annotations

import numpy as np
import pytest

from atlas_kit.index import FaissIndex, IndexMismatchError
from atlas_kit.passages import Passages
from tests.conftest import make_tiny_retriever


def test_dimension_checked_without_retriever_identity(tmp_path, toy_passages):
    index = FaissIndex.from_embeddings(np.random.default_rng(0).normal(size=(6, 64)).astype("float32"), toy_passages)
    assert index.manifest["retriever"] == {}
    index.save(tmp_path / "idx")
    retriever = make_tiny_retriever(hidden=32)
    with pytest.raises(IndexMismatchError, match="64-d"):
        FaissIndex.load(tmp_path / "idx", retriever=retriever)
    with pytest.raises(IndexMismatchError, match="64-d"):
        index.check_compatible(retriever, allow_mismatch=True)  # a dimension mismatch is never allowed


@pytest.mark.parametrize("change", [{"with_title": False}, {"passage_maxlength": 32}])
def test_add_refuses_passages_embedded_differently(toy_records, change):
    retriever = make_tiny_retriever()
    index = FaissIndex.build(Passages.from_records(toy_records[:4]), retriever)
    for key, value in change.items():
        setattr(retriever, key, value)
    with pytest.raises(IndexMismatchError, match=next(iter(change))):
        index.add(Passages.from_records(toy_records[4:]), retriever=retriever)
    assert len(index) == 4
