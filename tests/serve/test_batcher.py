"""The batcher alone (no model): fusing, splitting back, keys, bounds, errors."""
from __future__ import annotations

import asyncio
import threading

import pytest

from atlas_kit.serve.batcher import Batcher


class Recorder:
    """A batch function that records each call and answers item -> (key, item * 10)."""

    def __init__(self, fail_on=None):
        self.calls: list[tuple[object, list[int]]] = []
        self.threads: set[str] = set()
        self.fail_on = fail_on

    def __call__(self, key, items):
        self.calls.append((key, list(items)))
        self.threads.add(threading.current_thread().name)
        if self.fail_on is not None and self.fail_on in items:
            raise ValueError(f"bad item {self.fail_on}")
        return [(key, i * 10) for i in items]


def run(coro):
    return asyncio.run(coro)


async def _with(batcher, body):
    await batcher.start()
    try:
        return await body()
    finally:
        await batcher.stop()


def test_concurrent_requests_fuse_into_one_call_and_split_back():
    fn = Recorder()
    b = Batcher(fn, window_ms=50, max_batch=32)

    async def body():
        return await asyncio.gather(*(b.submit("k", [i, i + 100]) for i in range(5)))

    results = run(_with(b, body))
    assert results == [[("k", i * 10), ("k", (i + 100) * 10)] for i in range(5)]
    assert len(fn.calls) == 1 and sorted(fn.calls[0][1]) == sorted(x for i in range(5) for x in (i, i + 100))
    assert b.stats.calls == 1 and b.stats.requests == 5 and b.stats.largest == 10
    assert len(fn.threads) == 1 and next(iter(fn.threads)).startswith("atlas-model")


def test_requests_with_different_keys_are_never_fused():
    fn = Recorder()
    b = Batcher(fn, window_ms=50, max_batch=32)

    async def body():
        return await asyncio.gather(b.submit(("retrieve", 3), [1]), b.submit(("retrieve", 5), [2]),
                                    b.submit(("retrieve", 3), [3]))

    results = run(_with(b, body))
    assert results == [[(("retrieve", 3), 10)], [(("retrieve", 5), 20)], [(("retrieve", 3), 30)]]
    assert sorted((k, sorted(v)) for k, v in fn.calls) == [(("retrieve", 3), [1, 3]), (("retrieve", 5), [2])]


def test_max_batch_bounds_a_call_and_keeps_arrival_order():
    fn = Recorder()
    b = Batcher(fn, window_ms=50, max_batch=4)

    async def body():
        return await asyncio.gather(*(b.submit("k", [i]) for i in range(10)))

    results = run(_with(b, body))
    assert [r[0][1] for r in results] == [i * 10 for i in range(10)]
    assert [len(items) for _, items in fn.calls] == [4, 4, 2]
    assert [i for _, items in fn.calls for i in items] == list(range(10))


def test_a_request_larger_than_max_batch_runs_alone():
    fn = Recorder()
    b = Batcher(fn, window_ms=20, max_batch=2)

    async def body():
        return await asyncio.gather(b.submit("k", [1]), b.submit("k", [2, 3, 4]), b.submit("k", [5]))

    results = run(_with(b, body))
    assert [[x for _, x in r] for r in results] == [[10], [20, 30, 40], [50]]
    assert [items for _, items in fn.calls] == [[1], [2, 3, 4], [5]]


def test_max_batch_one_is_unbatched():
    fn = Recorder()
    b = Batcher(fn, window_ms=50, max_batch=1)

    async def body():
        return await asyncio.gather(*(b.submit("k", [i]) for i in range(4)))

    run(_with(b, body))
    assert [items for _, items in fn.calls] == [[0], [1], [2], [3]]


def test_an_error_reaches_every_request_of_its_batch_and_the_batcher_goes_on():
    fn = Recorder(fail_on=2)
    b = Batcher(fn, window_ms=50, max_batch=8)

    async def body():
        first = await asyncio.gather(*(b.submit("k", [i]) for i in range(3)), return_exceptions=True)
        second = await b.submit("k", [7])
        return first, second

    first, second = run(_with(b, body))
    assert all(isinstance(r, ValueError) and "bad item 2" in str(r) for r in first)
    assert second == [("k", 70)]


def test_bad_settings_and_use_before_start():
    with pytest.raises(ValueError, match="max_batch"):
        Batcher(Recorder(), max_batch=0)
    with pytest.raises(ValueError, match="window_ms"):
        Batcher(Recorder(), window_ms=-1)
    with pytest.raises(RuntimeError, match="not started"):
        run(Batcher(Recorder()).submit("k", [1]))
