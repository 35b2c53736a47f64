"""Learning benchmark: does the reader's signal alone teach a weak retriever? (issue 4)

Setup (all seeded, CPU, minutes):

* a generated world with one passage per fact, all four passages of an entity titled with its name,
  and every question *paraphrased* ("Who governs Rykata?" for "The leader of Rykata is Lord Vex."),
  so matching the entity name is easy but picking the right one of its four passages is not;
* a retriever that starts weak: a 2-layer BERT built from a config (random weights): its ranking
  finds the entity but picks among its passages at chance (R@1 ~ 25%);
* a small FiD reader built from a config, warmed up first (gold passage, then top-k retrieved ones):
  it stands in for Atlas's pre-trained reader - the retriever never sees a label during warm-up,
  and every run below starts from the same warm reader and the same weak retriever;
* then joint training with each objective (adist, emdr2, pdist, loop), with ``none`` (reader only,
  retriever frozen) and with ``gold`` (retriever trained on labelled gold passages: the upper bound).
  The index is re-embedded every ``--reindex-every`` steps (``refresh=reindex``). By default the
  warm reader is held fixed in this phase (``--reader-lr 0``): the tiny from-scratch reader
  memorises the training entities when trained on, which lowers held-out EM whatever the retriever
  does; holding it fixed makes the EM columns measure the retriever's effect alone.

Before the joint runs, a *signal probe* asks each objective's reader signal, on test questions,
which of k passages is the gold one - on the weak retriever's own top-k (when it holds the gold
passage) and on hard sets (the gold passage + k-1 passages of other entities holding a value of
the answer's type, e.g. three other "Lord ..." leaders) - and measures the reader's EM on the same
sets. It shows why ``adist`` fails here (see README "Few-shot training").

Reports R@1 / R@k / EM on held-out test questions (entities never seen in training) before and after,
per objective, as a table, ``eval/results/learning.json`` and ``eval/results/learning.png``.

    python eval/learning.py --threads 1   # the published run (17 min on one core)
    python eval/learning.py --quick    # a smaller world and fewer steps (a smoke run)
    python eval/learning.py --threads 2 --objectives "" --name learning-probe   # warm-up + probe only
"""
from __future__ import annotations

import argparse
import copy
import logging
import time
from typing import Any, Callable

import _common  # noqa: F401  (sys.path, offline env)
import numpy as np
import torch

from atlas_kit import Atlas
from atlas_kit.demo import train_reader_curriculum
from atlas_kit.index import FaissIndex
from atlas_kit.metrics import qa_scores, recall_at_k
from atlas_kit.passages import Passages
from atlas_kit.reader_signals import reader_signal
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.tasks.qa import QAExample
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.train import TrainConfig, Trainer
from atlas_kit.world import World

OBJECTIVES = ("none", "adist", "adist:probssum", "emdr2", "pdist", "loop", "gold")


def examples(questions) -> list[QAExample]:
    return [QAExample(q.id, q.question, list(q.answers), list(q.gold_ids)) for q in questions]


def measure(atlas: Atlas, exs: list[QAExample], k: int) -> dict[str, float]:
    """R@1, R@k and EM (top-k passages) on ``exs`` with the atlas's live index."""
    hits = atlas.retrieve([e.question for e in exs], k=k)
    rec = recall_at_k([h.ids for h in hits], [e.gold_ids for e in exs], ks=(1, k))
    preds = atlas.reader.generate([e.question for e in exs], [list(h) for h in hits], batch_size=32)
    qa = qa_scores(preds, [e.answers for e in exs])
    # the reader on the top passage alone: how retrieval gains turn into answers whatever the
    # distractors below rank 1 look like
    top1 = atlas.reader.generate([e.question for e in exs], [list(h)[:1] for h in hits], batch_size=32)
    qa1 = qa_scores(top1, [e.answers for e in exs])
    # what the top k holds: passages about the question's entity, and passages whose value has the
    # answer's type word ("Lord ..." for a leader) - the cue a reader looks for, whoever it is about
    n = sum(len(h) for h in hits)
    same_entity = sum(p.id.split("-")[0] == e.gold_ids[0].split("-")[0] for e, h in zip(exs, hits) for p in h)
    same_type = sum(f" {e.answers[0].split()[0]} " in f" {p.text} " for e, h in zip(exs, hits) for p in h)
    return {"R@1": rec["R@1"], f"R@{k}": rec[f"R@{k}"], "EM": qa["EM"], "F1": qa["F1"], "EM top-1": qa1["EM"],
            "same_entity": 100.0 * same_entity / n, "same_type": 100.0 * same_type / n}


