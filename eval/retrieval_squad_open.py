"""Real retrieval check: the bundled MiniLM retriever + FAISS Flat on SQuAD-open.

Corpus: every paragraph of both SQuAD 2.0 dev halves (1,216 passages, "title paragraph").
Questions: the 2,910 answerable questions of dev-v2.0.json; relevant = the question's own paragraph.
Reference (../shared/NOTES.md, raw libraries): R@1/5/20 = 64.2 / 87.7 / 96.5.

    python eval/retrieval_squad_open.py [--index-dir indexes/squad-open-minilm]
"""
from __future__ import annotations

import argparse

from _common import Timer, report, squad_open_paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index-dir", default=None, help="also save the built index here (reused by other benchmarks)")
    args = ap.parse_args()

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.metrics import recall_at_k
    from atlas_kit.tasks import squad_open

    passages, questions = squad_open(*squad_open_paths())
    retriever = Retriever.default()
    with Timer() as t_build:
        index = FaissIndex.build(passages, retriever, factory="Flat", show_progress=True)
    if args.index_dir:
        index.save(args.index_dir)
    atlas = Atlas(retriever, index=index)
    with Timer() as t_ret:
        hits = atlas.retrieve([q.question for q in questions], k=20)
    rec = recall_at_k([h.ids for h in hits], [q.gold_ids for q in questions], ks=(1, 5, 20))
    rows = [{"retriever": retriever.name, "index": "Flat", "passages": len(passages), "questions": len(questions),
             **rec, "build_s": t_build.seconds, "retrieve_s": t_ret.seconds}]
    report("retrieval_squad_open", rows, {"reference": {"R@1": 64.2, "R@5": 87.7, "R@20": 96.5}},
           title="SQuAD-open retrieval (all-MiniLM-L6-v2, FAISS Flat)")


if __name__ == "__main__":
    main()
