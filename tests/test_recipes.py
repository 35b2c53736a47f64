from __future__ import annotations

import json
from pathlib import Path

import pytest

from atlas_kit.cli import main
from atlas_kit.recipes import apply_overrides, load_recipe
from tests.conftest import shared_data, write_world_recipe


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
    with pytest.raises(ValueError, match=r"bad\.yaml: trian: unknown key; did you mean 'train'\?"):
        load_recipe(bad)
    with pytest.raises(ValueError, match="not KEY=VALUE"):
        apply_overrides({"train": {}}, ["steps"])
    with pytest.raises(ValueError, match="bogus: unknown key"):
        apply_overrides({"train": {}}, ["bogus=1"])


@pytest.mark.parametrize("text, message", [
    ("data: {shotz: 3}\n", r"data\.shotz: unknown key; did you mean 'shots'\?"),
    ("train: {stesp: 3}\n", r"train\.stesp: unknown key; did you mean 'steps'\?"),
    ("reader_config: {d_modle: 64}\n", r"reader_config\.d_modle: unknown key; did you mean 'd_model'\?"),
    ("smoke: {train_limit: 1}\n", r"smoke\.train_limit: unknown key"),
    ("task: {name: mmlu, debais: true}\n", r"task\.debais: unknown option of task 'mmlu'; did you mean 'debias'\?"),
    ("task: {name: mmul}\n", r"task\.name: unknown task 'mmul'; did you mean 'mmlu'\?"),
    ("data: {format: squad}\n", r"data\.format: this key was removed; name the task instead"),
    ("data: {shots: many}\n", r"data\.shots: Input should be a valid integer"),
    ("train: {steps: abc}\n", r"train\.steps: Input should be a valid integer"),
])
def test_a_mistyped_key_at_any_depth_names_the_key_the_file_and_the_closest_key(tmp_path, text, message):
    f = tmp_path / "typo.yaml"
    f.write_text(text)
    with pytest.raises(ValueError, match=r"typo\.yaml.*" + message):
        load_recipe(f)


def test_base_files_layer_under_the_recipe_and_their_own_typos_name_them(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "corpus.yaml").write_text("corpus: passages.jsonl\nfactory: HNSW32\n")
    (tmp_path / "base" / "train.yaml").write_text("base: corpus.yaml\ntrain: {steps: 50, n_context: 3}\n")
    f = tmp_path / "r.yaml"
    f.write_text("base: [base/train.yaml]\ntrain: {steps: 9}\ntask: {name: qa, format: squad}\n")
    r = load_recipe(f, ["task.format=qa"])
    assert r["corpus"] == "passages.jsonl" and r["factory"] == "HNSW32"
    assert r["train"] == {"steps": 9, "n_context": 3} and r["task"] == {"name": "qa", "format": "qa"}
    assert "base" not in r
    (tmp_path / "base" / "corpus.yaml").write_text("corpus: passages.jsonl\ndata: {evl: x}\n")
    with pytest.raises(ValueError, match=r"base/corpus\.yaml: data\.evl: unknown key; did you mean 'eval'\?"):
        load_recipe(f)
    (tmp_path / "base" / "corpus.yaml").write_text("base: train.yaml\n")
    with pytest.raises(ValueError, match="cycle"):
        load_recipe(f)


