"""kNN-memory LM recipes (Memorizing Transformer, FoT): one YAML file -> a causal LM built from a
config (or loaded from the hub / a folder) with memory layers added, trained with FoT's
cross-batch memory through :class:`~atlas_kit.train.loop.TrainLoop` on generated long documents,
and evaluated with the kNN memory at several document lengths (far beyond the trained one), next
to the same weights reading each window alone.

A recipe (see ``recipes/memory/knn-*.yaml``; every key but ``task.filler`` has a default)::

    name: knn-passkey-tiny
    output_dir: runs/knn-passkey-tiny     # run folder: train/ (the TrainLoop's), eval-Nw/, model/, metrics.json
    seed: 0
    task:
      name: passkey                       # passkey | recurring_facts
      filler: ../shared/data/dpr_wiki_sample/sample_data.jsonl
      train_examples: 40000
      eval_examples: 100
      train_windows: 2                    # windows per training document
      key_tokens: 1
    model:
      config: {model_type: gpt2, n_embd: 128, n_layer: 4, n_head: 4}   # or backbone: a hub id / folder
      tokenizer: default                  # the bundled MiniLM WordPiece tokenizer, or a hub id / folder
      window: 64                          # tokens per window (the local context)
      layers: [2]                         # blocks that get memory attention
      k: 32
      combine: single                     # single (FoT) | gate (Memorizing Transformer)
    cross_batch: {d: 4, memory_windows: 1, memory_grad: true}
    train: {steps: 1500, batch_size: 32, lr: 3.0e-3}   # MemoryLMConfig fields
    eval_windows: [1, 2, 4, 8, 16, 32]    # document lengths, in windows

Run it with ``atlas-kit memory knn train RECIPE.yaml [key=value ...]`` or
``python -m atlas_kit.memory.knn_recipe RECIPE.yaml``; unknown keys are refused with the file,
the key and the closest valid key.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from atlas_kit.recipes.schema import FamilyRecipe, Section, load_family_recipe
from atlas_kit.storage import atomic_write_json

__all__ = ["KNNRecipe", "load_knn_recipe", "build_knn_model", "task_examples", "run_knn_recipe", "main"]

log = logging.getLogger(__name__)


class KNNTask(Section):
    name: Literal["passkey", "recurring_facts"] = "passkey"
    filler: str
    max_filler_texts: int = Field(2000, ge=1)
    train_examples: int = Field(20000, ge=1)
    eval_examples: int = Field(100, ge=1)
    train_windows: int = Field(2, ge=2)
    key_tokens: int = Field(1, ge=1)
    facts: int = Field(8, ge=1)  # recurring_facts: facts per document


class KNNModel(Section):
    backbone: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = "default"
    window: int = Field(64, ge=1)
    layers: list[int] = [2]
    k: int = Field(32, ge=1)
    combine: Literal["single", "gate"] = "single"
    memory_positions: Literal["first", "none"] = "first"
    capacity: int = Field(65536, ge=1)
    backend: str = "Flat"
    gate_init: float = 0.0


class CrossBatch(Section):
    d: int = Field(1, ge=1)
    memory_windows: int = Field(1, ge=1)
    memory_grad: bool = True


class KNNRecipe(FamilyRecipe):
    name: str = "knn-memory"
    task: KNNTask
    model: KNNModel = KNNModel()
    cross_batch: CrossBatch = CrossBatch()
    eval_windows: list[int] = [1, 2, 4, 8]


def load_knn_recipe(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The recipe (a YAML path or a dict) with ``key=value`` overrides, checked; plain data."""
    where = "recipe" if isinstance(source, dict) else str(source)
    recipe = load_family_recipe(source, overrides, KNNRecipe, what="kNN-memory recipe")
    from atlas_kit.memory.memory_training import MemoryLMConfig

    try:
        MemoryLMConfig.from_dict({k: v for k, v in recipe.train.items() if k != "output_dir"})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: train: {e}") from None
    if recipe.cross_batch.d > int(recipe.train.get("batch_size", MemoryLMConfig.batch_size)):
        raise ValueError(f"{where}: cross_batch.d={recipe.cross_batch.d} is larger than train.batch_size")
    if not recipe.model.backbone and not recipe.model.config:
        raise ValueError(f"{where}: model needs config (a dict with model_type) or backbone (a hub id or folder)")
    return recipe.model_dump(mode="json")


def _tokenizer(model: dict[str, Any]):
    """``default`` (or nothing, with a config-built model) = the bundled MiniLM WordPiece tokenizer;
    a hub id / folder; nothing with a ``backbone`` = the backbone's own."""
    name = model.get("tokenizer")
    if name == "default" or (name is None and not model["backbone"]):
        from atlas_kit.tokenization import default_tokenizer

        return default_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name or model["backbone"]))


