"""YAML recipes: layered configuration (defaults < recipe < ``key=value`` overrides) and the run
they describe (build or load the model and index, sample few-shot data, train, evaluate).

A recipe is plain data, so a run folder's ``recipe.json`` re-runs it exactly.
"""
from __future__ import annotations

import copy
import logging
import os
import random
from pathlib import Path
from typing import Any

import yaml

from atlas_kit.storage import atomic_write_json, atomic_write_text

__all__ = ["DEFAULTS", "load_recipe", "apply_overrides", "run_recipe", "build_atlas", "load_examples"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "retriever": None,  # hub id / folder; None = the bundled all-MiniLM-L6-v2
    "reader": None,  # T5 checkpoint (hub id / folder); None = build from reader_config
    "reader_config": {"d_model": 128, "num_layers": 2, "num_heads": 4, "dropout": 0.1, "tokenizer": "default",
                      "text_maxlength": 200, "answer_maxlength": 32},
    "index": None,  # index folder or NAME[@VERSION]
    "corpus": None,  # or: passages to index with the retriever (FAISS), when no index is given
    "corpus_format": "auto",  # any load_passages format, or "squad" (paragraphs of SQuAD json files)
    "factory": "Flat",
    "data": {"train": None, "eval": None, "format": "qa", "shots": None, "eval_limit": None, "seed": 0},
    "train": {},  # TrainConfig fields
    "output_dir": None,  # default runs/<name>
    "smoke": {"shots": 8, "eval_limit": 8, "train": {"steps": 2, "eval_every": 0, "save_every": 0}},
}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None, smoke: bool = False) -> dict[str, Any]:
    """Defaults < the YAML file < ``key=value`` overrides (dotted keys, YAML-typed values)."""
    recipe = copy.deepcopy(DEFAULTS)
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"recipe not found: {path}")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: invalid YAML ({e})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a recipe must be a mapping")
        unknown = sorted(set(data) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"{path}: unknown recipe key(s) {unknown} (known: {sorted(DEFAULTS)})")
        recipe = _merge(recipe, data)
        recipe.setdefault("name", path.stem)
        if "name" not in data:
            recipe["name"] = path.stem
    recipe = apply_overrides(recipe, overrides or [])
    if smoke:
        s = recipe["smoke"]
        recipe["data"]["shots"] = min(recipe["data"]["shots"] or s["shots"], s["shots"])
        recipe["data"]["eval_limit"] = min(recipe["data"]["eval_limit"] or s["eval_limit"], s["eval_limit"])
        recipe["train"] = _merge(recipe["train"], s["train"])
        recipe["name"] += "-smoke"
    return recipe


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``train.steps=200 data.shots=64 reader=google/t5-base-lm-adapt``."""
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ValueError(f"override {item!r}: {part!r} is not a section")
            node = node[part]
        if parts[0] not in DEFAULTS:
            raise ValueError(f"override {item!r}: unknown key {parts[0]!r} (known: {sorted(DEFAULTS)})")
        node[parts[-1]] = value
    return out


def load_examples(path: str | os.PathLike, fmt: str = "qa") -> list:
    """Task examples for a recipe: ``qa`` jsonl or ``squad`` json."""
    from atlas_kit.tasks import load_qa, load_squad

    if fmt == "qa":
        return load_qa(path)
    if fmt == "squad":
        return load_squad(path)
    raise ValueError(f"unknown data format {fmt!r} (known: qa, squad)")


def build_atlas(recipe: dict[str, Any], texts_for_tokenizer: list[str] | None = None):
    """Retriever, reader and index as the recipe says."""
    from atlas_kit import Atlas, Reader, Retriever, load_passages
    from atlas_kit.index import FaissIndex, load_index
    from atlas_kit.index.store import resolve_index_path

    retriever = Retriever.from_pretrained(recipe["retriever"])
    if recipe["reader"]:
        reader = Reader.from_pretrained(recipe["reader"])
    else:
        rc = dict(recipe["reader_config"])
        tok_kind = rc.pop("tokenizer", "default")
        tokenizer = None
        if tok_kind == "word":
            from atlas_kit.tokenization import train_word_tokenizer

            tokenizer = train_word_tokenizer(texts_for_tokenizer or [])
        reader = Reader.from_config(tokenizer, **rc)
    if recipe["index"]:
        index = load_index(resolve_index_path(recipe["index"]), retriever=retriever)
    elif recipe["corpus"]:
        corpus = recipe["corpus"]
        if recipe["corpus_format"] == "squad":
            from atlas_kit.tasks import squad_open

            passages = squad_open(*([corpus] if isinstance(corpus, str) else corpus))[0]
        else:
            passages = load_passages(corpus, format=recipe["corpus_format"])
        index = FaissIndex.build(passages, retriever, factory=recipe["factory"])
    else:
        raise ValueError("the recipe names neither an index nor a corpus to index")
    return Atlas(retriever, reader, index)


def run_recipe(recipe: dict[str, Any], evaluate_only: bool = False, checkpoint: str | None = None) -> dict[str, Any]:
    """Train (unless ``evaluate_only``) and evaluate; everything lands in the run folder."""
    from atlas_kit.train import TrainConfig, Trainer

    data = recipe["data"]
    out = Path(recipe["output_dir"] or Path("runs") / recipe["name"])
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe)
    train = load_examples(data["train"], data["format"]) if data["train"] and not evaluate_only else []
    evals = load_examples(data["eval"], data["format"]) if data["eval"] else []
    if data["shots"] and train:
        rng = random.Random(data.get("seed", 0))
        train = rng.sample(train, min(int(data["shots"]), len(train)))
        atomic_write_text(out / "few_shot_ids.txt", "".join(f"{e.id}\n" for e in train))
    if data["eval_limit"]:
        evals = evals[: int(data["eval_limit"])]
    texts = [e.question + " " + " ".join(e.answers) for e in train + evals]
    atlas = build_atlas(recipe, texts)
    if checkpoint:
        from atlas_kit import Atlas

        loaded = Atlas.from_pretrained(checkpoint, index=atlas.index, allow_mismatch=True)
        atlas.retriever, atlas.reader = loaded.retriever, loaded.reader
    cfg = TrainConfig.from_dict({**recipe["train"], "output_dir": str(out)})
    trainer = Trainer(atlas, cfg)
    if train:
        metrics = trainer.fit(train, evals or None)
        atlas.save_pretrained(out / "model")
    else:
        metrics = trainer.evaluate(evals, write=True) if evals else {}
        atomic_write_json(out / "metrics.json", metrics)
    log.info("run folder: %s", out)
    return metrics
