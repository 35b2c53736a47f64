from __future__ import annotations

import pytest

from atlas_kit.cli import main
from atlas_kit.index import FaissIndex
from atlas_kit.index.store import IndexStore, parse_ref, resolve_index_path
from atlas_kit.passages import Passages


def test_parse_ref():
    assert parse_ref("wiki@2020") == ("wiki", "2020") and parse_ref("wiki") == ("wiki", None)
    with pytest.raises(ValueError, match="invalid index name"):
        parse_ref("../x@1")


def test_versions_side_by_side_and_publish(tmp_path, tiny_retriever, toy_records):
    store = IndexStore(tmp_path)
    old = FaissIndex.build(Passages.from_records(toy_records[:3]), tiny_retriever)
    new = FaissIndex.build(Passages.from_records(toy_records), tiny_retriever)
    store.add("wiki@2017", old)
    assert store.current("wiki") == "2017"
    store.add("wiki@2020", new, publish=False)
    assert store.versions("wiki") == ["2017", "2020"] and store.current("wiki") == "2017"
    assert len(store.load("wiki")) == 3 and store.load("wiki").ref == "wiki@2017"
    store.publish("wiki@2020")
    assert len(store.load("wiki", retriever=tiny_retriever)) == 6
    assert len(store.load("wiki@2017")) == 3
    assert resolve_index_path("wiki@2017", root=tmp_path) == tmp_path / "wiki" / "2017"
    with pytest.raises(ValueError, match="current version"):
        store.remove("wiki@2020")
    store.remove("wiki@2017")
    assert store.versions("wiki") == ["2020"]
    with pytest.raises(FileNotFoundError, match="not found"):
        store.path("wiki@1999")
    with pytest.raises(FileNotFoundError):
        store.publish("wiki@1999")


def test_cli_build_add_remove_publish(tmp_path, toy_records, monkeypatch):
    monkeypatch.chdir(tmp_path)
    a = Passages.from_records(toy_records[:4])
    b = Passages.from_records(toy_records[4:])
    a.to_jsonl(tmp_path / "a.jsonl")
    b.to_jsonl(tmp_path / "b.jsonl")
    assert main(["-q", "index", "build", "a.jsonl", "--out", "toy@v1"]) == 0
    assert IndexStore("indexes").current("toy") == "v1"
    assert main(["-q", "index", "add", "toy@v1", "b.jsonl", "--out", "indexes/toy/v2"]) == 0
    assert main(["-q", "index", "publish", "toy@v2"]) == 0
    (tmp_path / "ids.txt").write_text("p0\np5\n")
    assert main(["-q", "index", "remove", "toy", "--ids", "ids.txt"]) == 0
    idx = IndexStore("indexes").load("toy")
    assert idx.passages.ids == ["p1", "p2", "p3", "p4"] and idx.manifest["version"] == 3
    assert main(["-q", "index", "list"]) == 0
    assert main(["-q", "ask", "capital of Zorvania", "--index", "toy@v1", "--k", "1", "--json"]) == 0
