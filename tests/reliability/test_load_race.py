"""A load sees exactly one complete version of an index folder, or fails cleanly; updates from
the CLI never rewrite a published store version in place."""
from __future__ import annotations

import threading

import numpy as np
import pytest

from atlas_kit.cli import main
from atlas_kit.index import BM25Index, FaissIndex
from atlas_kit.index.base import IndexChangedError
from atlas_kit.index.store import IndexStore
from atlas_kit.passages import Passages


def _index(records, prefix, dim=8):
    ps = Passages.from_records([{**r, "id": f"{prefix}{r['id']}"} for r in records])
    return FaissIndex.from_embeddings(np.eye(len(ps), dim, dtype=np.float32), ps)


def _consistent(index) -> bool:
    m = index.manifest
    return m["count"] == len(index.passages) and m["corpus_checksum"] == index.passages.checksum()


def _resave_during_next_load(monkeypatch, save) -> None:
    """Make the next ``Passages.load`` first run ``save()`` - a concurrent re-save of the folder
    landing in the middle of a load - then load as usual (later loads are plain)."""
    real_load = Passages.load.__func__

    def load_and_swap(cls, path):
        monkeypatch.setattr(Passages, "load", classmethod(real_load))
        save()
        return real_load(cls, path)

    monkeypatch.setattr(Passages, "load", classmethod(load_and_swap))


def test_save_during_load_is_detected_not_mixed(tmp_path, toy_records, monkeypatch):
    """Deterministic: the folder is re-saved (same count, other passages) in the middle of a load."""
    folder = tmp_path / "idx"
    _index(toy_records, "a-").save(folder)
    other = _index(toy_records, "b-")
    _resave_during_next_load(monkeypatch, lambda: other.save(folder))  # a concurrent `index add` lands now
    with pytest.raises(IndexChangedError, match="replaced while it was being loaded"):
        FaissIndex.load(folder)
    loaded = FaissIndex.load(folder)  # no save in flight now: a clean read of the new version
    assert _consistent(loaded) and loaded.passages.ids[0] == "b-p0"


def test_store_load_retries_a_raced_load(tmp_path, toy_records, monkeypatch):
    store = IndexStore(tmp_path)
    store.add("kb@v1", _index(toy_records, "a-"))
    other = _index(toy_records, "b-")
    _resave_during_next_load(monkeypatch, lambda: other.save(tmp_path / "kb" / "v1"))
    loaded = store.load("kb")
    assert _consistent(loaded) and loaded.passages.ids[0] == "b-p0"


def test_bm25_save_during_load_is_detected(tmp_path, toy_records, monkeypatch):
    folder = tmp_path / "bm25"
    BM25Index.build(Passages.from_records(toy_records)).save(folder)
    other = BM25Index.build(Passages.from_records([{**r, "id": "b" + r["id"]} for r in toy_records]))
    _resave_during_next_load(monkeypatch, lambda: other.save(folder))
    with pytest.raises(IndexChangedError):
        BM25Index.load(folder)


def test_loads_racing_saves_see_no_mixed_version(tmp_path, toy_records):
    """Bounded race: one thread re-saves the folder 40 times (alternating 4 and 6 passages, other
    ids), three threads load it meanwhile; every successful load is one complete version."""
    folder = tmp_path / "idx"
    versions = [_index(toy_records[:4], "a-"), _index(toy_records, "b-")]
    versions[0].save(folder)
    done = threading.Event()
    results = {"ok": 0, "mixed": 0, "failed": 0}
    lock = threading.Lock()

    def writer():
        try:
            for i in range(40):
                versions[i % 2].save(folder)
        finally:
            done.set()

    def reader():
        while not done.is_set():
            try:
                loaded = FaissIndex.load(folder)
            except (IndexChangedError, FileNotFoundError, ValueError, RuntimeError, OSError):
                key = "failed"
            else:
                key = "ok" if _consistent(loaded) and len(loaded) == loaded.index.ntotal else "mixed"
            with lock:
                results[key] += 1

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert results["mixed"] == 0, results
    assert results["ok"] > 0, results
    assert _consistent(FaissIndex.load(folder))


def test_cli_add_and_remove_write_a_new_version_and_move_current(tmp_path, toy_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Passages.from_records(toy_records[:4]).to_jsonl(tmp_path / "a.jsonl")
    Passages.from_records(toy_records[4:]).to_jsonl(tmp_path / "b.jsonl")
    store = IndexStore("indexes")
    store.add("kb@v1", BM25Index.build(Passages.from_records(toy_records[:4])))
    before = (tmp_path / "indexes" / "kb" / "v1" / "manifest.json").read_text()
    assert main(["-q", "index", "add", "kb@v1", "b.jsonl"]) == 0
    assert store.versions("kb") == ["v1", "v1-2"] and store.current("kb") == "v1-2"
    assert (tmp_path / "indexes" / "kb" / "v1" / "manifest.json").read_text() == before  # untouched
    assert len(store.load("kb@v1")) == 4 and len(store.load("kb")) == 6
    (tmp_path / "ids.txt").write_text("p0\n")
    assert main(["-q", "index", "remove", "kb", "--ids", "ids.txt", "--new-version", "v3"]) == 0
    assert store.current("kb") == "v3" and len(store.load("kb")) == 5 and len(store.load("kb@v1-2")) == 6
    # updating a version that is not current writes a new one and leaves CURRENT alone
    assert main(["-q", "index", "remove", "kb@v1", "--ids", "ids.txt"]) == 0
    assert store.current("kb") == "v3" and len(store.load("kb@v1-3")) == 3
