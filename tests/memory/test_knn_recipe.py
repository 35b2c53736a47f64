from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from atlas_kit.cli import main as cli_main
from atlas_kit.memory.knn_recipe import load_knn_recipe, run_knn_recipe
from atlas_kit.memory.memory_layers import KNNMemoryModel
from tests.conftest import shared_data

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "memory"
TINY = ["task.train_examples=16", "task.eval_examples=2", "train.steps=2", "train.batch_size=4", "cross_batch.d=2",
        "eval_windows=[2,3]", "model.config={model_type: gpt2, n_embd: 16, n_layer: 2, n_head: 2}", "model.k=4"]


def _filler() -> str:
    return str(shared_data("dpr_wiki_sample", "sample_data.jsonl"))


@pytest.mark.parametrize("path", sorted(RECIPES.glob("knn-*.yaml")), ids=lambda p: p.name)
def test_shipped_recipes_load(path):
    recipe = load_knn_recipe(path)
    assert recipe["name"] == path.stem and recipe["model"]["layers"]


def test_unknown_keys_and_bad_values_name_the_file_the_key_and_the_closest_key(tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump({"task": {"filler": "x.txt", "train_exampels": 3}}))
    with pytest.raises(ValueError, match=r"typo.yaml: task.train_exampels: unknown key; did you mean 'train_examples'"):
        load_knn_recipe(bad)
    with pytest.raises(ValueError, match="cross_batch.d=8 is larger than train.batch_size"):
        load_knn_recipe({"task": {"filler": "x"}, "model": {"config": {"model_type": "gpt2"}}, "cross_batch": {"d": 8},
                         "train": {"batch_size": 4}})
    with pytest.raises(ValueError, match="combine"):
        load_knn_recipe({"task": {"filler": "x"}, "model": {"config": {"model_type": "gpt2"}, "combine": "mean"}})
    with pytest.raises(ValueError, match="train"):
        load_knn_recipe({"task": {"filler": "x"}, "model": {"config": {"model_type": "gpt2"}}, "train": {"stepz": 1}})
    with pytest.raises(ValueError, match="unknown key"):
        load_knn_recipe(RECIPES / "knn-passkey-tiny.yaml", ["model.widnow=3"])


@pytest.mark.parametrize("name", ["knn-passkey-tiny", "knn-memorizing-tiny"])
def test_recipe_runs_end_to_end_and_saves_a_loadable_model(tmp_path, name):
    out = tmp_path / "run"
    result = run_knn_recipe(RECIPES / f"{name}.yaml", [*TINY, f"task.filler={_filler()}", f"output_dir={out}"])
    assert [r["windows"] for r in result["eval"]] == [2, 3]
    for row in result["eval"]:
        assert 0.0 <= row["accuracy"] <= 1.0 and row["perplexity"] > 1.0 and "accuracy_window_only" in row
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["recipe"]["cross_batch"]["d"] == 2
    assert KNNMemoryModel.from_pretrained(out / "model").settings["combine"] == result["recipe"]["model"]["combine"]
    assert (out / "train" / "train_log.jsonl").is_file()


def test_cli_memory_knn_train(tmp_path, capsys):
    out = tmp_path / "cli"
    code = cli_main(["memory", "knn", "train", str(RECIPES / "knn-passkey-tiny.yaml"), *TINY,
                     f"task.filler={_filler()}", f"output_dir={out}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "passkey: 192 tokens (3 windows): accuracy" in printed and "window only" in printed
