"""Training an :class:`~atlas_kit.memory.rmt.RMT` through the library's one training loop, and the
segment-count curriculum of the RMT papers.

:class:`RMTStep` is the :class:`~atlas_kit.train.loop.TrainStep` of RMT: it turns
:class:`~atlas_kit.tasks.memorization.MemoryExample` lists into padded batches for one of three heads

* ``classify`` - the encoder kind with a classification head (the 6-class bAbI-style tasks, or
  associative retrieval as a ``vocab``-way choice): cross-entropy on the last segment's [CLS];
* ``lm`` - the decoder kind: ``input [sep] target`` as one sequence, the loss on the target
  tokens only (copy / reverse / associative written out);
* ``seq2seq`` - the encoder-decoder kind: the input through the encoder with memory, the target
  as the decoder's labels.

Evaluation reports accuracy (classify) or per-token / per-position / whole-sequence accuracy
(teacher-forced argmax on the target positions: lm, seq2seq), and, with ``ablate=True``, the same
figures with the memory reset to its learned initial value before every segment - the same weights
with nothing carried across segments, the direct test that the model uses its memory.

``last_segment_only=True`` makes the step the paper's "no memory" baseline: every input is cut to
its last segment (where the question is), in training and in evaluation.

:func:`train_curriculum` runs the curriculum as successive :class:`~atlas_kit.train.loop.TrainLoop`
fits on the same step: 1 segment, then 2, 4, ... (each stage starts from the weights the previous
one ended with; a fresh optimizer and schedule per stage).

With ``vary_segments=True`` a stage of ``n`` segments trains on inputs of 1 .. ``n`` segments
mixed in one stream (the reference's ``--vary_n_segments``; batches are ragged). Without it each
stage trains on exactly its own length. Mixing matters when later segments must both read and
write the memory (copy across 3 segments: every length's mapping stays trained).

Deliberate differences from the reference code (booydar/recurrent-memory-transformer): the
reference samples one length per batch, here lengths are mixed within batches (a ragged batch
equals its documents one by one, so this changes only the batch composition); the stage is
resumed from the in-memory
model rather than a checkpoint path threaded through shell scripts; and the BPTT cut is real
(see :mod:`atlas_kit.memory.rmt`).
"""
from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from atlas_kit.memory.rmt import RMT
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tasks.memorization import MemoryExample
from atlas_kit.train.loop import LoopConfig, TrainLoop, TrainStep

__all__ = ["HEADS", "RMTConfig", "RMTStep", "encode_batch", "curriculum_stages", "mixed_lengths", "train_curriculum"]

log = logging.getLogger(__name__)

HEADS = {"classify": "encoder", "lm": "decoder", "seq2seq": "encoder-decoder"}
IGNORE = -100


@dataclass
class RMTConfig(LoopConfig):
    """:class:`~atlas_kit.train.loop.LoopConfig` with RMT's one learning rate (backbone, memory and
    head together, as in the reference code)."""

    lr: float = 1e-4


def encode_batch(examples: Sequence[MemoryExample], head: str, pad_token_id: int = 0,
                 sep_token_id: int | None = None) -> dict[str, torch.Tensor]:
    """Right-padded tensors for ``examples``.

    ``classify``: ``input_ids``, ``attention_mask``, ``labels`` [B] (``example.label``).
    ``lm``: ``input [sep] target`` with ``labels`` aligned to it (``IGNORE`` except at the target
    tokens; the RMT decoder loss shifts them, so the logits at ``sep`` predict the first target token).
    ``seq2seq``: ``input_ids``, ``attention_mask``, ``labels`` = targets padded with ``IGNORE``.
    """
    if head not in HEADS:
        raise ValueError(f"head must be one of {tuple(HEADS)}, got {head!r}")
    if not examples:
        raise ValueError("an empty batch")
    if head == "lm":
        if sep_token_id is None:
            raise ValueError("the lm head needs sep_token_id (the token between input and target)")
        seqs = [list(e.input_ids) + [sep_token_id] + list(e.target) for e in examples]
        labels = [[IGNORE] * (len(e.input_ids) + 1) + list(e.target) for e in examples]
    else:
        seqs = [list(e.input_ids) for e in examples]
    for i, (e, s) in enumerate(zip(examples, seqs)):
        if not s:
            raise ValueError(f"example {i} of the batch has no input tokens")
        if head in ("lm", "seq2seq") and not e.target:
            raise ValueError(f"example {i} of the batch has no target tokens (needed by the {head} head)")
        if head == "classify" and e.label < 0:
            raise ValueError(f"example {i} of the batch has no label (needed by the classify head)")
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, : len(s)] = torch.tensor(s)
        mask[r, : len(s)] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    if head == "classify":
        batch["labels"] = torch.tensor([e.label for e in examples], dtype=torch.long)
    elif head == "lm":
        lab = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
        for r, row in enumerate(labels):
            lab[r, : len(row)] = torch.tensor(row)
        batch["labels"] = lab
    else:
        t = max(len(e.target) for e in examples)
        lab = torch.full((len(examples), t), IGNORE, dtype=torch.long)
        for r, e in enumerate(examples):
            lab[r, : len(e.target)] = torch.tensor(list(e.target))
        batch["labels"] = lab
    return batch