# (label, objective, reader-signal options): every objective's signal, plus Atlas's ADist variants
PROBED: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("adist (normssum)", "adist", {}), ("adist probssum", "adist", {"aggregation": "probssum"}),
    ("adist scoresfirst", "adist", {"aggregation": "scoresfirst"}),
    ("pdist", "pdist", {}), ("loop", "loop", {}), ("emdr2", "emdr2", {}),
)


def same_type_passages(passages: Passages) -> Callable[[QAExample], list[Any]]:
    """For a question: the passages of OTHER entities whose text holds its answer's type word."""
    by_word: dict[str, list[Any]] = {}
    for p in passages:
        for w in set(p.text.replace(".", " ").split()):
            by_word.setdefault(w, []).append(p)

    def pool(e: QAExample) -> list[Any]:
        entity = e.gold_ids[0].split("-")[0]
        return [p for p in by_word.get(e.answers[0].split()[0], []) if p.id.split("-")[0] != entity]

    return pool


def with_distractors(sets: list[list[Any]], exs: list[QAExample], passages: Passages, share: float,
                     seed: int) -> list[list[Any]]:
    """``sets`` with each non-gold slot replaced, with probability ``share``, by a same-type passage
    of another entity (the reader warm-up's hard negatives; the retriever never sees them)."""
    rng = np.random.default_rng(seed + 1)
    pool_of = same_type_passages(passages)
    out = []
    for e, cand in zip(exs, sets):
        pool, cand = pool_of(e), list(cand)
        for j, p in enumerate(cand):
            if p.id != e.gold_ids[0] and pool and rng.random() < share:
                cand[j] = pool[int(rng.integers(len(pool)))]
        out.append(cand)
    return out


def probe_sets(atlas: Atlas, passages: Passages, exs: list[QAExample], k: int, seed: int
               ) -> dict[str, tuple[list[QAExample], list[list[Any]]]]:
    """Two kinds of k-passage sets that hold the gold passage: the weak retriever's own top-k
    (questions where it found the gold passage), and hard sets: gold + k-1 passages of other
    entities whose text holds the answer's type word ("Lord" for "Lord Vex"), gold at a random slot."""
    rng = np.random.default_rng(seed)
    hits = atlas.retrieve([e.question for e in exs], k=k)
    found = [(e, list(h)) for e, h in zip(exs, hits) if e.gold_ids[0] in h.ids]
    pool_of = same_type_passages(passages)
    hard: list[tuple[QAExample, list[Any]]] = []
    for e in exs:
        pool = pool_of(e)
        if len(pool) < k - 1:
            continue
        chosen = [pool[i] for i in rng.choice(len(pool), size=k - 1, replace=False)]
        chosen.insert(int(rng.integers(k)), passages.get(e.gold_ids[0]))
        hard.append((e, chosen))
    return {f"retrieved top-{k} (gold among them)": ([e for e, _ in found], [c for _, c in found]),
            f"gold + {k - 1} same-type passages of other entities": ([e for e, _ in hard], [c for _, c in hard])}


