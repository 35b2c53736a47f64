"""Request batching: concurrent requests fused into one model call, results split back.

Requests are queued on the event loop. One collector takes the first waiting request, waits up to
``window_ms`` for more (stopping early at ``max_batch`` items), groups what it has by key (requests
fuse only with requests of identical parameters, e.g. the same ``k``, so a fused answer equals the
answer the request would get alone), and runs each group as one call of ``fn(key, items)`` on a
single model thread. While that call runs, new requests queue up and form the next batch.

The default window is 0: fuse only what is already queued, wait for no one. Under load the model
thread is busy most of the time, so batches form while it works; a window only adds latency then
(on the shared 2-core CPU, ``eval/bench_serve.py`` measured 3.31x throughput at 32 clients with a
0 ms window and, in another run, 2.64x with 5 ms). A window pays off for bursts arriving at an idle server whose
model call is cheap relative to the wait (e.g. on a GPU).

The model thread is one thread on purpose: CPU inference already uses every core through torch's
intra-op threads, and tokenizers are not safe to call from several threads at once. With
``max_batch=1`` the batcher is the unbatched baseline: one request per model call, in arrival order.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

__all__ = ["Batcher", "BatchStats"]

log = logging.getLogger(__name__)

BatchFn = Callable[[Hashable, list[Any]], Sequence[Any]]


@dataclass
class _Pending:
    key: Hashable
    items: list[Any]
    future: asyncio.Future


@dataclass
class BatchStats:
    """Counters for monitoring (``GET /v1/stats``) and the benchmark."""

    calls: int = 0
    requests: int = 0
    items: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)

    def record(self, n_requests: int, n_items: int) -> None:
        self.calls += 1
        self.requests += n_requests
        self.items += n_items
        self.largest = max(self.largest, n_items)
        self.sizes[n_items] = self.sizes.get(n_items, 0) + 1


class Batcher:
    """Fuse concurrent calls of ``fn`` that share a key.

    Args:
        fn: ``fn(key, items) -> results``, one result per item, in order; runs on the model thread.
        window_ms: how long the first request of a batch waits for company (0: not at all).
        max_batch: most items (e.g. questions) in one call; a single request larger than this
            still runs, alone.
    """

    def __init__(self, fn: BatchFn, window_ms: float = 0.0, max_batch: int = 32) -> None:
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.fn = fn
        self.window = window_ms / 1000.0
        self.max_batch = max_batch
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the collector on the running loop (the app's lifespan calls this)."""
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atlas-model")
        self._task = asyncio.create_task(self._collect(), name="atlas-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._queue is not None:
            while not self._queue.empty():
                pending = self._queue.get_nowait()
                if not pending.future.done():
                    pending.future.set_exception(RuntimeError("server is shutting down"))
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    async def run_on_model_thread(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the model thread, between batches (for work that must not overlap them)."""
        if self._executor is None:
            raise RuntimeError("batcher is not started")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    # ------------------------------------------------------------------ submitting
    async def submit(self, key: Hashable, items: Sequence[Any]) -> list[Any]:
        """Queue ``items`` under ``key`` and wait for their results (same order)."""
        if self._queue is None:
            raise RuntimeError("batcher is not started")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(key, list(items), future))
        return await future

    # ------------------------------------------------------------------ collecting
    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._queue is not None
        carry: _Pending | None = None  # a request that did not fit the previous batch
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            batch, size = [first], len(first.items)
            deadline = loop.time() + self.window
            while size < self.max_batch:
                if not self._queue.empty():
                    nxt = self._queue.get_nowait()
                else:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        nxt = await asyncio.wait_for(self._queue.get(), remaining)
                    except asyncio.TimeoutError:
                        break
                if size + len(nxt.items) > self.max_batch:
                    carry = nxt  # starts the next batch, so arrival order is kept
                    break
                batch.append(nxt)
                size += len(nxt.items)
            for group in _by_key(batch):
                await self._run(group)

    async def _run(self, group: list[_Pending]) -> None:
        items = [item for p in group for item in p.items]
        key = group[0].key
        loop = asyncio.get_running_loop()
        try:
            results = await loop.run_in_executor(self._executor, self.fn, key, items)
            if len(results) != len(items):
                raise RuntimeError(f"batch function returned {len(results)} results for {len(items)} items")
        except Exception as e:  # every waiting request gets the error; the collector goes on
            for p in group:
                if not p.future.done():
                    p.future.set_exception(e)
            return
        self.stats.record(len(group), len(items))
        start = 0
        for p in group:
            if not p.future.done():  # a client that gave up has a cancelled future
                p.future.set_result(list(results[start : start + len(p.items)]))
            start += len(p.items)


def _by_key(batch: list[_Pending]) -> list[list[_Pending]]:
    groups: dict[Hashable, list[_Pending]] = {}
    for p in batch:
        groups.setdefault(p.key, []).append(p)
    return list(groups.values())
