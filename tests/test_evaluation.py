"""One evaluation entry point for every task: task detection, metrics, and the run report files."""
from __future__ import annotations

import json

import pytest

from atlas_kit.evaluation import Evaluation, evaluate, evaluate_retrieval, markdown, write_report
from atlas_kit.tasks import task_for_examples
from atlas_kit.multiple_choice import summarize_records
from atlas_kit.tasks.mmlu import MCExample, format_mc_query
from atlas_kit.tasks.qa import QAExample
from tests.conftest import make_setup


def mc_example(i: int, label: int, subject: str = "anatomy") -> MCExample:
    options = ["alpha", "beta", "gamma", "delta"]
    q = f"question {i}?"
    return MCExample(f"mc-{i}", format_mc_query(q, options), ["ABCD"[label]], metadata={"raw_question": q},
                     options=options, label=label, subject=subject)


def test_python_examples_without_a_task_get_their_own():
    assert task_for_examples([QAExample("a", "q?", ["x"])]).name == "qa"
    assert task_for_examples([mc_example(0, 1)]).name == "mmlu"
    assert task_for_examples([QAExample("k", "q?", ["x"], metadata={"provenance": [[{"title": "T"}]]})]).name == "kilt"
    assert task_for_examples([]).name == "qa"


def test_qa_evaluation_and_report(tmp_path):
    atlas, examples = make_setup()
    result = evaluate(atlas, examples[:6], k=2, batch_size=4)
    m = result.metrics
    assert result.task == "qa" and m["n"] == 6
    assert {"EM", "F1", "R@1", "R@2", "AR@1", "AR@2"} <= set(m)
    assert 0.0 <= m["R@1"] <= m["R@2"] <= 100.0 and m["AR@1"] <= m["AR@2"]
    # in this world an answer occurs only in its own gold passage: answer recall == gold recall
    assert m["AR@2"] == pytest.approx(m["R@2"])
    write_report(tmp_path, result, title="t", extra={"step": 7})
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["step"] == 7 and saved["task"] == "qa" and saved["EM"] == m["EM"]
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [e.id for e in examples[:6]]
    assert all(len(r["passages"]) == 2 and {"id", "score"} <= set(r["passages"][0]) for r in rows)
    assert "| EM |" in (tmp_path / "results.md").read_text()
    assert (tmp_path / "recall_curve_r.png").is_file() and (tmp_path / "recall_curve_ar.png").is_file()


def test_retrieval_only_needs_no_reader(tmp_path):
    atlas, examples = make_setup()
    atlas.reader = None
    result = evaluate_retrieval(atlas, examples, ks=[1, 2, 4])
    assert {"R@1", "R@2", "R@4", "AR@4"} <= set(result.metrics)
    assert result.metrics["R@1"] <= result.metrics["R@4"]
    with pytest.raises(ValueError, match="needs a reader"):
        evaluate(atlas, examples, k=2)


def test_kilt_retrieval_metrics_match_pages_by_title():
    atlas, examples = make_setup()
    # provenance = the gold passage's page (its title, the entity name)
    kilt = [QAExample(e.id, e.question, e.answers, [], {"provenance": [[{"title": atlas.index.passages.get(e.gold_ids[0]).title}]]})
            for e in examples]
    result = evaluate_retrieval(atlas, kilt, ks=[1, 4])
    assert result.task == "kilt"
    plain = evaluate_retrieval(atlas, examples, ks=[1, 4]).metrics
    # a page is hit when any passage of the entity is retrieved: at least as often as the gold passage
    assert result.metrics["success@4"] >= plain["R@4"]
    assert 0 <= result.metrics["r_precision"] <= 100


def test_multiple_choice_summary_and_markdown(tmp_path):
    records = [
        {"subject": "anatomy", "category": "other", "correct": {"likelihood": True, "debiased": True, "generation": False}},
        {"subject": "anatomy", "category": "other", "correct": {"likelihood": False, "debiased": True, "generation": False}},
        {"subject": "astronomy", "category": "STEM", "correct": {"likelihood": True, "debiased": False, "generation": None}},
    ]
    m = summarize_records(records)
    assert m["n"] == 3
    assert m["per_subject"]["anatomy"]["accuracy_debiased"] == pytest.approx(100.0)
    assert m["per_category"]["STEM"]["accuracy_likelihood"] == pytest.approx(100.0)
    text = markdown(Evaluation("mc", m, []), "MMLU")
    assert "## per category" in text and "| STEM |" in text and "| astronomy |" in text
    write_report(tmp_path, Evaluation("mc", m, records))
    assert (tmp_path / "accuracy_per_category.png").is_file()


def test_multiple_choice_through_a_tiny_reader():
    from atlas_kit import Reader
    from atlas_kit.tokenization import train_word_tokenizer

    atlas, _ = make_setup()
    examples = [mc_example(i, i % 4) for i in range(4)]
    # the reader's vocabulary must hold the option letters (a recipe's word tokenizer sees the queries)
    atlas.reader = Reader.from_config(train_word_tokenizer([e.question for e in examples] + ["A B C D"]),
                                      d_model=32, num_layers=1, num_heads=2, seed=0, text_maxlength=48)
    result = evaluate(atlas, examples, k=2, batch_size=2)
    assert result.task == "mmlu" and result.metrics["n"] == 4
    assert all(0 <= result.metrics[f"accuracy_{m}"] <= 100 for m in ("likelihood", "debiased", "generation"))
    assert all(len(r["passages"]) == 2 for r in result.records)
