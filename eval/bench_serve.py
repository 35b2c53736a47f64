"""Serving throughput and latency: request batching on vs off at 1, 8 and 32 concurrent clients.

A real ``atlas-kit serve`` app (uvicorn, 127.0.0.1, ephemeral port) runs in a child process over
the bundled all-MiniLM-L6-v2 retriever and a FAISS Flat index of a generated world's passages;
``POST /v1/retrieve`` with one question per request, so the cost is the MiniLM query encoder, which
is where fusing requests pays. The parent process runs closed-loop HTTP clients (each sends its next
request when the previous one returns) for a fixed time per setting and measures requests/s and
client-side p50/p99 latency (aiohttp clients; uvicorn uses uvloop and httptools when installed,
as ``uvicorn[standard]`` in the ``serve`` extra does). "off" is ``max_batch=1`` (one request per model call, in arrival order,
on the same single model thread); "on" fuses what arrives within ``--window-ms`` up to ``--max-batch``.

Goal: >= 3x the requests/s at 32 clients from batching, with batched p99 at 1 client under 2x the
unbatched p99 at 1 client. Both modes run in one invocation, one after the other, on the same machine.

    python eval/bench_serve.py [--seconds 8] [--threads 1] [--window-ms 0] [--quick] [--name NAME]

``--quick``: 3 s per setting; results go to ``bench_serve_quick.json``.
"""
from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import statistics
import tempfile
import time
from pathlib import Path

from _common import report

CLIENTS = (1, 8, 32)


# ---------------------------------------------------------------------- the server (child process)
def _serve(index_dir: str, max_batch: int, window_ms: float, threads: int, port_queue) -> None:
    import logging
    import socket

    import torch
    import uvicorn

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.serve import create_app

    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(threads)
    retriever = Retriever.default()
    atlas = Atlas(retriever, None, FaissIndex.load(index_dir, retriever=retriever))
    app = create_app(atlas, store=None, window_ms=window_ms, max_batch=max_batch)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port_queue.put(sock.getsockname()[1])
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False)).run(sockets=[sock])


# ---------------------------------------------------------------------- the clients (this process)
async def _closed_loop(base: str, questions: list[str], clients: int, seconds: float, k: int) -> dict:
    import aiohttp  # a lighter client than httpx: the clients share the machine's cores with the server

    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(base, connector=connector, trust_env=False) as http:

        async def client(n: int, until: float, record: bool) -> None:
            nonlocal failures
            i = n
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                async with http.post("/v1/retrieve", json={"questions": [questions[i % len(questions)]], "k": k}) as r:
                    await r.read()
                    ok = r.status == 200
                if record:
                    if ok:
                        latencies.append(time.perf_counter() - t0)
                    else:
                        failures += 1
                i += clients

        async def stats() -> dict:
            async with http.get("/v1/stats") as r:
                return await r.json()

        warm = time.perf_counter() + min(1.0, seconds / 4)
        await asyncio.gather(*(client(n, warm, False) for n in range(clients)))
        before = await stats()
        t0 = time.perf_counter()
        await asyncio.gather(*(client(n, t0 + seconds, True) for n in range(clients)))
        elapsed = time.perf_counter() - t0
        after = await stats()
    calls = after["calls"] - before["calls"]
    latencies.sort()
    return {
        "requests": len(latencies), "failed": failures, "seconds": round(elapsed, 2),
        "req_per_s": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "mean_batch": (after["items"] - before["items"]) / calls if calls else 0.0,
    }


