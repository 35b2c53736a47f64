from __future__ import annotations

import pytest

from atlas_kit.tasks import load_qa, load_squad, squad_open
from tests.conftest import shared_data


def test_load_qa_variants_and_errors(tmp_path):
    f = tmp_path / "qa.jsonl"
    f.write_text('{"question": "q1", "answer": ["a", "b"]}\n{"id": "x", "question": "q2", "answers": "c"}\n'
                 '{"context": "Question: q3\\nAnswer:", "answer": "d", "aliases": ["d", "D."]}\n')
    ex = load_qa(f)
    assert [e.question for e in ex] == ["q1", "q2", "q3"]
    assert ex[0].answers == ["a", "b"] and ex[1].id == "x" and ex[2].answers == ["d", "D."]
    (tmp_path / "bad.jsonl").write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1: missing field 'answers'"):
        load_qa(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError):
        load_qa(tmp_path / "none.jsonl")


def test_real_nq_open_dev():
    ex = load_qa(shared_data("nq_open", "NQ-open.dev.jsonl"))
    assert len(ex) == 3610 and all(e.answers for e in ex)


def test_squad_open_definition():
    dev = shared_data("squad2_cs224n_split", "dev-v2.0.json")
    test = shared_data("squad2_cs224n_split", "test-v2.0.json")
    passages, questions = squad_open(dev, test)
    assert len(passages) == 1216 and len(questions) == 2910
    assert all(q.gold_ids[0] in passages for q in questions[:50])
    assert passages.get(questions[0].gold_ids[0]).title == "Normans"
    assert len(load_squad(dev)) == 2910
