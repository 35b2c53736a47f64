"""Core throughput vs the raw libraries, measured side by side in one run (ratios, not absolutes).

1. search:  Atlas.retrieve with precomputed query vectors vs raw ``faiss.IndexFlatIP.search`` on the
            same vectors (goal >= 0.9).
2. retrieve: Atlas.retrieve on question strings (encode + search) vs a raw HF tokenize/forward/
            mean-pool loop + faiss search, same batch size.
3. build:   FaissIndex.build vs a raw HF forward loop over the same passages with the same batch size
            + faiss add (goal >= 0.95).

Data: SQuAD-open (../shared/data/squad2_cs224n_split), bundled all-MiniLM-L6-v2.

    python eval/bench_core.py [--build-passages 400] [--repeats 5]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import report, squad_open_paths


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def raw_encode(model, tok, texts, batch_size, max_length):
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(e, dim=-1).numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build-passages", type=int, default=400)
    ap.add_argument("--queries", type=int, default=2910)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--index-dir", default=None, help="reuse a saved SQuAD-open Flat index (eval/retrieval_squad_open.py --index-dir)")
    ap.add_argument("--only-search", action="store_true", help="skip the build and end-to-end rows")
    args = ap.parse_args()

    import faiss
    import torch

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.tasks import squad_open

    torch.set_num_threads(max(1, torch.get_num_threads()))
    passages, questions = squad_open(*squad_open_paths())
    qs = [q.question for q in questions][: args.queries]
    retriever = Retriever.default()
    model, tok = retriever.query_encoder, retriever.tokenizer
    rows = []

    # 3. build (first, so its vectors feed the search benchmark's index)
    sub = passages.select(range(min(args.build_passages, len(passages))))
    texts = retriever.passage_texts(sub)

    def ours_build():
        return FaissIndex.build(sub, retriever, batch_size=args.batch_size, show_progress=False)

    def raw_build():
        e = raw_encode(model, tok, texts, args.batch_size, retriever.passage_maxlength)
        ix = faiss.IndexFlatIP(e.shape[1])
        ix.add(e)
        return ix

    r_build = min(args.repeats, 2)
    if args.only_search:
        r_build = 0
    t_raw_b = best_of(raw_build, r_build) if r_build else float("nan")
    t_ours_b = best_of(ours_build, r_build) if r_build else float("nan")
    if r_build:
        rows.append({"benchmark": "index build", "items": len(sub), "raw_per_s": len(sub) / t_raw_b,
                 "ours_per_s": len(sub) / t_ours_b, "ratio": t_raw_b / t_ours_b, "goal": ">= 0.95"})
    # parity of what both produce
    ours_vecs = retriever.encode_passages(sub[:16], batch_size=args.batch_size)
    np.testing.assert_allclose(ours_vecs, raw_encode(model, tok, texts[:16], 16, retriever.passage_maxlength), atol=1e-4)

    # 1. search on the same vectors: full-corpus index from this run's vectors
    saved = Path(args.index_dir) if args.index_dir else None
    if saved is not None and (saved / "manifest.json").is_file():
        small = FaissIndex.load(saved, retriever=retriever, mmap=False)
    else:
        small = FaissIndex.build(passages, retriever, batch_size=args.batch_size, show_progress=True)
    atlas = Atlas(retriever, index=small)
    qv = retriever.encode_queries(qs, batch_size=args.batch_size)
    raw_ix = faiss.IndexFlatIP(small.dim)
    raw_ix.add(np.asarray(small.embeddings, dtype=np.float32))
    reps = max(args.repeats, 20)
    t_raw_s = best_of(lambda: raw_ix.search(qv, args.k), reps)
    t_ours_s = best_of(lambda: atlas.retrieve(qs, k=args.k, query_embeddings=qv), reps)
    rows.append({"benchmark": "Atlas.retrieve (vectors given)", "items": len(qs), "raw_per_s": len(qs) / t_raw_s,
                 "ours_per_s": len(qs) / t_ours_s, "ratio": t_raw_s / t_ours_s, "goal": ">= 0.9"})
    ids = passages.id_array()
    t_raw_ids = best_of(lambda: ids[raw_ix.search(qv, args.k)[1]].tolist(), reps)
    t_ours_ids = best_of(lambda: [h.ids for h in atlas.retrieve(qs, k=args.k, query_embeddings=qv)], reps)
    rows.append({"benchmark": "  ... + passage ids", "items": len(qs), "raw_per_s": len(qs) / t_raw_ids,
                 "ours_per_s": len(qs) / t_ours_ids, "ratio": t_raw_ids / t_ours_ids, "goal": ">= 0.9"})

    # 2. end-to-end retrieve from strings
    def raw_retrieve():
        raw_ix.search(raw_encode(model, tok, qs, args.batch_size, retriever.query_maxlength), args.k)

    def ours_retrieve():
        return atlas.retrieve(qs, k=args.k, batch_size=args.batch_size)

    if not args.only_search:
        r2 = min(args.repeats, 2)
        t_raw_r, t_ours_r = best_of(raw_retrieve, r2), best_of(ours_retrieve, r2)
        rows.append({"benchmark": "retrieve (encode+search)", "items": len(qs), "raw_per_s": len(qs) / t_raw_r,
                 "ours_per_s": len(qs) / t_ours_r, "ratio": t_raw_r / t_ours_r, "goal": ">= 0.9"})
    report("bench_core", rows, {"batch_size": args.batch_size, "k": args.k,
                                "note": "ratio = raw time / atlas_kit time (higher is better); best of repeats"},
           title="atlas_kit vs raw libraries (same run)")


if __name__ == "__main__":
    main()
