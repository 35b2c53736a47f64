from __future__ import annotations

import random
from collections import Counter

import pytest

from atlas_kit.tasks.memorization import (PLACES, Filler, algorithmic_task, fact_task, segments_of)
from atlas_kit.tokenization import default_tokenizer
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(scope="module")
def filler(tok):
    return Filler(shared_data("dpr_wiki_sample", "sample_data.jsonl"), tok)


def decode(tok, ids):
    return tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["memorize", "detect", "reason"])
def test_fact_tasks_have_exact_lengths_balanced_labels_and_the_fact_where_promised(tok, filler, kind):
    examples = fact_task(kind, 60, total_tokens=200, tokenizer=tok, filler=filler, seed=1)
    assert all(len(e.input_ids) == 200 for e in examples)
    assert Counter(e.label for e in examples) == Counter({i: 10 for i in range(6)})
    for e in examples:
        assert e.answer == PLACES[e.label] and decode(tok, e.input_ids).endswith(e.question.lower().rstrip("?") + "?")
        for start, text in e.facts:  # each fact sits at its recorded token position
            n = len(tok(text, add_special_tokens=False)["input_ids"])
            assert decode(tok, e.input_ids[start:start + n]) == text.lower()
        assert e.answer in " ".join(t for _, t in e.facts)
    starts = [e.facts[0][0] for e in examples]
    if kind == "memorize":
        assert set(starts) == {0}
    else:
        assert len(set(starts)) > 20  # spread over the input, not at segment starts
    if kind == "reason":
        assert all(len(e.facts) == 2 and e.facts[0][0] < e.facts[1][0] for e in examples)
    again = fact_task(kind, 60, total_tokens=200, tokenizer=tok, filler=filler, seed=1)
    assert [e.input_ids for e in again] == [e.input_ids for e in examples]  # seeded
    assert [e.input_ids for e in fact_task(kind, 60, 200, tok, filler, seed=2)] != [e.input_ids for e in examples]


def test_filler_is_natural_text_from_a_file(tok, tmp_path):
    path = tmp_path / "filler.txt"
    path.write_text("\n".join(f"The river number {i} flows slowly past the old mill." for i in range(200)))
    f = Filler(path, tok)
    text = decode(tok, f.take(30, random.Random(0)))
    assert "river" in text and "mill" in text
    with pytest.raises(FileNotFoundError):
        Filler(tmp_path / "missing.txt", tok)
    short = tmp_path / "short.txt"
    short.write_text("too short")
    with pytest.raises(ValueError, match="filler"):
        Filler(short, tok)


def test_algorithmic_tasks():
    copy = algorithmic_task("copy", 5, length=24, vocab=10, seed=0, offset=3)
    assert all(e.target == e.input_ids and len(e.input_ids) == 24 and min(e.input_ids) >= 3 for e in copy)
    rev = algorithmic_task("reverse", 5, length=24, vocab=10, seed=0, offset=3)
    assert all(e.target == e.input_ids[::-1] for e in rev) and [e.input_ids for e in rev] == [e.input_ids for e in copy]
    assoc = algorithmic_task("associative", 50, length=8, vocab=10, seed=0)
    for e in assoc:
        keys, values, asked = e.input_ids[:-1:2], e.input_ids[1:-1:2], e.input_ids[-1]
        assert len(set(keys)) == 4 and values[keys.index(asked)] == e.label == e.target[0]
    assert [len(s) for s in segments_of(copy[0], 10)] == [10, 10, 4]
    with pytest.raises(ValueError):
        algorithmic_task("sort", 1, 4)
    with pytest.raises(ValueError, match="distinct keys"):
        algorithmic_task("associative", 1, length=30, vocab=10)
