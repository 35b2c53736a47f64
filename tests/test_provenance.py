"""KILT metrics: hand-computed cases, and KILT's own test fixtures against KILT's expected values.

The expected values of the fixture tests come from facebookresearch/KILT ``tests/test_eval_downstream.py``
and ``tests/test_eval_retrieval.py`` (KILT reports fractions, atlas_kit percent), and each is
re-derived by hand in the comments.
"""
from __future__ import annotations

import json
import random

import pytest

from atlas_kit.index.base import Hit
from atlas_kit.kilt_submission import evaluate_kilt_files
from atlas_kit.provenance import (
    Page,
    align_pages,
    as_page,
    kilt_f1,
    kilt_scores,
    normalize_title,
    page_precision_at_k,
    page_recall_at_k,
    page_success_at_k,
    r_precision,
    rouge_l,
)
from atlas_kit.tasks.qa import QAExample
from tests.conftest import shared_data

EPS = 1e-8  # the `rouge` package's F = 2PR / (P + R + 1e-8)


def _ex(answers, provenance, id="x"):
    return QAExample(id, "q", list(answers), [], {"provenance": provenance})


# ------------------------------------------------------------------------------ R-precision

def test_r_precision_hand_cases():
    # two provenance sets; the best one counts: {A,B}: R=2, top-2 = [C, A] -> 1/2; {C}: R=1, top-1 = [C] -> 1
    assert r_precision(["C", "A", "D"], [{"A", "B"}, {"C"}]) == 1.0
    assert r_precision(["A", "D", "B"], [{"A", "B"}, {"C"}]) == 0.5  # {A,B}: [A, D] -> 1/2; {C}: [A] -> 0
    # duplicates are removed before taking the top R (many passages of one page): [A, A, B] -> [A, B] -> 2/2
    assert r_precision(["A", "A", "B"], [{"A", "B"}]) == 1.0
    # R larger than the retrieved list: the missing ranks are misses -> 1/3
    assert r_precision(["A"], [{"A", "B", "C"}]) == pytest.approx(1 / 3)
    # no provenance (KILT: R = 0 scores 0); nothing retrieved
    assert r_precision(["A"], []) == 0.0 and r_precision(["A"], [set()]) == 0.0
    assert r_precision([], [{"A"}]) == 0.0


# ---------------------------------------------------------------- recall / precision / success

def test_recall_at_k_counts_each_provenance_set_as_one_rank_point():
    # {A,B} with [A, X, B]: A opens the set's point, X is a miss, B completes the set and moves its
    # point after X: ranking [miss, hit] -> recall@1 = 0, recall@2 = 1 (KILT's grouped ranking)
    assert page_recall_at_k(["A", "X", "B"], [{"A", "B"}], 1) == 0.0
    assert page_recall_at_k(["A", "X", "B"], [{"A", "B"}], 2) == 1.0
    assert page_precision_at_k(["A", "X", "B"], [{"A", "B"}], 2) == 0.5
    assert page_success_at_k(["A", "X", "B"], [{"A", "B"}], 2) == 1.0
    # two sets {A,B}, {C}; pages [B, C, Y, A]: B -> [s0]; C -> [s0, hit]; Y -> [s0, hit, miss];
    # A -> [hit, miss, hit]. recall@k = completed sets in the first k points / 2 sets
    gold = [{"A", "B"}, {"C"}]
    assert [page_recall_at_k(["B", "C", "Y", "A"], gold, k) for k in (1, 2, 3)] == [0.5, 0.5, 1.0]
    assert [page_success_at_k(["B", "C", "Y", "A"], gold, k) for k in (1, 2, 3)] == [1.0, 1.0, 1.0]
    assert page_precision_at_k(["B", "C", "Y", "A"], gold, 3) == pytest.approx(2 / 3)
    # a page in two sets advances both: {A}, {A,B}; [A, B] -> [hit, s1] -> [hit, hit]
    assert page_recall_at_k(["A", "B"], [{"A"}, {"A", "B"}], 1) == 0.5
    assert page_recall_at_k(["A", "B"], [{"A"}, {"A", "B"}], 2) == 1.0
    # identical sets count once; duplicated retrieved pages count once
    assert page_recall_at_k(["A"], [{"A"}, {"A"}], 1) == 1.0
    assert page_recall_at_k(["X", "X", "A"], [{"A"}], 2) == 1.0  # [X, X, A] -> [X, A] -> [miss, hit]
    # no provenance -> 0; k must be positive
    assert page_recall_at_k(["A"], [], 5) == page_precision_at_k(["A"], [], 5) == page_success_at_k(["A"], [], 5) == 0.0
    with pytest.raises(ValueError):
        page_recall_at_k(["A"], [{"A"}], 0)


