"""kNN-memory language models (issue 15): passkey retrieval far beyond the window, perplexity against
memory size, FoT's distraction analysis and the cost per token - each against the same model
without memory (or full attention), measured in one run.

Models (small GPT-2s built from a config, trained here on generated documents of 2 windows of W
tokens with natural filler text from ``--filler``; the same seed and data for all):

* ``fot`` - FoT: one softmax over memory and local keys, cross-batch training with ``d`` = 4
  (each window's memory holds its previous window and those of 3 other documents), the loss
  reaching the memory keys;
* ``fot_d1`` - the same with ``d`` = 1 (plain memory training: only its own previous window);
* ``memorizing`` - the Memorizing Transformer: a learned per-head gate between a local and a
  memory softmax, ``d`` = 1, the memory not differentiable (``memory_grad=False``);
* ``window`` - each model's weights reading every window alone (no memory): the window-only baseline.

Benchmarks (``rows``: ``benchmark``, ``model``, the varied quantity, the measured one):

1. ``passkey``: a pass key (a number, one token) stated once at a random place in a document of
   ``context_tokens`` = W ... 32 W tokens, asked at the end; ``accuracy`` by teacher forcing with
   the kNN memory (top-k exact search over every earlier window).
2. ``perplexity``: documents of 16 K + tokens whose facts (named pass keys) recur after gaps
   log-uniform up to 16 K tokens, read with a memory of ``memory_tokens`` = 0, 1 K, 4 K, 16 K
   tokens per (document, layer, head) (FIFO): ``perplexity`` on the recurring values.
3. ``distraction``: the key in the first window, the question in the second, the memory holding
   the first windows of the document and of ``d - 1`` other documents (their own named keys):
   ``accuracy`` and ``attention_mass`` (on the document's own entries) for d = 1 ... 8.
4. ``cost``: ``seconds_per_token`` reading ``context_tokens`` with the kNN memory (exact
   ``Flat`` and approximate ``HNSW32``) and with full attention over the same context (a model
   with a position table that long), and the ratios.

    python eval/memory_lm.py --quick        # ~10 minutes on 2 CPU cores
    python eval/memory_lm.py                # ~30 minutes on 2 CPU cores
    python eval/memory_lm.py --seed 1 --filler PATH.txt

Writes ``eval/results/memory_lm.json`` and ``memory_lm.png``.
"""
from __future__ import annotations

import argparse
import logging
import time
from typing import Any

import _common  # noqa: F401  (sys.path, offline environment)
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from atlas_kit.memory.memory_layers import KNNMemoryModel
from atlas_kit.memory.memory_training import MemoryLMConfig, MemoryLMStep, dense_score, knn_score
from atlas_kit.tasks.long_documents import passkey_documents, recurring_fact_documents
from atlas_kit.tasks.memorization import Filler
from atlas_kit.tokenization import default_tokenizer
from atlas_kit.train.loop import TrainLoop

log = logging.getLogger("memory_lm")

MODELS = {  # name -> (combine, d, memory_grad)
    "fot": ("single", 4, True),
    "fot_d1": ("single", 1, True),
    "memorizing": ("gate", 1, False),
}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    return {"window": 64, "n_embd": 64, "n_layer": 3, "n_head": 4, "memory_layer": 1, "k": 32,
            "steps": 1500 if quick else 2500, "batch_size": 32, "lr": 3e-3, "train_examples": 48000 if quick else 80000,
            "passkey_windows": [1, 2, 4, 8, 16, 32], "passkey_examples": 100 if quick else 200,
            "memory_tokens": [0, 1024, 4096, 16384], "fact_documents": 8 if quick else 16, "facts": 12,
            "fact_tokens": 16384 + 2048, "distraction_d": [1, 2, 4, 8], "distraction_examples": 128 if quick else 256,
            "cost_tokens": [2048, 8192]}


def build(s: dict[str, Any], vocab: int, combine: str, seed: int, positions: int | None = None) -> KNNMemoryModel:
    torch.manual_seed(seed)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=s["n_embd"], n_layer=s["n_layer"], n_head=s["n_head"],
                                    n_positions=positions or s["window"], attn_pdrop=0.0, resid_pdrop=0.0,
                                    embd_pdrop=0.0))
    return KNNMemoryModel(lm, layers=[s["memory_layer"]], k=s["k"], combine=combine)


def train(name: str, s: dict[str, Any], vocab: int, data: list, seed: int) -> tuple[KNNMemoryModel, dict[str, Any]]:
    combine, d, grad = MODELS[name]
    model = build(s, vocab, combine, seed)
    step = MemoryLMStep(model, s["window"], d=d, memory_grad=grad)
    cfg = MemoryLMConfig(steps=s["steps"], batch_size=s["batch_size"], lr=s["lr"], warmup_steps=50, weight_decay=0.0,
                         log_every=50, tensorboard=False, seed=seed)
    loop = TrainLoop(step, cfg)
    t0 = time.perf_counter()
    loop.fit(data)
    seconds = time.perf_counter() - t0
    last = loop.history[-5:]
    info = {"model": name, "train_seconds": round(seconds, 1),
            "final_train_loss": sum(h["loss"] for h in last) / len(last),
            "final_train_accuracy": sum(h["accuracy"] for h in last) / len(last)}
    log.info("%s trained: %s", name, info)
    return model, info


