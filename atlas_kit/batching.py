"""Length-bucketed batch encoding: the one inference engine behind every encoder in atlas_kit.

The retriever (query and passage embeddings, index builds), the bi-encoder reranker and the
cross-encoder reranker all encode a flat list of inputs the same way: tokenize once without
padding, sort by token length and cut the sorted list into batches - of a fixed size, or under a
padded-token budget (``max_tokens_per_batch``) so that short inputs travel in large batches and
long ones in small batches. Batches run under ``torch.inference_mode`` with
AMP (bf16/fp16) on CUDA, pinned host memory and non-blocking host-to-device copies; each device
keeps its outputs until the end and returns them with one device-to-host copy. With several
devices the batches are dealt round-robin to one model replica per device, one thread each
(PyTorch releases the GIL inside kernels, so the devices run concurrently).
"""
from __future__ import annotations

import copy
import threading
import weakref
from contextlib import nullcontext
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = [
    "autocast_context",
    "plan_batches",
    "pad_batch",
    "padding_collate",
    "resolve_devices",
    "ReplicaCache",
    "EncodeStats",
    "run_batches",
]

PAD_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def autocast_context(device: torch.device, enabled: bool = True):
    """bf16 (or fp16 where bf16 is unsupported) autocast on CUDA; a no-op on CPU, where autocast
    would slow BERT down and change numerics."""
    if not enabled or device.type != "cuda":
        return nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def plan_batches(
    lengths: Sequence[int] | np.ndarray,
    batch_size: int | None = 128,
    max_tokens_per_batch: int | None = None,
    sort: bool = True,
) -> list[np.ndarray]:
    """Cut inputs into batches (arrays of input indices), longest first.

    ``lengths`` are token counts. With ``sort`` (the default) inputs are ordered by decreasing
    length (stable, so equal lengths keep their input order), which minimises padding. Without a
    token budget every batch holds ``batch_size`` inputs. With ``max_tokens_per_batch`` a batch
    grows while ``len(batch) * longest_in_batch <= max_tokens_per_batch`` (the padded token count)
    and, if ``batch_size`` is set, ``len(batch) <= batch_size``; an input longer than the budget
    forms a batch of its own. Every index appears in exactly one batch.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    n = len(lengths)
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens_per_batch is not None and max_tokens_per_batch < 1:
        raise ValueError(f"max_tokens_per_batch must be >= 1, got {max_tokens_per_batch}")
    if batch_size is None and max_tokens_per_batch is None:
        raise ValueError("give batch_size, max_tokens_per_batch, or both")
    order = np.argsort(-lengths, kind="stable") if sort else np.arange(n)
    if max_tokens_per_batch is None:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    ordered = lengths[order].tolist()
    cap = batch_size or n
    batches = []
    start = 0
    while start < n:
        width = ordered[start]
        end = start + 1
        while end < n and end - start < cap:
            w = max(width, ordered[end])
            if w * (end - start + 1) > max_tokens_per_batch:
                break
            width, end = w, end + 1
        batches.append(order[start:end])
        start = end
    return batches


def pad_batch(
    encodings: Mapping[str, Sequence[Sequence[int]]],
    sel: Sequence[int],
    pad_token_id: int,
    pad_token_type_id: int = 0,
    padding_side: str = "right",
) -> dict[str, torch.Tensor]:
    """Pad the pre-tokenized inputs ``sel`` of ``encodings`` (lists of token ids, as a fast
    tokenizer returns them with ``padding=False``) into int64 tensors of the batch's longest
    length. Equivalent to ``tokenizer.pad`` for these keys, without its per-call overhead."""
    ids = encodings["input_ids"]
    rows = [ids[i] for i in sel]
    width = max((len(r) for r in rows), default=0)
    b = len(rows)
    out: dict[str, np.ndarray] = {
        "input_ids": np.full((b, width), pad_token_id, dtype=np.int64),
        "attention_mask": np.zeros((b, width), dtype=np.int64),
    }
    types = encodings.get("token_type_ids")
    if types is not None:
        out["token_type_ids"] = np.full((b, width), pad_token_type_id, dtype=np.int64)
    left = padding_side == "left"
    for j, (i, row) in enumerate(zip(sel, rows)):
        n = len(row)
        s = slice(width - n, width) if left else slice(0, n)
        out["input_ids"][j, s] = row
        out["attention_mask"][j, s] = 1
        if types is not None:
            out["token_type_ids"][j, s] = types[i]
    return {k: torch.from_numpy(v) for k, v in out.items()}


def padding_collate(tokenizer: Any, encodings: Mapping[str, Sequence[Sequence[int]]]
                    ) -> Callable[[Sequence[int]], dict[str, torch.Tensor]]:
    """``collate(sel)`` for :func:`run_batches`: pads the selected pre-tokenized inputs with the
    tokenizer's own pad token, pad token type and padding side."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    pad_type = getattr(tokenizer, "pad_token_type_id", 0) or 0
    side = getattr(tokenizer, "padding_side", "right")

    def collate(sel: Sequence[int]) -> dict[str, torch.Tensor]:
        return pad_batch(encodings, sel, pad_id, pad_type, side)

    return collate