class RMTStep(TrainStep):
    """One RMT model family's work per micro-batch for :class:`~atlas_kit.train.loop.TrainLoop`.

    Args:
        model: the :class:`RMT` to train (its kind must match ``head``: see :data:`HEADS`).
        head: ``classify`` | ``lm`` | ``seq2seq``.
        pad_token_id: padding id (masked out; any id works).
        sep_token_id: the ``lm`` head's separator between input and target.
        last_segment_only: the "no memory" baseline - inputs cut to their last segment.
        ablate: evaluation also runs with the memory reset before every segment (``*_memory_reset``).
        eval_batch_size: examples per forward pass in :meth:`evaluate`.
    """

    primary_log = "loss"

    def __init__(self, model: RMT, head: str = "classify", pad_token_id: int = 0, sep_token_id: int | None = None,
                 last_segment_only: bool = False, ablate: bool = True, eval_batch_size: int = 16) -> None:
        if head not in HEADS:
            raise ValueError(f"head must be one of {tuple(HEADS)}, got {head!r}")
        if model.kind != HEADS[head]:
            raise ValueError(f"the {head} head needs an RMT of kind {HEADS[head]!r}, got {model.kind!r}")
        if head == "classify" and model.head is None:
            raise ValueError("the classify head needs an RMT built with num_classes=...")
        if head == "lm" and sep_token_id is None:
            raise ValueError("the lm head needs sep_token_id")
        self.model = model
        self.head = head
        self.pad_token_id = int(pad_token_id)
        self.sep_token_id = sep_token_id
        self.last_segment_only = bool(last_segment_only)
        self.ablate = bool(ablate)
        self.eval_batch_size = int(eval_batch_size)

    # ------------------------------------------------------------------ data
    def _cut(self, e: MemoryExample) -> MemoryExample:
        """The baseline's view of an example: its last segment only (the lm head keeps the whole
        target after it: the last segment of the *input*)."""
        if not self.last_segment_only:
            return e
        n = len(e.input_ids)
        start = ((n - 1) // self.model.segment_size) * self.model.segment_size
        return replace(e, input_ids=list(e.input_ids[start:]))

    def batch(self, examples: Sequence[MemoryExample]) -> dict[str, torch.Tensor]:
        tensors = encode_batch([self._cut(e) for e in examples], self.head, self.pad_token_id, self.sep_token_id)
        return {k: v.to(self.model.device) for k, v in tensors.items()}

    def _forward(self, batch: dict[str, torch.Tensor], reset_memory: bool = False):
        if self.head == "seq2seq":
            labels = batch["labels"]
            cfg = self.model.backbone.config
            start = cfg.decoder_start_token_id if cfg.decoder_start_token_id is not None else cfg.pad_token_id
            if start is None:
                raise ValueError("seq2seq head: the backbone's config names no decoder_start_token_id / pad_token_id")
            # teacher forcing: the decoder reads [start] + target[:-1] (padding where labels are ignored)
            shifted = torch.cat([torch.full_like(labels[:, :1], start), labels[:, :-1]], dim=1)
            decoder_input_ids = shifted.masked_fill(shifted == IGNORE, cfg.pad_token_id or 0)
            return self.model(batch["input_ids"], batch["attention_mask"], labels=labels,
                              decoder_input_ids=decoder_input_ids, reset_memory=reset_memory)
        return self.model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"],
                          reset_memory=reset_memory)

    def _predictions(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted, gold) aligned: [B] for classify, [B, T] with ``IGNORE`` gold elsewhere."""
        if self.head == "classify":
            return logits.argmax(-1), labels
        if self.head == "lm":
            return logits[:, :-1].argmax(-1), labels[:, 1:]
        return logits.argmax(-1), labels

    # ------------------------------------------------------------------ TrainStep
    def modules(self) -> dict[str, torch.nn.Module]:
        return {"rmt": self.model}

    def param_groups(self, cfg: LoopConfig) -> list[dict]:
        lr = getattr(cfg, "lr", None)
        if lr is None:
            raise TypeError(f"{type(cfg).__name__} has no 'lr': train an RMTStep with RMTConfig")
        return [{"name": "rmt", "params": [p for p in self.model.parameters() if p.requires_grad], "lr": lr}]

    def loss(self, batch: list, step: int) -> tuple[torch.Tensor, dict[str, float]]:
        tensors = self.batch(batch)
        out = self._forward(tensors)
        with torch.no_grad():
            pred, gold = self._predictions(out.logits, tensors["labels"])
            keep = gold != IGNORE
            acc = float((pred[keep] == gold[keep]).float().mean()) if bool(keep.any()) else 0.0
        return out.loss, {"loss": float(out.loss.detach()), "accuracy": acc,
                          "segments": float(out.segments.float().mean())}

    @torch.no_grad()
    def evaluate(self, examples: Sequence[MemoryExample], step: int, out: Path | None = None) -> dict[str, Any]:
        """Accuracy of the model on ``examples`` (and, with ``ablate``, with the memory reset
        before every segment); ``out`` gets ``predictions.jsonl`` and ``eval_metrics.json``."""
        examples = list(examples)
        if not examples:
            raise ValueError("evaluate needs at least one example")
        was = self.model.training
        self.model.eval()
        try:
            metrics = self._score(examples, reset_memory=False)
            rows = metrics.pop("_rows")
            if self.ablate and self.model.num_mem_tokens and not self.last_segment_only:
                reset = self._score(examples, reset_memory=True)
                reset.pop("_rows")
                metrics.update({f"{k}_memory_reset": v for k, v in reset.items() if k != "examples"})
        finally:
            self.model.train(was)
        metrics["step"] = step
        if out is not None:
            out = Path(out)
            atomic_write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
            atomic_write_json(out / "eval_metrics.json", metrics)
        log.info("RMT eval at step %d: %s", step, {k: v for k, v in metrics.items() if not isinstance(v, list)})
        return metrics

    def _score(self, examples: list[MemoryExample], reset_memory: bool) -> dict[str, Any]:
        correct_tokens = total_tokens = exact = 0
        per_position: list[list[int]] = []
        rows: list[dict[str, Any]] = []
        segments: list[int] = []
        starts = range(0, len(examples), self.eval_batch_size)
        for i in tqdm(starts, desc="eval" + (" (memory reset)" if reset_memory else ""), leave=False,
                      disable=len(starts) < 20):
            chunk = examples[i : i + self.eval_batch_size]
            tensors = self.batch(chunk)
            result = self._forward(tensors, reset_memory=reset_memory)
            pred, gold = self._predictions(result.logits, tensors["labels"])
            segments += result.segments.tolist()
            for r in range(len(chunk)):
                if self.head == "classify":
                    ok = int(pred[r]) == int(gold[r])
                    correct_tokens += ok
                    total_tokens += 1
                    exact += ok
                    rows.append({"label": int(gold[r]), "prediction": int(pred[r]), "correct": ok})
                    continue
                keep = gold[r] != IGNORE
                p, g = pred[r][keep].tolist(), gold[r][keep].tolist()
                hits = [int(a == b) for a, b in zip(p, g)]
                for j, h in enumerate(hits):
                    if j == len(per_position):
                        per_position.append([0, 0])
                    per_position[j][0] += h
                    per_position[j][1] += 1
                correct_tokens += sum(hits)
                total_tokens += len(hits)
                exact += int(all(hits))
                rows.append({"target": g, "prediction": p, "correct": int(all(hits))})
        metrics: dict[str, Any] = {"examples": len(examples), "accuracy": exact / len(examples),
                                   "segments": sum(segments) / len(segments), "_rows": rows}
        if self.head != "classify":
            metrics["token_accuracy"] = correct_tokens / max(1, total_tokens)
            metrics["position_accuracy"] = [c / n for c, n in per_position]
        return metrics

    def save(self, folder: Path) -> None:
        self.model.save_pretrained(Path(folder) / "rmt")

    def load(self, folder: Path) -> None:
        """Weights from :meth:`save` into the model in place (the loop's optimizer holds its parameters)."""
        loaded = RMT.from_pretrained(Path(folder) / "rmt")
        if loaded.settings() != self.model.settings():
            raise ValueError(f"{folder}: saved RMT settings {loaded.settings()} differ from the model's {self.model.settings()}")
        self.model.load_state_dict(loaded.state_dict())


def curriculum_stages(max_segments: int, start: int = 1) -> list[int]:
    """``start, 2 start, 4 start, ...`` doubling up to ``max_segments`` (which always ends the list):
    ``curriculum_stages(6) == [1, 2, 4, 6]``."""
    if max_segments < 1 or start < 1:
        raise ValueError(f"need max_segments >= 1 and start >= 1, got {max_segments}, {start}")
    stages, n = [], start
    while n < max_segments:
        stages.append(n)
        n *= 2
    return stages + [max_segments]


def mixed_lengths(longest: Sequence[Any], shorter: Sequence[Sequence[Any]], seed: int = 0) -> list[Any]:
    """``len(longest)`` examples drawn evenly from ``longest`` and each list of ``shorter``
    (without replacement inside each list), shuffled with ``seed``."""
    pools = [list(longest)] + [list(p) for p in shorter]
    if any(not p for p in pools):
        raise ValueError("mixed_lengths: every length needs at least one example")
    rng = random.Random(seed)
    total = len(pools[0])
    out: list[Any] = []
    for j, pool in enumerate(pools):
        share = total // len(pools) + (1 if j < total % len(pools) else 0)
        out += rng.sample(pool, min(share, len(pool)))
    rng.shuffle(out)
    return out


def train_curriculum(step: RMTStep, make_examples: Callable[[int], tuple[Sequence[Any], Sequence[Any] | None]],
                     stages: Sequence[int], config: RMTConfig, steps: Sequence[int] | int | None = None,
                     output_dir: str | Path | None = None, show_progress: bool | None = None,
                     vary_segments: bool = False) -> list[dict[str, Any]]:
    """The RMT curriculum: for each number of segments ``n`` in ``stages`` (e.g. ``[1, 2, 4]``),
    ``make_examples(n)`` gives (train, eval) examples of ``n`` segments and a new
    :class:`TrainLoop` fits them, starting from the weights the previous stage left in ``step``.

    ``steps``: optimizer steps per stage (one number for all, a list per stage, or ``None`` =
    ``config.steps``). ``vary_segments``: a stage of ``n`` segments trains on an even mix of the
    training examples of 1 .. ``n`` segments (as many as ``make_examples(n)`` gives, drawn with
    the config's seed); its evaluation examples stay those of ``n``. Each stage's run folder is
    ``output_dir/stage-{i}-{n}seg``. Returns one
    dict per stage: ``segments``, ``steps``, ``metrics`` (the fit's) and ``history`` (its logs).
    """
    stages = [int(n) for n in stages]
    if not stages or any(n < 1 for n in stages):
        raise ValueError(f"stages must be a non-empty list of segment counts >= 1, got {stages}")
    per_stage = [config.steps] * len(stages) if steps is None else (
        [int(steps)] * len(stages) if isinstance(steps, int) else [int(s) for s in steps])
    if len(per_stage) != len(stages):
        raise ValueError(f"{len(per_stage)} step counts for {len(stages)} stages")
    results = []
    for i, (n, n_steps) in enumerate(zip(stages, per_stage)):
        train, evaluation = make_examples(n)
        if vary_segments and n > 1:
            train = mixed_lengths(train, [make_examples(m)[0] for m in range(1, n)], seed=config.seed + i)
        folder = None if output_dir is None else str(Path(output_dir) / f"stage-{i}-{n}seg")
        cfg = replace(config, steps=n_steps, output_dir=folder)
        log.info("RMT curriculum stage %d/%d: %d segment(s), %d steps", i + 1, len(stages), n, n_steps)
        loop = TrainLoop(step, cfg)
        metrics = loop.fit(list(train), eval_examples=list(evaluation) if evaluation else None,
                           show_progress=show_progress)
        results.append({"segments": n, "steps": n_steps, "metrics": metrics, "history": list(loop.history)})
    return results