def test_smoke_is_a_flag_recorded_in_the_recipe_not_a_name(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("name: r\ndata: {shots: 64, eval_limit: 500}\n")
    smoke, full = load_recipe(f, smoke=True), load_recipe(f)
    assert smoke["smoke"]["active"] and not full["smoke"]["active"]
    assert smoke["name"] == full["name"] == "r"
    assert smoke["data"]["shots"] == 8 and smoke["data"]["eval_limit"] == 8


def test_cli_train_smoke_on_generated_world(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_world_recipe(tmp_path, reader_config="d_model: 32, num_layers: 1, num_heads: 2, tokenizer: word",
                                data="train: {train}, eval: {test}, shots: 6",
                                train="steps: 2, batch_size: 2, n_context: 2, retriever_loss: loop, tensorboard: false")
    assert main(["-q", "train", str(recipe), "train.steps=3", "output_dir=run"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["step"] == 3
    assert len((tmp_path / "run" / "few_shot_ids.txt").read_text().split()) == 6
    assert (tmp_path / "run" / "model" / "reader" / "model.safetensors").is_file()
    assert main(["-q", "evaluate", str(recipe), "output_dir=ev", "--checkpoint", "run/model"]) == 0
    assert "EM" in json.loads((tmp_path / "ev" / "metrics.json").read_text())


RECIPES = sorted(Path(__file__).resolve().parents[1].joinpath("recipes").glob("*.yaml"))


def test_every_recipe_is_listed():
    names = {p.stem for p in RECIPES}
    assert {"nq-64shot", "triviaqa-64shot", "nq-full", "mmlu-5shot", "mmlu-5shot-multitask", "mmlu-zeroshot",
            "mmlu-full", "kilt-fever", "kilt-hotpotqa", "kilt-wow", "squad-open-64shot", "fever"} <= names


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_smoke_runs_end_to_end(recipe, tmp_path, monkeypatch):
    """Every recipe, on the real files in ../shared/data, with --smoke: recipes cannot rot."""
    shared_data()  # skips when the shared data folder is absent
    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # recipe paths are relative to the repo root
    out = tmp_path / "run"
    assert main(["-q", "train", str(recipe), "--smoke", f"output_dir={out}", "train.tensorboard=false"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n"] > 0
    assert (out / "predictions.jsonl").is_file() and (out / "results.md").is_file()
    assert (out / "recipe.json").is_file()
    task = metrics["task"]
    if task == "mmlu":
        assert {"accuracy_likelihood", "accuracy_debiased", "accuracy_generation", "per_category"} <= set(metrics)
    elif task in ("kilt", "fever"):
        assert {"r_precision", "kilt_em", "em", "f1", "rouge_l"} <= set(metrics)
    else:
        assert {"EM", "F1"} <= set(metrics)
    if "group_by" in recipe.read_text():
        assert len(list((out / "groups").iterdir())) == 2  # smoke: two subjects, one model each
    if (out / "few_shot_ids.txt").is_file():
        shots = set((out / "few_shot_ids.txt").read_text().split())
        evaluated = {json.loads(line)["id"] for line in (out / "predictions.jsonl").read_text().splitlines()}
        assert not shots & evaluated, "few-shot training examples leaked into the evaluation set"


def test_retrieval_only_evaluation_on_generated_world(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_world_recipe(tmp_path, data="eval: {test}", eval="retrieval_ks: [1, 2, 4]")
    assert main(["-q", "evaluate", str(recipe), "output_dir=ev", "--retrieval-only"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert {"R@1", "R@2", "R@4", "AR@4"} <= set(m) and m["R@1"] <= m["R@4"]
    assert (tmp_path / "ev" / "recall_curve_r.png").is_file()


def test_missing_data_file_says_what_to_put_where(tmp_path):
    from atlas_kit.tasks import get_task

    with pytest.raises(FileNotFoundError, match="nowhere.jsonl not found.*data.train=PATH"):
        get_task("qa").load(tmp_path / "nowhere.jsonl")
    with pytest.raises(ValueError, match="task.format: Input should be 'qa' or 'squad'"):
        get_task({"name": "qa", "format": "csv"})
    with pytest.raises(FileNotFoundError, match="hf:no-such/dataset"):
        get_task("qa").load("hf:no-such/dataset:train")


def test_corpus_from_several_sources(tmp_path):
    from atlas_kit.recipes import load_corpus

    a = tmp_path / "a.jsonl"
    a.write_text('{"id": "a1", "title": "A", "text": "one"}\n{"id": "a2", "title": "A", "text": "two"}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"id": "b1", "contents": "\\"B\\"\\nthree"}\n')
    corpus = load_corpus([str(a), {"path": str(b), "format": "auto"}])
    assert corpus.ids == ["a1", "a2", "b1"] and corpus.get("b1").title == "B"
    assert len(load_corpus([str(a), str(b)], limit=2)) == 2
    with pytest.raises(FileNotFoundError, match="corpus file"):
        load_corpus([str(tmp_path / "missing.jsonl")])


def test_word_tokenizer_covers_the_corpus(tmp_path):
    from atlas_kit.recipes import build_atlas, load_recipe

    corpus = tmp_path / "c.jsonl"
    corpus.write_text('{"id": "p1", "title": "Zorvania", "text": "The capital of Zorvania is Blimport."}\n')
    recipe = load_recipe(None, [f"corpus={corpus}", "reader_config.tokenizer=word", "reader_config.d_model=16",
                                "reader_config.num_layers=1", "reader_config.num_heads=2"])
    atlas = build_atlas(recipe, ["What is the capital of Zorvania?"])
    vocab = atlas.reader.tokenizer.get_vocab()
    assert "blimport" in vocab  # a word that occurs only in a passage: the reader can copy it
    with pytest.raises(ValueError, match="reader_config.tokenizer"):
        build_atlas(load_recipe(None, [f"corpus={corpus}", "reader_config.tokenizer=bpe"]))


def _world_recipe(tmp_path, same_file: bool = False, extra: str = "") -> Path:
    from atlas_kit.world import World

    paths = World.generate(10, seed=0, granularity="fact", typed_values=True).to_jsonl(tmp_path / "w")
    ev = paths["train"] if same_file else paths["test"]
    recipe = tmp_path / "w.yaml"
    recipe.write_text(
        f"corpus: {paths['passages']}\nreader_config: {{d_model: 32, num_layers: 1, num_heads: 2, tokenizer: word}}\n"
        f"data: {{train: {paths['train']}, eval: {ev}, shots: 6}}\n"
        f"train: {{steps: 2, batch_size: 2, n_context: 2, retriever_loss: pdist, tensorboard: false{extra}}}\n")
    return recipe


def test_evaluation_only_runs_also_leave_the_few_shot_sample_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = _world_recipe(tmp_path, same_file=True)
    assert main(["-q", "train", str(recipe), "output_dir=run"]) == 0
    shots = set((tmp_path / "run" / "few_shot_ids.txt").read_text().split())
    assert main(["-q", "evaluate", str(recipe), "--checkpoint", "run/model"]) == 0
    # default folder of an evaluation run: its own, not the training run's
    evaluated = {json.loads(x)["id"] for x in (tmp_path / "runs" / "w-eval" / "predictions.jsonl").read_text().splitlines()}
    assert evaluated and not shots & evaluated
    assert (tmp_path / "runs" / "w-eval" / "few_shot_ids.txt").read_text().split() == sorted(shots, key=list(
        (tmp_path / "run" / "few_shot_ids.txt").read_text().split()).index)


def test_checkpoint_with_a_trained_passage_encoder_gets_a_fresh_index(tmp_path, monkeypatch):
    from atlas_kit.recipes import build_atlas, load_model_checkpoint, load_recipe

    monkeypatch.chdir(tmp_path)
    recipe = _world_recipe(tmp_path, extra=", refresh: none, retriever_lr: 0.01")  # shared encoder: passages change
    assert main(["-q", "train", str(recipe), "output_dir=run"]) == 0
    atlas = build_atlas(load_recipe(recipe), ["x"])
    stale = atlas.index.manifest["retriever"]["fingerprint"]
    load_model_checkpoint(atlas, "run/model")
    assert atlas.retriever.fingerprint() != stale
    assert atlas.index.manifest["retriever"]["fingerprint"] == atlas.retriever.fingerprint()
