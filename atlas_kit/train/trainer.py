"""Joint few-shot training of reader and retriever (Atlas, Section 2.2-2.4), as a step of the
generic loop (:mod:`atlas_kit.train.loop`).

Each step: retrieve the top passages for the batch (no gradient) -> optionally re-embed candidates
with the current passage encoder (``rerank``) -> retriever scores *with* gradient for those
passages -> reader loss on the answers, and the reader's signal for the chosen retriever objective
-> ``reader_loss + retriever_loss`` -> one optimizer with separate learning rates. The index is
kept in step with the passage encoder by the configured refresh strategy. Evaluation is the task's
(:mod:`atlas_kit.tasks`): retrieve once -> the task predicts -> the task scores.

Deterministic on CPU: the batch order is a pure function of (seed, step), and the torch RNG state
is checkpointed, so resuming from a checkpoint reproduces the uninterrupted run.
"""
from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file

from atlas_kit.index.faiss_index import FaissIndex
from atlas_kit.losses import retriever_loss
from atlas_kit.reader_signals import reader_signal
from atlas_kit.rerank.bi_encoder import BiEncoderReranker, stored_passage_vectors
from atlas_kit.tasks import Task, get_task, task_for_examples
from atlas_kit.tasks.qa import QAExample
from atlas_kit.train.config import TrainConfig, due, parse_schedule
from atlas_kit.train.loop import TrainLoop, TrainStep, init_distributed

__all__ = ["AtlasStep", "Trainer", "gold_indicator"]

log = logging.getLogger(__name__)


def gold_indicator(batch: Sequence[QAExample], passages: list[list[Any]]) -> torch.Tensor:
    """[B, k] 1.0 where a retrieved passage is one of the example's ``gold_ids`` (the ``gold``
    objective: supervised retriever training, the upper bound for the reader-signal objectives)."""
    missing = [e.id for e in batch if not e.gold_ids]
    if missing:
        raise ValueError(f"retriever_loss='gold' needs gold passage ids; example {missing[0]!r} has none")
    golds = [set(e.gold_ids) for e in batch]
    return torch.tensor([[1.0 if p.id in g else 0.0 for p in ps] for g, ps in zip(golds, passages)])


