"""YAML recipes: layered configuration (defaults < recipe < ``key=value`` overrides) and the run
they describe (build or load the model and index, sample few-shot data, train, evaluate).

A recipe is plain data, so a run folder's ``recipe.json`` re-runs it exactly.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import os
import random
from pathlib import Path
from typing import Any

import yaml

from atlas_kit.storage import atomic_write_json, atomic_write_text

__all__ = ["DEFAULTS", "FORMATS", "load_recipe", "apply_overrides", "validate_recipe", "check_output_dir",
           "run_recipe", "build_atlas", "load_examples", "load_corpus"]

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "name": "run",
    "retriever": None,  # hub id / folder; None = the bundled all-MiniLM-L6-v2
    "reader": None,  # T5 checkpoint (hub id / folder); None = build from reader_config
    "reader_config": {"d_model": 128, "num_layers": 2, "num_heads": 4, "dropout": 0.1, "tokenizer": "default",
                      "text_maxlength": 200, "answer_maxlength": 32},
    "index": None,  # index folder or NAME[@VERSION]
    # or: passages to index with the retriever (FAISS), when no index is given. A path, or a list
    # of paths and/or {path, format} entries (concatenated; ids must be unique across them).
    "corpus": None,
    "corpus_format": "auto",  # any load_passages format, or "squad" (paragraphs of SQuAD json files)
    "corpus_limit": None,  # index only the first N passages (smoke runs)
    "factory": "Flat",
    "task": None,  # qa | mc | kilt; None = read off the examples (atlas_kit.evaluation.task_of)
    "data": {
        "train": None, "eval": None,
        "format": "qa",  # qa | squad | mmlu | kilt | fever (see load_examples)
        "loader_options": {},  # keyword arguments for the loader (e.g. mmlu: {limit_per_subject: 20})
        "shots": None,  # sample this many training examples (seeded); None = all
        "eval_limit": None,  # first N eval examples (per group with group_by)
        "seed": 0,
        "group_by": None,  # "subject": one model per subject (MMLU 5-shot), metrics over all groups
        "train_permutations": None,  # "cyclic": multiple-choice training on every cyclic option order
    },
    "train": {},  # TrainConfig fields
    "eval": {"debias": True, "retrieval_ks": [1, 5, 20, 100]},
    "output_dir": None,  # default runs/<name>
    "smoke": {"shots": 8, "eval_limit": 8, "corpus_limit": 100, "max_groups": 2,
              "train": {"steps": 2, "eval_every": 0, "save_every": 0}},
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
        recipe["corpus_limit"] = min(recipe["corpus_limit"] or s["corpus_limit"], s["corpus_limit"])
        recipe["name"] += "-smoke"
    return validate_recipe(recipe, where=str(path) if path is not None else "recipe")


def _type_error(key: str, value: Any, expected: Any, where: str) -> ValueError:
    name = getattr(expected, "__name__", None) or str(expected).replace("typing.", "")
    return ValueError(f"{where}: {key}={value!r} is not a valid {name}")


def validate_recipe(recipe: dict[str, Any], where: str = "recipe") -> dict[str, Any]:
    """Check value types up front, so ``train.steps=abc`` fails at load time with the key, value
    and expected type (not deep inside a run, after the index is built). ``train`` is checked
    against :class:`~atlas_kit.train.TrainConfig`'s annotations (values are coerced where
    unambiguous: ``"1e-4"``, which YAML reads as a string, becomes a float) and its own checks."""
    import dataclasses
    import typing

    from pydantic import TypeAdapter, ValidationError

    from atlas_kit.train import TrainConfig

    out = copy.deepcopy(recipe)
    train = out.get("train")
    if not isinstance(train, dict):
        raise ValueError(f"{where}: 'train' must be a mapping of TrainConfig fields, got {train!r}")
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(train) - known)
    if unknown:
        raise ValueError(f"{where}: unknown training option(s) {unknown} (known: {', '.join(sorted(known))})")
    for key, value in train.items():
        try:
            train[key] = TypeAdapter(hints[key]).validate_python(value)
        except ValidationError:
            raise _type_error(f"train.{key}", value, hints[key], where) from None
    checks = {"data.shots": (out["data"], "shots"), "data.eval_limit": (out["data"], "eval_limit"),
              "data.seed": (out["data"], "seed"), "corpus_limit": (out, "corpus_limit")}
    for key, (node, field) in checks.items():
        try:
            node[field] = TypeAdapter(int | None).validate_python(node.get(field))
        except ValidationError:
            raise _type_error(key, node.get(field), "int | None", where) from None
    try:
        TrainConfig.from_dict({k: v for k, v in train.items() if k != "output_dir"})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: train: {e}") from None
    return out


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


FORMATS = ("qa", "squad", "mmlu", "kilt", "fever", "mlm")


def _load_mlm(path: str | os.PathLike, **options: Any) -> list:
    """Masked-span pre-training examples cut from a corpus file (any passage format)."""
    from atlas_kit import load_passages
    from atlas_kit.tasks.mlm import mlm_examples

    return mlm_examples(load_passages(path), **options)


def load_examples(path: str | os.PathLike, fmt: str = "qa", **options: Any) -> list:
    """Task examples for a recipe, by local path or ``hf:DATASET[:SPLIT]`` (a ``datasets`` name).

    ``qa`` (NQ-open / TriviaQA / Atlas / FlashRAG jsonl), ``squad`` (SQuAD json), ``mmlu`` (a
    folder of ``<subject>_<split>.csv`` or one csv), ``kilt`` (any KILT task's jsonl), ``fever``
    (FEVER's original jsonl, or KILT's), ``mlm`` (masked-span pre-training examples cut from a
    corpus file). A missing file is an error that says what to put where.
    """
    from atlas_kit.tasks import load_qa, load_squad
    from atlas_kit.tasks.fever import load_fever
    from atlas_kit.tasks.kilt import load_kilt
    from atlas_kit.tasks.mmlu import load_mmlu

    loaders = {"qa": load_qa, "squad": load_squad, "mmlu": load_mmlu, "kilt": load_kilt, "fever": load_fever,
               "mlm": _load_mlm}
    if fmt not in loaders:
        raise ValueError(f"unknown data format {fmt!r} (known: {', '.join(FORMATS)})")
    text = str(path)
    if text.startswith("hf:"):
        return _load_hf(text, fmt, loaders[fmt], options)
    if not Path(text).exists():
        raise FileNotFoundError(
            f"data file {text} not found (format {fmt!r}). Put the file there, or point the recipe at it "
            f"with data.train=PATH / data.eval=PATH (a local path or hf:DATASET[:SPLIT]); nothing is "
            "downloaded at run time.")
    return loaders[fmt](text, **options)


def _load_hf(spec: str, fmt: str, loader: Any, options: dict[str, Any]) -> list:
    """``hf:NAME[:SPLIT]`` through ``datasets`` (cached or local datasets only when offline)."""
    if fmt in ("mmlu", "squad"):
        raise ValueError(f"{spec}: format {fmt!r} reads local files only (export the dataset to files first)")
    import tempfile

    import datasets

    name, _, split = spec[3:].partition(":")
    try:
        ds = datasets.load_dataset(name, split=split or "train")
    except Exception as e:  # offline, unknown name...: say what was asked for
        raise FileNotFoundError(f"{spec}: could not load dataset {name!r} split {split or 'train'!r} ({e})") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name.replace('/', '_')}-{split or 'train'}.jsonl"
        ds.to_json(str(path), lines=True)
        return loader(path, **options)


def load_corpus(spec: Any, default_format: str = "auto", limit: int | None = None):
    """Passages of one or several sources (path, or ``{path, format}``), concatenated."""
    from atlas_kit import load_passages
    from atlas_kit.tasks import squad_open

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
    from atlas_kit import Atlas, Reader, Retriever
    from atlas_kit.index import FaissIndex, load_index
    from atlas_kit.index.store import resolve_index_path

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
            from atlas_kit.tokenization import train_word_tokenizer

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


def _groups(recipe: dict[str, Any], train: list, evals: list, smoke: bool) -> list[tuple[str | None, list, list]]:
    """``[(group, train, eval)]``: one group unless ``data.group_by`` names an example attribute."""
    key, limit = recipe["data"]["group_by"], recipe["data"]["eval_limit"]
    if not key:
        return [(None, train, evals[: int(limit)] if limit else evals)]
    names = list(dict.fromkeys(getattr(e, key) for e in evals))
    if smoke:
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
    from atlas_kit.evaluation import Evaluation, evaluate, evaluate_retrieval, write_report
    from atlas_kit.train import TrainConfig, Trainer

    recipe = validate_recipe(recipe)
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
    default_out = Path(resume).parent if resume is not None else \
        Path("runs") / (recipe["name"] + ("-eval" if no_training else ""))
    out = Path(recipe["output_dir"] or default_out)
    check_output_dir(out, recipe, overwrite=overwrite)
    opts = dict(data.get("loader_options") or {})
    # the training file is read even by evaluation-only runs when it is also the evaluation file:
    # the (seeded) few-shot sample is then removed from evaluation, as in the training run
    same_file = bool(data["train"]) and data["train"] == data["eval"]
    train = load_examples(data["train"], data["format"], **opts) if data["train"] and (same_file or not no_training) else []
    evals = load_examples(data["eval"], data["format"], **opts) if data["eval"] else []
    train, evals, shot_ids = _sample_shots(recipe, train, evals)
    if no_training:
        train = []
    if data.get("train_permutations") == "cyclic":
        from atlas_kit.multiple_choice import cyclic_permutations

        train = [p for e in train for p in cyclic_permutations(e)]
    elif data.get("train_permutations") not in (None, "none", "single"):
        raise ValueError(f"data.train_permutations must be cyclic, single or none, got {data['train_permutations']!r}")
    groups = _groups(recipe, train, evals, smoke=recipe["name"].endswith("-smoke"))
    evals = [e for _, _, ev in groups for e in ev]
    if not evals and not train:
        raise ValueError("the recipe has neither training nor evaluation examples (data.train / data.eval)")
    # a word-level tokenizer sees the training data and the eval *questions* (never eval answers)
    texts = [e.question + " " + " ".join(e.answers) for e in train] + [e.question for e in evals]
    atlas = build_atlas(recipe, texts)
    if checkpoint:
        _load_checkpoint(atlas, checkpoint)
    if resume is not None and len(groups) != 1:
        raise ValueError("resume works for single-model runs (not data.group_by)")
    # everything is validated and loaded: only now does the run folder change
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "recipe.json", recipe)
    if shot_ids is not None:
        atomic_write_text(out / "few_shot_ids.txt", shot_ids)
    if retrieval_only:
        result = evaluate_retrieval(atlas, evals, ks=recipe["eval"]["retrieval_ks"], task=recipe["task"],
                                    run_file=run_file)
        write_report(out, result, title=f"{recipe['name']} (retrieval only)")
        return result.metrics
    cfg_values = {**recipe["train"], "output_dir": str(out)}
    task_spec = recipe["task"] or None
    if task_spec is not None and recipe["task"] == "mc":
        task_spec = {"name": "mmlu", "debias": bool(recipe["eval"].get("debias", True))}
    if len(groups) == 1:
        _, train, evals = groups[0]
        trainer = Trainer(atlas, TrainConfig.from_dict(cfg_values), task=task_spec)
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
    records: list[dict[str, Any]] = []
    task = recipe["task"]
    rank = 0
    for name, tr, ev in groups:
        atlas.reader, atlas.retriever = copy.deepcopy(start_reader), copy.deepcopy(start_retriever)
        atlas.swap_index(start_index, allow_mismatch=True)
        gdir = out / "groups" / str(name)
        trainer = Trainer(atlas, TrainConfig.from_dict({**cfg_values, "output_dir": str(gdir)}), task=task_spec)
        rank = trainer.rank
        if tr:
            trainer.fit(tr, None)
        if rank != 0:
            continue  # rank 0 evaluates and writes
        result = evaluate(atlas, ev, k=trainer.cfg.n_context, batch_size=trainer.cfg.eval_batch_size, task=task_spec)
        write_report(gdir, result, title=f"{recipe['name']}: {name}", extra={"step": trainer.step})
        records += result.records
        task = result.task
    if rank != 0:
        return {}
    metrics = _combine(task, records)
    combined = Evaluation(task, {"step": int(recipe["train"].get("steps", 0)) if train else 0, "groups": len(groups),
                                 **metrics}, records)
    write_report(out, combined, title=f"{recipe['name']} ({len(groups)} groups, one model each)")
    log.info("run folder: %s", out)
    return combined.metrics


def _load_checkpoint(atlas: Any, checkpoint: str) -> None:
    """Put a saved model's reader and retriever into ``atlas``. The index was built with the
    recipe's retriever; when the checkpoint's passage encoder differs (it was trained), the corpus
    is re-embedded with it instead of searching stale vectors."""
    from atlas_kit import Atlas
    from atlas_kit.index import FaissIndex

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


def _combine(task: str, records: list[dict[str, Any]]) -> dict[str, Any]:
    """Metrics over the records of several groups (each evaluated on its own examples)."""
    if task == "mc":
        from atlas_kit.multiple_choice import summarize_records

        return summarize_records(records)
    from atlas_kit.metrics import qa_scores

    metrics = qa_scores([r["prediction"] for r in records], [r["gold"] for r in records])
    metrics["n"] = len(records)
    return metrics
