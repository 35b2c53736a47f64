"""The task protocol: one object per task owns its data, prompts, training examples and scoring.

A :class:`Task` is a small pydantic model whose fields are the task's options (a recipe's
``task: {name: mmlu, permutations: cyclic, debias: true}`` block is exactly
``get_task({"name": "mmlu", ...})``; an unknown option is an error naming it). It answers:

* :meth:`Task.load` - the examples of a data file (local path or ``hf:DATASET[:SPLIT]``);
* :meth:`Task.training_examples` - what training sees of them (MMLU: every cyclic option order);
* :meth:`Task.evaluate` - retrieve once -> :meth:`Task.predict` -> :meth:`Task.score`, returning
  an :class:`Evaluation` (metrics + one JSON record per example);
* :meth:`Task.evaluate_retrieval` - retrieval-only metrics (no reader);
* :meth:`Task.combine` - the metrics over several groups' records (one model per MMLU subject).

New tasks plug in with :func:`register_task`; nothing else in the library branches on task names.
The built-in tasks (open QA, MMLU, KILT, FEVER, masked-span pre-training) are in
:mod:`atlas_kit.tasks.builtin`.
"""
from __future__ import annotations

import difflib
import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from pydantic import BaseModel, ConfigDict, ValidationError

from atlas_kit.metrics import answer_recall_at_k, recall_at_k
from atlas_kit.tasks.mmlu import MCExample

__all__ = ["Task", "Evaluation", "register_task", "get_task", "task_names", "task_for_examples", "passage_records"]

_BUILTIN_MODULE = "atlas_kit.tasks.builtin"


@dataclass
class Evaluation:
    """Metrics (JSON-ready), one record per example, and the task they were computed for."""

    task: str
    metrics: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    #: what the metrics were computed from (kept in memory for combining groups; not written)
    examples: list[Any] = field(default_factory=list, repr=False)
    hits: list[Any] = field(default_factory=list, repr=False)
    k: int = 0


def passage_records(hits: Sequence[Any]) -> list[dict[str, Any]]:
    """The ``passages`` entry of a prediction record: retrieved ids and scores."""
    return [{"id": h.id, "score": round(float(h.score), 6)} for h in hits]


def recall_ks(k: int) -> list[int]:
    """The recall@k cut-offs reported for a reader that sees ``k`` passages."""
    return sorted({1, min(5, k), k})


class Task(BaseModel):
    """Base of every task; subclasses set ``name`` and add their options as fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: ClassVar[str] = ""

    # ------------------------------------------------------------------ data
    def load(self, path: str | os.PathLike, **loader_options: Any) -> list[Any]:
        """The task's examples from a local file/folder or ``hf:DATASET[:SPLIT]``."""
        text = str(path)
        if text.startswith("hf:"):
            return self.load_hf(text, **loader_options)
        if not Path(text).exists():
            raise FileNotFoundError(
                f"data file {text} not found (task {self.name!r}). Put the file there, or point the recipe at "
                "it with data.train=PATH / data.eval=PATH (a local path or hf:DATASET[:SPLIT]); nothing is "
                "downloaded at run time.")
        return self.read(Path(text), **loader_options)

    def read(self, path: Path, **loader_options: Any) -> list[Any]:
        raise NotImplementedError(f"task {self.name!r} does not read data files")

    def load_hf(self, spec: str, **loader_options: Any) -> list[Any]:
        """``hf:NAME[:SPLIT]`` through ``datasets`` (cached or local datasets only when offline),
        written to a temporary jsonl and read by :meth:`read`."""
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
            return self.read(path, **loader_options)

    def training_examples(self, examples: Sequence[Any]) -> list[Any]:
        """What training sees of ``examples`` (default: themselves)."""
        return list(examples)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, atlas: Any, examples: Sequence[Any], k: int, batch_size: int = 16) -> Evaluation:
        """Retrieve ``k`` passages per example once, let the reader predict, score."""
        if atlas.reader is None:
            raise ValueError("evaluation needs a reader (use evaluate_retrieval for retrieval-only metrics)")
        examples = list(examples)
        hits = atlas.retrieve([e.question for e in examples], k=k) if k > 0 else [[] for _ in examples]
        records = self.predict(atlas.reader, examples, [list(h) for h in hits], batch_size)
        for rec, h in zip(records, hits):
            rec["passages"] = passage_records(h)
        metrics = dict(self.score(examples, records, hits, k))
        metrics["n"] = len(examples)
        return Evaluation(self.name, metrics, records, examples, list(hits), k)

    def predict(self, reader: Any, examples: list[Any], passages: list[list[Any]], batch_size: int) -> list[dict[str, Any]]:
        """One record per example (at least ``id``, ``question``, ``prediction``, ``gold``)."""
        preds = reader.generate([e.question for e in examples], passages, batch_size=batch_size)
        return [{"id": e.id, "question": e.question, "prediction": p, "gold": e.answers}
                for e, p in zip(examples, preds)]

    def score(self, examples: list[Any], records: list[dict[str, Any]], hits: Sequence[Any], k: int) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate_retrieval(self, atlas: Any, examples: Sequence[Any], ks: Sequence[int] = (1, 5, 20, 100),
                           run_file: str | os.PathLike | None = None) -> Evaluation:
        """Retrieval-only metrics (no reader): recall@k over gold passage ids when known, with
        the IR measures ``NDCG@k``, ``MRR@k``, ``MAP``, ``Recall@k``, ``P@k``
        (:func:`atlas_kit.ir.ir_metrics`, binary relevance), plus the task's own
        (:meth:`retrieval_scores`); ``run_file`` writes the ranking as a TREC run."""
        from atlas_kit.ir import ir_metrics, qrels_from_gold_ids, run_from_hits, write_run

        examples = list(examples)
        ks = sorted(set(int(k) for k in ks))
        hits = atlas.retrieve([e.question for e in examples], k=max(ks))
        metrics: dict[str, Any] = {}
        with_gold = all(e.gold_ids for e in examples)
        if run_file is not None or with_gold:
            run = run_from_hits([e.id for e in examples], hits)
            if run_file is not None:
                write_run(run_file, run)
            if with_gold:
                metrics.update(recall_at_k([h.ids for h in hits], [e.gold_ids for e in examples], ks=ks))
                qrels = qrels_from_gold_ids([e.id for e in examples], [e.gold_ids for e in examples])
                metrics.update({k: v for k, v in ir_metrics(run, qrels, ks=ks).items() if k != "n_queries"})
        metrics.update(self.retrieval_scores(examples, hits, ks))
        if not metrics:
            raise ValueError("no retrieval metric applies: the examples have no gold passage ids, answers to "
                             "look for, or provenance")
        metrics["n"] = len(examples)
        records = [{"id": e.id, "question": e.question, "gold": e.answers, "gold_ids": list(e.gold_ids),
                    "passages": passage_records(h)} for e, h in zip(examples, hits)]
        self.add_retrieval_records(records, examples, hits)
        return Evaluation(self.name, metrics, records)

    def retrieval_scores(self, examples: list[Any], hits: Sequence[Any], ks: Sequence[int]) -> dict[str, Any]:
        """The task's own retrieval metrics (default: answer recall@k, DPR's measure)."""
        return answer_recall_at_k([[p.text for p in h] for h in hits], [e.answers for e in examples], ks=ks)

    def add_retrieval_records(self, records: list[dict[str, Any]], examples: list[Any], hits: Sequence[Any]) -> None:
        """Hook: add task-specific entries to retrieval-only records (KILT's submission)."""

    def combine(self, evaluations: Sequence[Evaluation]) -> Evaluation:
        """One evaluation over several groups' (each group evaluated with its own model): the
        task's own scoring of all their examples together, so a grouped KILT run keeps the KILT
        metrics and a grouped MMLU run its per-subject tables."""
        examples = [e for ev in evaluations for e in ev.examples]
        records = [r for ev in evaluations for r in ev.records]
        hits = [h for ev in evaluations for h in ev.hits]
        k = max((ev.k for ev in evaluations), default=0)
        metrics = dict(self.score(examples, records, hits, k))
        metrics["n"] = len(examples)
        return Evaluation(self.name, metrics, records, examples, hits, k)

    def spec(self) -> dict[str, Any]:
        """The recipe block that builds this task again."""
        return {"name": self.name, **self.model_dump(mode="json")}


