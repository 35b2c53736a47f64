"""EMAT recipes: YAML files in ``recipes/memory/`` run by this entry point.

    python -m atlas_kit.memory.emat_recipe recipes/memory/emat-world.yaml [key=value ...] [--smoke]

A recipe names the backbone, the memory's QA pairs, the training stages and the evaluation data::

    name: emat-world
    output_dir: runs/emat-world
    model:
      backbone: null                 # a T5 hub id / folder, or null: a T5 built from `config`
      config: {d_model: 128, num_layers: 4, num_decoder_layers: 2, num_heads: 4, dropout: 0.0}
      tokenizer: world               # world (word-level, from the generated world) | default | a folder / hub id
      freeze_embeddings: true
      emat: {prefix_length: 2, key_layer: 1, value_layer: 2}
    data:
      world: {entities: 200, seed: 0}   # a generated world: memory = direct wording, questions = paraphrases
      # or: memory: PAQ.jsonl, memory_format: qa, eval: test.jsonl, eval_format: qa
      rename: true                   # train on renamed copies (atlas_kit.demo.Renamer; world only)
    memory: {backend: Flat, search_params: {}}
    stages:                          # one TrainLoop.fit each, on the same model and memory
      - {train: {steps: 3000, k: 4, ...EMATTrainConfig fields}, data: {train: PATH, format: qa}}

``key=value`` overrides use dotted keys (``stages.0.train.steps=100``, ``data.world.entities=40``).
``--smoke`` cuts every stage to 3 steps and the evaluation to 16 questions. The run folder gets
``recipe.json`` (the resolved recipe), one sub-folder per stage (the loop's ``config.json``,
``train_log.jsonl``, checkpoints), ``metrics.json``, ``predictions.jsonl`` and ``model/`` (an
``Atlas.save_pretrained`` folder holding the EMAT reader and ``memory/``), which
``atlas-kit memory ask --model RUN/model`` answers with.

This is its own entry point, not a section of :mod:`atlas_kit.recipes` (which runs Atlas recipes),
so that EMAT's schema - a memory instead of a corpus, several training stages - stays separate.
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import sys
from pathlib import Path
from typing import Any, Sequence

import yaml

from atlas_kit.recipes.schema import read_recipe_file
from atlas_kit.storage import atomic_write_json

__all__ = ["load_emat_recipe", "run_emat_recipe", "main"]

log = logging.getLogger(__name__)


def _set(tree: dict[str, Any], dotted: str, value: Any) -> None:
    node: Any = tree
    parts = dotted.split(".")
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value


def load_emat_recipe(path: str | os.PathLike, overrides: Sequence[str] = (), smoke: bool = False) -> dict[str, Any]:
    """The recipe with ``key=value`` overrides applied (values parsed as YAML)."""
    path = Path(path)
    recipe = read_recipe_file(path, "EMAT recipe")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not key=value")
        key, raw = item.split("=", 1)
        try:
            _set(recipe, key, yaml.safe_load(raw) if raw else None)
        except (IndexError, ValueError, TypeError):
            raise ValueError(f"override {item!r}: {key} does not name a place in {path}") from None
    for key in ("model", "data", "stages"):
        if key not in recipe:
            raise ValueError(f"{path}: missing section {key!r}")
    if smoke:
        for stage in recipe["stages"]:
            stage.setdefault("train", {}).update({"steps": 3, "save_every": 0, "eval_every": 0})
        recipe.setdefault("eval", {})["limit"] = 16
    recipe["_source"] = str(path)
    return recipe


def _tokenizer(spec: Any, world: Any, practice: list[str]):
    if spec in (None, "default"):
        from atlas_kit.tokenization import default_tokenizer

        return default_tokenizer()
    if spec == "world":
        if world is None:
            raise ValueError("model.tokenizer: world needs data.world")
        from atlas_kit.tokenization import train_word_tokenizer

        return train_word_tokenizer(world[0].texts() + world[1].texts() + practice + ["question: answer:"])
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(spec)


def _build_model(recipe: dict[str, Any], tokenizer: Any):
    from atlas_kit.memory.emat import EMAT
    from atlas_kit.reader import Reader

    m = recipe["model"]
    seed = int(recipe.get("seed", 0))
    if m.get("backbone"):
        reader = Reader.from_pretrained(m["backbone"], **(m.get("reader_settings") or {}))
    else:
        reader = Reader.from_config(tokenizer, seed=seed, **(m.get("config") or {}))
    if m.get("freeze_embeddings"):
        reader.model.get_input_embeddings().weight.requires_grad_(False)
    return EMAT(reader, seed=seed, **(m.get("emat") or {}))


def _examples(path: str, fmt: str, limit: int | None = None) -> list[Any]:
    if fmt == "qa":
        from atlas_kit.tasks.qa import load_qa

        return load_qa(path, limit=limit)
    if fmt == "squad":
        from atlas_kit.tasks.squad import load_squad

        return load_squad(path)[:limit]
    if fmt == "kilt":
        from atlas_kit.tasks.kilt import load_kilt

        return load_kilt(path, limit=limit)
    raise ValueError(f"unknown data format {fmt!r} (known: qa, squad, kilt)")


def run_emat_recipe(recipe: dict[str, Any]) -> dict[str, Any]:
    """Build the model and memory, run every stage, evaluate, save; returns the metrics."""
    import torch

    from atlas_kit.api import Atlas
    from atlas_kit.memory.emat_memory import QAMemory
    from atlas_kit.memory.emat_train import EMATStep, EMATTrainConfig
    from atlas_kit.tasks.qa import QAExample
    from atlas_kit.train.loop import TrainLoop

    seed = int(recipe.get("seed", 0))
    random.seed(seed)
    torch.manual_seed(seed)
    out = Path(recipe.get("output_dir") or f"runs/{recipe.get('name', 'emat')}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe)
    data = recipe["data"]
    world = None
    practice: list[str] = []
    if data.get("world"):
        from atlas_kit.world import World

        w = dict(data["world"])
        n, wseed = int(w.get("entities", 200)), int(w.get("seed", seed))
        world = (World.generate(n, seed=wseed, granularity="fact", typed_values=True, paraphrase=1.0),
                 World.generate(n, seed=wseed, granularity="fact", typed_values=True, paraphrase=0.0))
        practice = world[0].practice_words(int(w.get("practice_words", 4000)), seed=wseed)
        pairs = [(q.question, q.answers[0]) for q in world[1].questions()]
        default_train = [QAExample(q.id, q.question, q.answers) for q in world[0].questions("train")]
        eval_examples = [QAExample(q.id, q.question, q.answers) for q in world[0].questions("test")]
    else:
        if "memory" not in data:
            raise ValueError(f"{recipe['_source']}: data needs `world` or `memory` (a QA-pair file)")
        from atlas_kit.memory.emat_memory import load_qa_pairs

        pairs = load_qa_pairs(data["memory"], format=data.get("memory_format", "qa"), limit=data.get("memory_limit"))
        default_train = None
        eval_examples = _examples(data["eval"], data.get("eval_format", "qa")) if data.get("eval") else []
    limit = (recipe.get("eval") or {}).get("limit")
    if limit:
        eval_examples = eval_examples[: int(limit)]
    emat = _build_model(recipe, _tokenizer(recipe["model"].get("tokenizer"), world, practice))
    device = recipe.get("device") or ("cuda" if torch.cuda.is_available() else "cpu")
    emat.to(device)
    mem_cfg = recipe.get("memory") or {}
    memory = QAMemory.build(pairs, emat, backend=mem_cfg.get("backend", "Flat"),
                            search_params=mem_cfg.get("search_params"), batch_size=int(mem_cfg.get("batch_size", 256)),
                            show_progress=True)
    rename = None
    if data.get("rename"):
        if world is None:
            raise ValueError("data.rename needs data.world (practice words come from the generated world)")
        from atlas_kit.demo import Renamer

        rename = Renamer(world[0].invented_words(), practice, random.Random(seed + 2))
    history = []
    for i, stage in enumerate(recipe["stages"]):
        sdata = stage.get("data") or {}
        train = _examples(sdata["train"], sdata.get("format", "qa")) if sdata.get("train") else default_train
        if not train:
            raise ValueError(f"{recipe['_source']}: stage {i} has no training data (stages.{i}.data.train)")
        cfg = EMATTrainConfig.from_dict({"seed": seed, **(stage.get("train") or {}), "output_dir": str(out / f"stage-{i}")})
        step = EMATStep(emat, memory, cfg, rename=rename)
        loop = TrainLoop(step, cfg)
        loop.fit(train)
        history.append(loop.history[-1] if loop.history else {})
    k = int((recipe.get("eval") or {}).get("k", recipe["stages"][-1].get("train", {}).get("k", 10)))
    metrics: dict[str, Any] = {"stages": history, "memory": memory.info()}
    if eval_examples:
        final = EMATStep(emat, memory, EMATTrainConfig(k=k, eval_batch_size=64))
        metrics["eval"] = final.evaluate(eval_examples, step=-1, out=out)
    memory.refresh(emat)
    memory.save(out / "memory")
    Atlas(reader=emat, memory=memory, memory_k=k).save_pretrained(out / "model")
    atomic_write_json(out / "metrics.json", metrics)
    log.info("EMAT recipe %s: %s", recipe.get("name"), metrics.get("eval"))
    return metrics


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m atlas_kit.memory.emat_recipe", description="Run an EMAT recipe.")
    ap.add_argument("recipe")
    ap.add_argument("overrides", nargs="*", help="key=value (dotted keys)")
    ap.add_argument("--smoke", action="store_true", help="3 steps per stage, 16 evaluation questions")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    metrics = run_emat_recipe(load_emat_recipe(args.recipe, args.overrides, smoke=args.smoke))
    log.info("metrics: %s", {k: v for k, v in metrics.items() if k != "stages"})
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
