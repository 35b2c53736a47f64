"""Training and evaluating a :class:`~atlas_kit.memory.memory_layers.KNNMemoryModel` through the
library's one training loop.

:class:`MemoryLMStep` is the :class:`~atlas_kit.train.loop.TrainStep` of kNN-memory language
models. A training example (:class:`~atlas_kit.tasks.long_documents.LMExample`) is a few
consecutive windows of one document; the step reads them with FoT's cross-batch memory
(:func:`~atlas_kit.memory.cross_batch.cross_batch_forward`: each window sees the previous
window(s) of its own document and of ``d - 1`` other documents of the micro-batch; ``d = 1`` is
plain memory training) and takes the cross-entropy at the scored tokens (``labels`` not
``IGNORE``). Logits are computed only there, not over the whole vocabulary at every position.

Evaluation is the inference path: :func:`knn_score` reads each document window by window with
the kNN memory (every window's keys and values written to the document's namespaces, each query
retrieving its top-k), so documents can be far longer than anything seen in training; with
``memory=False`` the same weights read every window on its own (the window-only model).
:func:`dense_score` scores with the dense cross-batch memory instead - FoT's distraction setting,
where ``d - 1`` other documents share the memory - and reports the attention mass on the
document's own entries.
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from atlas_kit.memory.cross_batch import cross_batch_forward
from atlas_kit.memory.memory_layers import KNNMemoryModel
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tasks.long_documents import IGNORE, LMExample
from atlas_kit.train.loop import LoopConfig, TrainStep

__all__ = ["MemoryLMConfig", "MemoryLMStep", "knn_score", "dense_score", "stack"]

log = logging.getLogger(__name__)


@dataclass
class MemoryLMConfig(LoopConfig):
    """:class:`~atlas_kit.train.loop.LoopConfig` with the model's one learning rate (backbone,
    memory layers and gates together, as in LongLLaMA's and meliad's code)."""

    lr: float = 1e-3


def stack(examples: Sequence[LMExample], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, labels) [B, T] of equally long examples."""
    lengths = {len(e.input_ids) for e in examples}
    if not examples or len(lengths) != 1:
        raise ValueError(f"a batch needs examples of one length, got lengths {sorted(lengths)}")
    for i, e in enumerate(examples):
        if len(e.labels) != len(e.input_ids):
            raise ValueError(f"example {i} ({e.document!r}): {len(e.labels)} labels for {len(e.input_ids)} tokens")
    ids = torch.tensor([e.input_ids for e in examples], dtype=torch.long, device=device)
    labels = torch.tensor([e.labels for e in examples], dtype=torch.long, device=device)
    return ids, labels


def _scored(labels: torch.Tensor) -> torch.Tensor:
    """[B, T] True at positions whose *next* token is scored (where the LM predicts it)."""
    scored = torch.zeros_like(labels, dtype=torch.bool)
    scored[:, :-1] = labels[:, 1:] != IGNORE
    return scored


def _tally(logits: torch.Tensor, gold: torch.Tensor, rows: torch.Tensor, n: int, acc: dict[str, Any]) -> None:
    nll = torch.nn.functional.cross_entropy(logits.float(), gold, reduction="none")
    right = logits.argmax(-1) == gold
    for key, values in (("nll", nll), ("right", right.float()), ("count", torch.ones_like(nll))):
        acc.setdefault(key, torch.zeros(n, dtype=torch.float64))
        acc[key].index_add_(0, rows.cpu(), values.detach().cpu().double())


def _summary(acc: dict[str, torch.Tensor], examples: Sequence[LMExample]) -> dict[str, Any]:
    count = acc["count"]
    if not bool((count > 0).all()):
        raise ValueError("every example needs at least one scored token (labels not IGNORE)")
    exact = (acc["right"] == count).float()
    return {"examples": len(examples), "accuracy": float(exact.mean()),
            "token_accuracy": float(acc["right"].sum() / count.sum()),
            "perplexity": float(math.exp(float(acc["nll"].sum() / count.sum()))),
            "_rows": [{"document": e.document, "correct": int(exact[i]), "tokens": int(count[i]),
                       "nll": float(acc["nll"][i])} for i, e in enumerate(examples)]}