_REGISTRY: dict[str, type[Task]] = {}


def register_task(cls: type[Task], *aliases: str) -> type[Task]:
    """Make a task available by its ``name`` (and ``aliases``) to recipes and :func:`get_task`."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    for key in (cls.name, *aliases):
        _REGISTRY[key] = cls
    return cls


def _registry() -> dict[str, type[Task]]:
    importlib.import_module(_BUILTIN_MODULE)  # registers the built-in tasks (idempotent)
    return _REGISTRY


def task_names() -> list[str]:
    return sorted(_registry())


def get_task(spec: Task | str | dict[str, Any], where: str = "task") -> Task:
    """A task from its name, a ``{name, **options}`` block or a Task (returned as is).

    Errors name the unknown task or option and the closest valid one."""
    if isinstance(spec, Task):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"{where}: a task is a name or a mapping with 'name' (e.g. {{name: qa}}), got {spec!r}")
    options = dict(spec)
    name = options.pop("name")
    registry = _registry()
    if name not in registry:
        close = difflib.get_close_matches(str(name), list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{where}.name: unknown task {name!r}{hint} (known: {', '.join(sorted(registry))})")
    cls = registry[name]
    try:
        return cls(**options)
    except ValidationError as e:
        raise ValueError(describe_validation_error(e, cls, f"{where}", label=f"task {name!r}")) from None


def describe_validation_error(error: ValidationError, model: type[BaseModel], where: str, label: str = "") -> str:
    """One line per pydantic error: the dotted key, what is wrong, the closest valid key."""
    lines = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            node: Any = model
            for part in err["loc"][:-1]:
                fields = getattr(node, "model_fields", {})
                node = fields[part].annotation if part in fields else None
            known = list(getattr(node, "model_fields", {}) or {})
            close = difflib.get_close_matches(str(err["loc"][-1]), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            lines.append(f"{where}.{loc}: unknown option{(' of ' + label) if label else ''}{hint} "
                         f"(known: {', '.join(known) or 'none'})")
        else:
            kind = str(err["type"]).split("_")[0]
            expected = {"int": "int", "float": "float", "bool": "bool", "string": "str"}.get(kind)
            what = f"expected {expected}, " if expected else ""
            lines.append(f"{where}.{loc}: {err['msg']} ({what}got {err.get('input')!r})")
    return "; ".join(lines)


def task_for_examples(examples: Sequence[Any]) -> Task:
    """The task of examples built in Python without one (the recipe always names its task):
    multiple-choice examples are MMLU's, examples with KILT provenance KILT's, others open QA."""
    first = examples[0] if len(examples) else None
    if isinstance(first, MCExample):
        return get_task("mmlu")
    if first is not None and "provenance" in (getattr(first, "metadata", None) or {}):
        return get_task("kilt")
    return get_task("qa")
