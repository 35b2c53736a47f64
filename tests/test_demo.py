from __future__ import annotations

import json
import shlex

import pytest

from atlas_kit.cli import main
from atlas_kit.demo import Renamer, run_demo

TINY = dict(n_entities=40, steps=30, k=2, quiet=True, d_model=32, heads=2, practice_words=200, gold_only_fraction=0.5)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    return out, run_demo(out=out, **TINY)


def test_demo_smoke_writes_run_folder(tiny_run):
    """Mechanics only (tiny budget): every artefact is written and metrics are consistent."""
    out, m = tiny_run
    for key in ("with_retrieval", "no_retrieval", "gold_passage", "retrieval"):
        assert key in m
    assert 0 <= m["with_retrieval"]["EM"] <= 100 and m["retrieval"]["R@2"] >= m["retrieval"]["R@1"]
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["config"]["steps"] == 30 and saved["seconds"] > 0
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    n_test = 40 * 4 - round(0.7 * 40) * 4 - round(0.15 * 40) * 4  # test entities x four facts each
    assert len(preds) == n_test
    assert all(len(p["passages"]) == 2 for p in preds)  # the reader read k = 2 passages per question
    assert (out / "index" / "manifest.json").is_file()
    assert (out / "model" / "reader" / "model.safetensors").is_file()
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_suggested_command_gives_the_demo_answer(tiny_run, capsys):
    """The printed `atlas-kit ask ... --model` loads the saved model (k, reader settings, index)
    and answers the demo's first question exactly as the demo's own table did."""
    out, m = tiny_run
    argv = shlex.split(m["try"])
    assert argv[:2] == ["atlas-kit", "ask"] and "--model" in argv
    first = json.loads((out / "predictions.jsonl").read_text().splitlines()[0])
    assert argv[2] == first["question"]
    capsys.readouterr()
    assert main(["-q", *argv[1:], "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["answer"] == first["prediction"]
    assert [p["id"] for p in res["passages"]] == [p["id"] for p in first["passages"]]


def test_model_records_index_relative_to_itself(tiny_run):
    out, _ = tiny_run
    cfg = json.loads((out / "model" / "atlas_config.json").read_text())
    assert cfg["k"] == 2 and cfg["index"] == "../index"


def test_renamer_is_consistent_and_uses_practice_words():
    import random

    r = Renamer({"Zorv", "Blim"}, ["Aaa", "Bbb", "Ccc"], random.Random(0))
    q, ctx, a = r("What is the capital of Zorv?", [{"title": "Zorv", "text": "The capital of Zorv is Port Blim."}], "Port Blim")
    new_entity = q.split()[-1].rstrip("?")
    assert new_entity in {"Aaa", "Bbb", "Ccc"} and ctx[0]["title"] == new_entity
    assert ctx[0]["text"] == f"The capital of {new_entity} is {a}." and a.startswith("Port ") and a != "Port Blim"


@pytest.mark.slow
def test_demo_reader_answers_from_retrieved_passages(tmp_path):
    """The full default demo: held-out EM with retrieval far above the no-retrieval baseline."""
    m = run_demo(out=tmp_path / "run", quiet=True)
    assert m["ok"] and m["with_retrieval"]["EM"] >= 80 and m["no_retrieval"]["EM"] < 10