@torch.no_grad()
def seconds_per_token(model: KNNMemoryModel, ids: torch.Tensor, window: int | None, repeats: int = 2) -> float:
    """Mean seconds per token reading ``ids`` [1, T]: window by window with the kNN memory
    (``window``), or in one forward pass (``None``: full attention)."""
    best = float("inf")
    for _ in range(repeats):
        model.reset()
        t0 = time.perf_counter()
        if window is None:
            model(ids, hidden_only=True)
        else:
            for t in range(ids.shape[1] // window):
                model(ids[:, t * window : (t + 1) * window], documents=["cost"], hidden_only=True)
        best = min(best, time.perf_counter() - t0)
    model.reset()
    return best / ids.shape[1]


def plot(rows: list[dict[str, Any]], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for bench, ax, x, y, logx in (("passkey", axes[0], "context_tokens", "accuracy", True),
                                  ("perplexity", axes[1], "memory_tokens", "perplexity", False),
                                  ("distraction", axes[2], "d", "attention_mass", False)):
        for model in dict.fromkeys(r["model"] for r in rows if r["benchmark"] == bench):
            pts = [(r[x], r[y]) for r in rows if r["benchmark"] == bench and r["model"] == model]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=model)
        if logx:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(bench)
        ax.legend()
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--filler", default=str(_common.shared_data("dpr_wiki_sample", "sample_data.jsonl")))
    parser.add_argument("--name", default="memory_lm")
    parser.add_argument("--steps", type=int, default=None, help="training steps per model (default: 1500 quick, 2500 full)")
    parser.add_argument("--examples", type=int, default=None, help="evaluation documents per point (a smoke run: 8)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    s = settings(args)
    if args.steps is not None:
        s["steps"] = args.steps
        s["train_examples"] = min(s["train_examples"], max(64, args.steps * s["batch_size"]))
    if args.examples is not None:
        s.update(passkey_examples=args.examples, fact_documents=max(1, args.examples // 4),
                 distraction_examples=max(8, args.examples))
    w = s["window"]
    tok = default_tokenizer()
    filler = Filler(args.filler, tok, max_texts=1000)
    data = passkey_documents(s["train_examples"], 2 * w, tok, filler, seed=args.seed * 1000 + 1)
    rows: list[dict[str, Any]] = []
    models, training = {}, []
    for name in MODELS:
        models[name], info = train(name, s, len(tok), data, args.seed)
        training.append(info)

    # 1. passkey retrieval against the context length
    for n in s["passkey_windows"]:
        docs = passkey_documents(s["passkey_examples"], n * w, tok, filler, seed=args.seed * 1000 + 100 + n)
        for name, model in models.items():
            r = knn_score(model, docs, w, memory=True)
            rows.append({"benchmark": "passkey", "model": name, "context_tokens": n * w, "accuracy": r["accuracy"]})
        r = knn_score(models["fot"], docs, w, memory=False)
        rows.append({"benchmark": "passkey", "model": "window", "context_tokens": n * w, "accuracy": r["accuracy"]})
        log.info("passkey at %d tokens: %s", n * w, rows[-4:])

    # 2. perplexity against the memory size, on documents whose facts recur far apart
    docs = recurring_fact_documents(s["fact_documents"], s["fact_tokens"], tok, filler, seed=args.seed * 1000 + 300,
                                    facts=s["facts"], min_gap=w, max_gap=max(s["memory_tokens"]))
    for name in ("fot", "memorizing"):
        model = models[name]
        for m in s["memory_tokens"]:
            if m:
                model.new_memory(capacity=m)
            r = knn_score(model, docs, w, memory=bool(m), batch_size=8)
            rows.append({"benchmark": "perplexity", "model": name, "memory_tokens": m, "perplexity": r["perplexity"],
                         "accuracy": r["accuracy"], "token_accuracy": r["token_accuracy"]})
            log.info("perplexity: %s", rows[-1])
        model.new_memory(capacity=65536)

    # 3. distraction: 1 relevant + (d - 1) irrelevant documents in the memory
    docs = passkey_documents(s["distraction_examples"], 2 * w, tok, filler, seed=args.seed * 1000 + 400, window=w,
                             key_window=0)
    for name in ("fot", "fot_d1", "memorizing"):
        for d in s["distraction_d"]:
            r = dense_score(models[name], docs, w, d=d)
            rows.append({"benchmark": "distraction", "model": name, "d": d, "accuracy": r["accuracy"],
                         "attention_mass": r["relevant_mass"], "memory_mass": r["memory_mass"]})
            log.info("distraction: %s", rows[-1])

    # 4. cost per token: kNN memory (exact, approximate) vs full attention over the same context
    for n_tokens in s["cost_tokens"]:
        ids = torch.tensor([passkey_documents(1, n_tokens, tok, filler, seed=7)[0].input_ids])
        timings = {}
        for backend in ("Flat", "HNSW32"):
            model = models["fot"]
            model.new_memory(capacity=65536, backend=backend)
            timings[f"knn_{backend}"] = seconds_per_token(model, ids, w)
        model.new_memory(capacity=65536, backend="Flat")
        full = build(s, len(tok), "single", args.seed, positions=n_tokens)
        timings["full_attention"] = seconds_per_token(full, ids, None)
        for kind, sec in timings.items():
            rows.append({"benchmark": "cost", "model": kind, "context_tokens": n_tokens, "seconds_per_token": sec,
                         "ratio_to_full_attention": sec / timings["full_attention"]})
        log.info("cost at %d tokens: %s", n_tokens, timings)

    meta = {"settings": s, "seed": args.seed, "filler": args.filler, "quick": args.quick, "training": training}
    _common.report(args.name, rows, meta, title="kNN-memory LMs: passkey, perplexity, distraction, cost")
    plot(rows, _common.RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
