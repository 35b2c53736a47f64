from __future__ import annotations

import pytest

from atlas_kit.metrics import exact_match, f1_score, normalize_answer, qa_scores, recall_at_k


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


def test_exact_match_and_f1_hand_computed():
    assert exact_match("the Eiffel tower", ["Eiffel Tower", "Paris"]) == 1.0
    assert exact_match("Eiffel", ["Eiffel Tower"]) == 0.0
    # prediction "eiffel", gold "eiffel tower": precision 1, recall 1/2 -> F1 2/3
    assert f1_score("Eiffel", ["Eiffel Tower"]) == pytest.approx(2 / 3)
    assert f1_score("x", ["y"]) == 0.0
    assert qa_scores(["a b", "c"], [["a b"], ["d"]]) == {"EM": 50.0, "F1": 50.0}


def test_recall_at_k():
    retrieved = [["a", "b", "c"], ["x", "y", "z"], ["q", "g", "r"]]
    gold = [["a"], ["z"], ["nope"]]
    assert recall_at_k(retrieved, gold, ks=(1, 3)) == {"R@1": pytest.approx(100 / 3), "R@3": pytest.approx(200 / 3)}
    with pytest.raises(ValueError):
        recall_at_k(retrieved, gold[:2])


def test_has_answer_and_answer_recall():
    from atlas_kit.metrics import answer_recall_at_k, has_answer

    assert has_answer("The capital is Port Blim, a city.", ["port blim"])
    assert not has_answer("The capital is Port Blimey.", ["Port Blim"])  # whole words only
    assert not has_answer("anything", [""])
    # DPR's token test: punctuation separates tokens, articles count
    assert has_answer("World War II (1939–1945) ended", ["1945"]) and has_answer("Paris/London", ["London"])
    assert not has_answer("Let us know", ["U.S."]) and not has_answer("Nobody knew who sang it", ["The Who"])
    texts = [["no", "here: Blim"], ["Blim first", "x"], ["a", "b"]]
    got = answer_recall_at_k(texts, [["Blim"], ["Blim"], ["Blim"]], ks=(1, 2))
    assert got == {"AR@1": pytest.approx(100 / 3), "AR@2": pytest.approx(200 / 3)}
    with pytest.raises(ValueError):
        answer_recall_at_k(texts, [["x"]])


def test_metric_registry_resolves_every_name():
    from atlas_kit.metrics import metric

    assert metric("exact_match")("The Blim", ["blim"]) == 1.0
    assert metric("rouge_l")("the cat sat", "the cat sat") == pytest.approx(1.0, abs=1e-6)
    assert metric("r_precision")(["a", "b"], [{"a"}]) == 1.0
    with pytest.raises(KeyError, match="unknown metric 'bleu'"):
        metric("bleu")
