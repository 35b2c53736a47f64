"""``atlas-kit demo``: the whole pipeline, offline, in under two minutes on a laptop CPU.

A seeded fictional world (invented names, so no model can know the answers) gives a corpus of
one-fact passages and questions. The bundled MiniLM retriever indexes the corpus with FAISS; a
small Fusion-in-Decoder T5 built from a config learns, from questions about *training* entities,
to read answers out of the top-k retrieved passages; it is then tested on entities it never saw in
training. The same reader with no passages is the no-retrieval baseline: it cannot do better than
guessing.

How a reader trained from scratch in a minute generalises to names it has never seen:

* word-level tokens (one token per invented word) with *frozen* random embeddings: every word,
  seen in training or not, is an equally random vector, so what the reader learns about copying
  and matching words carries over to the held-out entities' words unchanged;
* renamed training examples: in every training example each invented word (entity names, values)
  is consistently replaced by a random *practice word* (:meth:`World.practice_words`, words that
  occur nowhere in the world). Answers cannot be learnt by heart - only read - and held-out
  entities' words are still never seen in training;
* one fact per passage, and the reader reads the top-1 retrieved passage (R@1 is about 99% on
  this world, so the top passage holds exactly the asked fact); it is trained on the gold
  passage. :func:`train_reader_curriculum` also does k > 1 (gold passage first, then the top-k
  retrieved with the gold passage swapped in), but in CPU-minute budgets a from-scratch reader
  did not learn to pick among k = 3 passages (held-out EM 3% after 1,500 steps, see the README).

This differs from Atlas/FiD training (pretrained T5, no renaming) on purpose: no pretrained T5 is
available offline, and a from-scratch reader on the world's own words memorises its training
answers instead of learning to read (held-out EM near 0 in short runs, see the README).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from atlas_kit.api import Atlas
from atlas_kit.index import FaissIndex
from atlas_kit.metrics import qa_scores, recall_at_k
from atlas_kit.passages import Passages
from atlas_kit.reader import Reader
from atlas_kit.retriever import Retriever
from atlas_kit.storage import atomic_write_json, atomic_write_text
from atlas_kit.tokenization import train_word_tokenizer
from atlas_kit.train.loop import LoopConfig, TrainLoop, TrainStep
from atlas_kit.world import World

__all__ = ["run_demo", "train_reader_curriculum", "ReaderCurriculumStep", "CurriculumConfig", "Renamer",
           "plot_results", "DEMO_DEFAULTS"]

log = logging.getLogger(__name__)

DEMO_DEFAULTS: dict[str, Any] = {
    "n_entities": 300,
    "granularity": "fact",
    "typed_values": True,
    "steps": 2000,
    "k": 1,
    "gold_only_fraction": 1.0,
    "gold_mix": 0.2,
    "batch_size": 16,
    "lr": 1e-3,
    "d_model": 128,
    "layers": 2,
    "heads": 4,
    "dropout": 0.0,
    "practice_words": 4000,
    "freeze_embeddings": True,
    # The reader's matrices are tiny: one thread spends 0.03 s of CPU per training step, two
    # threads 0.24-0.98 s (thread synchronisation, measured on a busy 2-core machine).
    "reader_threads": 1,
}

Example = tuple[str, list[dict[str, str]], str]


def _get(passage: Any, name: str) -> str:
    """``title``/``text`` of a passage object (Passage, search hit) or dict."""
    value = passage.get(name) if isinstance(passage, dict) else getattr(passage, name, "")
    return str(value or "")


class Renamer:
    """Replaces every word of ``words`` in one training example by a random practice word, the
    same word everywhere in that example (question, passage titles and texts, answer), a fresh
    draw for the next example."""

    _WORD = re.compile(r"\w+")

    def __init__(self, words: set[str], practice: Sequence[str], rng: random.Random) -> None:
        if not practice:
            raise ValueError("Renamer needs practice words")
        self.words, self.practice, self.rng = words, list(practice), rng

    def __call__(self, question: str, passages: Sequence[Any], answer: str) -> Example:
        ctx = [{"title": _get(p, "title"), "text": _get(p, "text")} for p in passages]
        found: list[str] = []
        for text in [question, answer] + [c["title"] + " " + c["text"] for c in ctx]:
            for w in self._WORD.findall(text):
                if w in self.words and w not in found:
                    found.append(w)
        if len(found) > len(self.practice):
            raise ValueError(f"an example has {len(found)} invented words but only {len(self.practice)} practice words")
        new = dict(zip(found, self.rng.sample(self.practice, len(found))))

        def sub(text: str) -> str:
            return self._WORD.sub(lambda m: new.get(m.group(0), m.group(0)), text)

        return sub(question), [{"title": sub(c["title"]), "text": sub(c["text"])} for c in ctx], sub(answer)


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` intra-op threads (``None``: unchanged), then restore the setting."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class CurriculumConfig(LoopConfig):
    """The demo reader's loop settings: Atlas's linear schedule decaying to 5% of ``lr`` with a
    warm-up of 5% of the phase, weight decay 0.01, clip 1.0."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    scheduler: str = "linear"
    lr_min_ratio: float = 0.05
    tensorboard: bool = False