def test_single_set_properties_seeded():
    rng = random.Random(0)
    pages = list("ABCDEFG")
    for _ in range(300):
        gold = set(rng.sample(pages, rng.randint(1, 3)))
        ranked = [rng.choice(pages) for _ in range(rng.randint(1, 8))]
        distinct = list(dict.fromkeys(ranked))
        for k in (1, 2, 5):
            # with one set, recall@k is success@k
            assert page_recall_at_k(ranked, [gold], k) == page_success_at_k(ranked, [gold], k)
        # R-precision is 1 exactly when the first R distinct pages are the set
        assert (r_precision(ranked, [gold]) == 1.0) == (set(distinct[: len(gold)]) == gold)
        # a complete set within the first R pages is always within the first point
        if set(distinct[: len(gold)]) == gold:
            assert page_recall_at_k(ranked, [gold], 1) == 1.0


# --------------------------------------------------------------------------- page identity

def test_page_identity_rule():
    assert normalize_title("Soul_Food_-LRB-film-RRB-") == normalize_title(" soul  food (Film)") == "soul food (film)"
    gold = [[Page("10520", "ed wood")], [Page(None, "shirley temple")]]
    hit_with_id = Hit("p1", "Edward D. Wood", "...", 1.0, metadata={"wikipedia_id": 10520})
    hit_wrong_id = Hit("p2", "Ed Wood", "...", 0.9, metadata={"wikipedia_id": "999"})
    hit_title_only = Hit("p3", "Ed_Wood", "...", 0.8)
    keys, gold_keys = align_pages(
        [hit_with_id, hit_wrong_id, hit_title_only, {"title": "Shirley Temple"}, "10520", "Ed Wood", "Nobody"], gold)
    assert gold_keys == [{"10520"}, {"shirley temple"}]
    # ids decide when both sides have one (p1 matches despite its title, p2 does not despite its title);
    # titles decide otherwise; a bare string matches a gold id or a gold title
    assert keys[0] == "10520" and keys[1] not in ("10520", "shirley temple")
    assert keys[2:6] == ["10520", "shirley temple", "10520", "10520"]
    assert keys[6] not in ("10520", "shirley temple")
    assert as_page(hit_with_id) == Page("10520", "edward d. wood")
    assert as_page({"wikipedia_id": " 7 ", "title": None}) == Page("7", None)


# -------------------------------------------------------------------------- downstream parts

def test_rouge_l_hand_cases():
    assert rouge_l("suicide", "suicide") == pytest.approx(2 / (2 + EPS), abs=0)  # 0.999999995
    # P = 1/2 (2 prediction words), R = 1/1 -> 2 * .5 / (1.5 + eps)
    assert rouge_l("a suicide", "suicide") == 2 * 0.5 / (1.5 + EPS)
    # distinct words are counted: prediction words {the, cat} (n = 2), LCS "the cat" -> P = R = 1
    assert rouge_l("the cat the", "the cat") == pytest.approx(1.0, abs=1e-8)
    # sentences split on ".": LCS("c a b", "a b") = {a, b}, LCS("c a b", "c") = {c} -> 3/3 each
    assert rouge_l("a b. c", "c a b") == pytest.approx(1.0, abs=1e-8)
    # LCS of "a b c d" and "d c b a" has 1 word: P = R = 1/4 -> 0.25
    assert rouge_l("d c b a", "a b c d") == pytest.approx(0.25, abs=1e-7)
    # no lower-casing, no punctuation stripping (KILT scores raw text); empty sides score 0
    assert rouge_l("Paris", "paris") == 0.0 and rouge_l("", "x") == 0.0 and rouge_l("x", " . ") == 0.0


def test_kilt_f1_no_overlap_is_zero():
    assert kilt_f1("the", "a") == 0.0  # both normalise to nothing: KILT gives 0
    assert kilt_f1("suicide", "it was suicide") == 0.5  # P = 1, R = 1/3


