"""RMT recipes: one YAML file (or dict) -> data generated for the task, an RMT built, trained with
the segment curriculum through :class:`~atlas_kit.train.loop.TrainLoop`, and evaluated at several
input lengths (beyond the trained one too), with the memory-reset ablation.

A recipe (every key but ``task.name`` optional; see ``recipes/memory/*.yaml``)::

    name: rmt-babilong
    output_dir: runs/rmt-babilong        # run folder: stage-*/ (each TrainLoop's), model/, metrics.json
    seed: 0
    task:
      name: memorize                     # memorize | detect | reason | copy | reverse | associative
      filler: ../shared/data/dpr_wiki_sample/sample_data.jsonl   # fact tasks: natural text (path)
      train_examples: 2000
      eval_examples: 300
      vocab: 10                          # algorithmic tasks: symbols
    model:
      backbone: null                     # null = the bundled MiniLM; a hub id or folder; or
      config: null                       #   a dict for AutoConfig.for_model (model_type: bert, ...)
      kind: encoder                      # encoder | decoder | encoder-decoder
      num_mem_tokens: 10
      segment_size: 64
      bptt_depth: null
    curriculum: [1, 2, 4]                # segments per stage (or {max_segments: 4})
    vary_segments: false                 # true: a stage of n trains on 1..n segments mixed
    steps: [100, 200, 300]               # per stage (or one number; default train.steps)
    train: {batch_size: 8, lr: 1.0e-4}   # RMTConfig (LoopConfig + lr) fields, for every stage
    eval_segments: [1, 2, 4, 8]

Run it with ``python -m atlas_kit.memory.rmt_recipe RECIPE.yaml [key=value ...]`` (dotted keys,
YAML-typed values: ``train.lr=3e-4``), or from Python with :func:`run_rmt_recipe`. The schema is
:class:`RMTRecipe` (read by :func:`atlas_kit.recipes.schema.load_family_recipe`, as the kNN-memory
recipes are): an unknown key is refused with the file and the closest valid key.

Lengths: a fact task of ``n`` segments is ``n x segment_size`` tokens (the question in the last
segment); ``copy`` / ``reverse`` of ``n`` segments hold ``(n x segment_size - 1) // 2`` symbols, so
``input [sep] target`` fills the ``n`` segments; ``associative`` holds
``min(vocab, (n x segment_size - 1) // 2)`` key-value pairs and the asked key.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal, Sequence

from pydantic import Field, StrictBool

from atlas_kit.memory.rmt import KINDS, RMT
from atlas_kit.memory.rmt_training import RMTConfig, RMTStep, curriculum_stages, train_curriculum
from atlas_kit.recipes.schema import FamilyRecipe, Section, load_family_recipe
from atlas_kit.storage import atomic_write_json
from atlas_kit.tasks.memorization import ALGORITHMIC_TASKS, FACT_TASKS, PLACES, Filler, algorithmic_task, fact_task

__all__ = ["RMTRecipe", "load_rmt_recipe", "build_rmt", "task_examples", "run_rmt_recipe", "main"]

log = logging.getLogger(__name__)

class RMTTask(Section):
    name: Literal[FACT_TASKS + ALGORITHMIC_TASKS]  # type: ignore[valid-type]
    filler: str | None = None
    max_filler_texts: int | None = Field(2000, ge=1)
    train_examples: int = Field(2000, ge=1)
    eval_examples: int = Field(300, ge=1)
    vocab: int = Field(10, ge=2)


class RMTModel(Section):
    backbone: str | None = None
    config: dict[str, Any] | None = None
    tokenizer: str | None = None
    kind: Literal[KINDS] = "encoder"  # type: ignore[valid-type]
    num_mem_tokens: int = Field(10, ge=0)
    segment_size: int = Field(64, ge=1)
    bptt_depth: int | None = Field(None, ge=1)


class RMTRecipe(FamilyRecipe):
    """The schema of an RMT recipe (defaults as shown in the module docstring)."""

    name: str = "rmt"
    task: RMTTask
    model: RMTModel = RMTModel()
    curriculum: list[int] | int | dict[str, int] = [1, 2]
    vary_segments: StrictBool = False
    steps: list[int] | int | None = None
    eval_segments: list[Annotated[int, Field(ge=1)]] = [1, 2, 4]


_HEAD_OF_KIND = {"encoder": "classify", "decoder": "lm", "encoder-decoder": "seq2seq"}


def load_rmt_recipe(source: str | Path | dict[str, Any], overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The recipe (a YAML path or a dict) with ``key=value`` overrides, checked; plain data with
    every default filled in and the curriculum as a list of segment counts."""
    where = "recipe" if isinstance(source, dict) else str(source)
    recipe = load_family_recipe(source, overrides, RMTRecipe, what="RMT recipe").model_dump(mode="json")
    return _check(recipe, where)


