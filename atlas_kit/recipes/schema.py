"""The recipe schema: what a YAML recipe may say, checked at every depth before anything runs.

A recipe is layered: the schema's defaults < its ``base`` files (recursively; paths relative to
the file naming them) < the recipe file < ``key=value`` overrides (dotted keys, YAML-typed
values). Every layer is checked on its own, so a mistyped key at any depth is an error naming
the key, the file it is in and the closest valid key::

    recipes/nq.yaml: data.shotz: unknown key; did you mean 'shots'? (known: train, eval, ...)

Types are checked (and coerced where unambiguous: YAML reads ``1e-4`` as a string) after the
layers are merged; ``train`` is checked against :class:`~atlas_kit.train.TrainConfig`, ``task``
against the named task's own options (:func:`atlas_kit.tasks.get_task`).

Why pydantic (not OmegaConf structured configs): it is already the library's validation layer
(HTTP schemas, config coercion), its errors carry the location of every failure (which the
closest-key messages are built from), and it validates unions such as ``corpus: PATH | [PATH |
{path, format}]`` that OmegaConf's structured configs do not type.

The result is a plain dict (JSON-ready), so a run folder's ``recipe.json`` re-runs it exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from pathlib import Path
from typing import Any, Literal, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from atlas_kit.tasks import get_task
from atlas_kit.tasks.base import describe_validation_error
from atlas_kit.train import TrainConfig

__all__ = ["Recipe", "DEFAULTS", "load_recipe", "apply_overrides", "validate_recipe", "check_keys"]


class Section(BaseModel):
    """A recipe section: an unknown key is an error (every family's schema is built of these)."""

    model_config = ConfigDict(extra="forbid")


class FamilyRecipe(Section):
    """What every other model family's recipe (RMT, kNN memory) has besides its task and model:
    a name, a run folder, a seed and the family's TrainLoop settings (checked by the family)."""

    name: str = "recipe"
    output_dir: str | None = None
    seed: int = 0
    train: dict[str, Any] = {}


class ReaderConfig(Section):
    """A reader built from a config (no ``reader`` checkpoint given), see :meth:`Reader.from_config`."""

    d_model: int = 128
    num_layers: int = 2
    num_decoder_layers: int | None = None
    num_heads: int = 4
    d_ff: int | None = None
    d_kv: int | None = None
    dropout: float = 0.1
    tie_word_embeddings: bool = True
    seed: int = 0
    tokenizer: Literal["default", "word"] = "default"  # word: a word-level tokenizer trained on the data + corpus
    text_maxlength: int = 200
    answer_maxlength: int = 32


class CorpusFile(Section):
    path: str
    format: str = "auto"


class Data(Section):
    train: str | None = None  # path or hf:DATASET[:SPLIT]
    eval: str | None = None
    loader_options: dict[str, Any] = Field(default_factory=dict)  # keyword arguments of the task's loader
    shots: int | None = None  # sample this many training examples (seeded); None = all
    eval_limit: int | None = None  # first N eval examples (per group with group_by)
    seed: int = 0
    group_by: str | None = None  # an example attribute, e.g. "subject": one model per group (MMLU 5-shot)


class Eval(Section):
    retrieval_ks: list[int] = Field(default_factory=lambda: [1, 5, 20, 100])


class Smoke(Section):
    """What ``--smoke`` (``load_recipe(smoke=True)``) cuts the run to; ``active`` records that it did."""

    active: bool = False
    shots: int = 8
    eval_limit: int = 8
    corpus_limit: int = 100
    max_groups: int = 2
    train: dict[str, Any] = Field(default_factory=lambda: {"steps": 2, "eval_every": 0, "save_every": 0})


def _train_section() -> type[BaseModel]:
    """TrainConfig's fields as a pydantic model that forbids unknown keys (only given keys are kept)."""
    hints = typing.get_type_hints(TrainConfig)
    fields = {f.name: (hints[f.name], None) for f in dataclasses.fields(TrainConfig)}
    return create_model("Train", __config__=ConfigDict(extra="forbid"), **fields)


Train = _train_section()


class Recipe(Section):
    """A whole recipe. ``task`` is a name or ``{name, **options}`` (checked by the task itself)."""

    name: str = "run"
    base: Union[str, list[str], None] = None  # base recipe file(s), merged under this one
    retriever: str | None = None  # hub id / folder; None = the bundled all-MiniLM-L6-v2
    reader: str | None = None  # T5 checkpoint (hub id / folder); None = build from reader_config
    reader_config: ReaderConfig = Field(default_factory=ReaderConfig)
    index: str | None = None  # index folder or NAME[@VERSION]
    # or passages to index with the retriever (FAISS) when no index is given: a path, or a list of
    # paths and/or {path, format} entries (concatenated; ids must be unique across them)
    corpus: Union[str, list[Union[str, CorpusFile]], None] = None
    corpus_format: str = "auto"  # any load_passages format, or "squad" (paragraphs of SQuAD json files)
    corpus_limit: int | None = None  # index only the first N passages
    factory: str = "Flat"
    task: Union[str, dict[str, Any]] = "qa"
    data: Data = Field(default_factory=Data)
    train: Train = Field(default_factory=Train)  # TrainConfig fields
    eval: Eval = Field(default_factory=Eval)
    output_dir: str | None = None  # default runs/<name> (runs/<name>-smoke for --smoke)
    smoke: Smoke = Field(default_factory=Smoke)


DEFAULTS: dict[str, Any] = Recipe().model_dump(mode="json", exclude={"base", "train"}) | {"train": {}}

#: keys of earlier recipe versions, and where what they said lives now
MOVED = {
    "data.format": "name the task instead: task: {name: qa|mmlu|kilt|fever|mlm} (SQuAD files: task: {name: qa, format: squad})",
    "data.train_permutations": "it is a task option now: task: {name: mmlu, permutations: cyclic}",
    "eval.debias": "it is a task option now: task: {name: mmlu, debias: true}",
}


def _section_of(model: type[BaseModel], key: str) -> type[BaseModel] | None:
    field = model.model_fields.get(key)
    if field is None:
        return None
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def check_keys(data: dict[str, Any], where: str, model: type[BaseModel] = Recipe, prefix: str = "") -> None:
    """Unknown keys at any depth of one recipe layer: an error naming the key, ``where`` (the
    file) and the closest valid key. Task options are checked by the task after merging."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in model.model_fields:
            if dotted in MOVED:
                raise ValueError(f"{where}: {dotted}: this key was removed; {MOVED[dotted]}")
            known = list(model.model_fields)
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{where}: {dotted}: unknown key{hint} (known: {', '.join(known)})")
        section = _section_of(model, key)
        if section is not None and isinstance(value, dict):
            check_keys(value, where, section, dotted + ".")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def read_recipe_file(path: str | os.PathLike, what: str = "recipe") -> dict[str, Any]:
    """A YAML recipe file as a mapping; a missing file, invalid YAML or a non-mapping is an error
    naming the file (``what`` names the kind of recipe in the not-found error)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a mapping of keys, got {type(data).__name__}")
    return data


def _read_layer(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One recipe file merged over its bases (each checked on its own)."""
    if path.resolve() in {p.resolve() for p in seen}:
        raise ValueError(f"{path}: recipe bases form a cycle ({' -> '.join(str(p) for p in (*seen, path))})")
    data = read_recipe_file(path, f"recipe (a base of {seen[-1]})" if seen else "recipe")
    check_keys(data, str(path))
    bases = data.pop("base", None)
    merged: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else (bases or []):
        merged = _merge(merged, _read_layer(Path(os.path.normpath(path.parent / base)), (*seen, path)))
    return _merge(merged, data)


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None, smoke: bool = False) -> dict[str, Any]:
    """Defaults < bases < the YAML file < ``key=value`` overrides; ``smoke`` cuts the run down
    (``smoke.*`` limits) and records ``smoke.active``."""
    recipe = copy.deepcopy(DEFAULTS)
    where = "recipe"
    if path is not None:
        where = str(path)
        layer = _read_layer(Path(path))
        layer.setdefault("name", Path(path).stem)
        recipe = _merge(recipe, layer)
    recipe = apply_overrides(recipe, overrides or [])
    if smoke:
        s = recipe["smoke"]
        s["active"] = True
        recipe["data"]["shots"] = min(recipe["data"]["shots"] or s["shots"], s["shots"])
        recipe["data"]["eval_limit"] = min(recipe["data"]["eval_limit"] or s["eval_limit"], s["eval_limit"])
        recipe["train"] = _merge(recipe["train"], s["train"])
        recipe["corpus_limit"] = min(recipe["corpus_limit"] or s["corpus_limit"], s["corpus_limit"])
    return validate_recipe(recipe, where=where)


def apply_overrides(recipe: dict[str, Any], overrides: list[str] | Sequence[str],
                    model: type[BaseModel] = Recipe) -> dict[str, Any]:
    """``train.steps=200 data.shots=64 reader=google/t5-base-lm-adapt task.debias=false``; keys
    are checked against ``model`` (another family's recipe schema for its recipes)."""
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not KEY=VALUE")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw else None
        parts = key.split(".")
        nested: Any = value
        for part in reversed(parts[1:]):
            nested = {part: nested}
        if parts[0] != "task" or model is not Recipe:
            check_keys({parts[0]: nested}, f"override {item!r}", model)
        node = out
        for part in parts[:-1]:
            if part == "task" and isinstance(node.get(part), str):
                node[part] = {"name": node[part]}  # task.debias=false on a recipe that names only the task
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return out


def load_family_recipe(source: str | os.PathLike | dict[str, Any], overrides: Sequence[str], model: type[BaseModel],
                       what: str = "recipe") -> BaseModel:
    """A recipe of one of the other model families (RMT, kNN memory, ...) whose schema is
    ``model`` (pydantic, ``extra="forbid"`` sections): a YAML path or a dict, then ``key=value``
    overrides; unknown keys at any depth name the file (or the override) and the closest key, type
    errors name the dotted key. A file's ``name`` defaults to its stem. ``what`` names the recipe
    kind in the not-found error."""
    if isinstance(source, dict):
        data, where = copy.deepcopy(source), "recipe"
    else:
        data, where = read_recipe_file(source, what), str(source)
        data.setdefault("name", Path(source).stem)
    check_keys(data, where, model)
    data = apply_overrides(data, list(overrides), model)
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise ValueError(describe_validation_error(e, model, where)) from None


def validate_recipe(recipe: dict[str, Any], where: str = "recipe") -> dict[str, Any]:
    """Check keys and types of a whole (merged) recipe, as :func:`load_recipe` returns it; the
    result is plain JSON-ready data with the task written as its full ``{name, **options}``
    block and ``train`` holding only the keys given (TrainConfig fills in the rest)."""
    raw = copy.deepcopy(recipe)
    raw.pop("base", None)
    check_keys(raw, where)
    try:
        model = Recipe.model_validate(raw)
    except ValidationError as e:
        raise ValueError(describe_validation_error(e, Recipe, where)) from None
    out = model.model_dump(mode="json", exclude={"base", "train"})
    out["train"] = model.train.model_dump(mode="json", exclude_unset=True)
    try:
        TrainConfig.from_dict({k: v for k, v in out["train"].items() if k != "output_dir"})
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: train: {e}") from None
    out["task"] = get_task(out["task"], where=f"{where}: task").spec()
    return out