def build_knn_model(model: dict[str, Any], vocab_size: int, seed: int = 0, tokenizer: Any = None):
    """The recipe's ``model`` section as a :class:`~atlas_kit.memory.memory_layers.KNNMemoryModel`:
    ``config`` (``AutoConfig.for_model`` kwargs, randomly initialised from ``seed``; positions
    sized to the window; begin / end ids from ``tokenizer``, its [CLS] / [SEP] for WordPiece) or
    ``backbone`` (a hub id or folder)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from atlas_kit.memory.memory_layers import KNNMemoryModel

    settings = {k: model[k] for k in ("k", "combine", "memory_positions", "capacity", "backend", "gate_init")}
    if model.get("config"):
        spec = dict(model["config"])
        model_type = spec.pop("model_type", None)
        if not model_type:
            raise ValueError("model.config needs model_type (gpt2, llama, ...)")
        spec.setdefault("vocab_size", vocab_size)
        if tokenizer is not None:
            for key, first, second in (("bos_token_id", "bos_token_id", "cls_token_id"),
                                       ("eos_token_id", "eos_token_id", "sep_token_id")):
                value = getattr(tokenizer, first, None)
                spec.setdefault(key, value if value is not None else getattr(tokenizer, second, None))
        if model_type == "gpt2":
            spec.setdefault("n_positions", model["window"])
            spec.update({k: spec.get(k, 0.0) for k in ("attn_pdrop", "resid_pdrop", "embd_pdrop")})
        else:
            spec.setdefault("max_position_embeddings", model["window"])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = AutoModelForCausalLM.from_config(AutoConfig.for_model(model_type, **spec))
        return KNNMemoryModel(backbone, layers=model["layers"], **settings)
    return KNNMemoryModel.from_backbone(model["backbone"], layers=model["layers"], **settings)


def task_examples(recipe: dict[str, Any], windows: int, n: int, seed: int, tokenizer: Any, filler: Any,
                  key_window: int | None = None) -> list:
    """``n`` documents of the recipe's task, ``windows`` windows long."""
    from atlas_kit.tasks.long_documents import passkey_documents, recurring_fact_documents

    task, window = recipe["task"], int(recipe["model"]["window"])
    if task["name"] == "passkey":
        return passkey_documents(n, windows * window, tokenizer, filler, seed=seed, key_tokens=task["key_tokens"],
                                 window=window, key_window=key_window)
    return recurring_fact_documents(n, windows * window, tokenizer, filler, seed=seed, facts=task["facts"],
                                    key_tokens=task["key_tokens"], min_gap=window)


def run_knn_recipe(recipe: dict[str, Any] | str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Train and evaluate a kNN-memory LM recipe; returns (and writes to ``output_dir/metrics.json``)
    the training metrics and, per ``eval_windows`` length, the kNN-memory and window-only scores."""
    from atlas_kit.memory.memory_training import MemoryLMConfig, MemoryLMStep
    from atlas_kit.tasks.memorization import Filler
    from atlas_kit.train.loop import TrainLoop

    recipe = load_knn_recipe(recipe, overrides)
    task, spec, seed = recipe["task"], recipe["model"], int(recipe["seed"])
    tokenizer = _tokenizer(spec)
    filler = Filler(task["filler"], tokenizer, max_texts=task["max_filler_texts"])
    model = build_knn_model(spec, len(tokenizer), seed=seed, tokenizer=tokenizer)
    cb = recipe["cross_batch"]
    step = MemoryLMStep(model, spec["window"], d=cb["d"], memory_windows=cb["memory_windows"],
                        memory_grad=cb["memory_grad"])
    out = Path(recipe["output_dir"]) if recipe["output_dir"] else None
    cfg = MemoryLMConfig.from_dict({"seed": seed, **recipe["train"],
                                    "output_dir": str(out / "train") if out else None})
    train = task_examples(recipe, task["train_windows"], task["train_examples"], seed * 1000 + 1, tokenizer, filler)
    loop = TrainLoop(step, cfg)
    fit = loop.fit(train)
    lengths = []
    for n in recipe["eval_windows"]:
        docs = task_examples(recipe, n, task["eval_examples"], seed * 1000 + 500 + n, tokenizer, filler)
        metrics = step.evaluate(docs, cfg.steps, out / f"eval-{n}w" if out else None)
        lengths.append({"windows": n, "tokens": n * spec["window"], **metrics})
    result = {"name": recipe["name"], "task": task["name"], "train": fit, "eval": lengths, "recipe": recipe}
    if out is not None:
        model.save_pretrained(out / "model")
        atomic_write_json(out / "metrics.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas_kit.memory.knn_recipe",
                                     description="train and evaluate a kNN-memory LM (Memorizing Transformer / FoT) from a YAML recipe")
    parser.add_argument("recipe", help="YAML recipe (see recipes/memory/knn-*.yaml)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.steps=200 cross_batch.d=1")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return run_command(parser.parse_args(argv))


def run_command(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run_knn_recipe(args.recipe, args.overrides)
    for row in result["eval"]:
        sys.stdout.write(f"{result['task']}: {row['tokens']} tokens ({row['windows']} windows): accuracy "
                         f"{row['accuracy']:.3f} with the kNN memory, {row['accuracy_window_only']:.3f} window only; "
                         f"perplexity {row['perplexity']:.2f} vs {row['perplexity_window_only']:.2f}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
