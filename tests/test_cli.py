from __future__ import annotations

import json

import pytest

from atlas_kit.cli import build_parser, main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("index", "ask", "demo"):
        assert cmd in out


def test_index_help_lists_actions(capsys):
    with pytest.raises(SystemExit):
        main(["index", "--help"])
    out = capsys.readouterr().out
    assert "build" in out and "info" in out


def test_index_build_info_and_ask_retrieval_only(tmp_path, toy_passages, capsys):
    corpus = tmp_path / "corpus.jsonl"
    toy_passages.to_jsonl(corpus)
    assert main(["-q", "index", "build", str(corpus), "--out", str(tmp_path / "idx")]) == 0
    assert main(["-q", "index", "info", str(tmp_path / "idx"), "--json"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[out.index("{"):])
    assert info["count"] == 6 and info["retriever"]["name"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert info["disk_bytes"] > 0
    assert main(["-q", "ask", "What is the capital of Zorvania?", "--index", str(tmp_path / "idx"), "--k", "2", "--json"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{"):])
    assert res["passages"][0]["id"] == "p0"


def test_bad_corpus_gives_clear_error(tmp_path, caplog):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n')
    assert main(["index", "build", str(bad), "--out", str(tmp_path / "idx")]) == 2
    assert "bad.jsonl:1: missing field 'text'" in caplog.text
    assert not (tmp_path / "idx").exists()


def test_parser_builds():
    assert build_parser().prog == "atlas-kit"


def test_ask_with_bi_encoder_rerank(tmp_path, toy_passages, capsys):
    corpus = tmp_path / "corpus.jsonl"
    toy_passages.to_jsonl(corpus)
    assert main(["-q", "index", "build", str(corpus), "--out", str(tmp_path / "idx")]) == 0
    capsys.readouterr()
    assert main(["-q", "ask", "What is the capital of Zorvania?", "--index", str(tmp_path / "idx"), "--k", "2",
                 "--rerank", "bi", "--candidates", "6", "--json"]) == 0
    out = capsys.readouterr().out
    res = json.loads(out[out.index("{"):])
    assert res["passages"][0]["id"] == "p0" and len(res["passages"]) == 2
    assert main(["-q", "ask", "q", "--index", str(tmp_path / "idx"), "--rerank", "tri"]) == 2


def test_ask_needs_an_index_or_a_model(caplog):
    assert main(["ask", "q"]) == 2
    assert "--index" in caplog.text and "--model" in caplog.text
    assert main(["ask", "q", "--model", "m", "--reader", "r"]) == 2
    assert "--model brings its own reader" in caplog.text


def test_cli_logging_is_quiet_by_default():
    import logging

    from atlas_kit.cli import _setup_logging

    _setup_logging(0)
    assert logging.getLogger("faiss.loader").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("transformers").getEffectiveLevel() >= logging.WARNING
    assert logging.getLogger("atlas_kit.api").getEffectiveLevel() == logging.INFO
    _setup_logging(1)
    assert logging.getLogger("faiss.loader").getEffectiveLevel() == logging.INFO
    _setup_logging(0)
