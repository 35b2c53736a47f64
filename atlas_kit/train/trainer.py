"""Joint few-shot training of reader and retriever (Atlas, Section 2.2-2.4).

Each step: retrieve the top passages for the batch (no gradient) -> optionally re-embed candidates
with the current passage encoder (``rerank``) -> retriever scores *with* gradient for those
passages -> reader loss on the answers, and the reader's signal for the chosen retriever objective
-> ``reader_loss + retriever_loss`` -> one optimizer with separate learning rates. The index is
kept in step with the passage encoder by the configured refresh strategy.

Deterministic on CPU: the batch order is a pure function of (seed, step), and the torch RNG state
is checkpointed, so resuming from a checkpoint reproduces the uninterrupted run.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from safetensors.torch import load_file
from tqdm.auto import tqdm

from atlas_kit.api import Atlas
from atlas_kit.index.faiss_index import FaissIndex
from atlas_kit.losses import retriever_loss
from atlas_kit.evaluation import evaluate, write_report
from atlas_kit.reader_signals import reader_signal
from atlas_kit.batching import autocast_context
from atlas_kit.storage import atomic_dir, atomic_write_json, atomic_write_text, read_json
from atlas_kit.tasks.qa import QAExample
from atlas_kit.train.config import TrainConfig, due, parse_schedule

__all__ = ["Trainer"]

log = logging.getLogger(__name__)


def _lr_lambda(cfg: TrainConfig):
    """Atlas's schedules (``src/util.py``): after warm-up, ``linear`` falls in a straight line and
    ``cosine`` along a quarter cosine, both from the peak to ``lr_min_ratio`` x the peak at
    ``cfg.steps``; ``constant`` stays at the peak. Warm-up is (step + 1) / warmup_steps."""
    floor = cfg.lr_min_ratio

    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
        if cfg.scheduler == "cosine":
            return floor + (1.0 - floor) * math.cos(0.5 * math.pi * progress)
        return 1.0 - (1.0 - floor) * progress

    return f


def _init_distributed() -> tuple[int, int]:
    """(rank, world size). Under ``torchrun`` / ``accelerate launch`` (``WORLD_SIZE`` > 1) the
    process group is initialised here if the launcher has not done it: NCCL on GPUs, Gloo on CPU."""
    import torch.distributed as dist

    if not dist.is_available():
        return 0, 1
    if not dist.is_initialized():
        if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            return 0, 1
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def gold_indicator(batch: Sequence[QAExample], passages: list[list[Any]]) -> torch.Tensor:
    """[B, k] 1.0 where a retrieved passage is one of the example's ``gold_ids`` (the ``gold``
    objective: supervised retriever training, the upper bound for the reader-signal objectives)."""
    missing = [e.id for e in batch if not e.gold_ids]
    if missing:
        raise ValueError(f"retriever_loss='gold' needs gold passage ids; example {missing[0]!r} has none")
    golds = [set(e.gold_ids) for e in batch]
    return torch.tensor([[1.0 if p.id in g else 0.0 for p in ps] for g, ps in zip(golds, passages)])


class Trainer:
    """Fits ``atlas.reader`` (and ``atlas.retriever`` unless the objective is ``none``).

    Use ``atlas.trainer(config).fit(train, eval)`` or ``Trainer(atlas, config)``.
    """

    def __init__(self, atlas: Atlas, config: TrainConfig | dict[str, Any] | None = None) -> None:
        if atlas.reader is None:
            raise ValueError("training needs an Atlas with a reader")
        self.atlas = atlas
        self.cfg = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(dict(config or {}))
        self.rank, self.world_size = _init_distributed()
        if self.world_size > 1 and torch.cuda.is_available():
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            atlas.reader.to(device)
            atlas.retriever.to(device)
            atlas.retriever.default_devices = [device]  # one GPU per rank: no replicas on the others
        self.reader = atlas.reader
        self.retriever = atlas.retriever
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self._schedule = parse_schedule(self.cfg.refresh_schedule)
        torch.manual_seed(self.cfg.seed)
        random.seed(self.cfg.seed)
        np.random.seed(self.cfg.seed)
        if self.cfg.refresh == "query_side":
            self.retriever.freeze_passage_encoder()
        if self.cfg.retriever_dropout is not None:
            self.retriever.set_dropout(self.cfg.retriever_dropout)
        if self.cfg.gradient_checkpointing:
            self.reader.gradient_checkpointing_enable()
            self.retriever.gradient_checkpointing_enable()
        groups = [{"params": [p for p in self.reader.parameters() if p.requires_grad], "lr": self.cfg.reader_lr}]
        if self.cfg.trains_retriever:
            groups.append({"params": [p for p in self.retriever.parameters() if p.requires_grad], "lr": self.cfg.retriever_lr})
            if not groups[-1]["params"]:
                raise ValueError("the retriever has no trainable parameters (requires_grad is off everywhere)")
        # with retriever_loss="none" the retriever is simply left out of the optimizer; its
        # requires_grad flags are not touched, so a later Trainer on the same modules can train it
        self.optimizer = torch.optim.AdamW(groups, weight_decay=self.cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(self.cfg))
        # rank 0 alone writes the run folder, evaluates and checkpoints
        self.out = Path(self.cfg.output_dir) if self.cfg.output_dir and self.rank == 0 else None
        if self.world_size > 1:
            self._broadcast_parameters()
        self._tb = None

    # ------------------------------------------------------------------ data order
    def _batch(self, examples: Sequence[QAExample], step: int, micro: int) -> list[QAExample]:
        """Examples of micro-batch ``micro`` of optimizer step ``step``: a pure function of the seed."""
        # global micro-batch number: ranks take consecutive slices, so N ranks x batch b see the
        # same examples per step as one process with batch N*b
        g = (step * self.cfg.accumulation + micro) * self.world_size + self.rank
        start = g * self.cfg.batch_size
        epoch, offset = divmod(start, len(examples))
        out = []
        while len(out) < self.cfg.batch_size:
            perm = np.random.default_rng(self.cfg.seed * 1_000_003 + epoch).permutation(len(examples))
            take = perm[offset : offset + self.cfg.batch_size - len(out)]
            out.extend(examples[int(i)] for i in take)
            epoch, offset = epoch + 1, 0
        return out

    # ------------------------------------------------------------------ retrieval
    def retrieve(self, questions: list[str], exclude: Sequence[Iterable[str]] | None = None) -> list[list[Any]]:
        """The ``n_context`` passages each question's reader sees (no gradient), leaving out the
        ids in ``exclude[i]`` (e.g. the passage a masked-span query was cut from)."""
        k = self.cfg.n_context
        excl = [set(e) for e in exclude] if exclude is not None else [set() for _ in questions]
        extra = max((len(e) for e in excl), default=0)
        if self.cfg.refresh == "rerank":
            from atlas_kit.rerank import BiEncoderReranker

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
            from atlas_kit.rerank.bi_encoder import stored_passage_vectors

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

    # ------------------------------------------------------------------ one step
    def train_step(self, examples: Sequence[QAExample]) -> dict[str, float]:
        self.reader.train()
        if self.cfg.trains_retriever:
            self.retriever.train()
            if self._passage_encoder_frozen():
                self.retriever.passage_encoder.eval()  # frozen: no dropout noise, same vectors as the index
        logs: dict[str, float] = {"reader_loss": 0.0, "retriever_loss": 0.0}
        self.optimizer.zero_grad(set_to_none=True)
        device = self.reader.device
        for micro in range(self.cfg.accumulation):
            batch = self._batch(examples, self.step, micro)
            questions, answers = [e.question for e in batch], [e.target for e in batch]
            passages = self.retrieve(questions, [e.metadata.get("exclude_ids", ()) for e in batch])
            with autocast_context(device, enabled=self.cfg.amp is not None):
                r_loss = self.reader.loss(questions, passages, answers)
                loss = r_loss
                if self.cfg.trains_retriever:
                    if self.cfg.retriever_loss == "gold":
                        gold = gold_indicator(batch, passages)
                    else:
                        gold = reader_signal(self.cfg.retriever_loss, self.reader, questions, passages, answers,
                                             **self.cfg.signal_options)
                    scores = self.retriever_scores(questions, passages)
                    ret_loss = retriever_loss(self.cfg.retriever_loss, scores, gold.to(scores.device),
                                              temperature_score=self.cfg.temperature_score,
                                              temperature_gold=self.cfg.temperature_gold)
                    loss = loss + ret_loss
                    logs["retriever_loss"] += ret_loss.item() / self.cfg.accumulation
            (loss / self.cfg.accumulation).backward()
            logs["reader_loss"] += r_loss.item() / self.cfg.accumulation
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.world_size > 1:
            self._average_gradients(params)
            logs = self._average_logs(logs)
        if self.cfg.clip_groups == "joint":  # Atlas: one norm over reader and retriever together
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, self.cfg.clip_norm))
        else:  # each group clipped on its own: the retriever's gradient scale cannot shrink the reader's step
            norms = [float(torch.nn.utils.clip_grad_norm_(g["params"], self.cfg.clip_norm))
                     for g in self.optimizer.param_groups]
            logs["grad_norm"] = math.sqrt(sum(n * n for n in norms))
            logs["grad_norm_reader"] = norms[0]
            if len(norms) > 1:
                logs["grad_norm_retriever"] = norms[1]
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        logs["lr_reader"] = self.optimizer.param_groups[0]["lr"]
        if self.cfg.refresh == "reindex" and self.cfg.trains_retriever and due(self._schedule, self.step):
            self.reindex()
            logs["reindexed"] = 1.0
        return logs

    # ------------------------------------------------------------------ distributed
    def _broadcast_parameters(self) -> None:
        """Every rank starts from rank 0's weights (random inits may differ between processes)."""
        import torch.distributed as dist

        for module in (self.reader, self.retriever):
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)

    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    def _average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """All-reduce (mean) of the gradients in one flat buffer per device and dtype. Explicit
        rather than ``DistributedDataParallel`` wrapping, because one step runs several custom
        forwards (FiD reader, reader signal, query and passage encoders) through different modules."""
        import torch.distributed as dist

        buckets: dict[tuple[Any, Any], list[torch.nn.Parameter]] = {}
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            buckets.setdefault((p.grad.device, p.grad.dtype), []).append(p)
        for group in buckets.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat)
            flat /= self.world_size
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def _average_logs(self, logs: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        keys = sorted(logs)
        t = torch.tensor([float(logs[k]) for k in keys], dtype=torch.float64,
                         device=next(self.reader.parameters()).device)
        dist.all_reduce(t)
        return {k: float(v) / self.world_size for k, v in zip(keys, t.tolist())}

    def reindex(self) -> None:
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
        log.info("re-indexed %d passages in %.1fs at step %d", len(new), time.perf_counter() - t0, self.step)

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
    @torch.no_grad()
    def evaluate(self, examples: Sequence[QAExample], write: bool = False) -> dict[str, Any]:
        """The task's metrics on ``examples`` (see :mod:`atlas_kit.evaluation`: EM/F1 and recall@k
        for QA, accuracy by generation/likelihood/de-biased for multiple choice, KILT scores);
        ``write`` also leaves the report (predictions, tables, plots) in the run folder."""
        result = evaluate(self.atlas, examples, k=self.cfg.n_context, batch_size=self.cfg.eval_batch_size,
                          task=self.cfg.task, debias=self.cfg.debias)
        if write and self.out is not None:
            write_report(self.out, result, title=f"{self.out.name}: step {self.step}", extra={"step": self.step})
        return result.metrics

    # ------------------------------------------------------------------ loop
    def fit(self, train: Sequence[QAExample], eval_examples: Sequence[QAExample] | None = None,
            resume_from: str | os.PathLike | None = None, show_progress: bool | None = None) -> dict[str, Any]:
        """Train for ``config.steps`` optimizer steps; returns the final metrics."""
        if not train:
            raise ValueError("no training examples")
        if resume_from is not None:
            self.load_checkpoint(resume_from)
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.out / "config.json", self.cfg.to_dict())
            # the log holds exactly the steps behind the current weights: a resumed run drops the
            # steps logged after its checkpoint (they are re-run), a fresh run starts a new log
            atomic_write_text(self.out / "train_log.jsonl", "".join(json.dumps(h) + "\n" for h in self.history))
        bar = tqdm(total=self.cfg.steps, initial=self.step, desc="train", disable=show_progress is False or self.rank != 0)
        while self.step < self.cfg.steps:
            logs = self.train_step(train)
            logs["step"] = self.step
            if self.cfg.eval_every and eval_examples and self.step % self.cfg.eval_every == 0:
                if self.rank == 0:
                    logs.update({f"eval_{k}": v for k, v in self.evaluate(eval_examples).items()})
                self._barrier()  # the other ranks wait here, not inside the next step's all-reduce
            self.history.append(logs)
            self._log(logs)
            if self.cfg.save_every and self.out is not None and self.step % self.cfg.save_every == 0:
                self.save_checkpoint(self.out / f"checkpoint-{self.step}")
            bar.update(1)
            bar.set_postfix(loss=f"{logs['reader_loss']:.3f}")
        bar.close()
        final: dict[str, Any] = {"step": self.step}
        if eval_examples and self.rank == 0:
            final.update(self.evaluate(eval_examples, write=True))
        self._barrier()
        if self.out is not None:
            if not eval_examples:
                atomic_write_json(self.out / "metrics.json", final)
            self._plot()
            if self._tb is not None:
                self._tb.close()
        return final

    def _log(self, logs: dict[str, Any]) -> None:
        if self.out is None:
            return
        with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(logs) + "\n")
        if self.cfg.tensorboard:
            if self._tb is None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard is an optional extra
                    self.cfg.tensorboard = False
                    return
                self._tb = SummaryWriter(str(self.out / "tensorboard"))
            for key, value in logs.items():
                if key != "step" and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, logs["step"])

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        if not steps:
            return
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(steps, [h["reader_loss"] for h in self.history], label="reader loss")
        if self.cfg.trains_retriever:
            ax.plot(steps, [h["retriever_loss"] for h in self.history], label=f"retriever loss ({self.cfg.retriever_loss})")
        ax.set_xlabel("step")
        ax.legend()
        fig.tight_layout()
        tmp = self.out / ".loss.png.tmp.png"
        fig.savefig(tmp, dpi=100)
        plt.close(fig)
        os.replace(tmp, self.out / "loss.png")

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, folder: str | os.PathLike) -> None:
        """Weights (safetensors), optimizer/scheduler/RNG state and the step; atomic."""
        with atomic_dir(folder) as tmp:
            self.reader.save_pretrained(tmp / "reader")
            self.retriever.save_pretrained(tmp / "retriever")
            torch.save({"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                        "torch_rng": torch.get_rng_state()}, tmp / "trainer_state.pt")
            atomic_write_json(tmp / "trainer_state.json", {"step": self.step, "config": self.cfg.to_dict(),
                                                            "history": self.history})
            if self.cfg.refresh == "reindex" and isinstance(self.atlas.index, FaissIndex):
                self.atlas.index.save(tmp / "index")

    def load_checkpoint(self, folder: str | os.PathLike) -> None:
        """Restore a checkpoint into this trainer's live modules (exact resume)."""
        folder = Path(folder)
        meta = read_json(folder / "trainer_state.json")
        self.reader.model.load_state_dict(load_file(str(folder / "reader" / "model.safetensors")), strict=False)
        self.reader.model.tie_weights()
        self._load_encoder(self.retriever.query_encoder, folder / "retriever" / "query_encoder")
        if self.retriever.passage_encoder is not None and (folder / "retriever" / "passage_encoder").is_dir():
            self._load_encoder(self.retriever.passage_encoder, folder / "retriever" / "passage_encoder")
        # our own file: weights_only loading refuses anything but tensors and plain containers
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.step = int(meta["step"])
        self.history = list(meta.get("history", []))
        if (folder / "index").is_dir():
            self.atlas.swap_index(FaissIndex.load(folder / "index"), allow_mismatch=True)

    @staticmethod
    def _load_encoder(module: torch.nn.Module, folder: Path) -> None:
        files = sorted(folder.glob("*.safetensors"))
        state: dict[str, torch.Tensor] = {}
        for f in files:
            state.update(load_file(str(f)))
        module.load_state_dict(state)
