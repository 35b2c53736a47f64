"""Evaluation of a model on task examples, and the run report it leaves behind.

One entry point for every task, so the trainer's periodic evaluation, ``atlas-kit evaluate`` and
``--retrieval-only`` all produce the same metrics and the same files:

* ``qa`` (open-domain QA, :class:`~atlas_kit.tasks.qa.QAExample`): SQuAD-normalised EM/F1, plus
  retrieval recall@k when gold passage ids are known and answer recall@k (the answer string occurs
  in one of the top-k passages, DPR's measure) always;
* ``mc`` (multiple choice, :class:`~atlas_kit.tasks.mmlu.MCExample`): accuracy by generation, by
  option likelihood and de-biased over cyclic permutations, per subject and per category;
* ``kilt`` (examples with KILT provenance): EM/F1/accuracy/ROUGE-L, page-level R-Precision and
  recall@k, and the KILT scores (downstream score counted only when the provenance is right).

The task is read off the examples (:func:`task_of`) unless given. A run folder gets
``metrics.json``, ``predictions.jsonl`` (question, prediction, gold, retrieved passage ids and
scores), ``results.md`` (the tables) and plots (recall@k curve; accuracy per category); a KILT run
also ``kilt_predictions.jsonl`` in KILT's submission format (:mod:`atlas_kit.kilt_submission`).
Retrieval-only runs with gold passage ids add nDCG/MRR/MAP/Recall/P@k (:mod:`atlas_kit.ir`) and
can write the ranking as a TREC run file.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from atlas_kit.metrics import answer_recall_at_k, qa_scores, recall_at_k
from atlas_kit.storage import atomic_write_json, atomic_write_text

__all__ = ["Evaluation", "TASKS", "task_of", "evaluate", "evaluate_retrieval", "write_report"]

log = logging.getLogger(__name__)

TASKS = ("qa", "mc", "kilt")


@dataclass
class Evaluation:
    """Metrics (JSON-ready), one record per example, and the task they were computed for."""

    task: str
    metrics: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)


def task_of(examples: Sequence[Any]) -> str:
    """``mc`` for multiple-choice examples, ``kilt`` when examples carry KILT provenance, else ``qa``."""
    if not examples:
        return "qa"
    first = examples[0]
    if hasattr(first, "options") and hasattr(first, "label"):
        return "mc"
    if "provenance" in (getattr(first, "metadata", None) or {}):
        return "kilt"
    return "qa"


def _passage_records(hits: Sequence[Any]) -> list[dict[str, Any]]:
    return [{"id": h.id, "score": round(float(h.score), 6)} for h in hits]


def _recall_ks(k: int) -> list[int]:
    return sorted({1, min(5, k), k})


@torch.no_grad()
def evaluate(atlas: Any, examples: Sequence[Any], k: int, batch_size: int = 16, task: str | None = None,
             debias: bool = True) -> Evaluation:
    """Retrieve ``k`` passages per example, answer with the reader, and score as the task says."""
    if atlas.reader is None:
        raise ValueError("evaluation needs a reader (use evaluate_retrieval for retrieval-only metrics)")
    task = task or task_of(examples)
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r} (known: {', '.join(TASKS)})")
    examples = list(examples)
    questions = [e.question for e in examples]
    hits = atlas.retrieve(questions, k=k) if k > 0 else [[] for _ in examples]
    passages = [list(h) for h in hits]
    ks = _recall_ks(k) if k > 0 else []
    if task == "mc":
        from atlas_kit.multiple_choice import evaluate_multiple_choice

        metrics, records = evaluate_multiple_choice(atlas.reader, examples, passages, debias=debias,
                                                    batch_size=batch_size)
        for rec, h in zip(records, hits):
            rec["passages"] = _passage_records(h)
        metrics = dict(metrics)
    else:
        preds = atlas.reader.generate(questions, passages, batch_size=batch_size)
        if task == "kilt":
            from atlas_kit.provenance import kilt_scores

            # hits are matched to provenance pages by wikipedia_id (metadata) or title
            pages = [list(h) for h in hits] if k > 0 else None
            metrics = dict(kilt_scores(preds, examples, retrieved_pages=pages, ks=tuple(ks) or (1,),
                                       skip_without_provenance=True))
        else:
            metrics = dict(qa_scores(preds, [e.answers for e in examples]))
            if ks and all(e.gold_ids for e in examples):
                metrics.update(recall_at_k([h.ids for h in hits], [e.gold_ids for e in examples], ks=ks))
        if ks and task == "qa":
            metrics.update(answer_recall_at_k([[p.text for p in ps] for ps in passages],
                                              [e.answers for e in examples], ks=ks))
        records = [{"id": e.id, "question": e.question, "prediction": p, "gold": e.answers,
                    "passages": _passage_records(h)} for e, p, h in zip(examples, preds, hits)]
        if task == "kilt":
            _add_kilt_submission(records, examples, preds, hits)
    metrics["n"] = len(examples)
    return Evaluation(task, metrics, records)


def _add_kilt_submission(records: list[dict[str, Any]], examples: Sequence[Any], preds: Sequence[str] | None,
                         hits: Sequence[Any]) -> None:
    from atlas_kit.kilt_submission import submission_records

    for rec, sub in zip(records, submission_records(examples, preds, hits)):
        rec["kilt"] = sub


def evaluate_retrieval(atlas: Any, examples: Sequence[Any], ks: Sequence[int] = (1, 5, 20, 100),
                       task: str | None = None, run_file: str | os.PathLike | None = None) -> Evaluation:
    """Retrieval-only metrics (no reader): recall@k over gold passage ids when known, answer
    recall@k (answer string in a top-k passage) for QA, page-level R-Precision/recall@k for KILT.

    With gold passage ids also the IR measures ``NDCG@k``, ``MRR@k``, ``MAP``, ``Recall@k``,
    ``P@k`` (:func:`atlas_kit.ir.ir_metrics`, binary relevance); ``run_file`` writes the ranking as
    a TREC run (query id = example id)."""
    task = task or task_of(examples)
    examples = list(examples)
    ks = sorted(set(int(k) for k in ks))
    hits = atlas.retrieve([e.question for e in examples], k=max(ks))
    metrics: dict[str, Any] = {}
    run = None
    if run_file is not None or all(e.gold_ids for e in examples):
        from atlas_kit.ir import qrels_from_gold_ids, run_from_hits, write_run

        run = run_from_hits([e.id for e in examples], hits)
        if run_file is not None:
            write_run(run_file, run)
    if all(e.gold_ids for e in examples):
        from atlas_kit.ir import ir_metrics

        metrics.update(recall_at_k([h.ids for h in hits], [e.gold_ids for e in examples], ks=ks))
        qrels = qrels_from_gold_ids([e.id for e in examples], [e.gold_ids for e in examples])
        metrics.update({k: v for k, v in ir_metrics(run, qrels, ks=ks).items() if k != "n_queries"})
    if task == "qa":
        metrics.update(answer_recall_at_k([[p.text for p in h] for h in hits], [e.answers for e in examples], ks=ks))
    if task == "kilt":
        from atlas_kit.provenance import kilt_scores

        metrics.update(kilt_scores(None, examples, retrieved_pages=[list(h) for h in hits], ks=tuple(ks),
                                   skip_without_provenance=True))
    if not metrics:
        raise ValueError("no retrieval metric applies: the examples have no gold passage ids, answers to "
                         "look for, or provenance")
    metrics["n"] = len(examples)
    records = [{"id": e.id, "question": e.question, "gold": e.answers, "gold_ids": list(e.gold_ids),
                "passages": _passage_records(h)} for e, h in zip(examples, hits)]
    if task == "kilt":
        _add_kilt_submission(records, examples, None, hits)
    return Evaluation(task, metrics, records)


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
        from atlas_kit.kilt_submission import write_kilt_submission

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