@torch.no_grad()
def knn_score(model: KNNMemoryModel, examples: Sequence[LMExample], window: int, memory: bool = True,
              batch_size: int = 16, show_progress: bool | None = None) -> dict[str, Any]:
    """Teacher-forced accuracy (every scored token right), token accuracy and perplexity at the
    scored tokens, reading each document window by window with the kNN memory (``memory=False``:
    each window alone). Examples are grouped by length; each document's memory is emptied after."""
    examples = list(examples)
    if not examples:
        raise ValueError("knn_score needs at least one example")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    acc: dict[str, Any] = {}
    by_length: dict[int, list[int]] = {}
    for i, e in enumerate(examples):
        by_length.setdefault(len(e.input_ids), []).append(i)
    batches = [rows[i : i + batch_size] for rows in by_length.values() for i in range(0, len(rows), batch_size)]
    total = sum(len(examples[b[0]].input_ids) // window for b in batches)
    bar = tqdm(total=total, desc="kNN-memory eval" if memory else "window-only eval", leave=False,
               disable=show_progress is False or (show_progress is None and total < 50))
    try:
        for rows in batches:
            chunk = [examples[i] for i in rows]
            ids, labels = stack(chunk, device)
            if ids.shape[1] % window:
                raise ValueError(f"documents of {ids.shape[1]} tokens are not a whole number of {window}-token windows")
            docs = [f"eval:{e.document}:{i}" for i, e in zip(rows, chunk)]
            model.reset(docs)
            scored = _scored(labels)
            gold_all = torch.zeros_like(labels)
            gold_all[:, :-1] = labels[:, 1:]
            where = torch.tensor(rows)
            for t in range(ids.shape[1] // window):
                span = slice(t * window, (t + 1) * window)
                hidden = model(ids[:, span], documents=docs if memory else None, hidden_only=True)
                mask = scored[:, span]
                if bool(mask.any()):
                    r = mask.nonzero()[:, 0]
                    _tally(model.lm_head(hidden[mask]), gold_all[:, span][mask], where[r.cpu()], len(examples), acc)
                bar.update(1)
            model.reset(docs)
    finally:
        bar.close()
        model.train(was)
    return _summary(acc, examples)


@torch.no_grad()
def dense_score(model: KNNMemoryModel, examples: Sequence[LMExample], window: int, d: int,
                memory_windows: int = 1) -> dict[str, Any]:
    """Score with the dense cross-batch memory, the examples taken ``d`` at a time: each
    document's memory holds its own earlier window(s) and those of the ``d - 1`` others (FoT's
    distraction setting; a trailing group of fewer than ``d`` examples is dropped). Adds
    ``relevant_mass`` (attention mass on the document's own memory entries at the scored
    positions, mean over memory layers, heads and positions) and ``memory_mass`` (on all memory)."""
    examples = list(examples)
    groups = [examples[i : i + d] for i in range(0, len(examples) - d + 1, d)]
    if not groups:
        raise ValueError(f"dense_score with d={d} needs at least {d} examples, got {len(examples)}")
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    acc: dict[str, Any] = {}
    relevant, total_mass, kept = [], [], []
    try:
        for g, chunk in enumerate(groups):
            ids, labels = stack(chunk, device)
            hidden, own = cross_batch_forward(model, ids, window, d=d, memory_windows=memory_windows)
            mass = model.memory_mass()
            scored = _scored(labels)
            gold = labels[:, 1:][scored[:, :-1]]
            r = scored.nonzero()[:, 0]
            _tally(model.lm_head(hidden[scored]), gold, r.cpu() + g * d, len(examples), acc)
            relevant.append(own[scored])
            # memory_mass() holds the last window's mass: the scored tokens of these tasks close the document
            last = scored[:, -window:]
            if bool(last.any()):
                total_mass.append(torch.stack([mass[layer].mean(1) for layer in model.layers]).mean(0)[last])
            kept += chunk
    finally:
        model.train(was)
    out = _summary({k: v[: len(kept)] for k, v in acc.items()}, kept)
    out["relevant_mass"] = float(torch.cat(relevant).mean())
    out["memory_mass"] = float(torch.cat(total_mass).mean()) if total_mass else 0.0
    out["d"] = d
    return out


class MemoryLMStep(TrainStep):
    """One kNN-memory LM's work per micro-batch for :class:`~atlas_kit.train.loop.TrainLoop`.

    Args:
        model: the :class:`KNNMemoryModel` to train.
        window: tokens per window (the local context; training examples are whole windows).
        d: FoT's cross-batch documents per memory (1 = plain memory training; at most the batch size).
        memory_windows: earlier windows of the document in a window's training memory.
        memory_grad: let the loss reach the memory keys and values (FoT); ``False`` detaches them
            (the Memorizing Transformer's memory is not differentiable).
        eval_batch_size: documents per forward pass in :meth:`evaluate`.
        eval_without_memory: :meth:`evaluate` also scores the window-only model (``*_window_only``).
    """

    primary_log = "loss"

    def __init__(self, model: KNNMemoryModel, window: int, d: int = 1, memory_windows: int = 1,
                 memory_grad: bool = True, eval_batch_size: int = 16, eval_without_memory: bool = True) -> None:
        if window < 1 or d < 1 or memory_windows < 1:
            raise ValueError(f"window, d and memory_windows must be >= 1, got {window}, {d}, {memory_windows}")
        self.model = model
        self.window, self.d, self.memory_windows, self.memory_grad = int(window), int(d), int(memory_windows), bool(memory_grad)
        self.eval_batch_size = int(eval_batch_size)
        self.eval_without_memory = bool(eval_without_memory)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"knn_lm": self.model}

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        lr = getattr(cfg, "lr", None)
        if lr is None:
            raise TypeError(f"{type(cfg).__name__} has no 'lr': train a MemoryLMStep with MemoryLMConfig")
        return [{"name": "knn_lm", "params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, batch: list, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if len(batch) < self.d:
            raise ValueError(f"cross-batch d={self.d} needs micro-batches of at least {self.d} documents, got {len(batch)}")
        ids, labels = stack(batch, self.device())
        hidden, own = cross_batch_forward(self.model, ids, self.window, d=self.d, memory_windows=self.memory_windows,
                                          memory_grad=self.memory_grad)
        scored = _scored(labels)
        if not bool(scored.any()):
            raise ValueError("a micro-batch without scored tokens (every label is IGNORE)")
        logits = self.model.lm_head(hidden[scored])
        gold = labels[:, 1:][scored[:, :-1]]
        loss = torch.nn.functional.cross_entropy(logits.float(), gold)
        with torch.no_grad():
            accuracy = float((logits.argmax(-1) == gold).float().mean())
            beyond = scored.clone()
            beyond[:, : self.window] = False
            mass = float(own[beyond].mean()) if bool(beyond.any()) else 0.0
        return loss, {"loss": float(loss.detach()), "accuracy": accuracy, "relevant_mass": mass}

    @torch.no_grad()
    def evaluate(self, examples: Sequence[LMExample], step: int, out: Path | None = None) -> dict[str, Any]:
        """kNN-memory scores of ``examples`` (and the window-only model's, ``*_window_only``);
        ``out`` gets ``predictions.jsonl`` and ``eval_metrics.json``."""
        metrics = knn_score(self.model, examples, self.window, memory=True, batch_size=self.eval_batch_size)
        rows = metrics.pop("_rows")
        if self.eval_without_memory:
            plain = knn_score(self.model, examples, self.window, memory=False, batch_size=self.eval_batch_size)
            plain.pop("_rows")
            metrics.update({f"{k}_window_only": v for k, v in plain.items() if k != "examples"})
        metrics["step"] = step
        if out is not None:
            out = Path(out)
            atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_json(out / "eval_metrics.json", metrics)
        log.info("kNN-memory eval at step %d: %s", step, metrics)
        return metrics

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(Path(folder) / "knn_lm")

    def load(self, folder: Path) -> None:
        """Weights from :meth:`save` into the model in place (the loop's optimizer holds its parameters)."""
        loaded = KNNMemoryModel.from_pretrained(Path(folder) / "knn_lm")
        if loaded.settings != self.model.settings:
            raise ValueError(f"{folder}: saved kNN-memory settings {loaded.settings} differ from the model's {self.model.settings}")
        self.model.load_state_dict(loaded.state_dict())
