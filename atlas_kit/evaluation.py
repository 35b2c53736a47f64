"""Evaluation of a model on task examples, and the run report it leaves behind.

One entry point for every task, so the trainer's periodic evaluation, ``atlas-kit evaluate`` and
``--retrieval-only`` all produce the same metrics and the same files. What is measured is the
task's (:mod:`atlas_kit.tasks`): :func:`evaluate` is retrieve once -> the task predicts -> the
task scores; :func:`evaluate_retrieval` the task's retrieval-only metrics. The task is given (a
:class:`~atlas_kit.tasks.Task`, a name or a recipe's ``{name, **options}`` block) or, for
examples built in Python, the examples' own (:func:`~atlas_kit.tasks.task_for_examples`).

A run folder gets ``metrics.json``, ``predictions.jsonl`` (question, prediction, gold, retrieved
passage ids and scores), ``results.md`` (the tables) and plots (recall@k curve; accuracy per
category); a KILT run also ``kilt_predictions.jsonl`` in KILT's submission format
(:mod:`atlas_kit.kilt_submission`).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from atlas_kit.kilt_submission import write_kilt_submission
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tasks import Evaluation, Task, get_task, task_for_examples

__all__ = ["Evaluation", "evaluate", "evaluate_retrieval", "write_report", "markdown"]

log = logging.getLogger(__name__)


def _task(task: Task | str | dict | None, examples: Sequence[Any]) -> Task:
    return get_task(task) if task is not None else task_for_examples(examples)


@torch.no_grad()
def evaluate(atlas: Any, examples: Sequence[Any], k: int, batch_size: int = 16,
             task: Task | str | dict | None = None) -> Evaluation:
    """Retrieve ``k`` passages per example, answer with the reader, and score as the task says."""
    return _task(task, examples).evaluate(atlas, examples, k=k, batch_size=batch_size)


def evaluate_retrieval(atlas: Any, examples: Sequence[Any], ks: Sequence[int] = (1, 5, 20, 100),
                       task: Task | str | dict | None = None, run_file: str | os.PathLike | None = None) -> Evaluation:
    """Retrieval-only metrics (no reader), see :meth:`atlas_kit.tasks.Task.evaluate_retrieval`."""
    return _task(task, examples).evaluate_retrieval(atlas, examples, ks=ks, run_file=run_file)


# ---------------------------------------------------------------------------------------- report
def _table(rows: list[list[Any]], header: list[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def markdown(evaluation: Evaluation, title: str = "Results") -> str:
    """The metrics as Markdown tables (overall; per category and subject for multiple choice)."""
    m = evaluation.metrics
    scalars = [[key, value] for key, value in m.items() if isinstance(value, (int, float))]
    parts = [f"# {title}", "", f"task: `{evaluation.task}`", "", _table(scalars, ["metric", "value"])]
    for group in ("per_category", "per_subject"):
        table = m.get(group)
        if isinstance(table, dict) and table:
            cols = sorted({c for row in table.values() for c in row})
            rows = [[name] + [row.get(c, "") for c in cols] for name, row in sorted(table.items())]
            parts += ["", f"## {group.replace('_', ' ')}", "", _table(rows, [group.split('_')[1]] + cols)]
    return "\n".join(parts) + "\n"


def write_report(out: str | os.PathLike, evaluation: Evaluation, title: str = "Results",
                 extra: dict[str, Any] | None = None) -> None:
    """``metrics.json`` (``extra`` first, e.g. the step), ``predictions.jsonl``, ``results.md`` and
    plots into ``out`` (atomic files); for KILT, ``kilt_predictions.jsonl`` in KILT's format."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if evaluation.records and all("kilt" in r for r in evaluation.records):
        write_kilt_submission(out / "kilt_predictions.jsonl", [r["kilt"] for r in evaluation.records])
        evaluation = Evaluation(evaluation.task, evaluation.metrics,
                                [{k: v for k, v in r.items() if k != "kilt"} for r in evaluation.records])
    atomic_write_json(out / "metrics.json", {**(extra or {}), "task": evaluation.task, **evaluation.metrics})
    atomic_write_text(out / "predictions.jsonl",
                      "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in evaluation.records))
    text = markdown(evaluation, title)
    atomic_write_text(out / "results.md", text)
    _plots(out, evaluation)
    log.info("results:\n%s", text)


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")  # unique per process
    fig.tight_layout()
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def _plots(out: Path, evaluation: Evaluation) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = evaluation.metrics
    for prefix, label in (("R@", "gold passage in top k"), ("AR@", "answer in top k"),
                          ("recall@", "KILT page recall@k"), ("success@", "a gold page set in top k")):
        pts = sorted((int(key[len(prefix):]), v) for key, v in m.items()
                     if key.startswith(prefix) and key[len(prefix):].isdigit())
        if len(pts) >= 2:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o")
            ax.set_xscale("log")
            ax.set_xlabel("k")
            ax.set_ylabel(f"{label} (%)")
            ax.set_ylim(0, 100)
            _save(fig, out / f"recall_curve_{prefix.rstrip('@').lower()}.png")
    cats = m.get("per_category")
    if isinstance(cats, dict) and cats:
        names = sorted(cats)
        methods = [c for c in ("accuracy_generation", "accuracy_likelihood", "accuracy_debiased")
                   if all(cats[n].get(c) is not None for n in names)]  # None: method skipped
        if methods:
            fig, ax = plt.subplots(figsize=(6.5, 3.5))
            width = 0.8 / len(methods)
            for j, meth in enumerate(methods):
                ax.bar([i + j * width for i in range(len(names))], [cats[n][meth] for n in names], width,
                       label=meth.replace("accuracy_", ""))
            ax.set_xticks([i + width * (len(methods) - 1) / 2 for i in range(len(names))])
            ax.set_xticklabels(names)
            ax.set_ylabel("accuracy (%)")
            ax.legend()
            _save(fig, out / "accuracy_per_category.png")