def _check(recipe: dict[str, Any], where: str) -> dict[str, Any]:
    """What the schema cannot say: combinations of task and model, the train keys, the curriculum."""
    task, model = recipe["task"], recipe["model"]
    if task["name"] in FACT_TASKS and not task["filler"]:
        raise ValueError(f"{where}: task.filler (a text or passage file) is needed by the {task['name']} task")
    if task["name"] in FACT_TASKS and model["kind"] != "encoder":
        raise ValueError(f"{where}: the 6-class {task['name']} task needs model.kind: encoder (a classification head)")
    known = {f.name for f in fields(RMTConfig)}
    unknown = sorted(set(recipe["train"]) - known)
    if unknown:
        raise ValueError(f"{where}: unknown train keys {unknown} (RMTConfig fields: {sorted(known)})")
    cur = recipe["curriculum"]
    if isinstance(cur, dict):
        if set(cur) - {"max_segments", "start"} or "max_segments" not in cur:
            raise ValueError(f"{where}: curriculum as a mapping takes max_segments (and start), got {sorted(cur)}")
        recipe["curriculum"] = curriculum_stages(int(cur["max_segments"]), int(cur.get("start", 1)))
    elif isinstance(cur, int):
        recipe["curriculum"] = [cur]
    if not recipe["curriculum"] or min(recipe["curriculum"]) < 1:
        raise ValueError(f"{where}: curriculum must be a non-empty list of segment counts >= 1, got {cur!r}")
    return recipe


def _tokenizer(model: dict[str, Any]):
    from atlas_kit.tokenization import default_tokenizer

    name = model.get("tokenizer") or (model["backbone"] if model["backbone"] and not model.get("config") else None)
    if name in (None, "default"):
        return default_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(name))


def build_rmt(model: dict[str, Any], num_classes: int | None, vocab_size: int, seed: int = 0,
              **special: int) -> RMT:
    """The recipe's ``model`` section as an :class:`RMT`: ``config`` (a dict for
    ``AutoConfig.for_model``, randomly initialised from ``seed``) or ``backbone`` (hub id / folder;
    ``None`` = the bundled MiniLM)."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM

    kind = model["kind"]
    extra = {"num_mem_tokens": model["num_mem_tokens"], "segment_size": model["segment_size"],
             "bptt_depth": model["bptt_depth"], "num_classes": num_classes, "seed": seed, **special}
    if model.get("config"):
        spec = dict(model["config"])
        model_type = spec.pop("model_type", None)
        if not model_type:
            raise ValueError("model.config needs model_type (bert, gpt2, t5, ...)")
        spec.setdefault("vocab_size", vocab_size)
        cfg = AutoConfig.for_model(model_type, **spec)
        loader = {"encoder": AutoModel, "decoder": AutoModelForCausalLM, "encoder-decoder": AutoModelForSeq2SeqLM}[kind]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            backbone = loader.from_config(cfg)
        return RMT(backbone, kind=kind, **extra)
    return RMT.from_backbone(model["backbone"], kind=kind, **extra)


def _algorithmic_length(name: str, n_segments: int, segment_size: int, vocab: int) -> dict[str, Any]:
    room = n_segments * segment_size
    if name == "associative":
        pairs = max(1, min(vocab, (room - 1) // 2))
        return {"length": 2 * pairs, "pairs": pairs}
    return {"length": max(1, (room - 1) // 2)}


def task_examples(recipe: dict[str, Any], n_segments: int, n: int, seed: int, tokenizer: Any = None,
                  filler: Filler | None = None, offset: int = 3) -> list:
    """``n`` examples of the recipe's task, sized to ``n_segments`` segments."""
    task, seg = recipe["task"], int(recipe["model"]["segment_size"])
    if task["name"] in FACT_TASKS:
        return fact_task(task["name"], n, n_segments * seg, tokenizer, filler, seed=seed)
    spec = _algorithmic_length(task["name"], n_segments, seg, int(task["vocab"]))
    if recipe["model"]["kind"] == "encoder" and task["name"] != "associative":
        raise ValueError(f"the encoder kind classifies; {task['name']} needs model.kind decoder or encoder-decoder")
    return algorithmic_task(task["name"], n, vocab=int(task["vocab"]), seed=seed, offset=offset, **spec)


