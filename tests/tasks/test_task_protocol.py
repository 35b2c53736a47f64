"""The task protocol: a new task plugs in without touching evaluation or recipes."""
from __future__ import annotations

import json

import pytest

from atlas_kit.evaluation import evaluate
from atlas_kit.tasks import Task, get_task, register_task, task_names
from atlas_kit.tasks.builtin import MultipleChoice
from tests.conftest import make_setup, write_world_recipe


class AnswerLength(Task):
    """A made-up task: the score is the share of predictions no longer than ``max_words``."""

    name = "answer-length"
    max_words: int = 3

    def read(self, path, **options):
        return get_task("qa").read(path, **options)

    def score(self, examples, records, hits, k):
        short = [len(r["prediction"].split()) <= self.max_words for r in records]
        return {"short_share": 100.0 * sum(short) / len(short)}


register_task(AnswerLength)


def test_a_registered_task_is_used_by_evaluation():
    atlas, examples = make_setup()
    result = evaluate(atlas, examples[:4], k=2, batch_size=2, task={"name": "answer-length", "max_words": 50})
    assert result.task == "answer-length" and result.metrics["short_share"] == 100.0 and result.metrics["n"] == 4
    assert all("passages" in r and len(r["passages"]) == 2 for r in result.records)
    assert "answer-length" in task_names()


def test_a_registered_task_runs_from_a_recipe(tmp_path, monkeypatch):
    from atlas_kit.cli import main

    monkeypatch.chdir(tmp_path)
    recipe = write_world_recipe(tmp_path, 6, reader_config="d_model: 16, num_layers: 1, num_heads: 2, tokenizer: word",
                                task="name: answer-length, max_words: 40",
                                data="train: {train}, eval: {test}, shots: 4, eval_limit: 4",
                                train="steps: 1, batch_size: 2, n_context: 2, retriever_loss: none, tensorboard: false")
    assert main(["-q", "train", str(recipe), "output_dir=run"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["task"] == "answer-length" and "short_share" in metrics
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["task"] == {"name": "answer-length",
                                                                                   "max_words": 40}


def test_task_options_are_typed_and_training_expansion_is_the_tasks():
    with pytest.raises(ValueError, match=r"task\.permutations: Input should be 'cyclic' or 'none'"):
        get_task({"name": "mmlu", "permutations": "all"})
    from atlas_kit.tasks.mmlu import MCExample, format_mc_query

    ex = MCExample("m", format_mc_query("q?", ["a", "b", "c"]), ["B"], metadata={"raw_question": "q?"},
                   options=["a", "b", "c"], label=1, subject="s")
    assert len(MultipleChoice(permutations="cyclic").training_examples([ex])) == 3
    assert MultipleChoice().training_examples([ex]) == [ex]
    assert get_task("mc").spec() == {"name": "mmlu", "debias": True, "permutations": "none"}


@pytest.mark.parametrize("name", ["qa", "kilt"])
def test_combining_groups_equals_scoring_them_together(name):
    """A grouped run (one model per group) is scored by the task over all groups' predictions:
    with the same model in each group that equals one evaluation of everything, KILT metrics kept."""
    atlas, examples = make_setup()
    examples = examples[:6]
    if name == "kilt":
        for e in examples:
            e.metadata["provenance"] = [[{"title": e.gold_ids[0]}]]
    task = get_task(name)
    parts = [task.evaluate(atlas, examples[:3], k=2), task.evaluate(atlas, examples[3:], k=2)]
    combined, whole = task.combine(parts).metrics, task.evaluate(atlas, examples, k=2).metrics
    assert combined == pytest.approx(whole) and combined["n"] == 6
    if name == "kilt":
        assert {"kilt_em", "r_precision"} <= set(combined)
