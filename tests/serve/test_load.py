"""Loopback load test: 16 concurrent clients against a real uvicorn server on 127.0.0.1 while an
admin swaps between two index versions 50 times. Bounded in count (50 swaps, at most 60 requests
per client) and time (a 120 s cap); no timing is asserted."""
from __future__ import annotations

import asyncio
import itertools

import httpx

from atlas_kit.serve import create_app
from tests.serve.conftest import TOKEN, running_server

CLIENTS = 16
SWAPS = 50
MAX_REQUESTS_PER_CLIENT = 60


async def _load(base: str) -> tuple[list[dict], list[str], list[str]]:
    responses: list[dict] = []
    failures: list[str] = []
    swapped: list[str] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=CLIENTS + 1)
    async with httpx.AsyncClient(base_url=base, trust_env=False, timeout=30.0, limits=limits) as http:

        async def client(n: int) -> None:
            for i in range(MAX_REQUESTS_PER_CLIENT):
                if done.is_set() and i >= 4:
                    return
                if (n + i) % 3 == 2:
                    r = await http.post("/v1/ask", json={"question": f"leader of Zorvania {n} {i}", "k": 4})
                else:
                    r = await http.post("/v1/retrieve", json={"questions": [f"capital {n}", f"sea {i}"], "k": 8})
                if r.status_code != 200:
                    failures.append(f"{r.status_code}: {r.text[:200]}")
                    continue
                responses.append(r.json())

        async def admin() -> None:
            try:
                for ref in itertools.islice(itertools.cycle(["toy@v2", "toy@v1"]), SWAPS):
                    r = await http.post("/v1/index/swap", json={"ref": ref},
                                        headers={"Authorization": f"Bearer {TOKEN}"})
                    if r.status_code != 200:
                        failures.append(f"swap {ref}: {r.status_code} {r.text[:200]}")
                    swapped.append(r.json()["index"]["ref"])
                    await asyncio.sleep(0.005)
            finally:
                done.set()

        await asyncio.wait_for(asyncio.gather(admin(), *(client(n) for n in range(CLIENTS))), timeout=120)
    return responses, failures, swapped


def _ids(body: dict) -> list[str]:
    if "results" in body:
        return [p["id"] for hits in body["results"] for p in hits]
    return [p["id"] for p in body["passages"]]


def test_hot_swap_under_concurrent_load(world):
    atlas = world.atlas("toy@v1")
    app = create_app(atlas, world.store, admin_token=TOKEN, window_ms=2.0, max_batch=32)
    with running_server(app) as base:
        responses, failures, swapped = asyncio.run(_load(base))
        stats = httpx.get(f"{base}/v1/stats", trust_env=False).json()
    assert failures == []
    assert len(swapped) == SWAPS and swapped[-1] == "toy@v1"
    assert len(responses) >= CLIENTS * 4
    seen = set()
    for body in responses:
        version = body["index"]["version"]
        assert body["index"]["name"] == "toy" and version in {"v1", "v2"}
        ids = _ids(body)
        assert ids and all(pid.startswith(f"{version}-") for pid in ids), (version, ids)
        if "results" in body:
            assert all(len(hits) == (6 if version == "v1" else 8) for hits in body["results"])
        seen.add(version)
    assert seen == {"v1", "v2"}  # the swaps really happened while requests were answered
    assert stats["largest_batch"] > 1 and stats["requests"] == len(responses)  # concurrent requests were fused
