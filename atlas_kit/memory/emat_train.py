"""Training EMAT through the library's loop: :class:`EMATStep` (a ``TrainStep``) and its config.

One micro-batch of QA examples (``.question``, ``.answers``):

1. the current query of each question (no gradient) searches the memory for ``candidates`` slots;
   weakly labelled positives are those whose answer matches a gold answer (SQuAD normalisation),
   hard negatives the others, best ranked first (EMAT's ``pos_from_top`` / ``negatives_num``);
2. the top-``k`` slots are read; with probability ``positive_in_slots`` a positive missing from
   them replaces the last one (EMAT pre-training's ``value_with_self_prop``), so generation can
   learn to read before the keys are good;
3. the slots (and the matching candidates) are re-encoded from their texts with gradients, as
   EMAT does for the QAs of each batch, and the named objectives are weighted and summed
   (:mod:`atlas_kit.memory.emat_losses`);
4. after optimizer steps on ``refresh_schedule`` (Atlas's syntax, :func:`~atlas_kit.train.config.parse_schedule`)
   the whole key-value memory is re-encoded with the current weights.

An optional ``rename`` hook rewrites each example with its slots and candidates (``rename(question,
[{"title": q, "text": a}, ...], answer)``, e.g. :class:`atlas_kit.demo.Renamer`) after retrieval
and before re-encoding - how the generated-world benchmark keeps a from-scratch model from learning
answers by heart.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from atlas_kit.memory.emat import EMAT
from atlas_kit.memory.emat_losses import EMAT_OBJECTIVES, FINETUNE_WEIGHTS, generation_loss, key_autoencoding_loss, \
    matching_loss, value_autoencoding_loss
from atlas_kit.memory.emat_memory import QAMemory
from atlas_kit.metrics import normalize_answer, qa_scores
from atlas_kit.storage import atomic_write_text
from atlas_kit.train.config import due, parse_schedule
from atlas_kit.train.loop import LoopConfig, TrainStep

__all__ = ["EMATTrainConfig", "EMATStep"]


@dataclass
class EMATTrainConfig(LoopConfig):
    """The loop's settings plus EMAT's. Defaults follow EMAT's fine-tuning script where it has one
    (lr 5e-5, k = 10 slots, 32 negatives, positives from the top 128, generation + matching at
    weight 1); ``refresh_schedule`` is Atlas's syntax (``"-1"`` never; EMAT re-encodes every epoch)."""

    lr: float = 5e-5
    k: int = 10
    weights: dict[str, float] = field(default_factory=lambda: dict(FINETUNE_WEIGHTS))
    candidates: int = 128
    negatives: int = 32
    positive_in_slots: float = 0.0
    refresh_schedule: str = "-1"
    encode_batch_size: int = 256

    def __post_init__(self) -> None:
        super().__post_init__()
        unknown = sorted(set(self.weights) - set(EMAT_OBJECTIVES))
        if unknown:
            raise ValueError(f"unknown EMAT objective(s) {unknown} (known: {', '.join(EMAT_OBJECTIVES)})")
        if self.k < 0 or self.candidates < 1 or self.negatives < 0 or not 0 <= self.positive_in_slots <= 1:
            raise ValueError("need k >= 0, candidates >= 1, negatives >= 0 and 0 <= positive_in_slots <= 1")
        parse_schedule(self.refresh_schedule)


def _answers(example: Any) -> list[str]:
    answers = getattr(example, "answers", None)
    if answers is None and isinstance(example, dict):
        answers = example.get("answers") or [example.get("answer")]
    return [a for a in (answers or []) if a]


def _question(example: Any) -> str:
    return example["question"] if isinstance(example, dict) else example.question


