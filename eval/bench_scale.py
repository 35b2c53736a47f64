"""Scale benchmark: tuned search knobs, appends on large indexes (and, later, streaming builds).

Sections (``--sections``, default all):
- ``tune``: SQuAD-open (1,216 passages, 2,910 questions) with the bundled MiniLM: R@20 of
  ``IVF32,PQ48`` at FAISS's default nprobe=1, at nprobe=8, at the value chosen by
  ``FaissIndex.tune`` (target 0.95 of exact top-20), at the library's default (exact re-ranking
  of 4 x k PQ candidates over the stored embeddings, tuned with it on held-out passage vectors), and
  re-ranked + tuned on 500 question vectors (R@20 also on the 2,410 other questions), against Flat. Passages are encoded once per run
  (``--cache DIR`` keeps the vectors between runs).
- ``add``: time of a 10-passage ``FaissIndex.add`` and ``remove`` to Flat indexes of 10^4 and 10^6
  random vectors (10^5 with ``--quick``); ratio large / small; and one compaction of the removals.
- ``build``: a streaming build (``build_faiss_index``, chunks of 5,000, Flat and IVF256,PQ16) of
  10^4, 10^5, 10^6 (``--quick``: 5,000 and 20,000) synthetic short passages (a jsonl on disk) with a tiny config-built encoder
  (``Retriever.from_config``, 2 layers, hidden 64, 32 tokens), each in a fresh process: peak RSS,
  peak RSS minus the FAISS index's bytes, passages/s, and the same for a raw loop that only encodes
  the same chunks. Then a build killed after half its chunks and resumed (two processes) against an
  uninterrupted one: total time and whether the two indexes are byte-identical.

    python eval/bench_scale.py [--quick] [--sections tune,add,build] [--cache /tmp/bench_scale_cache]

Writes eval/results/bench_scale.json and eval/results/bench_scale.png.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from _common import RESULTS, Timer, report, squad_open_paths


def bench_tune(cache: Path | None) -> list[dict]:
    from atlas_kit import Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.metrics import recall_at_k
    from atlas_kit.tasks import squad_open

    passages, questions = squad_open(*squad_open_paths())
    retriever = Retriever.default()
    files = (cache / "squad_passages.npy", cache / "squad_questions.npy") if cache else None
    if files and all(f.is_file() for f in files):
        emb, q = (np.load(f) for f in files)
    else:
        emb = retriever.encode_passages(passages, show_progress=True)
        q = retriever.encode_queries([x.question for x in questions], show_progress=True)
        if files:
            cache.mkdir(parents=True, exist_ok=True)
            np.save(files[0], emb)
            np.save(files[1], q)
    gold = [x.gold_ids for x in questions]

    def r20(ix: FaissIndex, which: np.ndarray | None = None) -> dict:
        sel = np.arange(len(q)) if which is None else which
        with Timer() as t:
            _, pos = ix.search_vectors(q[sel], 20)
        ids = passages.id_array()
        got = [ids[p[p >= 0]].tolist() for p in pos]
        return {**recall_at_k(got, [gold[i] for i in sel], ks=(1, 20)), "search_s": t.seconds}

    rows = []
    flat = FaissIndex.from_embeddings(emb, passages, factory="Flat")
    rows.append({"index": "Flat", "setting": "exact", **r20(flat)})
    # one trained IVF32,PQ48 index serves every setting (PQ training dominates the time here)
    with Timer() as t_build:
        ivf = FaissIndex.from_embeddings(emb, passages, factory="IVF32,PQ48", target_recall=None, refine=1)
    rows.append({"index": "IVF32,PQ48", "setting": "nprobe=1 (FAISS default)", **r20(ivf), "build_s": t_build.seconds})
    ivf.set_search_params(nprobe=8)
    rows.append({"index": "IVF32,PQ48", "setting": "nprobe=8", **r20(ivf)})
    ivf.manifest.pop("search_params")
    with Timer() as t_tune:
        tuned = ivf.tune(0.95, k=20)
    setting = f"no refine, tuned nprobe={tuned['params']['nprobe']} (recall@20 {tuned['recall']:.3f} of exact)"
    rows.append({"index": "IVF32,PQ48", "setting": setting, **r20(ivf), "tune_s": t_tune.seconds})
    # the library's default for a lossy index: exact re-ranking of 4 x k PQ candidates over the stored
    # (float16) embeddings, the knob tuned on held-out passage vectors (what from_embeddings does)
    assert FaissIndex.from_embeddings(emb[:300], passages.select(range(300)), factory="PQ8").refine == 4
    ivf.set_refine(4)
    ivf.manifest.pop("tuned")
    tuned = ivf.tune(0.95, k=20)
    setting = f"default: refine x4, tuned nprobe={tuned['params']['nprobe']} (recall@20 {tuned['recall']:.3f} of exact)"
    rows.append({"index": "IVF32,PQ48", "setting": setting, **r20(ivf)})
    # the same, tuned on 500 question vectors instead (no labels used); R@20 also on the other questions
    sample = np.sort(np.random.default_rng(0).choice(len(q), 500, replace=False))
    rest = np.setdiff1d(np.arange(len(q)), sample)
    tuned = ivf.tune(0.95, k=20, query_vectors=q[sample], queries=len(sample))
    setting = (f"refine x4, tuned on 500 questions: nprobe={tuned['params']['nprobe']} "
               f"(recall@20 {tuned['recall']:.3f} of exact)")
    held = r20(ivf, rest)
    rows.append({"index": "IVF32,PQ48", "setting": setting, **r20(ivf), "R@20_other_questions": held["R@20"],
                 "flat_R@20_other_questions": r20(flat, rest)["R@20"]})
    for r in rows:
        r["dR@20_vs_flat"] = r["R@20"] - rows[0]["R@20"]
    return rows


def bench_add(sizes: list[int], repeats: int = 5, dim: int = 64) -> list[dict]:
    from atlas_kit.index import FaissIndex
    from atlas_kit.passages import Passages

    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        emb = rng.normal(size=(n, dim)).astype(np.float32)
        passages = Passages.from_records({"id": f"p{i}", "title": "", "text": "x"} for i in range(n))
        ix = FaissIndex.from_embeddings(emb, passages, factory="Flat")
        del emb
        times = []
        for r in range(repeats):
            new = Passages.from_records({"id": f"n{r}-{i}", "title": "", "text": "new"} for i in range(10))
            t0 = time.perf_counter()
            ix.add(new, embeddings=rng.normal(size=(10, dim)).astype(np.float32))
            times.append(time.perf_counter() - t0)
        removes = []
        for r in range(repeats):  # 10 passages each: tombstones (below the compaction threshold)
            t0 = time.perf_counter()
            ix.remove([f"p{r * 10 + i}" for i in range(10)])
            removes.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        ix.compact()
        compact_s = time.perf_counter() - t0
        rows.append({"vectors": n, "add_10_ms_median": 1000 * statistics.median(times),
                     "add_10_ms_min": 1000 * min(times), "remove_10_ms_median": 1000 * statistics.median(removes),
                     "compact_ms": 1000 * compact_s})
    for r in rows:
        r["ratio_vs_smallest"] = r["add_10_ms_median"] / rows[0]["add_10_ms_median"]
        r["remove_ratio_vs_smallest"] = r["remove_10_ms_median"] / rows[0]["remove_10_ms_median"]
    return rows


CHUNK = 5_000  # passages per chunk of the streaming build
WORDS = ("river city lamp copper harbour pine bridge salt fish mountain capital leader company north "
         "island king queen war year song film team river bay lake school church road market").split()


def _child(argv: list[str]) -> None:
    """One measured build in this (fresh) process; prints a JSON line."""
    import hashlib
    import resource

    import faiss
    import torch

    from atlas_kit import Retriever, load_passages
    from atlas_kit.index.build import build_faiss_index

    mode, corpus, out, factory, kill_after = argv[0], argv[1], argv[2], argv[3], int(argv[4])
    chunk = CHUNK
    torch.set_num_threads(2)
    retriever = Retriever.from_config(hidden_size=64, num_layers=2, max_length=32, seed=0)
    passages = load_passages(corpus)
    t0 = time.perf_counter()
    row: dict = {}
    if mode == "raw":  # the same chunks, encoded and thrown away
        for start in range(0, len(passages), chunk):
            retriever.encode_passages(passages.select(range(start, min(start + chunk, len(passages)))), show_progress=False)
    else:
        if kill_after:
            encode, calls = retriever.encode_passages, []

            def dies(*a, **k):
                calls.append(1)
                if len(calls) > kill_after:
                    raise KeyboardInterrupt("simulated kill")
                return encode(*a, **k)

            retriever.encode_passages = dies
        try:
            ix = build_faiss_index(passages, retriever, out, factory=factory, chunk_size=chunk,
                                   resume=mode == "resume", show_progress=False)
            # the high-water mark now, before the measurement itself copies the index (serialising
            # it for its size and digest would add about twice the index to the peak)
            row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            row["seconds"] = time.perf_counter() - t0
            row["index_bytes"] = ix.info()["memory_bytes"]
            row["digest"] = hashlib.sha256(faiss.serialize_index(ix.index).tobytes()
                                           + np.asarray(ix.embeddings).tobytes() + "\n".join(ix.passages.ids).encode()).hexdigest()
        except KeyboardInterrupt:
            row["killed"] = True
    row.setdefault("seconds", time.perf_counter() - t0)
    row.setdefault("peak_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps(row))


def _run_child(*args: str) -> dict:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_build(sizes: list[int], work: Path) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for n in sizes:
        corpus = work / f"corpus-{n}.jsonl"
        with corpus.open("w") as f:
            for i in range(n):
                f.write(json.dumps({"id": f"p{i}", "title": "", "text": " ".join(rng.choice(WORDS, 12))}) + "\n")
        raw = _run_child("raw", str(corpus), "-", "-", "0")
        rows.append({"build": "raw encode loop", "passages": n, "seconds": raw["seconds"],
                     "passages_per_s": n / raw["seconds"], "peak_rss_mb": raw["peak_rss_mb"]})
        for factory in ("Flat", "IVF256,PQ16"):
            got = _run_child("build", str(corpus), str(work / f"ix-{n}-{factory}"), factory, "0")
            rows.append({"build": f"streaming {factory}", "passages": n, "seconds": got["seconds"],
                         "passages_per_s": n / got["seconds"], "peak_rss_mb": got["peak_rss_mb"],
                         "index_mb": got["index_bytes"] / 2**20,
                         "rss_minus_index_mb": got["peak_rss_mb"] - got["index_bytes"] / 2**20,
                         "vs_raw": raw["seconds"] / got["seconds"]})
    n = sizes[-1]
    corpus = work / f"corpus-{n}.jsonl"
    whole = _run_child("build", str(corpus), str(work / "whole"), "Flat", "0")
    chunks = -(-n // CHUNK)
    killed = _run_child("build", str(corpus), str(work / "resumed"), "Flat", str(chunks // 2))
    resumed = _run_child("resume", str(corpus), str(work / "resumed"), "Flat", "0")
    total = killed["seconds"] + resumed["seconds"]
    rows.append({"build": f"killed after {chunks // 2}/{chunks} chunks + resumed", "passages": n, "seconds": total,
                 "vs_uninterrupted": total / whole["seconds"], "identical": resumed["digest"] == whole["digest"],
                 "uninterrupted_s": whole["seconds"]})
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("tune", "add", "build") if k in results]
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, key in zip(axes[0], panels):
        rows = results[key]
        if key == "tune":
            ax.barh([r["setting"][:28] for r in rows], [r["R@20"] for r in rows])
            ax.set_xlabel("R@20 (SQuAD-open, MiniLM)")
            ax.set_xlim(min(r["R@20"] for r in rows) - 5, 100)
        elif key == "build":
            for name in dict.fromkeys(r["build"] for r in rows if "peak_rss_mb" in r):
                pts = [r for r in rows if r["build"] == name]
                ax.plot([r["passages"] for r in pts], [r["peak_rss_mb"] for r in pts], marker="o", label=name)
            ax.set_xscale("log")
            ax.set_xlabel("passages")
            ax.set_ylabel("peak RSS (MB)")
            ax.legend(fontsize=7)
        else:
            ax.plot([r["vectors"] for r in rows], [r["add_10_ms_median"] for r in rows], marker="o")
            ax.set_xscale("log")
            ax.set_xlabel("vectors in the index")
            ax.set_ylabel("10-passage add (ms, median)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (10^4 / 10^5)")
    ap.add_argument("--sections", default="tune,add,build")
    ap.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, default=None, help="keep SQuAD-open embeddings here between runs")
    args = ap.parse_args()
    if args.child:
        return _child(args.child)
    import torch

    torch.set_num_threads(2)
    sections = args.sections.split(",")
    out_json = RESULTS / "bench_scale.json"
    results, quick = {}, {}
    if out_json.is_file():  # sections not rerun keep their last measurement
        old = json.loads(out_json.read_text())
        results, quick = dict(old.get("sections", {})), dict(old.get("quick_sections", {}))
    quick.update({s: args.quick for s in sections})
    if "tune" in sections:
        results["tune"] = bench_tune(args.cache)
    if "add" in sections:
        results["add"] = bench_add([10_000, 100_000] if args.quick else [10_000, 1_000_000])
    if "build" in sections:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="bench_scale-") as work:
            results["build"] = bench_build([5_000, 20_000] if args.quick else [10_000, 100_000, 1_000_000], Path(work))
    rows = [{"section": k, **r} for k, v in results.items() for r in v]
    report("bench_scale", rows, {"quick_sections": quick, "sections": results}, title="bench_scale")
    plot(results, RESULTS / "bench_scale.png")


if __name__ == "__main__":
    main()
