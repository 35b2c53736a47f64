"""The run a recipe describes: build or load the model and index, load the task's data, sample
the few shots, train (one model, or one per group), evaluate, and leave it all in the run folder.

What a recipe may say is :mod:`atlas_kit.recipes.schema`; a recipe is plain data, so a run
folder's ``recipe.json`` re-runs it exactly.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
from pathlib import Path
from typing import Any


from atlas_kit.evaluation import write_report
from atlas_kit.index import FaissIndex, load_index
from atlas_kit.index.store import resolve_index_path
from atlas_kit.passages import load_passages
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.api import Atlas
from atlas_kit.recipes.schema import validate_recipe
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tasks import get_task, squad_open
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.train import TrainConfig, Trainer

__all__ = ["check_output_dir", "run_recipe", "build_atlas", "load_corpus", "load_model_checkpoint", "RUN_FILES"]

log = logging.getLogger(__name__)

def load_corpus(spec: Any, default_format: str = "auto", limit: int | None = None):
    """Passages of one or several sources (path, or ``{path, format}``), concatenated."""
    entries = spec if isinstance(spec, list) else [spec]
    corpus = None
    squad_paths = [e for e in entries if isinstance(e, str) and default_format == "squad"]
    if squad_paths:
        corpus = squad_open(*squad_paths)[0]
    for entry in entries:
        if isinstance(entry, str) and default_format == "squad":
            continue
        path, fmt = (entry, default_format) if isinstance(entry, str) else (entry["path"], entry.get("format", "auto"))
        if not Path(path).exists():
            raise FileNotFoundError(f"corpus file {path} not found (point the recipe's corpus at it)")
        part = squad_open(path)[0] if fmt == "squad" else load_passages(path, format=fmt)
        corpus = part if corpus is None else corpus.concat(part)
    if corpus is None:
        raise ValueError("empty corpus specification")
    if limit is not None and len(corpus) > int(limit):
        corpus = corpus.select(list(range(int(limit))))
    return corpus


def build_atlas(recipe: dict[str, Any], texts_for_tokenizer: list[str] | None = None):
    """Retriever, index and reader as the recipe says. A word-level reader tokenizer is trained on
    ``texts_for_tokenizer`` (the task's questions and answers) plus every passage of the index, so
    the reader can copy any corpus word."""
    retriever = Retriever.from_pretrained(recipe["retriever"])
    if recipe["index"]:
        index = load_index(resolve_index_path(recipe["index"]), retriever=retriever)
    elif recipe["corpus"]:
        passages = load_corpus(recipe["corpus"], recipe["corpus_format"], recipe.get("corpus_limit"))
        index = FaissIndex.build(passages, retriever, factory=recipe["factory"])
    else:
        raise ValueError("the recipe names neither an index nor a corpus to index")
    if recipe["reader"]:
        reader = Reader.from_pretrained(recipe["reader"])
    else:
        rc = dict(recipe["reader_config"])
        tok_kind = rc.pop("tokenizer", "default")
        tokenizer = None
        if tok_kind == "word":
            corpus = getattr(index, "passages", None)
            corpus_texts = (f"{p.title} {p.text}" for p in corpus) if corpus is not None else ()
            tokenizer = train_word_tokenizer([*(texts_for_tokenizer or []), *corpus_texts])
        elif tok_kind != "default":
            raise ValueError(f"reader_config.tokenizer must be 'default' or 'word', got {tok_kind!r}")
        reader = Reader.from_config(tokenizer, **rc)
    return Atlas(retriever, reader, index)


def _sample_shots(recipe: dict[str, Any], train: list, evals: list) -> tuple[list, list, str | None]:
    """Seeded few-shot sample (and the ``few_shot_ids.txt`` text for the run folder); when train
    and eval data are the same file, the sampled examples are removed from the evaluation set."""
    data = recipe["data"]
    if data["shots"] and train:
        rng = random.Random(data.get("seed", 0))
        train = rng.sample(train, min(int(data["shots"]), len(train)))
    shot_ids = "".join(f"{e.id}\n" for e in train) if train else None
    if train and evals and data["train"] == data["eval"]:
        taken = {e.id for e in train}
        before = len(evals)
        evals = [e for e in evals if e.id not in taken]
        log.info("train and eval data are the same file: %d training examples left out of evaluation",
                 before - len(evals))
    return train, evals, shot_ids


def _groups(recipe: dict[str, Any], train: list, evals: list) -> list[tuple[str | None, list, list]]:
    """``[(group, train, eval)]``: one group unless ``data.group_by`` names an example attribute."""
    key, limit = recipe["data"]["group_by"], recipe["data"]["eval_limit"]
    if not key:
        return [(None, train, evals[: int(limit)] if limit else evals)]
    names = list(dict.fromkeys(getattr(e, key) for e in evals))
    if recipe["smoke"]["active"]:
        names = names[: int(recipe["smoke"]["max_groups"])]
    out = []
    for name in names:
        ev = [e for e in evals if getattr(e, key) == name]
        out.append((name, [e for e in train if getattr(e, key) == name], ev[: int(limit)] if limit else ev))
    return out


#: what a run writes at its top level (cleared when --overwrite replaces another run's folder)
RUN_FILES = ("recipe.json", "few_shot_ids.txt", "metrics.json", "predictions.jsonl", "results.md", "config.json",
             "train_log.jsonl", "loss.png")


def check_output_dir(out: Path, recipe: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse to write into an existing folder that is not a run of this same recipe.

    A re-run (or resume) of the same recipe may reuse its folder; anything else - a folder of
    user files, another recipe's run - needs ``overwrite`` (CLI ``--overwrite``), and then the
    other run's result files are removed first so the folder never mixes two runs.
    """
    import json
    import shutil

    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"output_dir {out} exists and is not a folder")
    entries = [p for p in out.iterdir() if not p.name.startswith(".")]
    if not entries:
        return
    recorded = None
    if (out / "recipe.json").is_file():
        try:
            recorded = json.loads((out / "recipe.json").read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            recorded = None
    if recorded == json.loads(json.dumps(recipe, default=str)):
        return  # a run of this same recipe
    if not overwrite:
        what = "a run of another recipe" if recorded is not None else "not a run folder (no recipe.json)"
        raise FileExistsError(f"output_dir {out} exists and is {what}; nothing was written. Choose another "
                              "output_dir=..., or pass --overwrite (overwrite=True) to replace its run files")
    log.warning("%s: --overwrite: replacing the run files of what was there", out)
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()
    for name in ("model", "groups", "tensorboard"):
        if (out / name).is_dir() and not (out / name).is_symlink():
            shutil.rmtree(out / name)


def _is_training_checkpoint(path: str | os.PathLike) -> bool:
    return (Path(path) / "trainer_state.json").is_file()


def run_recipe(recipe: dict[str, Any], evaluate_only: bool = False, checkpoint: str | None = None,
               retrieval_only: bool = False, run_file: str | None = None, overwrite: bool = False,
               resume: str | os.PathLike | None = None) -> dict[str, Any]:
    """Train (unless ``evaluate_only``) and evaluate; everything lands in the run folder.

    With ``data.group_by`` (MMLU 5-shot: ``subject``) every group trains its own model from the
    same starting weights and is evaluated on its own examples; the run's metrics are computed over
    all groups' predictions. ``retrieval_only`` skips the reader: recall@k / R-Precision only;
    ``run_file`` (retrieval only) also writes the ranking as a TREC run file.

    Nothing is written before the recipe, the data files and the model/index have loaded; an
    existing ``output_dir`` must be a run of the same recipe unless ``overwrite``
    (:func:`check_output_dir`). ``resume`` continues a training run from one of its
    ``checkpoint-N`` folders (exactly, as :meth:`~atlas_kit.train.Trainer.fit` does); the run
    folder defaults to the checkpoint's parent. ``checkpoint`` starts from a saved model
    (a run's ``model/``).
    """
    recipe = validate_recipe(recipe)
    task = get_task(recipe["task"])
    data = recipe["data"]
    no_training = evaluate_only or retrieval_only
    if checkpoint and _is_training_checkpoint(checkpoint):
        raise ValueError(f"{checkpoint} is a training checkpoint (trainer_state.json), not a saved model: "
                         "continue that run with --resume (run_recipe(resume=...)), or pass its model/ folder")
    if run_file and not retrieval_only:
        raise ValueError("run_file (a TREC run) is written by retrieval-only evaluation (--retrieval-only)")
    if resume is not None:
        if no_training:
            raise ValueError("resume continues a training run; evaluate a run's model/ with --checkpoint")
        if not _is_training_checkpoint(resume):
            raise FileNotFoundError(f"{resume} is not a training checkpoint (no trainer_state.json); "
                                    "give a run's checkpoint-N folder")
    # an evaluation run gets its own folder by default: it must not overwrite the training run's files
    suffix = ("-smoke" if recipe["smoke"]["active"] else "") + ("-eval" if no_training else "")
    default_out = Path(resume).parent if resume is not None else Path("runs") / (recipe["name"] + suffix)
    out = Path(recipe["output_dir"] or default_out)
    check_output_dir(out, recipe, overwrite=overwrite)
    opts = dict(data.get("loader_options") or {})
    # the training file is read even by evaluation-only runs when it is also the evaluation file:
    # the (seeded) few-shot sample is then removed from evaluation, as in the training run
    same_file = bool(data["train"]) and data["train"] == data["eval"]
    train = task.load(data["train"], **opts) if data["train"] and (same_file or not no_training) else []
    evals = task.load(data["eval"], **opts) if data["eval"] else []
    train, evals, shot_ids = _sample_shots(recipe, train, evals)
    train = [] if no_training else task.training_examples(train)
    groups = _groups(recipe, train, evals)
    evals = [e for _, _, ev in groups for e in ev]
    if not evals and not train:
        raise ValueError("the recipe has neither training nor evaluation examples (data.train / data.eval)")
    # a word-level tokenizer sees the training data and the eval *questions* (never eval answers)
    texts = [e.question + " " + " ".join(e.answers) for e in train] + [e.question for e in evals]
    atlas = build_atlas(recipe, texts)
    if checkpoint:
        load_model_checkpoint(atlas, checkpoint)
    if resume is not None and len(groups) != 1:
        raise ValueError("resume works for single-model runs (not data.group_by)")
    # everything is validated and loaded: only now does the run folder change
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe)
    if shot_ids is not None:
        atomic_write_text(out / "few_shot_ids.txt", shot_ids)
    if retrieval_only:
        result = task.evaluate_retrieval(atlas, evals, ks=recipe["eval"]["retrieval_ks"], run_file=run_file)
        write_report(out, result, title=f"{recipe['name']} (retrieval only)")
        return result.metrics
    cfg_values = {**recipe["train"], "output_dir": str(out)}
    if len(groups) == 1:
        _, train, evals = groups[0]
        trainer = Trainer(atlas, TrainConfig.from_dict(cfg_values), task=task)
        if train:
            metrics = trainer.fit(train, evals or None, resume_from=resume)
            if trainer.rank == 0:
                atlas.save_pretrained(out / "model")
        else:
            metrics = {"step": 0, **trainer.evaluate(evals, write=True)} if evals else {}
        log.info("run folder: %s", out)
        return metrics

    # every group starts from the same modules (training may untie or freeze parts of them)
    # (and the same index: refresh=reindex swaps in one built by a group's trained encoder)
    start_reader, start_retriever, start_index = atlas.reader, atlas.retriever, atlas.index
    results = []
    rank = 0
    for name, tr, ev in groups:
        atlas.reader, atlas.retriever = copy.deepcopy(start_reader), copy.deepcopy(start_retriever)
        atlas.swap_index(start_index, allow_mismatch=True)
        gdir = out / "groups" / str(name)
        trainer = Trainer(atlas, TrainConfig.from_dict({**cfg_values, "output_dir": str(gdir)}), task=task)
        rank = trainer.rank
        if tr:
            trainer.fit(tr, None)
        if rank != 0:
            continue  # rank 0 evaluates and writes
        result = task.evaluate(atlas, ev, k=trainer.cfg.n_context, batch_size=trainer.cfg.eval_batch_size)
        write_report(gdir, result, title=f"{recipe['name']}: {name}", extra={"step": trainer.step})
        results.append(result)
    if rank != 0:
        return {}
    # the task scores all groups' predictions together (a grouped KILT run keeps the KILT metrics)
    combined = task.combine(results)
    combined.metrics = {"step": int(recipe["train"].get("steps", 0)) if train else 0, "groups": len(groups),
                        **combined.metrics}
    write_report(out, combined, title=f"{recipe['name']} ({len(groups)} groups, one model each)")
    log.info("run folder: %s", out)
    return combined.metrics


def load_model_checkpoint(atlas: Any, checkpoint: str) -> None:
    """Put a saved model's reader and retriever into ``atlas``. The index was built with the
    recipe's retriever; when the checkpoint's passage encoder differs (it was trained), the corpus
    is re-embedded with it instead of searching stale vectors."""
    loaded = Atlas.from_pretrained(checkpoint, index=atlas.index, allow_mismatch=True)
    atlas.retriever, atlas.reader = loaded.retriever, loaded.reader
    index = atlas.index
    recorded = ((getattr(index, "manifest", None) or {}).get("retriever") or {}).get("fingerprint")
    if recorded and recorded != loaded.retriever.fingerprint():
        if not isinstance(index, FaissIndex):
            raise ValueError(f"{checkpoint}: its passage encoder differs from the one that built the index; "
                             "rebuild the index with it (atlas-kit index build --retriever CHECKPOINT/retriever)")
        log.warning("%s: the passage encoder was trained; re-embedding the %d passages with it", checkpoint, len(index))
        atlas.swap_index(FaissIndex.build(index.passages, loaded.retriever, factory=index.manifest.get("factory", "Flat")))