def signal_probe(atlas: Atlas, sets: dict[str, tuple[list[QAExample], list[list[Any]]]],
                 batch_size: int = 32) -> list[dict[str, Any]]:
    """Per set kind: the reader's EM on the set, and for each objective's reader signal how often
    its highest-scored passage is the gold one (chance = 1/k)."""
    rows = []
    for kind, (exs, sets_) in sets.items():
        row: dict[str, Any] = {"sets": kind, "n": len(exs)}
        preds = atlas.reader.generate([e.question for e in exs], sets_, batch_size=batch_size)
        row["reader EM"] = round(qa_scores(preds, [e.answers for e in exs])["EM"], 1)
        for name, signal, options in PROBED:
            hit = 0
            for s in range(0, len(exs), batch_size):
                chunk, ctx = exs[s : s + batch_size], sets_[s : s + batch_size]
                with torch.no_grad():
                    scores = reader_signal(signal, atlas.reader, [e.question for e in chunk], ctx,
                                           [e.target for e in chunk], **options)
                best = scores.argmax(-1).tolist()
                hit += sum(c[j].id == e.gold_ids[0] for e, c, j in zip(chunk, ctx, best))
            row[f"{name}: top = gold %"] = round(100.0 * hit / max(len(exs), 1), 1)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--entities", type=int, default=1500)
    ap.add_argument("--k", type=int, default=4, help="passages per question for the reader (n_context)")
    ap.add_argument("--warmup-steps", type=int, default=5000, help="reader warm-up steps")
    ap.add_argument("--warmup-distractors", type=float, default=0.0,
                    help="share of the non-gold slots of the warm-up's retrieved sets replaced by same-type "
                         "passages of other entities (teaches the reader to tell them apart)")
    ap.add_argument("--steps", type=int, default=400, help="joint training steps per objective")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--reader-lr", type=float, default=0.0,
                    help="reader learning rate in the joint phase (0: the warm reader is held fixed, so EM "
                         "changes measure what the retriever changed; >0 trains both, as Atlas does)")
    ap.add_argument("--retriever-lr", type=float, default=1e-3)
    ap.add_argument("--temperature-score", type=float, default=0.01)
    ap.add_argument("--temperature-gold", type=float, default=0.01)
    ap.add_argument("--reindex-every", type=int, default=25)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--objectives", default=",".join(OBJECTIVES),
                    help="comma list; 'adist:AGGREGATION' = adist with one of Atlas's other aggregations "
                         "(e.g. adist:probssum, adist:scoresfirst; default normssum = Atlas's adist)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--quick", action="store_true", help="small world, few steps (smoke run)")
    ap.add_argument("--name", default="learning")
    args = ap.parse_args()
    if args.reader_lr and args.name == "learning":
        args.name = "learning-joint-reader"
    if args.quick:
        args.entities, args.warmup_steps, args.steps, args.eval_every = 120, 300, 40, 20
        args.name += "-quick"
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    t_all = time.perf_counter()
    torch.manual_seed(args.seed)

    world = World.generate(args.entities, seed=args.seed, granularity="fact", paraphrase=1.0, typed_values=True)
    passages = Passages.from_records(world.passages())
    train, dev, test = (examples(world.questions(s)) for s in ("train", "dev", "test"))
    k = args.k

    retriever = Retriever.from_config(hidden_size=128, num_layers=2, num_heads=2, seed=args.seed)
    index = FaissIndex.build(passages, retriever, show_progress=False)
    tokenizer = train_word_tokenizer(world.texts())
    reader = Reader.from_config(tokenizer, d_model=128, num_layers=2, num_heads=4, dropout=0.0, seed=args.seed,
                                text_maxlength=64, answer_maxlength=12)
    atlas = Atlas(retriever, reader, index)

    # reader warm-up (the retriever is untouched: it never sees a label)
    t0 = time.perf_counter()
    retrieved = [list(h) for h in atlas.retrieve([e.question for e in train], k=k)]
    gold = [passages.get(e.gold_ids[0]) for e in train]
    if args.warmup_distractors:
        retrieved = with_distractors(retrieved, train, passages, args.warmup_distractors, args.seed)
    train_reader_curriculum(reader, [e.question for e in train], [e.target for e in train], gold,
                            retrieved, steps=args.warmup_steps, k=k, gold_only_fraction=0.4,
                            gold_mix=0.3, batch_size=16, lr=1e-3, seed=args.seed)
    warmup_s = time.perf_counter() - t0
    before = measure(atlas, test, k)
    print(f"after reader warm-up ({warmup_s:.0f}s): {before}")
    probe = signal_probe(atlas, probe_sets(atlas, passages, test, k, args.seed))
    for row in probe:
        print(f"signal probe: {row}")
    warm_reader, warm_retriever = copy.deepcopy(reader.state_dict()), copy.deepcopy(retriever.state_dict())

    rows: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    for name in [o.strip() for o in args.objectives.split(",") if o.strip()]:
        reader.load_state_dict(warm_reader)
        retriever.load_state_dict(warm_retriever)
        for p in retriever.parameters():  # a previous "none" run froze them
            p.requires_grad_(True)
        atlas = Atlas(retriever, reader, FaissIndex.build(passages, retriever, show_progress=False))
        loss, _, aggregation = name.partition(":")  # "adist:probssum" = adist with another aggregation
        options = {"aggregation": aggregation} if aggregation else {}
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, n_context=k, retriever_loss=loss,
                          signal_options=options,
                          reader_lr=args.reader_lr, retriever_lr=args.retriever_lr if name != "none" else 0.0,
                          temperature_score=args.temperature_score, temperature_gold=args.temperature_gold,
                          refresh="reindex", refresh_schedule=f"0-{10**9}:{args.reindex_every}",
                          warmup_steps=10, eval_every=args.eval_every, tensorboard=False, seed=args.seed,
                          eval_batch_size=32,
                          # the optimiser settings of the published runs (TrainConfig's defaults before
                          # they followed Atlas: weight decay 0.1, cosine to 0.1 x the peak)
                          weight_decay=0.01, scheduler="linear", lr_min_ratio=0.0)
        trainer = Trainer(atlas, cfg)
        t0 = time.perf_counter()
        trainer.fit(train, dev, show_progress=True)
        seconds = time.perf_counter() - t0
        if name != "none":
            trainer.reindex()  # the final index matches the final passage encoder
        after = measure(atlas, test, k)
        curves[name] = [(0, before["R@1"])] + [(h["step"], h["eval_R@1"]) for h in trainer.history if "eval_R@1" in h]
        row = {"objective": name, "R@1 before": before["R@1"], "R@1 after": after["R@1"],
               f"R@{k} before": before[f"R@{k}"], f"R@{k} after": after[f"R@{k}"],
               f"EM top-{k} before": before["EM"], f"EM top-{k} after": after["EM"],
               "EM top-1 before": before["EM top-1"], "EM top-1 after": after["EM top-1"],
               f"top-{k} same entity %": after["same_entity"], f"top-{k} same type word %": after["same_type"],
               "seconds": round(seconds, 1)}
        rows.append(row)
        print(row)

    upper = next((r["R@1 after"] for r in rows if r["objective"] == "gold"), None)
    for r in rows:
        if upper:
            r["R@1 / gold"] = round(r["R@1 after"] / upper, 3)
    meta = {"args": vars(args), "world": {"entities": args.entities, "passages": len(passages), "train": len(train),
                                          "dev": len(dev), "test": len(test)},
            "warmup_seconds": round(warmup_s, 1), "before": before, "signal_probe": probe,
            "curves_dev_R@1": curves,
            "total_seconds": round(time.perf_counter() - t_all, 1)}
    if not rows:  # warm-up + signal probe only
        _common.report(args.name, probe, meta, title=f"Which passage does each reader signal pick? (test, k={k})")
        return
    _common.report(args.name, rows, meta, title=f"Retriever learning from the reader (test questions, k={k})")
    plot(curves, _common.RESULTS / f"{args.name}.png", k)


def plot(curves: dict[str, list[tuple[int, float]]], path, k: int) -> None:
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for name, pts in curves.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o", ms=3, label=name, linestyle="--" if name in ("none", "gold") else "-")
    ax.set_xlabel("joint training step")
    ax.set_ylabel("dev R@1 (%)")
    ax.set_title(f"Weak retriever trained from the reader's signal (k={k})")
    ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"wrote {path}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