def test_kilt_scores_count_downstream_only_with_right_provenance():
    examples = [
        _ex(["Ed Wood"], [[{"wikipedia_id": "1", "title": "Ed Wood"}]], "a"),
        _ex(["Paris"], [[{"wikipedia_id": "2", "title": "Paris"}]], "b"),
        _ex(["SUPPORTS"], [[{"wikipedia_id": "3", "title": "X"}, {"wikipedia_id": "4", "title": "Y"}]], "c"),
    ]
    preds = ["ed wood", "Paris", "SUPPORTS"]
    retrieved = [["1", "9"], ["9", "2"], [Page("4"), Page("3")]]
    s = kilt_scores(preds, examples, retrieved, ks=(1, 2))
    # downstream: all three are right after normalisation; accuracy is strict ("ed wood" != "Ed Wood")
    assert s["em"] == s["f1"] == 100.0 and s["accuracy"] == pytest.approx(200 / 3)
    # R-precision: a 1, b 0 (top-1 is page 9), c 1 (top-2 = {4, 3})
    assert s["r_precision"] == pytest.approx(200 / 3)
    # KILT scores count a and c only: em 2/3, accuracy counts c only (a is not strictly right) 1/3
    assert s["kilt_em"] == s["kilt_f1"] == pytest.approx(200 / 3)
    assert s["kilt_accuracy"] == pytest.approx(100 / 3)
    # recall@1: a yes; b no ([miss, hit]); c yes (one point for the 2-page set) -> 2/3; recall@2 = 1
    assert s["recall@1"] == pytest.approx(200 / 3) and s["recall@2"] == 100.0
    assert set(kilt_scores(preds, examples)) == {"accuracy", "em", "f1", "rouge_l"}
    assert "em" not in kilt_scores(None, examples, retrieved)
    # no answers (provenance-only example) and empty predictions score 0 downstream
    assert kilt_scores(["x", " "], [_ex([], [[{"title": "A"}]]), _ex(["y"], [])])["em"] == 0.0
    with pytest.raises(ValueError, match="2 predictions but 3 examples"):
        kilt_scores(preds[:2], examples)


# ---------------------------------------------------------------- KILT's own test fixtures

def _kilt_file(name):
    return shared_data("kilt", "kilt_repo_tests", f"{name}.jsonl")


def test_kilt_fixture_gold1_guess1_1():
    # gold answers: 1 "suicide", 2 "suicide", 3 "it was suicide"; gold page 10287141 for all.
    # guesses: 1 "suicide" @10287141, 2 "a suicide" @999, 3 "suicide" @999.
    s = evaluate_kilt_files(_kilt_file("gold1"), _kilt_file("guess1_1"))
    # EM: 1, 1 ("a" is an article), 0 -> 2/3.  F1: 1, 1, (P=1, R=1/3 -> 0.5) -> 2.5/3 = 0.8333...
    assert s["em"] == pytest.approx(100 * 2 / 3) and s["f1"] == pytest.approx(100 * 0.8333333333333334)
    # ROUGE-L: 2/(2+eps), 2*.5*1/(1.5+eps), 2*1*(1/3)/(4/3+eps); mean = 0.7222222178240741 (KILT)
    hand = (2 / (2 + EPS) + 1 / (1.5 + EPS) + (2 / 3) / (4 / 3 + EPS)) / 3
    assert hand == pytest.approx(0.7222222178240741, rel=1e-12)
    assert s["rouge_l"] == pytest.approx(100 * 0.7222222178240741, rel=1e-12)
    # only example 1 has the right page: R-precision 1/3, recall@5 1/3, KILT scores = example 1's / 3
    assert s["r_precision"] == pytest.approx(100 / 3) and s["recall@5"] == pytest.approx(100 / 3)
    assert s["kilt_em"] == pytest.approx(100 / 3) and s["kilt_f1"] == pytest.approx(100 / 3)
    assert s["kilt_rouge_l"] == pytest.approx(100 * 0.3333333316666667, rel=1e-12)  # (2/(2+eps))/3

    # gold against itself: everything 1, ROUGE-L 2/(2+eps) = 0.999999995 (KILT)
    s = evaluate_kilt_files(_kilt_file("gold1"), _kilt_file("gold1"))
    assert s["em"] == s["f1"] == s["r_precision"] == s["recall@5"] == s["kilt_em"] == s["kilt_f1"] == 100.0
    assert s["rouge_l"] == s["kilt_rouge_l"] == pytest.approx(100 * 0.999999995, rel=1e-12)


def test_kilt_fixture_gold2_retrieval():
    # gold sets: {1, 2}, {5}, {7, 9, 11}. guess2_1 pages: [2, 5, 7, 33, 1, 9, 44, 88]
    s = evaluate_kilt_files(_kilt_file("gold2"), _kilt_file("guess2_1"))
    assert "em" not in s  # the guesses hold provenance only
    # R-prec: {1,2}: [2,5] -> 1/2; {5}: [2] -> 0; {7,9,11}: [2,5,7] -> 1/3; max = 1/2 (KILT: 1/2)
    assert s["r_precision"] == 50.0
    # ranking: 2 -> [s0]; 5 -> [s0, T]; 7 -> [s0, T, s2]; 33 -> [.., F]; 1 -> [T, s2, F, T];
    # 9 -> [T, F, T, s2]; 44, 88 -> [T, F, T, s2, F, F].
    # precision@1 = 1/1, precision@5 = 2/5, recall@5 = 2/3 sets, success@5 = 1 (KILT: 1, 2/5, 2/3, 1)
    assert s["precision@1"] == 100.0 and s["precision@5"] == pytest.approx(40.0)
    assert s["recall@5"] == pytest.approx(100 * 2 / 3) and s["success@5"] == 100.0

    # guess2_2 pages: [5]. R-prec: {5}: [5] -> 1 (KILT: 1); ranking [T]:
    # precision@1 = 1, precision@5 = 1/5, recall@5 = 1/3, success@5 = 1 (KILT: 1, 1/5, 1/3, 1)
    s = evaluate_kilt_files(_kilt_file("gold2"), _kilt_file("guess2_2"))
    assert s["r_precision"] == 100.0 and s["precision@1"] == 100.0
    assert s["precision@5"] == pytest.approx(20.0) and s["recall@5"] == pytest.approx(100 / 3)
    assert s["success@5"] == 100.0


