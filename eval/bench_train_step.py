"""Joint training step time: the retriever with its own dropout vs ``retriever_dropout=0``.

Both-side training (``refresh=reindex``) re-encodes every retrieved passage with gradients, which
makes the retriever's forward + backward the bulk of a step on CPU. Dropout there costs far more
than its arithmetic suggests. Same questions, same retrieved passages, same step count;
interleaved repeats, best of N; the ratio is what to read (the machine is noisy).

Data: SQuAD-open (bundled MiniLM, a small config-built FiD reader, gold objective).

    python eval/bench_train_step.py [--steps 3] [--repeats 2] [--threads 2]
"""
from __future__ import annotations

import argparse
import copy
import logging
import time

import _common
import torch

from atlas_kit import Atlas
from atlas_kit.index import FaissIndex
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.tasks import squad_open
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.train import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3, help="training steps per timing")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--k", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    passages, questions = squad_open(*_common.squad_open_paths())
    train = questions[: args.batch_size * args.steps]
    retriever = Retriever.default()
    index = FaissIndex.build(passages, retriever)
    tokenizer = train_word_tokenizer([f"{p.title} {p.text}" for p in passages] + [e.question for e in train])
    reader = Reader.from_config(tokenizer, d_model=128, num_layers=2, num_heads=4, seed=0, text_maxlength=192,
                                answer_maxlength=16)
    base = dict(steps=args.steps, batch_size=args.batch_size, n_context=args.k, retriever_loss="gold",
                retriever_lr=1e-5, refresh="reindex", refresh_schedule="0-1000000:1000000", warmup_steps=1,
                tensorboard=False, seed=0)
    variants = {"retriever dropout as shipped (0.1)": None, "retriever_dropout=0": 0.0}
    best = {name: float("inf") for name in variants}
    for _ in range(args.repeats):
        for name, dropout in variants.items():
            atlas = Atlas(copy.deepcopy(retriever), copy.deepcopy(reader), index)
            trainer = Trainer(atlas, TrainConfig(retriever_dropout=dropout, **base))
            t0 = time.perf_counter()
            trainer.fit(train, show_progress=False)
            best[name] = min(best[name], (time.perf_counter() - t0) / args.steps)
    shipped = best["retriever dropout as shipped (0.1)"]
    rows = [{"variant": name, "s_per_step": round(s, 2), "speed_vs_shipped": round(shipped / s, 2)}
            for name, s in best.items()]
    _common.report("bench_train_step", rows, {"args": vars(args)},
                   title="Both-side joint training step on SQuAD-open (best of repeats)")


if __name__ == "__main__":
    main()
