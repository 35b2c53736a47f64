"""A memory-mapped FAISS index (the default of ``FaissIndex.load``) must accept ``add`` / ``remove``.

FAISS aborts the whole process ("cannot be performed on a viewed vector") when a mapped index is
written to, so each write is first run in a subprocess: the test process survives a regression.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atlas_kit.index import FaissIndex
from atlas_kit.index.store import IndexStore
from atlas_kit.passages import Passages

ROOT = Path(__file__).resolve().parents[2]


def exercise(where: str, via_store: bool, mmap: bool, factory: str) -> dict:
    """Load, add 5 passages, remove 3, search; the sizes and top ids (run in the child process)."""
    ix = IndexStore(where).load("kb") if via_store else FaissIndex.load(where, mmap=mmap)
    rng = np.random.default_rng(1)
    new = rng.normal(size=(5, 16)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    ix.add(Passages.from_records([{"id": f"n{i}", "title": "", "text": f"new {i}"} for i in range(5)]), embeddings=new)
    ix.remove(["d0", "d7", "n2"])
    if "IVF" in factory:
        ix.set_search_params(nprobe=8)
    elif "HNSW" in factory:
        ix.set_search_params(efSearch=64)
    hits = ix.search(["q"] * 3, 5, np.concatenate([new[:2], rng.normal(size=(1, 16)).astype(np.float32)]))
    return {"n": len(ix), "ids": [h.ids for h in hits]}


CHILD = "import json, sys; from tests.index.test_faiss_mmap_writes import exercise; " \
        "print(json.dumps(exercise(sys.argv[1], sys.argv[2] == 'store', True, sys.argv[3])))"

FACTORIES = ["Flat", "IVF8,Flat", "HNSW8", "PQ4x4", "IVF8,PQ4x4"]  # 4-bit PQ: trains in well under a second


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(400, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)  # inner product: a vector is its own best match
    passages = Passages.from_records([{"id": f"d{i}", "title": "", "text": f"text {i}"} for i in range(400)])
    return passages, emb


def _run(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("factory", FACTORIES)
def test_mmap_loaded_index_accepts_add_and_remove(tmp_path, corpus, factory):
    passages, emb = corpus
    FaissIndex.from_embeddings(emb, passages, factory=factory, embeddings_dtype="float32").save(tmp_path / "ix")
    mapped = _run(str(tmp_path / "ix"), "path", factory)
    assert mapped == exercise(str(tmp_path / "ix"), False, False, factory)  # same as an index read into RAM
    assert mapped["n"] == 402
    assert mapped["ids"][0][0] == "n0" and mapped["ids"][1][0] == "n1"  # the added vectors are found
    assert not any(pid in ("d0", "d7", "n2") for ids in mapped["ids"] for pid in ids)
    assert FaissIndex.load(tmp_path / "ix").manifest["count"] == 400  # the folder on disk is untouched


def test_store_loaded_index_accepts_add_and_remove(tmp_path, corpus):
    passages, emb = corpus
    IndexStore(tmp_path / "store").add("kb@v1", FaissIndex.from_embeddings(emb, passages, factory="IVF8,Flat"))
    got = _run(str(tmp_path / "store"), "store", "IVF8,Flat")
    assert got["n"] == 402 and got["ids"][0][0] == "n0"


def test_mapped_index_is_materialised_once_and_still_searchable(tmp_path, corpus):
    """In-process: after the first write the index owns its memory; the old folder stays valid."""
    passages, emb = corpus
    FaissIndex.from_embeddings(emb, passages, factory="Flat", embeddings_dtype="float32").save(tmp_path / "ix")
    ix = FaissIndex.load(tmp_path / "ix")
    assert ix.memory_mapped
    ix.add(Passages.from_records([{"id": "x", "title": "", "text": "x"}]), embeddings=emb[:1])
    assert not ix.memory_mapped
    ix.add(Passages.from_records([{"id": "y", "title": "", "text": "y"}]), embeddings=-emb[5:6])
    ix.remove(["d3"])
    assert len(ix) == 401 and ix.search(["q"], 1, -emb[5:6])[0].ids == ["y"]
    np.testing.assert_array_equal(np.asarray(ix.embeddings)[-1], -emb[5])