def resolve_devices(devices: Sequence[str | torch.device] | str | torch.device | None,
                    model_device: torch.device | None = None) -> list[torch.device]:
    """The devices to encode on, in order (one worker each).

    ``None``: the model's own device when it is an accelerator, else the first CUDA GPU when one
    is visible, else the CPU. Several CUDA devices enable data-parallel encoding. A device named
    twice gets two workers (``["cpu", "cpu"]`` exercises the data-parallel path on a CPU-only
    machine; CPU workers share one model).
    """
    if devices is None:
        if model_device is not None and model_device.type != "cpu":
            return [model_device]
        return [torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")]
    if isinstance(devices, (str, torch.device)):
        devices = [devices]
    out: list[torch.device] = []
    for d in devices:
        d = torch.device(d)
        if d.type == "cuda" and d.index is None:
            d = torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
        out.append(d)
    if not out:
        raise ValueError("devices must name at least one device")
    return out


def _weights_version(module: torch.nn.Module) -> int:
    return sum(t._version for t in module.state_dict().values())


class ReplicaCache:
    """Per-device copies of models, refreshed when a source's weights change.

    A source module is used as is on its own device (and by every CPU worker); on any other
    device one deep copy per (source, device) is made (outside inference mode, so its tensors stay
    ordinary ones) and reused until an optimizer step or ``load_state_dict`` bumps the source's
    version counters. Several sources (a retriever's query and passage encoders) share one cache
    without evicting each other's copies.
    """

    def __init__(self) -> None:
        self._replicas: dict[tuple[int, torch.device], tuple[Any, int, torch.nn.Module]] = {}
        self._lock = threading.Lock()

    def get(self, source: torch.nn.Module, source_device: torch.device,
            devices: Sequence[torch.device]) -> list[tuple[torch.device, torch.nn.Module]]:
        out = []
        version = _weights_version(source)
        with self._lock:
            for d in devices:
                if _same_device(d, source_device):
                    out.append((d, source))
                    continue
                key = (id(source), d)
                cached = self._replicas.get(key)
                if cached is None or cached[0]() is not source or cached[1] != version:
                    with torch.inference_mode(False), torch.no_grad():
                        replica = copy.deepcopy(source).to(d)
                    replica.eval()
                    self._replicas[key] = (weakref.ref(source), version, replica)
                out.append((d, self._replicas[key][2]))
        return out

    def clear(self) -> None:
        with self._lock:
            self._replicas.clear()

    def __deepcopy__(self, memo: dict) -> "ReplicaCache":
        # replicas are derived from their source's weights: a copied owner starts with none
        # (and a lock cannot be copied)
        return ReplicaCache()

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    ia = a.index if a.index is not None else torch.cuda.current_device()
    ib = b.index if b.index is not None else torch.cuda.current_device()
    return ia == ib


@dataclass
class EncodeStats:
    """What the last call did: inputs encoded / reused, batches, real and padded tokens."""

    encoded: int = 0
    reused: int = 0
    batches: int = 0
    tokens: int = 0
    padded_tokens: int = 0
    max_batch_tokens: int = 0
    per_device: dict[str, int] = field(default_factory=dict)

    @property
    def padding_ratio(self) -> float:
        """Padded tokens / real tokens (1.0 = no padding at all)."""
        return self.padded_tokens / self.tokens if self.tokens else 1.0

    def as_dict(self) -> dict[str, Any]:
        return {"encoded": self.encoded, "reused": self.reused, "batches": self.batches, "tokens": self.tokens,
                "padded_tokens": self.padded_tokens, "max_batch_tokens": self.max_batch_tokens,
                "padding_ratio": round(self.padding_ratio, 4), "per_device": dict(self.per_device)}


def _to_device(batch: dict[str, Any], device: torch.device, pin_memory: bool) -> dict[str, Any]:
    if device.type == "cpu":
        return batch
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            if pin_memory and device.type == "cuda":
                v = v.pin_memory()
            v = v.to(device, non_blocking=True)
        out[k] = v
    return out


def run_batches(
    batches: Sequence[np.ndarray],
    collate: Callable[[np.ndarray], dict[str, Any]],
    forward: Callable[[torch.nn.Module, dict[str, Any]], torch.Tensor],
    models: Sequence[tuple[torch.device, torch.nn.Module]],
    n: int,
    amp: bool = True,
    pin_memory: bool = True,
    stats: EncodeStats | None = None,
    progress: Callable[[int], Any] | None = None,
) -> torch.Tensor:
    """Run ``forward(model, collate(batch))`` over ``batches`` and scatter the rows back.

    Returns a float32 CPU tensor whose row ``i`` is the output for input ``i`` (of ``n``).
    ``models`` holds one (device, model) worker per entry; batch ``j`` runs on worker
    ``j % n_workers``. Outputs stay on their device until all of the worker's batches are done
    (no per-batch synchronisation), then come back in one copy. ``progress(n_inputs)`` is called
    after each batch (e.g. a tqdm bar's ``update``).
    """
    workers = list(models)
    if progress is not None and len(workers) > 1:
        report, lock = progress, threading.Lock()

        def progress(n_inputs: int) -> Any:  # worker threads report one at a time
            with lock:
                return report(n_inputs)
    if not batches:
        return torch.empty((0,), dtype=torch.float32)
    assignment: list[list[np.ndarray]] = [list(batches[w :: len(workers)]) for w in range(len(workers))]

    def work(w: int) -> tuple[np.ndarray, torch.Tensor, int, int, int] | None:
        mine = assignment[w]
        if not mine:
            return None
        device, model = workers[w]
        outs, tokens, padded, widest = [], 0, 0, 0
        # the worker's device is current only inside this block (the caller's current device is untouched)
        with torch.cuda.device(device) if device.type == "cuda" else nullcontext(), torch.inference_mode():
            for sel in mine:
                batch = collate(sel)
                mask = batch.get("attention_mask")
                if isinstance(mask, torch.Tensor):
                    tokens += int(mask.sum())
                    padded += mask.numel()
                    widest = max(widest, mask.numel())
                batch = _to_device(batch, device, pin_memory)
                with autocast_context(device, enabled=amp):
                    y = forward(model, batch)
                outs.append(y.float())
                if progress is not None:
                    progress(len(sel))
            result = torch.cat(outs).cpu()
        return np.concatenate(mine), result, tokens, padded, widest

    unique_models = list({id(m): m for _, m in workers}.values())
    was_training = [m.training for m in unique_models]
    for m in unique_models:
        m.eval()
    try:
        if len(workers) == 1:
            results = [work(0)]
        else:
            with ThreadPoolExecutor(max_workers=len(workers), thread_name_prefix="atlas-encode") as pool:
                results = list(pool.map(work, range(len(workers))))
    finally:
        for m, t in zip(unique_models, was_training):
            m.train(t)

    first = next(r for r in results if r is not None)
    out = torch.empty((n, *first[1].shape[1:]), dtype=torch.float32)
    for (d, _), r in zip(workers, results):
        if r is None:
            continue
        idx, y, tokens, padded, widest = r
        out[torch.from_numpy(idx)] = y
        if stats is not None:
            stats.tokens += tokens
            stats.padded_tokens += padded
            stats.max_batch_tokens = max(stats.max_batch_tokens, widest)
            stats.per_device[str(d)] = stats.per_device.get(str(d), 0) + len(idx)
    if stats is not None:
        stats.batches += len(batches)
    return out