def test_kilt_fixture_gold3_guess3_1():
    # two identical records; guess 1 cites page 1 (gold: "1", right), guess 2 cites "2" (wrong).
    # F1: 40 prediction / 58 gold tokens after normalisation, 25 shared -> 2*25/98 = 25/49 = 0.5102040816326531
    # ROUGE-L: reference = 3 sentences with 49 distinct words, prediction 1 sentence with 36; the
    # union of the LCS words has 19 -> P = 19/36, R = 19/49, F = 0.44705881864636676 (KILT)
    s = evaluate_kilt_files(_kilt_file("gold3"), _kilt_file("guess3_1"))
    assert 2 * 25 / (40 + 58) == 0.5102040816326531
    p, r = 19 / 36, 19 / 49
    assert 2 * p * r / (p + r + EPS) == pytest.approx(0.44705881864636676, rel=1e-12)
    assert s["em"] == 0.0 and s["kilt_em"] == 0.0
    assert s["f1"] == pytest.approx(100 * 0.5102040816326531, rel=1e-12)
    assert s["rouge_l"] == pytest.approx(100 * 0.44705881864636676, rel=1e-12)
    # KILT scores: only record 1 counts -> half (KILT: 0.25510204081632654, 0.22352940932318338)
    assert s["kilt_f1"] == pytest.approx(100 * 0.25510204081632654, rel=1e-12)
    assert s["kilt_rouge_l"] == pytest.approx(100 * 0.22352940932318338, rel=1e-12)
    assert s["r_precision"] == 50.0


def test_evaluate_kilt_files_errors(tmp_path):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"id": 1, "input": "q", "output": [{"answer": "a", "provenance": [{"wikipedia_id": 1}]}]}) + "\n"
                    + json.dumps({"id": 2, "input": "q", "output": [{"answer": "b"}]}) + "\n")
    guess = tmp_path / "guess.jsonl"
    guess.write_text(json.dumps({"id": "1", "output": [{"answer": "a", "provenance": [{"wikipedia_id": "1"}]}]}) + "\n")
    with pytest.raises(ValueError, match=r"no prediction for id\(s\) \['2'\]"):
        evaluate_kilt_files(gold, guess)
    guess.write_text(guess.read_text() * 2)
    with pytest.raises(ValueError, match=r"guess\.jsonl:2: field 'id': duplicate id '1'"):
        evaluate_kilt_files(gold, guess)
    guess.write_text(json.dumps({"id": 1, "output": [{"answer": "a", "provenance": [{"wikipedia_id": "1"}]}]}) + "\n"
                     + json.dumps({"id": 2, "output": [{"answer": "B."}]}) + "\n")
    s = evaluate_kilt_files(gold, guess)
    # example 2 has no provenance: R-precision 0 (KILT), so only example 1 counts for KILT-EM
    assert s["em"] == 100.0 and s["r_precision"] == 50.0 and s["kilt_em"] == 50.0


def test_examples_without_provenance_can_be_left_out_of_page_metrics():
    from atlas_kit.tasks.qa import QAExample

    with_prov = QAExample("1", "claim one", ["SUPPORTS"], metadata={"provenance": [[{"wikipedia_id": None, "title": "Soul Food"}]]})
    nei = QAExample("2", "claim two", ["NOT ENOUGH INFO"], metadata={"provenance": []})
    pages = [["Soul Food", "Other"], ["Other"]]
    kilt = kilt_scores(["SUPPORTS", "NOT ENOUGH INFO"], [with_prov, nei], retrieved_pages=pages, ks=(1,))
    assert kilt["r_precision"] == 50.0 and kilt["kilt_accuracy"] == 50.0 and kilt["n_provenance"] == 2
    skip = kilt_scores(["SUPPORTS", "NOT ENOUGH INFO"], [with_prov, nei], retrieved_pages=pages, ks=(1,),
                       skip_without_provenance=True)
    assert skip["r_precision"] == 100.0 and skip["kilt_accuracy"] == 100.0 and skip["n_provenance"] == 1
