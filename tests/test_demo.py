from __future__ import annotations

import json

import pytest

from atlas_kit.demo import run_demo


def test_demo_smoke_writes_run_folder(tmp_path):
    """Mechanics only (tiny budget): every artefact is written and metrics are consistent."""
    m = run_demo(out=tmp_path / "run", n_entities=40, steps=30, k=2, quiet=True)
    for key in ("with_retrieval", "no_retrieval", "gold_passage", "retrieval"):
        assert key in m
    assert 0 <= m["with_retrieval"]["EM"] <= 100 and m["retrieval"]["R@2"] >= m["retrieval"]["R@1"]
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["config"]["steps"] == 30
    preds = (tmp_path / "run" / "predictions.jsonl").read_text().splitlines()
    assert len(preds) == len(json.loads(preds[0])["passages"]) * 0 + len(preds) and len(json.loads(preds[0])["passages"]) == 2
    assert (tmp_path / "run" / "index" / "manifest.json").is_file()
    assert (tmp_path / "run" / "model" / "reader" / "model.safetensors").is_file()


@pytest.mark.slow
def test_demo_reader_answers_from_retrieved_passages(tmp_path):
    """The full default demo: held-out EM with retrieval far above the no-retrieval baseline."""
    m = run_demo(out=tmp_path / "run", quiet=True)
    assert m["ok"] and m["with_retrieval"]["EM"] >= m["no_retrieval"]["EM"] + 15
