"""Real data: the bundled MiniLM retriever trained from a reader's signal on SQuAD-open (issue 4).

SQuAD-open: the corpus is every paragraph of both SQuAD 2.0 dev halves (1,216 passages), the
questions are the answerable ones of ``dev-v2.0.json`` (2,910); a passage is relevant when it is the
question's own paragraph. ``--train`` questions (seeded sample) are used for training - their
passage labels are NOT used, except by the ``gold`` row (supervised upper bound) - and retrieval is
measured on all the other questions.

Stages, each reported as a row (R@1/5/20 on the held-out questions):

1. ``before``: MiniLM as shipped;
2. reader warm-up: a FiD reader built from a config (word-level tokenizer over the corpus) trained
   on the top-k retrieved passages, retriever frozen (Atlas starts from a pre-trained reader; none
   exists offline);
   (``--mlm-steps``: first Atlas's masked-span pre-training over the corpus, to teach the reader
   to fill gaps from retrieved text - see :mod:`atlas_kit.tasks.mlm`);
3. per objective: the retriever's query encoder trained from the warm reader's signal
   (``refresh=query_side``: passage vectors stay valid), reader trained along;
4. ``gold``: the same run with the retriever trained on the gold paragraphs (upper bound of what
   this much training can buy).

    python eval/squad_open_training.py --index-dir indexes/squad-open-minilm --threads 1
    python eval/squad_open_training.py ... --mlm-steps 600 --warmup-steps 600 --objectives pdist --name squad_open_training_mlm
    python eval/squad_open_training.py --objectives gold --refresh reindex --steps 150 --warmup-steps 100 \
        --em-eval 100 --threads 2 --name squad_open_training_gold_reindex   # both sides, gold labels (~40 min)
"""
from __future__ import annotations

import argparse
import copy
import logging
import random
import time
from typing import Any

import _common
import torch

from atlas_kit import Atlas
from atlas_kit.evaluation import evaluate, evaluate_retrieval
from atlas_kit.index import FaissIndex
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.tasks import squad_open
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.train import TrainConfig, Trainer