def run_rmt_recipe(recipe: dict[str, Any] | str | Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Run an RMT recipe end to end; returns (and writes to ``output_dir/metrics.json``) the
    curriculum's per-stage metrics and the evaluation at every ``eval_segments`` length."""
    recipe = load_rmt_recipe(recipe, overrides)
    task, model_spec, seed = recipe["task"], recipe["model"], int(recipe["seed"])
    name = task["name"]
    fact = name in FACT_TASKS
    tokenizer = filler = None
    if fact:
        tokenizer = _tokenizer(model_spec)
        filler = Filler(task["filler"], tokenizer, max_texts=task["max_filler_texts"])
        vocab_size, num_classes, pad, sep = len(tokenizer), len(PLACES), tokenizer.pad_token_id or 0, None
    else:
        # symbols from id 3: 0 = padding, 1 = separator / [SEP], 2 = [CLS]
        vocab_size, pad, sep = int(task["vocab"]) + 3, 0, 1
        num_classes = int(task["vocab"]) if model_spec["kind"] == "encoder" else None
    special = {"cls_token_id": 2, "sep_token_id": 1} if not fact and model_spec["kind"] == "encoder" else {}
    rmt = build_rmt(model_spec, num_classes, vocab_size, seed=seed, **special)
    step = RMTStep(rmt, _HEAD_OF_KIND[model_spec["kind"]], pad_token_id=pad, sep_token_id=sep)
    out = Path(recipe["output_dir"]) if recipe["output_dir"] else None

    def make(n: int):
        train = task_examples(recipe, n, int(task["train_examples"]), seed * 1000 + n, tokenizer, filler)
        evaluation = task_examples(recipe, n, int(task["eval_examples"]), seed * 1000 + 500 + n, tokenizer, filler)
        return train, evaluation

    cfg = RMTConfig.from_dict({"seed": seed, **recipe["train"]})
    stages = train_curriculum(step, make, recipe["curriculum"], cfg, steps=recipe["steps"], output_dir=out,
                              vary_segments=bool(recipe["vary_segments"]))
    lengths = []
    for n in recipe["eval_segments"]:
        examples = task_examples(recipe, n, int(task["eval_examples"]), seed * 1000 + 900 + n, tokenizer, filler)
        metrics = step.evaluate(examples, stages[-1]["steps"], out / f"eval-{n}seg" if out else None)
        lengths.append({"eval_segments": n, **metrics})
    result = {"name": recipe["name"], "task": name, "trained_segments": recipe["curriculum"][-1],
              "stages": [{k: v for k, v in s.items() if k != "history"} for s in stages], "eval": lengths,
              "recipe": recipe}
    if out is not None:
        rmt.save_pretrained(out / "model")
        atomic_write_json(out / "metrics.json", result)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m atlas_kit.memory.rmt_recipe",
                                     description="train and evaluate an RMT from a YAML recipe (curriculum over segments)")
    parser.add_argument("recipe", help="YAML recipe (see recipes/memory/)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. train.lr=3e-4 curriculum=[1,2]")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    result = run_rmt_recipe(args.recipe, args.overrides)
    for row in result["eval"]:
        parts = [f"{result['task']}: {row['eval_segments']} segment(s): accuracy {row['accuracy']:.3f}"]
        if "token_accuracy" in row:
            parts.append(f"token accuracy {row['token_accuracy']:.3f}")
        if "accuracy_memory_reset" in row:
            parts.append(f"with memory reset: accuracy {row['accuracy_memory_reset']:.3f}"
                         + (f", token accuracy {row['token_accuracy_memory_reset']:.3f}"
                            if "token_accuracy_memory_reset" in row else ""))
        sys.stdout.write("; ".join(parts) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
