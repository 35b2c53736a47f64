"""Index kinds side by side on SQuAD-open: recall, memory, disk, queries/s, in one run.

Flat, IVF-Flat, IVF-PQ, PQ and HNSW (FAISS, from the same MiniLM vectors), BM25 (bm25s) and the
Flat+BM25 hybrid (reciprocal rank fusion). BM25 throughput is also measured against raw bm25s on
the same corpus (tokenise + retrieve), and the latency of a live ``Atlas.swap_index``.

    python eval/bench_indexes.py [--index-dir indexes/squad-open-minilm]

``--index-dir``: reuse the Flat index written by ``eval/retrieval_squad_open.py`` (its vectors)
instead of re-encoding the corpus (~40 s).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import report, squad_open_paths


def best_time(fn, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", default="indexes/squad-open-minilm")
    ap.add_argument("--k", type=int, default=20)
    args = ap.parse_args()

    import bm25s

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import BM25Index, FaissIndex, HybridIndex
    from atlas_kit.index.base import folder_size
    from atlas_kit.metrics import recall_at_k
    from atlas_kit.passages import passage_text
    from atlas_kit.tasks import squad_open

    passages, questions = squad_open(*squad_open_paths())
    qs = [q.question for q in questions]
    gold = [q.gold_ids for q in questions]
    retriever = Retriever.default()
    if args.index_dir and Path(args.index_dir, "manifest.json").is_file():
        flat = FaissIndex.load(args.index_dir, retriever=retriever, mmap=False)
        emb = np.asarray(flat.embeddings, dtype=np.float32)
    else:
        emb = retriever.encode_passages(passages, show_progress=True)
    qv = retriever.encode_queries(qs)
    dim = emb.shape[1]

    variants = {
        "Flat": ("Flat", {}),
        "IVF32,Flat": ("IVF32,Flat", {"nprobe": 8}),
        "IVF32,PQ96": ("IVF32,PQ96", {"nprobe": 8}),
        "PQ96": ("PQ96", {}),
        "PQ48": ("PQ48", {}),
        "HNSW32": ("HNSW32", {"efSearch": 128}),
    }
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_indexes_"))
    built = {}
    for name, (factory, params) in variants.items():
        t0 = time.perf_counter()
        ix = FaissIndex.from_embeddings(emb, passages, factory=factory, retriever_identity=retriever.identity())
        build_s = time.perf_counter() - t0
        if params:
            ix.set_search_params(**params)
        built[name] = ix
        t = best_time(lambda: ix.search(qs, args.k, qv))
        hits = ix.search(qs, args.k, qv)
        ix.save(tmp / name.replace(",", "_"))
        code_bytes = ix.info()["memory_bytes"]
        rows.append({"index": name, **recall_at_k([h.ids for h in hits], gold), "ram_bytes": code_bytes,
                     "bytes_per_vector": code_bytes / len(passages), "disk_bytes_index_file": os.path.getsize(tmp / name.replace(",", "_") / "index.faiss"),
                     "qps": len(qs) / t, "build_s": build_s, "params": str(params or "")})

    # BM25 via atlas_kit vs raw bm25s on the same corpus and settings
    t0 = time.perf_counter()
    bm25 = BM25Index.build(passages, stopwords="en")
    build_s = time.perf_counter() - t0
    t_ours = best_time(lambda: bm25.search(qs, args.k))
    hits = bm25.search(qs, args.k)
    bm25.save(tmp / "bm25")
    corpus_texts = [passage_text(p) for p in passages]
    raw = bm25s.BM25()
    raw.index(bm25s.tokenize(corpus_texts, stopwords="en", show_progress=False), show_progress=False)

    def raw_search():
        raw.retrieve(bm25s.tokenize(qs, stopwords="en", show_progress=False), k=args.k, show_progress=False)

    t_raw = best_time(raw_search)
    rows.append({"index": "BM25 (bm25s)", **recall_at_k([h.ids for h in hits], gold), "ram_bytes": -1,
                 "bytes_per_vector": -1, "disk_bytes_index_file": folder_size(tmp / "bm25"), "qps": len(qs) / t_ours,
                 "build_s": build_s, "params": f"raw bm25s qps {len(qs) / t_raw:.0f}; ratio {t_raw / t_ours:.2f}"})

    hybrid = HybridIndex([built["Flat"], bm25], fusion="rrf")
    t_h = best_time(lambda: hybrid.search(qs, args.k, qv))
    hits = hybrid.search(qs, args.k, qv)
    rows.append({"index": "Flat+BM25 (RRF k=60)", **recall_at_k([h.ids for h in hits], gold), "ram_bytes": -1,
                 "bytes_per_vector": -1, "disk_bytes_index_file": -1, "qps": len(qs) / t_h, "build_s": 0.0, "params": "rrf_k=60"})

    # live swap latency
    atlas = Atlas(retriever, index=built["Flat"])
    swaps = []
    for i in range(200):
        t0 = time.perf_counter()
        atlas.swap_index(built["PQ96"] if i % 2 == 0 else built["Flat"])
        swaps.append(time.perf_counter() - t0)
    flat_bytes = rows[0]["ram_bytes"]
    for r in rows:
        if r["ram_bytes"] > 0:
            r["smaller_than_flat_x"] = flat_bytes / r["ram_bytes"]
            r["code_smaller_x"] = (4 * dim) / _code_size(r["index"], dim)
    report("bench_indexes", rows, {
        "k": args.k, "passages": len(passages), "questions": len(qs),
        "bm25_vs_raw_bm25s_ratio": t_raw / t_ours,
        "swap_ms_median": 1000 * float(np.median(swaps)), "swap_ms_max": 1000 * float(np.max(swaps)),
        "note": "ram_bytes = serialised FAISS index size; at 1,216 vectors PQ codebooks dominate, so code_smaller_x "
                "(bytes per stored vector vs float32) is the figure that scales",
    }, title="SQuAD-open: index kinds (all-MiniLM-L6-v2 vectors)")


def _code_size(name: str, dim: int) -> float:
    if "PQ" in name:
        return float(name.split("PQ")[-1].split(",")[0])
    return 4.0 * dim


if __name__ == "__main__":
    main()