def recall(atlas: Atlas, examples: list) -> dict[str, float]:
    m = evaluate_retrieval(atlas, examples, ks=(1, 5, 20)).metrics
    return {k: round(m[k], 1) for k in ("R@1", "R@5", "R@20")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--index-dir", default=None, help="a saved MiniLM Flat index of SQuAD-open (else built)")
    ap.add_argument("--train", type=int, default=300, help="training questions")
    ap.add_argument("--k", type=int, default=5, help="passages per question (n_context)")
    ap.add_argument("--mlm-steps", type=int, default=0,
                    help="masked-span pre-training steps over the corpus before the QA warm-up (Atlas's mlm task)")
    ap.add_argument("--warmup-steps", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--retriever-lr", type=float, default=2e-5)
    ap.add_argument("--temperature", type=float, default=0.1, help="τs = τg")
    ap.add_argument("--objectives", default="gold,pdist")
    ap.add_argument("--refresh", default="query_side", choices=("query_side", "reindex"),
                    help="query_side: passage encoder frozen; reindex: both encoders trained, corpus re-embedded "
                         "every --reindex-every steps")
    ap.add_argument("--reindex-every", type=int, default=50)
    ap.add_argument("--em-eval", type=int, default=300, help="held-out questions for the reader's EM")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default="squad_open_training", help="results file name (eval/results/NAME.json)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    t_all = time.perf_counter()
    torch.manual_seed(args.seed)

    passages, questions = squad_open(*_common.squad_open_paths())
    rng = random.Random(args.seed)
    order = rng.sample(range(len(questions)), len(questions))
    train = [questions[i] for i in order[: args.train]]
    held_out = [questions[i] for i in order[args.train:]]
    retriever = Retriever.default()
    if args.index_dir:
        index = FaissIndex.load(args.index_dir, retriever=retriever)
    else:
        index = FaissIndex.build(passages, retriever)
    atlas = Atlas(retriever, None, index)
    rows: list[dict[str, Any]] = [{"stage": "before (MiniLM as shipped)", **recall(atlas, held_out)}]
    print(rows[-1])

    from atlas_kit.tasks.mlm import mlm_examples

    mlm = mlm_examples(passages, seed=args.seed) if args.mlm_steps else []
    tokenizer = train_word_tokenizer([f"{p.title} {p.text}" for p in passages] +
                                     [f"{e.question} {' '.join(e.answers)}" for e in train + mlm])
    reader = Reader.from_config(tokenizer, d_model=128, num_layers=2, num_heads=4, dropout=0.1, seed=args.seed,
                                text_maxlength=192, answer_maxlength=16)
    atlas.reader = reader
    base = dict(batch_size=args.batch_size, n_context=args.k, reader_lr=5e-4, tensorboard=False, seed=args.seed,
                temperature_score=args.temperature, temperature_gold=args.temperature, eval_batch_size=32,
                # the optimiser settings the published runs used (TrainConfig's defaults before they
                # followed Atlas: weight decay 0.1, cosine to 0.1 x the peak)
                weight_decay=0.01, scheduler="linear", lr_min_ratio=0.0)
    if args.mlm_steps:
        # reader pre-training on the corpus (retriever frozen here, so this row isolates the reader)
        t0 = time.perf_counter()
        Trainer(atlas, TrainConfig(steps=args.mlm_steps, retriever_loss="none", warmup_steps=50, **base)).fit(mlm)
        em = evaluate(atlas, held_out[: args.em_eval], k=args.k, batch_size=32).metrics
        rows.append({"stage": f"masked-span pre-training ({args.mlm_steps} steps on {len(mlm)} corpus passages)",
                     **recall(atlas, held_out), "EM": round(em["EM"], 1), "F1": round(em["F1"], 1),
                     "seconds": round(time.perf_counter() - t0)})
        print(rows[-1])
    t0 = time.perf_counter()
    Trainer(atlas, TrainConfig(steps=args.warmup_steps, retriever_loss="none", warmup_steps=50, **base)).fit(train)
    em = evaluate(atlas, held_out[: args.em_eval], k=args.k, batch_size=32).metrics
    rows.append({"stage": f"reader ({args.warmup_steps} warm-up steps, retriever frozen)", **recall(atlas, held_out),
                 "EM": round(em["EM"], 1), "F1": round(em["F1"], 1), "seconds": round(time.perf_counter() - t0)})
    print(rows[-1])
    warm_reader, warm_retriever = copy.deepcopy(reader), copy.deepcopy(retriever)
    index0 = atlas.index  # built by the shipped encoder; a reindex run replaces atlas.index

    for name in [o.strip() for o in args.objectives.split(",") if o.strip()]:
        atlas.reader, atlas.retriever = copy.deepcopy(warm_reader), copy.deepcopy(warm_retriever)
        atlas.swap_index(index0)  # every objective starts from the index of the retriever it starts from
        refresh = {"refresh": "query_side"} if args.refresh == "query_side" else {
            "refresh": "reindex", "refresh_schedule": f"0-{10**9}:{args.reindex_every}"}
        cfg = TrainConfig(steps=args.steps, retriever_loss=name, retriever_lr=args.retriever_lr, warmup_steps=20,
                          **refresh, **base)
        t0 = time.perf_counter()
        trainer = Trainer(atlas, cfg)
        trainer.fit(train)
        if args.refresh == "reindex" and args.steps % args.reindex_every:
            trainer.reindex()  # the index matches the final passage encoder
        em = evaluate(atlas, held_out[: args.em_eval], k=args.k, batch_size=32).metrics
        rows.append({"stage": f"{name} ({args.steps} steps, {args.refresh.replace('_', ' ')})", **recall(atlas, held_out),
                     "EM": round(em["EM"], 1), "F1": round(em["F1"], 1), "seconds": round(time.perf_counter() - t0)})
        print(rows[-1])

    from atlas_kit.index import BM25Index

    bm25 = Atlas(retriever, None, BM25Index.build(passages, stopwords="en", stemmer="english"))
    rows.append({"stage": "reference: BM25 (bm25s), same questions", **recall(bm25, held_out)})
    print(rows[-1])
    _common.report(args.name, rows,
                   {"args": vars(args), "train_questions": len(train), "held_out": len(held_out),
                    "total_seconds": round(time.perf_counter() - t_all, 1)},
                   title=f"SQuAD-open: MiniLM trained from the reader's signal ({len(train)} questions)")


if __name__ == "__main__":
    main()
