"""Recipe runs: errors early and clear, never overwrite user files, resume from the CLI."""
from __future__ import annotations

import json

import pytest

from atlas_kit.cli import main
from atlas_kit.recipes import load_recipe, run_recipe
from tests.conftest import write_world_recipe


@pytest.fixture
def world_recipe(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_world_recipe(tmp_path, 6, reader_config="d_model: 16, num_layers: 1, num_heads: 2, tokenizer: word",
                              data="train: {train}, eval: {test}, shots: 4, eval_limit: 4",
                              train="steps: 2, batch_size: 2, n_context: 2, retriever_loss: none, tensorboard: false")


@pytest.mark.parametrize("override, key, expected", [
    ("train.steps=abc", "train.steps", "int"),
    ("train.reader_lr=fast", "train.reader_lr", "float"),
    ("train.refresh=sometimes", "refresh", "refresh must be one of"),
    ("data.shots=many", "data.shots", "int"),
])
def test_bad_values_fail_at_load_time_naming_key_value_and_type(tmp_path, override, key, expected):
    with pytest.raises(ValueError) as e:
        load_recipe(None, [override])
    assert key in str(e.value) and expected in str(e.value)


def test_yaml_float_strings_are_coerced():
    assert load_recipe(None, ["train.reader_lr=1e-4"])["train"]["reader_lr"] == pytest.approx(1e-4)


def test_cli_bad_value_is_one_line_exit_2(world_recipe, capsys):
    assert main(["-q", "train", str(world_recipe), "train.steps=abc", "output_dir=run"]) == 2
    assert not (world_recipe.parent / "run").exists()  # nothing written


def test_a_folder_of_user_files_is_never_overwritten(world_recipe, tmp_path):
    user = tmp_path / "mine"
    (user / "model").mkdir(parents=True)
    (user / "results.md").write_text("my notes")
    (user / "model" / "weights.bin").write_text("precious")
    assert main(["-q", "train", str(world_recipe), f"output_dir={user}"]) == 2
    assert (user / "results.md").read_text() == "my notes" and (user / "model" / "weights.bin").is_file()
    assert sorted(p.name for p in user.iterdir()) == ["model", "results.md"]


def test_another_recipes_run_needs_overwrite_and_is_then_replaced_whole(world_recipe, tmp_path):
    assert main(["-q", "train", str(world_recipe), "output_dir=run"]) == 0
    assert main(["-q", "train", str(world_recipe), "output_dir=run"]) == 0  # a re-run of the same recipe
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]  # one log, not two runs appended
    assert main(["-q", "train", str(world_recipe), "output_dir=run", "train.steps=3"]) == 2
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 2
    assert main(["-q", "train", str(world_recipe), "output_dir=run", "train.steps=3", "--overwrite"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 3
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["train"]["steps"] == 3


def test_a_failing_rerun_changes_nothing(world_recipe, tmp_path):
    assert main(["-q", "train", str(world_recipe), "output_dir=run"]) == 0
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    recipe = load_recipe(world_recipe, ["output_dir=run"])
    recipe["data"]["eval"] = str(tmp_path / "missing.jsonl")  # the same run folder, data that fails
    recipe["output_dir"] = "run"
    with pytest.raises((FileNotFoundError, FileExistsError)):
        run_recipe(recipe)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert after == before


def test_resume_from_the_cli_logs_every_step_once(world_recipe, tmp_path):
    args = ["-q", "train", str(world_recipe), "output_dir=run", "train.steps=4", "train.save_every=2"]
    assert main(args) == 0
    full = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in full] == [1, 2, 3, 4]
    assert main(["-q", "train", str(world_recipe), "train.steps=4", "train.save_every=2", "output_dir=run",
                 "--resume", "run/checkpoint-2"]) == 0
    resumed = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in resumed] == [1, 2, 3, 4]
    assert [h["reader_loss"] for h in resumed] == pytest.approx([h["reader_loss"] for h in full], abs=1e-5)
    # a training checkpoint given as --checkpoint gets a pointer to --resume, not a missing-file error
    assert main(["-q", "evaluate", str(world_recipe), "output_dir=ev", "--checkpoint", "run/checkpoint-2"]) == 2