class ReaderCurriculumStep(TrainStep):
    """One reader-only training step on (question, passages, answer) built per batch: the gold
    passage alone (``gold_only``), else the top-``k`` retrieved with the gold passage swapped in
    (at a random position) when retrieval missed it, a share ``gold_mix`` of the batches staying
    gold-only; ``rename`` rewrites each example before it is read. Examples are indices."""

    def __init__(self, reader: Reader, questions: list[str], answers: list[str], gold: list[Any],
                 retrieved: list[list[Any]], k: int, gold_only: bool, gold_mix: float, rng: random.Random,
                 rename: Callable[[str, Sequence[Any], str], Example] | None = None) -> None:
        self.reader, self.questions, self.answers, self.gold, self.retrieved = reader, questions, answers, gold, retrieved
        self.k, self.gold_only, self.gold_mix, self.rng, self.rename = k, gold_only, gold_mix, rng, rename

    def modules(self) -> dict[str, torch.nn.Module]:
        return {"reader": self.reader}

    def loss(self, batch: list[int], step: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.gold_only or self.rng.random() < self.gold_mix:
            ctx = [[self.gold[i]] for i in batch]
        else:
            ctx = []
            for i in batch:
                cand = list(self.retrieved[i][: self.k])
                if all(c.id != self.gold[i].id for c in cand):
                    cand[self.rng.randrange(self.k)] = self.gold[i]
                ctx.append(cand)
        examples = [(self.questions[i], c, self.answers[i]) for i, c in zip(batch, ctx)]
        if self.rename is not None:
            examples = [self.rename(*ex) for ex in examples]
        loss = self.reader.loss([q for q, _, _ in examples], [c for _, c, _ in examples], [a for _, _, a in examples])
        return loss, {"loss": loss.item()}


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
    rename: Callable[[str, Sequence[Any], str], Example] | None = None,
) -> list[float]:
    """Train ``reader`` on (question, passages, answer): gold passage alone for the first
    ``gold_only_fraction`` of steps, then the top-``k`` retrieved passages with the gold passage
    swapped in (at a random position) when retrieval missed it; in that second phase a share
    ``gold_mix`` of the batches stay gold-only so the copying skill is not forgotten while
    passage selection is learned. ``rename`` (e.g. a :class:`Renamer`) rewrites each example
    before it is read. Only parameters with ``requires_grad`` are trained. Each phase is one run of
    the generic loop (:class:`~atlas_kit.train.TrainLoop`) with its own warm-up and decay: the
    second phase is a new task. Returns the loss curve."""
    rng = random.Random(seed)
    gold_steps = int(round(gold_only_fraction * steps))
    losses: list[float] = []
    indices = list(range(len(questions)))
    for phase, (phase_steps, gold_only) in enumerate([(gold_steps, True), (steps - gold_steps, False)]):
        if phase_steps <= 0:
            continue
        step = ReaderCurriculumStep(reader, questions, answers, gold, retrieved, k, gold_only, gold_mix, rng, rename)
        cfg = CurriculumConfig(steps=phase_steps, batch_size=batch_size, lr=lr,
                               warmup_steps=max(1, phase_steps // 20), seed=seed + phase)
        loop = TrainLoop(step, cfg)
        loop.fit(indices, show_progress=show_progress)
        losses += [h["loss"] for h in loop.history]
    reader.eval()
    return losses


def plot_results(metrics: dict[str, Any], path: str | os.PathLike) -> Path:
    """A bar chart (PNG) of held-out EM without retrieval, with retrieval and with the gold
    passage, beside retrieval recall@k; written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    k = metrics["config"]["k"]
    fig = Figure(figsize=(7.5, 3.0), dpi=100)
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    names = ["no retrieval", f"top-{k} retrieved", "gold passage\n(oracle)"]
    ems = [metrics[key]["EM"] for key in ("no_retrieval", "with_retrieval", "gold_passage")]
    bars = left.bar(names, ems, color=["#b0b0b0", "#2b7bba", "#8fbc8f"])
    left.set_title("Reader: held-out exact match (%)", fontsize=10)
    recalls = metrics["retrieval"]
    rbars = right.bar(list(recalls), list(recalls.values()), color="#e0a040")
    right.set_title("Retriever: held-out recall@k (%)", fontsize=10)
    for ax, bs in ((left, bars), (right, rbars)):
        ax.set_ylim(0, 105)
        ax.bar_label(bs, fmt="%.1f", fontsize=9)
        ax.tick_params(labelsize=9)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def run_demo(
    out: str | Path = "runs/demo",
    n_entities: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    k: int | None = None,
    show: int = 5,
    quiet: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Run the demo, print what it does, write a run folder, and return the metrics.

    ``overrides`` set any other key of :data:`DEMO_DEFAULTS` (tests use tiny models)."""
    from rich.console import Console
    from rich.table import Table

    unknown = set(overrides) - set(DEMO_DEFAULTS)
    if unknown:
        raise ValueError(f"unknown demo settings {sorted(unknown)} (known: {sorted(DEMO_DEFAULTS)})")
    console = Console(quiet=quiet)
    cfg = dict(DEMO_DEFAULTS)
    cfg.update(overrides)
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
    console.print(f"World: {len(passages)} one-fact passages about {cfg['n_entities']} invented entities; "
                  f"{len(train_q)} training and {len(test_q)} held-out questions (about entities never seen in training).")
    console.print(f"  e.g. [cyan]{passages[0].title}[/cyan]: {passages[0].text}")

    retriever = Retriever.default()
    console.print(f"Retriever: {retriever.name} ({retriever.dim}-d, mean pooling, normalised). Building FAISS index...")
    index = FaissIndex.build(passages, retriever, factory="Flat", show_progress=not quiet)
    index.save(out / "index")
    atlas = Atlas(retriever, index=index, k=cfg["k"])
    ks = sorted({1, 3, 5, cfg["k"]})  # recall beyond k too: what more passages could add
    # training questions need retrieved passages only for a top-k phase (none with the default k = 1)
    top_k_phase = cfg["gold_only_fraction"] < 1.0
    ret_train = atlas.retrieve([q.question for q in train_q], k=cfg["k"]) if top_k_phase else None
    ret_test = atlas.retrieve([q.question for q in test_q], k=max(ks))
    rec = recall_at_k([h.ids for h in ret_test], [q.gold_ids for q in test_q], ks=ks)
    console.print("Retrieval on held-out questions: " + ", ".join(f"{name} {v:.1f}%" for name, v in rec.items()))

    with _torch_threads(cfg["reader_threads"]):
        practice = world.practice_words(cfg["practice_words"], seed=seed)
        tokenizer = train_word_tokenizer(world.texts() + practice)
        reader = Reader.from_config(tokenizer, d_model=cfg["d_model"], num_layers=cfg["layers"], num_heads=cfg["heads"],
                                    dropout=cfg["dropout"], seed=seed, text_maxlength=96, answer_maxlength=12)
        if cfg["freeze_embeddings"]:
            reader.model.get_input_embeddings().weight.requires_grad_(False)
        n_params = sum(p.numel() for p in reader.parameters() if p.requires_grad)
        plan = f"gold passage first, then top-{cfg['k']} retrieved" if top_k_phase else "reading the gold passage"
        console.print(f"Reader: FiD T5 from a config ({n_params / 1e6:.1f}M trained parameters, random init, frozen word "
                      f"embeddings), {cfg['steps']} steps on renamed training questions ({plan})...")
        gold = [passages.get(q.gold_ids[0]) for q in train_q]
        rename = Renamer(world.invented_words(), practice, random.Random(seed + 1)) if cfg["practice_words"] else None
        losses = train_reader_curriculum(
            reader, [q.question for q in train_q], [q.answers[0] for q in train_q], gold,
            [list(h) for h in ret_train] if ret_train else [[g] for g in gold], steps=cfg["steps"], k=cfg["k"], gold_only_fraction=cfg["gold_only_fraction"],
            gold_mix=cfg["gold_mix"], batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed, show_progress=not quiet,
            rename=rename,
        )
        atlas.reader = reader

        questions = [q.question for q in test_q]
        golds = [q.answers for q in test_q]
        answers = atlas.ask(questions, batch_size=32)
        no_ret = reader.generate(questions, [[] for _ in questions], batch_size=32)
        oracle = reader.generate(questions, [[passages.get(q.gold_ids[0])] for q in test_q], batch_size=32)
        metrics = {
            "retrieval": rec,
            "with_retrieval": qa_scores([a.text for a in answers], golds),
            "no_retrieval": qa_scores(no_ret, golds),
            "gold_passage": qa_scores(oracle, golds),
            "final_train_loss": float(np.mean(losses[-50:])),
            "config": cfg,
        }

    table = Table(title=f"Held-out questions (showing {show})")
    for col in ("question", "top passage", "answer", "gold"):
        table.add_column(col)
    for a, q in list(zip(answers, test_q))[:show]:
        top = a.passages[0]
        mark = "[green]" if qa_scores([a.text], [q.answers])["EM"] == 100 else "[red]"
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
    atomic_write_text(out / "predictions.jsonl", "".join(
        json.dumps({"id": q.id, "question": q.question, "prediction": a.text, "gold": q.answers,
                    "no_retrieval": nr, "passages": [{"id": h.id, "score": h.score} for h in a.passages]}) + "\n"
        for q, a, nr in zip(test_q, answers, no_ret)))
    atlas.save_pretrained(out / "model")
    chart = plot_results(metrics, out / "demo.png")
    metrics["seconds"] = round(time.perf_counter() - t_start, 1)
    atomic_write_json(out / "metrics.json", metrics)
    console.print(f"Run folder: {out} (metrics.json, predictions.jsonl, {chart.name}, model/, index/) - "
                  f"{metrics['seconds']:.0f}s")
    metrics["try"] = f'atlas-kit ask "{test_q[0].question}" --model {out / "model"}'
    console.print(f"Try: {metrics['try']}   (the saved model: same k, reader settings and index; "
                  f"it answers \"{answers[0].text}\" as above)")
    if not ok:
        console.print("[red]The reader did not beat the no-retrieval baseline by 15 points.")
    metrics["out"] = str(out)
    return metrics
