"""``atlas-kit demo``: the whole pipeline, offline, in a few minutes on a laptop CPU.

A seeded fictional world (invented names, so no model can know the answers) gives a corpus and
questions. The bundled MiniLM retriever indexes the corpus with FAISS; a small Fusion-in-Decoder
T5 built from a config learns, from questions about *training* entities, to read answers out of
retrieved passages; it is then tested on entities it never saw in training. The same reader with
no passages is the no-retrieval baseline: it cannot do better than guessing.

Why the curriculum: a reader trained from scratch on several retrieved passages at once learns
slowly (see the project's field notes), so it first learns to copy from the gold passage alone,
then learns to find the answer among the top-k retrieved passages (gold passage guaranteed present
during training only; at test time it sees exactly what the retriever returns).
"""
from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from atlas_kit.api import Atlas
from atlas_kit.index import FaissIndex
from atlas_kit.metrics import qa_scores, recall_at_k
from atlas_kit.passages import Passages
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.world import World

__all__ = ["run_demo", "DEMO_DEFAULTS"]

log = logging.getLogger(__name__)

DEMO_DEFAULTS: dict[str, Any] = {
    "n_entities": 1500,
    "granularity": "fact",
    "typed_values": True,
    "steps": 5000,
    "k": 3,
    "gold_only_fraction": 0.4,
    "gold_mix": 0.3,
    "batch_size": 16,
    "lr": 1e-3,
    "d_model": 128,
    "layers": 2,
    "heads": 4,
    "dropout": 0.0,
}


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_reader_curriculum(
    reader: Reader,
    questions: list[str],
    answers: list[str],
    gold: list[Any],
    retrieved: list[list[Any]],
    steps: int,
    k: int,
    gold_only_fraction: float = 0.3,
    gold_mix: float = 0.0,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    show_progress: bool = True,
) -> list[float]:
    """Train ``reader`` on (question, passages, answer): gold passage alone for the first
    ``gold_only_fraction`` of steps, then the top-``k`` retrieved passages with the gold passage
    swapped in (at a random position) when retrieval missed it; in that second phase a share
    ``gold_mix`` of the batches stay gold-only so the copying skill is not forgotten while
    passage selection is learned. Returns the loss curve."""
    rng = random.Random(seed)
    opt = torch.optim.AdamW(reader.parameters(), lr=lr, weight_decay=0.01)
    gold_steps = int(round(gold_only_fraction * steps))
    phases = [(gold_steps, True), (steps - gold_steps, False)]
    reader.train()
    losses: list[float] = []
    order: list[int] = []
    bar = tqdm(total=steps, desc="train reader", disable=not show_progress)
    for phase_steps, gold_only in phases:
        # each phase gets its own warmup + linear decay: the second phase is a new task
        warmup = max(1, phase_steps // 20)
        for group in opt.param_groups:
            group["lr"] = lr
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s, n=phase_steps, w=warmup: min(1.0, (s + 1) / w) * max(0.05, 1 - s / max(n, 1))
        )
        for _ in range(phase_steps):
            if len(order) < batch_size:
                order += rng.sample(range(len(questions)), len(questions))
            idx, order = order[:batch_size], order[batch_size:]
            if gold_only or rng.random() < gold_mix:
                ctx = [[gold[i]] for i in idx]
            else:
                ctx = []
                for i in idx:
                    cand = list(retrieved[i][:k])
                    if all(c.id != gold[i].id for c in cand):
                        cand[rng.randrange(k)] = gold[i]
                    ctx.append(cand)
            loss = reader.loss([questions[i] for i in idx], ctx, [answers[i] for i in idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reader.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.update(1)
            if len(losses) % 50 == 0:
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}", phase="gold" if gold_only else f"top-{k}")
    bar.close()
    reader.eval()
    return losses


def run_demo(
    out: str | Path = "runs/demo",
    n_entities: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    k: int | None = None,
    show: int = 5,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run the demo, print what it does, write a run folder, and return the metrics."""
    from rich.console import Console
    from rich.table import Table

    console = Console(quiet=quiet)
    cfg = dict(DEMO_DEFAULTS)
    cfg.update({k_: v for k_, v in {"n_entities": n_entities, "steps": steps, "k": k}.items() if v is not None})
    cfg["seed"] = seed
    out = Path(out)
    t_start = time.perf_counter()
    _set_seed(seed)

    world = World.generate(n_entities=cfg["n_entities"], seed=seed, granularity=cfg["granularity"],
                           typed_values=cfg["typed_values"])
    passages = Passages.from_records(world.passages())
    train_q, test_q = world.questions("train"), world.questions("test")
    console.rule("[bold]atlas-kit demo")
    console.print(f"World: {len(passages)} passages about invented entities; {len(train_q)} training and "
                  f"{len(test_q)} held-out questions (about entities never seen in training).")
    console.print(f"  e.g. [cyan]{passages[0].title}[/cyan]: {passages[0].text}")

    retriever = Retriever.default()
    console.print(f"Retriever: {retriever.name} ({retriever.dim}-d, mean pooling, normalised). Building FAISS index...")
    index = FaissIndex.build(passages, retriever, factory="Flat", show_progress=not quiet)
    index.save(out / "index")
    atlas = Atlas(retriever, index=index, k=cfg["k"])
    ret_train = atlas.retrieve([q.question for q in train_q], k=cfg["k"])
    ret_test = atlas.retrieve([q.question for q in test_q], k=cfg["k"])
    rec = recall_at_k([h.ids for h in ret_test], [q.gold_ids for q in test_q], ks=(1, cfg["k"]))
    rk = f"R@{cfg['k']}"
    console.print(f"Retrieval on held-out questions: R@1 {rec['R@1']:.1f}%, {rk} {rec[rk]:.1f}%")

    tokenizer = train_word_tokenizer(world.texts())
    reader = Reader.from_config(tokenizer, d_model=cfg["d_model"], num_layers=cfg["layers"], num_heads=cfg["heads"],
                                dropout=cfg["dropout"], seed=seed, text_maxlength=96, answer_maxlength=12)
    n_params = sum(p.numel() for p in reader.parameters())
    console.print(f"Reader: FiD T5 from a config ({n_params / 1e6:.1f}M parameters, random init), "
                  f"{cfg['steps']} steps on CPU (gold passage first, then top-{cfg['k']} retrieved)...")
    gold = [passages.get(q.gold_ids[0]) for q in train_q]
    losses = train_reader_curriculum(
        reader, [q.question for q in train_q], [q.answers[0] for q in train_q], gold,
        [list(h) for h in ret_train], steps=cfg["steps"], k=cfg["k"], gold_only_fraction=cfg["gold_only_fraction"],
        gold_mix=cfg["gold_mix"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed, show_progress=not quiet,
    )
    atlas.reader = reader

    questions = [q.question for q in test_q]
    golds = [q.answers for q in test_q]
    answers = atlas.ask(questions, k=cfg["k"], batch_size=32)
    no_ret = reader.generate(questions, [[] for _ in questions], batch_size=32)
    oracle = reader.generate(questions, [[passages.get(q.gold_ids[0])] for q in test_q], batch_size=32)
    metrics = {
        "retrieval": rec,
        "with_retrieval": qa_scores([a.text for a in answers], golds),
        "no_retrieval": qa_scores(no_ret, golds),
        "gold_passage": qa_scores(oracle, golds),
        "final_train_loss": float(np.mean(losses[-50:])),
        "seconds": round(time.perf_counter() - t_start, 1),
        "config": cfg,
    }

    table = Table(title=f"Held-out questions (showing {show})")
    for col in ("question", "top passage", "answer", "gold"):
        table.add_column(col)
    for a, q in list(zip(answers, test_q))[:show]:
        top = a.passages[0]
        mark = "[green]" if a.text.strip().lower() == q.answers[0].lower() else "[red]"
        table.add_row(q.question, f"{top.title} ({top.score:.2f})", f"{mark}{a.text}", q.answers[0])
    console.print(table)
    summary = Table(title="Held-out exact match")
    summary.add_column("reader input")
    summary.add_column("EM %", justify="right")
    summary.add_column("F1 %", justify="right")
    for name, key in (("no retrieval (baseline)", "no_retrieval"), (f"top-{cfg['k']} retrieved (atlas.ask)", "with_retrieval"),
                      ("gold passage (oracle)", "gold_passage")):
        summary.add_row(name, f"{metrics[key]['EM']:.1f}", f"{metrics[key]['F1']:.1f}")
    console.print(summary)

    ok = metrics["with_retrieval"]["EM"] >= metrics["no_retrieval"]["EM"] + 15.0
    metrics["ok"] = ok
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_text(out / "predictions.jsonl", "".join(
        json.dumps({"id": q.id, "question": q.question, "prediction": a.text, "gold": q.answers,
                    "no_retrieval": nr, "passages": [{"id": h.id, "score": h.score} for h in a.passages]}) + "\n"
        for q, a, nr in zip(test_q, answers, no_ret)))
    atlas.save_pretrained(out / "model")
    console.print(f"Run folder: {out} (metrics.json, predictions.jsonl, model/, index/) - {metrics['seconds']:.0f}s")
    console.print(f"Try: atlas-kit ask \"{test_q[0].question}\" --index {out / 'index'} --reader {out / 'model' / 'reader'}")
    if not ok:
        console.print("[red]The reader did not beat the no-retrieval baseline by 15 points.")
    metrics["out"] = str(out)
    return metrics
