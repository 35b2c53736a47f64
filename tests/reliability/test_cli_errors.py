"""The CLI turns library errors into one clear line and exit status 2 (``-v``: a traceback)."""
from __future__ import annotations

import logging

from atlas_kit.cli import main
from atlas_kit.index import BM25Index
from atlas_kit.index.store import IndexStore
from atlas_kit.passages import Passages


def test_unknown_id_in_index_remove_is_one_line(tmp_path, toy_records, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    IndexStore("indexes").add("kb@v1", BM25Index.build(Passages.from_records(toy_records)))
    (tmp_path / "ids.txt").write_text("no-such-id\n")
    with caplog.at_level(logging.ERROR, logger="atlas_kit"):
        assert main(["-q", "index", "remove", "kb", "--ids", "ids.txt"]) == 2
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "KeyError" in record.getMessage() and "no-such-id" in record.getMessage()
    assert record.exc_info is None  # no traceback without -v
    assert IndexStore("indexes").versions("kb") == ["v1"]  # nothing written
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="atlas_kit"):
        assert main(["-v", "index", "remove", "kb", "--ids", "ids.txt"]) == 2
    assert any(r.exc_info for r in caplog.records)  # -v: the traceback is logged