class AtlasStep(TrainStep):
    """Atlas's training step: retrieve -> reader loss + retriever objective; refresh after steps.

    ``task`` (a :class:`~atlas_kit.tasks.Task`, a name, or ``None`` for the examples' own task)
    evaluates. ``rank`` / ``world_size`` shard the corpus when ``refresh=reindex`` re-embeds it."""

    primary_log = "reader_loss"

    def __init__(self, atlas: Any, cfg: TrainConfig, task: Task | str | dict | None = None) -> None:
        if atlas.reader is None:
            raise ValueError("training needs an Atlas with a reader")
        self.atlas, self.cfg = atlas, cfg
        self.task = get_task(task) if task is not None else None
        self.rank, self.world_size = 0, 1
        self._schedule = parse_schedule(cfg.refresh_schedule)
        if cfg.refresh == "query_side":
            self.retriever.freeze_passage_encoder()
        if cfg.retriever_dropout is not None:
            self.retriever.set_dropout(cfg.retriever_dropout)
        if cfg.gradient_checkpointing:
            self.reader.gradient_checkpointing_enable()
            self.retriever.gradient_checkpointing_enable()

    @property
    def reader(self) -> Any:
        return self.atlas.reader

    @property
    def retriever(self) -> Any:
        return self.atlas.retriever

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"reader": self.reader, "retriever": self.retriever}

    def param_groups(self, cfg: TrainConfig) -> list[dict[str, Any]]:
        groups = [{"name": "reader", "params": [p for p in self.reader.parameters() if p.requires_grad],
                   "lr": cfg.reader_lr}]
        if cfg.trains_retriever:
            groups.append({"name": "retriever", "params": [p for p in self.retriever.parameters() if p.requires_grad],
                           "lr": cfg.retriever_lr})
            if not groups[-1]["params"]:
                raise ValueError("the retriever has no trainable parameters (requires_grad is off everywhere)")
        # with retriever_loss="none" the retriever is simply left out of the optimizer; its
        # requires_grad flags are not touched, so a later Trainer on the same modules can train it
        return groups

    def train_mode(self) -> None:
        self.reader.train()
        if self.cfg.trains_retriever:
            self.retriever.train()
            if self._passage_encoder_frozen():
                self.retriever.passage_encoder.eval()  # frozen: no dropout noise, same vectors as the index

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, questions: list[str], exclude: Sequence[Iterable[str]] | None = None) -> list[list[Any]]:
        """The ``n_context`` passages each question's reader sees (no gradient), leaving out the
        ids in ``exclude[i]`` (e.g. the passage a masked-span query was cut from)."""
        k = self.cfg.n_context
        excl = [set(e) for e in exclude] if exclude is not None else [set() for _ in questions]
        extra = max((len(e) for e in excl), default=0)
        if self.cfg.refresh == "rerank":
            index = self.atlas.index
            candidates = self.atlas.retrieve(questions, k=max(k, self.cfg.rerank_candidates) + extra, index=index)
            hits = BiEncoderReranker(self.retriever).rerank(questions, candidates, k + extra, index=index)
        else:
            hits = self.atlas.retrieve(questions, k=k + extra)
        out = [[h for h in hs if h.id not in ex][:k] for hs, ex in zip(hits, excl)]
        short = [i for i, h in enumerate(out) if len(h) < k]
        if short:
            raise ValueError(f"the index returned fewer than n_context={k} passages for question {short[0]}")
        return out

    def retriever_scores(self, questions: list[str], passages: list[list[Any]]) -> torch.Tensor:
        """[B, k] query-passage inner products with gradient, divided by sqrt(dim) (as in Atlas)."""
        q = self.retriever.embed_queries(questions)
        flat = [p for ps in passages for p in ps]
        if self._passage_encoder_frozen():
            # query-side training: the frozen passage encoder's vectors are the index's own - read
            # them instead of re-encoding k passages per question every step
            stored = stored_passage_vectors(self.atlas.index, self.retriever, [p.id for p in flat])
            if stored is not None:
                pe = torch.from_numpy(stored).to(device=q.device, dtype=q.dtype)
            else:
                with torch.no_grad():
                    pe = self.retriever.embed_passages(flat)
        else:
            pe = self.retriever.embed_passages(flat)
        pe = pe.view(len(questions), len(passages[0]), -1)
        return torch.einsum("bd,bkd->bk", q, pe) / math.sqrt(q.shape[-1])

    def _passage_encoder_frozen(self) -> bool:
        enc = self.retriever.passage_encoder
        return enc is not None and not any(p.requires_grad for p in enc.parameters())

    # ------------------------------------------------------------------ one micro-batch
    def loss(self, batch: list[QAExample], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        questions, answers = [e.question for e in batch], [e.target for e in batch]
        passages = self.retrieve(questions, [e.metadata.get("exclude_ids", ()) for e in batch])
        r_loss = self.reader.loss(questions, passages, answers)
        logs = {"reader_loss": r_loss.item(), "retriever_loss": 0.0}
        if not self.cfg.trains_retriever:
            return r_loss, logs
        if self.cfg.retriever_loss == "gold":
            gold = gold_indicator(batch, passages)
        else:
            gold = reader_signal(self.cfg.retriever_loss, self.reader, questions, passages, answers,
                                 **self.cfg.signal_options)
        scores = self.retriever_scores(questions, passages)
        ret_loss = retriever_loss(self.cfg.retriever_loss, scores, gold.to(scores.device),
                                  temperature_score=self.cfg.temperature_score,
                                  temperature_gold=self.cfg.temperature_gold)
        logs["retriever_loss"] = ret_loss.item()
        return r_loss + ret_loss, logs

    def after_step(self, step: int) -> dict[str, float]:
        if self.cfg.refresh == "reindex" and self.cfg.trains_retriever and due(self._schedule, step):
            self.reindex(step)
            return {"reindexed": 1.0}
        return {}

    # ------------------------------------------------------------------ refresh
    def reindex(self, step: int | None = None) -> None:
        """Re-embed the corpus with the current passage encoder and hot-swap the index.

        Under data parallelism each rank encodes one contiguous shard of the passages and the
        shards are all-gathered (in rank order), so every rank ends with the same full index at
        1/world of the encoding cost."""
        index = self.atlas.index
        if not isinstance(index, FaissIndex):
            raise TypeError(f"refresh='reindex' needs a FaissIndex, not {type(index).__name__}")
        t0 = time.perf_counter()
        emb = self._encode_sharded(index.passages)
        new = FaissIndex.from_embeddings(emb, index.passages, retriever_identity=self.retriever.identity(),
                                         factory=index.manifest.get("factory", "Flat"),
                                         metric=index.manifest.get("metric", "ip"),
                                         embeddings_dtype=index.manifest.get("embeddings_dtype", "float16"))
        self.atlas.swap_index(new)
        log.info("re-indexed %d passages in %.1fs at step %d", len(new), time.perf_counter() - t0, step or 0)

    def _encode_sharded(self, passages: Any) -> np.ndarray:
        if self.world_size == 1:
            return self.retriever.encode_passages(passages)
        import torch.distributed as dist

        bounds = np.linspace(0, len(passages), self.world_size + 1).astype(int)
        start, stop = int(bounds[self.rank]), int(bounds[self.rank + 1])
        mine = self.retriever.encode_passages(passages.select(range(start, stop)), show_progress=False)
        device = next(self.reader.parameters()).device
        width = int(np.diff(bounds).max())
        padded = torch.zeros(width, mine.shape[1], dtype=torch.float32, device=device)
        padded[: len(mine)] = torch.from_numpy(mine).to(device)
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return np.concatenate([p[: stop_ - start_].cpu().numpy()
                               for p, start_, stop_ in zip(parts, bounds[:-1], bounds[1:])])

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, examples: Sequence[Any], step: int, out: Path | None = None) -> dict[str, Any]:
        """The task's metrics on ``examples`` (retrieve ``n_context`` once -> predict -> score);
        with ``out`` also the report (predictions, tables, plots) in that folder."""
        from atlas_kit.evaluation import write_report

        task = self.task or task_for_examples(examples)
        result = task.evaluate(self.atlas, examples, k=self.cfg.n_context, batch_size=self.cfg.eval_batch_size)
        if out is not None:
            write_report(out, result, title=f"{out.name}: step {step}", extra={"step": step})
        return result.metrics

    # ------------------------------------------------------------------ weights
    def save(self, folder: Path) -> None:
        self.reader.save_pretrained(folder / "reader")
        self.retriever.save_pretrained(folder / "retriever")
        if self.cfg.refresh == "reindex" and isinstance(self.atlas.index, FaissIndex):
            self.atlas.index.save(folder / "index")

    def load(self, folder: Path) -> None:
        self.reader.model.load_state_dict(load_file(str(folder / "reader" / "model.safetensors")), strict=False)
        self.reader.model.tie_weights()
        self._load_encoder(self.retriever.query_encoder, folder / "retriever" / "query_encoder")
        if self.retriever.passage_encoder is not None and (folder / "retriever" / "passage_encoder").is_dir():
            self._load_encoder(self.retriever.passage_encoder, folder / "retriever" / "passage_encoder")
        if (folder / "index").is_dir():
            self.atlas.swap_index(FaissIndex.load(folder / "index"), allow_mismatch=True)

    @staticmethod
    def _load_encoder(module: torch.nn.Module, folder: Path) -> None:
        files = sorted(folder.glob("*.safetensors"))
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        module.load_state_dict(state)


