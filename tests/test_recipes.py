from __future__ import annotations

import json

import pytest

from atlas_kit.cli import main
from atlas_kit.recipes import apply_overrides, load_recipe


def test_layering_and_overrides(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("train: {steps: 50, n_context: 3}\ndata: {shots: 64}\n")
    r = load_recipe(f, ["train.steps=7", "reader=some/t5", "data.eval_limit=10"])
    assert r["name"] == "r" and r["train"] == {"steps": 7, "n_context": 3}
    assert r["reader"] == "some/t5" and r["data"]["shots"] == 64 and r["data"]["eval_limit"] == 10
    assert r["reader_config"]["d_model"] == 128  # default kept
    smoke = load_recipe(f, smoke=True)
    assert smoke["train"]["steps"] == 2 and smoke["data"]["shots"] == 8


def test_recipe_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_recipe(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("trian: {steps: 1}\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown recipe key\(s\) \['trian'\]"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        apply_overrides({"train": {}}, ["steps"])
    with pytest.raises(ValueError, match="unknown key 'bogus'"):
        apply_overrides({"train": {}}, ["bogus=1"])


def test_cli_train_smoke_on_generated_world(tmp_path, monkeypatch):
    from atlas_kit.world import World

    monkeypatch.chdir(tmp_path)
    paths = World.generate(10, seed=0, granularity="fact", typed_values=True).to_jsonl(tmp_path / "w")
    recipe = tmp_path / "w.yaml"
    recipe.write_text(
        f"corpus: {paths['passages']}\nreader_config: {{d_model: 32, num_layers: 1, num_heads: 2, tokenizer: word}}\n"
        f"data: {{train: {paths['train']}, eval: {paths['test']}, shots: 6}}\n"
        "train: {steps: 2, batch_size: 2, n_context: 2, retriever_loss: loop, tensorboard: false}\n")
    assert main(["-q", "train", str(recipe), "train.steps=3", "output_dir=run"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 3
    assert len((tmp_path / "run" / "few_shot_ids.txt").read_text().split()) == 6
    assert (tmp_path / "run" / "model" / "reader" / "model.safetensors").is_file()
    assert main(["-q", "evaluate", str(recipe), "output_dir=ev", "--checkpoint", "run/model"]) == 0
    assert "EM" in json.loads((tmp_path / "ev" / "metrics.json").read_text())


@pytest.mark.slow
def test_squad_open_recipe_smoke():
    assert main(["-q", "train", "recipes/squad-open-64shot.yaml", "--smoke", "output_dir=/tmp/atlas_kit_smoke"]) == 0