class EMATStep(TrainStep):
    """What EMAT does per micro-batch (see the module docstring)."""

    def __init__(self, emat: EMAT, memory: QAMemory, config: EMATTrainConfig,
                 rename: Callable[[str, list[dict[str, str]], str], tuple[str, list[dict[str, str]], str]] | None = None) -> None:
        self.emat, self.memory, self.cfg, self.rename = emat, memory, config, rename
        self.schedule = parse_schedule(config.refresh_schedule)
        self.refreshes = 0
        self._answer_rows: dict[str, list[int]] = {}
        self._index_answers()

    def _index_answers(self) -> None:
        rows: dict[str, list[int]] = {}
        for i, a in enumerate(self.memory.answers):
            rows.setdefault(normalize_answer(a), []).append(i)
        self._answer_rows = rows

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"emat": self.emat}

    # ------------------------------------------------------------------ one micro-batch
    def _select(self, questions: list[str], golds: list[list[str]], rng: random.Random) -> tuple[list, list]:
        """Per example: the k slot rows to read and (positive row, negative rows) to match."""
        cfg = self.cfg
        with torch.no_grad():
            query, _ = self.emat.embed_keys(questions)
        hits = self.memory.search(query, max(cfg.candidates, cfg.k))
        slots, matches = [], []
        for b, gold in enumerate(golds):
            wanted = {normalize_answer(a) for a in gold}
            ranked = [int(r) for r in hits.slots[b].tolist() if r >= 0]
            pos = [r for r in ranked if normalize_answer(self.memory.answers[r]) in wanted]
            neg = [r for r in ranked if r not in pos][: cfg.negatives]
            if not pos:  # the positive is ranked below the candidates: look it up by its answer
                pos = [r for a in wanted for r in self._answer_rows.get(a, [])][:1]
            top = ranked[: cfg.k]
            if pos and cfg.positive_in_slots and not set(pos) & set(top) and rng.random() < cfg.positive_in_slots:
                top = (top[:-1] + [pos[0]]) if len(top) == cfg.k else top + [pos[0]]
                rng.shuffle(top)
            slots.append(top)
            matches.append((pos[0] if pos else None, neg))
        return slots, matches

    def loss(self, batch: list[Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, emat, memory = self.cfg, self.emat, self.memory
        questions = [_question(ex) for ex in batch]
        rng = random.Random(f"{cfg.seed}-{step}-{questions[0] if questions else ''}")  # a pure function of the batch
        golds = [_answers(ex) for ex in batch]
        answers = [g[0] if g else "" for g in golds]
        slot_rows, matches = self._select(questions, golds, rng)
        slot_pairs = [memory.pairs(rows) for rows in slot_rows]
        match_pairs = [memory.pairs(([p] if p is not None else []) + neg) for p, neg in matches]
        if self.rename is not None:
            for b in range(len(batch)):
                ctx = [{"title": q, "text": a} for q, a in slot_pairs[b] + match_pairs[b]]
                q, ctx, a = self.rename(questions[b], ctx, answers[b])
                pairs = [(c["title"], c["text"]) for c in ctx]
                questions[b], answers[b] = q, a
                slot_pairs[b], match_pairs[b] = pairs[: len(slot_pairs[b])], pairs[len(slot_pairs[b]):]
        w = cfg.weights
        total = torch.zeros((), device=emat.device)
        logs: dict[str, float] = {}
        query = None
        if w.get("generation") or w.get("matching"):
            slots = emat.slots_from_pairs(slot_pairs) if cfg.k else None
            gen, enc = generation_loss(emat, questions, answers, slots=slots)
            query = enc.query
            if w.get("generation"):
                total = total + w["generation"] * gen
                logs["generation"] = float(gen.detach())
        if w.get("matching"):
            usable = [b for b, (p, _) in enumerate(matches) if p is not None]
            if usable:
                width = 1 + max(len(match_pairs[b]) - 1 for b in usable)
                flat = [qa for b in usable for qa in match_pairs[b]]
                keys, _ = emat.embed_keys([q for q, _ in flat])
                cand = keys.new_zeros(len(usable), width, keys.shape[-1])
                mask = torch.zeros(len(usable), width, dtype=torch.bool, device=keys.device)
                at = 0
                for i, b in enumerate(usable):
                    n = len(match_pairs[b])
                    cand[i, :n] = keys[at:at + n]
                    mask[i, :n] = True
                    at += n
                m = matching_loss(query[usable], cand, mask)
                total = total + w["matching"] * m
                logs["matching"] = float(m.detach())
        if w.get("key_ae"):
            kae = key_autoencoding_loss(emat, questions)
            total = total + w["key_ae"] * kae
            logs["key_ae"] = float(kae.detach())
        if w.get("value_ae"):
            vae = value_autoencoding_loss(emat, answers)
            total = total + w["value_ae"] * vae
            logs["value_ae"] = float(vae.detach())
        hit = [bool(set(rows) & {p}) for rows, (p, _) in zip(slot_rows, matches) if p is not None]
        if hit:
            logs["positive_in_slots"] = sum(hit) / len(hit)
        logs["loss"] = float(total.detach())
        return total, logs

    def after_step(self, step: int) -> dict[str, float]:
        """Re-encode the memory when the refresh schedule says so."""
        if due(self.schedule, step):
            self.memory.refresh(self.emat, batch_size=self.cfg.encode_batch_size)
            self.refreshes += 1
            return {"memory_refresh": float(self.refreshes)}
        return {}

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, examples: Sequence[Any], step: int, out: Path | None = None) -> dict[str, Any]:
        """EM / F1 answering from the memory (k slots), and slot hit@1 / hit@k (a slot's answer
        matches a gold answer), after re-encoding the memory with the current weights when they
        changed since it was encoded."""
        if self.memory.fingerprint != self.emat.fingerprint():
            self.memory.refresh(self.emat, batch_size=self.cfg.encode_batch_size)
        questions = [_question(ex) for ex in examples]
        golds = [_answers(ex) for ex in examples]
        preds, rows = self.emat.generate(questions, memory=self.memory, k=self.cfg.k, batch_size=self.cfg.eval_batch_size,
                                         return_slots=True)
        metrics: dict[str, Any] = dict(qa_scores(preds, golds))
        hits1, hitsk = [], []
        for r, gold in zip(rows, golds):
            wanted = {normalize_answer(a) for a in gold}
            found = [normalize_answer(self.memory.answers[i]) in wanted for i in r if i >= 0]
            hits1.append(bool(found[:1] and found[0]))
            hitsk.append(any(found))
        if rows:
            metrics["slot_hit@1"] = 100.0 * sum(hits1) / len(hits1)
            metrics[f"slot_hit@{self.cfg.k}"] = 100.0 * sum(hitsk) / len(hitsk)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"question": q, "answers": g, "prediction": p, "slots": [int(i) for i in r]})
                     for q, g, p, r in zip(questions, golds, preds, rows)]
            atomic_write_text(out / "predictions.jsonl", "\n".join(lines) + "\n")
        return metrics

    # ------------------------------------------------------------------ weights
    def save(self, folder: Path) -> None:
        self.emat.save_pretrained(folder / "emat")

    def load(self, folder: Path) -> None:
        """Weights back into the live model; the memory is then re-encoded with them (a checkpoint
        does not hold the memory - PAQ's is tens of GB - so a resumed run reads freshly encoded
        keys where the uninterrupted one read keys from its last refresh)."""
        loaded = EMAT.from_pretrained(folder / "emat")
        self.emat.load_state_dict(loaded.state_dict())
        self.memory.refresh(self.emat, batch_size=self.cfg.encode_batch_size)

    def state(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes}

    def load_state(self, state: dict[str, Any]) -> None:
        self.refreshes = int(state.get("refreshes", 0))