class Trainer(TrainLoop):
    """Fits ``atlas.reader`` (and ``atlas.retriever`` unless the objective is ``none``): the
    generic :class:`~atlas_kit.train.loop.TrainLoop` running an :class:`AtlasStep`.

    ``Trainer(atlas, config, task=None).fit(train, eval)``; ``task`` evaluates (default: the
    examples' own task, :func:`atlas_kit.tasks.task_for_examples`)."""

    def __init__(self, atlas: Any, config: TrainConfig | dict[str, Any] | None = None,
                 task: Task | str | dict | None = None) -> None:
        cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config or {}))
        rank, world_size = init_distributed()
        if world_size > 1 and torch.cuda.is_available() and atlas.reader is not None:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            atlas.reader.to(device)
            atlas.retriever.to(device)
            atlas.retriever.default_devices = [device]  # one GPU per rank: no replicas on the others
        torch.manual_seed(cfg.seed)
        step = AtlasStep(atlas, cfg, task)
        step.rank, step.world_size = rank, world_size
        super().__init__(step, cfg)
        self.atlas = atlas

    @property
    def reader(self) -> Any:
        return self.atlas.reader

    @property
    def retriever(self) -> Any:
        return self.atlas.retriever

    def retrieve(self, questions: list[str], exclude: Sequence[Iterable[str]] | None = None) -> list[list[Any]]:
        return self.task_step.retrieve(questions, exclude)

    def retriever_scores(self, questions: list[str], passages: list[list[Any]]) -> torch.Tensor:
        return self.task_step.retriever_scores(questions, passages)

    def reindex(self) -> None:
        self.task_step.reindex(self.step)
