"""Reranking: throughput vs raw loops (same run) and quality recovery on a compressed index.

1. Throughput (passages/s) of BiEncoderReranker re-encoding the candidates of a batch of questions
   (reuse of stored vectors disabled) vs a raw HF forward loop over the same passages with the same
   batch size in candidate order (the "naive unsorted" loop), on CPU and on CUDA when present.
2. Quality on SQuAD-open: a PQ index retrieving 128 candidates + bi-encoder rerank to 20, vs Flat
   without rerank, R@1/5/20.

    python eval/bench_rerank.py [--index-dir indexes/squad-open-minilm] [--quick]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from _common import report, squad_open_paths


def raw_loop(model, tok, texts, batch_size, max_length, device):
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            b = tok(texts[i:i + batch_size], padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            b = {k: v.to(device) for k, v in b.items()}
            h = model(**b).last_hidden_state
            m = b["attention_mask"].unsqueeze(-1).float()
            e = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            out.append(e.float().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", default="indexes/squad-open-minilm")
    ap.add_argument("--questions", type=int, default=16, help="questions whose candidates are re-encoded (throughput)")
    ap.add_argument("--candidates", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="fewer questions and candidates")
    args = ap.parse_args()
    if args.quick:
        args.questions, args.candidates = 4, 32

    import torch

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.metrics import recall_at_k
    from atlas_kit.rerank import BiEncoderReranker
    from atlas_kit.rerank.candidates import Candidates
    from atlas_kit.tasks import squad_open

    passages, questions = squad_open(*squad_open_paths())
    retriever = Retriever.default()
    if args.index_dir and Path(args.index_dir, "manifest.json").is_file():
        emb = np.asarray(FaissIndex.load(args.index_dir, retriever=retriever, mmap=False).embeddings, dtype=np.float32)
    else:
        emb = retriever.encode_passages(passages, show_progress=True)
    flat = FaissIndex.from_embeddings(emb, passages, retriever_identity=retriever.identity())
    qs_all = [q.question for q in questions]
    qv_all = retriever.encode_queries(qs_all)
    rows = []

    # 1. throughput
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    qs = qs_all[: args.questions]
    cand = flat.search(qs, args.candidates, qv_all[: args.questions])
    uniq = Candidates.collect(cand).unique
    texts = retriever.passage_texts(uniq)
    for device in devices:
        retriever.to(device)
        rr = BiEncoderReranker(retriever, batch_size=args.batch_size, reuse_index_embeddings=False)
        model, tok = retriever.query_encoder, retriever.tokenizer
        rr.rerank(qs, cand, 20)  # warm-up
        t0 = time.perf_counter()
        rr.rerank(qs, cand, 20)
        t_ours = time.perf_counter() - t0
        t0 = time.perf_counter()
        raw_loop(model, tok, texts, args.batch_size, retriever.passage_maxlength, device)
        t_raw = time.perf_counter() - t0
        by_len = sorted(texts, key=lambda t: -len(tok(t, truncation=True, max_length=retriever.passage_maxlength)["input_ids"]))
        t0 = time.perf_counter()
        raw_loop(model, tok, by_len, args.batch_size, retriever.passage_maxlength, device)
        t_raw_sorted = time.perf_counter() - t0
        name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU (2 cores)"
        rows.append({"benchmark": f"bi-encoder rerank, {name}", "passages": len(uniq), "raw_unsorted_per_s": len(uniq) / t_raw,
                     "raw_sorted_per_s": len(uniq) / t_raw_sorted, "ours_per_s": len(uniq) / t_ours,
                     "ratio_vs_sorted_raw": t_raw_sorted / t_ours, "ratio_vs_unsorted": t_raw / t_ours, "goal": ">= 0.9 / > 1"})
    retriever.to("cpu")

    # 2. quality: PQ retrieving candidates, reranked with fresh vectors
    pq = FaissIndex.from_embeddings(emb, passages, retriever_identity=retriever.identity(), factory="PQ48")
    gold = [q.gold_ids for q in questions]
    base = flat.search(qs_all, 20, qv_all)
    rows.append({"benchmark": "Flat, no rerank", **recall_at_k([h.ids for h in base], gold)})
    pq_hits = pq.search(qs_all, 20, qv_all)
    rows.append({"benchmark": "PQ48, no rerank", **recall_at_k([h.ids for h in pq_hits], gold)})
    atlas = Atlas(retriever, index=pq, reranker=BiEncoderReranker(retriever))  # reuses the stored vectors
    t0 = time.perf_counter()
    reranked = atlas.retrieve(qs_all, k=20, candidates=args.candidates, query_embeddings=qv_all)
    t_rr = time.perf_counter() - t0
    rows.append({"benchmark": f"PQ48 -> {args.candidates} -> bi-encoder rerank to 20", **recall_at_k([h.ids for h in reranked], gold),
                 "seconds": t_rr})
    report("bench_rerank", rows, {"candidates": args.candidates, "batch_size": args.batch_size,
                                  "note": "throughput ratio = raw HF loop time / reranker time, same passages and batch size; sorted = the raw loop "
                                          "fed length-sorted passages, unsorted = candidate order (naive batching)"},
           title="Reranking: throughput vs raw loop, and recall recovery on a PQ index")


if __name__ == "__main__":
    main()