def _build_index(folder: Path, entities: int, threads: int) -> tuple[list[str], int, dict]:
    """Index a generated world's passages; also time the query encoder alone, in-process, at the
    batch sizes the server sees (the ceiling of what batching can gain)."""
    import torch

    from atlas_kit import Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.passages import Passages
    from atlas_kit.world import World

    world = World.generate(n_entities=entities, seed=0)
    passages = Passages.from_records(world.passages())
    retriever = Retriever.default()
    FaissIndex.build(passages, retriever, factory="Flat").save(folder)
    questions = [q.question for q in world.questions()]
    torch.set_num_threads(threads)
    encode = {}
    for n in (1, 32):
        retriever.encode_queries(questions[:n])
        t0, reps = time.perf_counter(), 10
        for r in range(reps):
            retriever.encode_queries(questions[r * n : (r + 1) * n])
        encode[f"encode_ms_per_query_batch_{n}"] = round(1000 * (time.perf_counter() - t0) / reps / n, 2)
    return questions, len(passages), encode


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="measured time per setting (after a warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads in the server (1: steadier on a shared machine)")
    ap.add_argument("--window-ms", type=float, default=0.0, help="batching window (the server default: 0)")
    ap.add_argument("--name", default=None, help="results file name (default bench_serve, or bench_serve_quick)")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--entities", type=int, default=200, help="world size (passages to index)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="3 s per setting")
    args = ap.parse_args()
    seconds = 3.0 if args.quick else args.seconds

    ctx = mp.get_context("spawn")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        index_dir = Path(tmp) / "index"
        questions, n_passages, encode = _build_index(index_dir, args.entities, args.threads)
        print(encode, flush=True)
        for mode, max_batch in (("off", 1), ("on", args.max_batch)):
            ports = ctx.Queue()
            server = ctx.Process(target=_serve, args=(str(index_dir), max_batch, args.window_ms, args.threads, ports),
                                 daemon=True)
            server.start()
            try:
                base = f"http://127.0.0.1:{ports.get(timeout=300)}"
                _wait_ready(base)
                for clients in CLIENTS:
                    m = asyncio.run(_closed_loop(base, questions, clients, seconds, args.k))
                    rows.append({"batching": mode, "clients": clients, **m})
                    print(rows[-1], flush=True)
            finally:
                server.terminate()
                server.join(30)
                ports.close()

    def row(mode: str, clients: int) -> dict:
        return next(r for r in rows if r["batching"] == mode and r["clients"] == clients)

    speedup = {c: row("on", c)["req_per_s"] / row("off", c)["req_per_s"] for c in CLIENTS}
    p99_ratio_1 = row("on", 1)["p99_ms"] / row("off", 1)["p99_ms"]
    p99_ratio_32 = row("on", 32)["p99_ms"] / row("off", 1)["p99_ms"]
    for r in rows:
        r["speedup_vs_off"] = round(speedup[r["clients"]], 2) if r["batching"] == "on" else 1.0
    meta = {
        "endpoint": "/v1/retrieve, 1 question per request", "k": args.k, "passages": n_passages,
        "retriever": "all-MiniLM-L6-v2 (bundled)", "index": "FAISS Flat", "torch_threads": args.threads,
        "window_ms": args.window_ms, "max_batch": args.max_batch, "seconds_per_setting": seconds,
        "in_process_query_encoder": encode,
        "throughput_speedup": {str(c): round(s, 2) for c, s in speedup.items()},
        "p99_on_1_client_over_p99_off_1_client": round(p99_ratio_1, 2),
        "p99_on_32_clients_over_p99_off_1_client": round(p99_ratio_32, 2),
        "goal_met": {"speedup_32_ge_3": speedup[32] >= 3.0, "p99_on_1_lt_2x_off_1": p99_ratio_1 < 2.0},
        "note": "measured on a shared machine (other jobs running); compare the rows of one run, not across runs",
    }
    report(args.name or ("bench_serve_quick" if args.quick else "bench_serve"), rows, meta,
           title="atlas-kit serve: batching off vs on (requests/s, client latency)")
    print(f"throughput speedup from batching: {', '.join(f'{c} clients {s:.2f}x' for c, s in speedup.items())}; "
          f"p99 on/off at 1 client {p99_ratio_1:.2f}x; p99 on at 32 clients / off at 1 client {p99_ratio_32:.2f}x")


def _wait_ready(base: str, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", trust_env=False, timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"server at {base} did not come up in {timeout:.0f}s")


if __name__ == "__main__":
    main()
