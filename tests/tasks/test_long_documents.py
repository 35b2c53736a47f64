from __future__ import annotations

import math

import pytest

from atlas_kit.tasks.long_documents import IGNORE, passkey_documents, recurring_fact_documents
from atlas_kit.tasks.memorization import Filler
from atlas_kit.tokenization import default_tokenizer
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(scope="module")
def filler(tok):
    return Filler(shared_data("dpr_wiki_sample", "sample_data.jsonl"), tok, max_texts=200)


def scored(e):
    return [(i, t) for i, t in enumerate(e.labels) if t != IGNORE]


def test_passkey_documents_are_exact_and_score_the_key_they_state(tok, filler):
    docs = passkey_documents(30, 256, tok, filler, seed=3)
    assert len({d.document for d in docs}) == 30
    for d in docs:
        assert len(d.input_ids) == len(d.labels) == 256
        (stated, asked, name, key), = d.facts
        answer = tok(key, add_special_tokens=False)["input_ids"]
        assert [t for _, t in scored(d)] == answer and scored(d)[-1][0] == 255  # the key closes the document
        assert all(d.input_ids[i] == t for i, t in scored(d))
        statement = tok.decode(d.input_ids[stated : stated + 12])
        assert statement.startswith(f"the pass key of {name} is {key}")
        assert 10 <= int(key) <= 99
    assert len({d.facts[0][0] for d in docs}) > 15  # positions vary
    again = passkey_documents(30, 256, tok, filler, seed=3)
    assert [d.input_ids for d in again] == [d.input_ids for d in docs]  # seeded


def test_key_window_keeps_the_statement_inside_that_window(tok, filler):
    for d in passkey_documents(20, 4 * 64, tok, filler, seed=1, window=64, key_window=0):
        stated = d.facts[0][0]
        assert 0 <= stated and stated + 12 <= 64
    with pytest.raises(ValueError, match="window"):
        passkey_documents(1, 128, tok, filler, key_window=0)
    with pytest.raises(ValueError, match="cannot hold"):
        passkey_documents(1, 10, tok, filler)


def test_recurring_facts_are_asked_after_their_gap_without_overlaps(tok, filler):
    docs = recurring_fact_documents(4, 4096, tok, filler, seed=2, facts=10, min_gap=64, max_gap=4000, key_tokens=2)
    gaps = []
    for d in docs:
        assert len(d.input_ids) == len(d.labels) == 4096
        assert len(d.facts) == 10 and len({f[2] for f in d.facts}) == 10
        assert len(scored(d)) == 20  # two numbers per key
        for stated, asked, name, key in d.facts:
            assert asked > stated
            gaps.append(asked - stated)
            question = tok.decode(d.input_ids[asked : asked + 17])
            assert question.startswith(f"what is the pass key of {name}? the pass key of {name} is {key}")
    assert min(gaps) >= 64 and max(gaps) <= 4000 + 20
    # log-uniform: about as many gaps below the geometric mean of the range as above it
    middle = math.sqrt(64 * 4000)
    assert 8 <= sum(g < middle for g in gaps) <= 32
    with pytest.raises(ValueError, match="distinct names"):
        recurring_fact_documents(1, 4096, tok, filler, facts=100)
