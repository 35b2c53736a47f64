"""RMT memorisation benchmark (issue 14): accuracy against the number of evaluation segments, beyond
the trained length, with the no-memory and full-attention baselines trained and measured in the
same run; the 2022 algorithmic tasks; and the cost per input token against the input length.

1. bAbI-style tasks (``memorize``, ``detect``, ``reason``; 6 answers, chance 1/6) with natural
   filler text read from ``--filler``. Models, all trained on ``N`` segments' worth of input:

   * ``rmt`` - memory tokens, trained with the curriculum 1, 2, 4, ... N segments (each stage a
     TrainLoop fit starting from the previous one), evaluated at 1 ... 4N segments; its rows also
     carry ``accuracy_memory_reset`` (the same weights, memory reset before every segment);
   * ``no_memory`` - the same backbone reading only the last segment (where the question is);
   * ``full_attention`` - the backbone reading the whole input as one segment, evaluated only
     where the input fits its position table (``--full-limit`` tokens).

   Backbones: ``--backbone minilm`` (the bundled pretrained all-MiniLM-L6-v2, M = 10, the issue's
   setting; on this project's shared 2-core CPU machines one training step of batch 8 x 2 x 64
   tokens takes ~10 s, so the full run is for a GPU or a quiet machine) or ``--backbone tiny`` (a
   2-layer 64-d BERT built from a config with the MiniLM tokenizer, M = 4: seconds per task).

2. Algorithmic tasks of the 2022 paper on a small GPT-2 built from a config: ``copy`` and
   ``associative`` retrieval over several segments, RMT (curriculum over segment counts) against
   the same model with no memory (M = 0, each segment read alone); the paper's figures beside ours.

3. Cost: seconds per input token of an RMT forward pass over n segments and of full attention
   over the same n x segment tokens, as ratios to the one-segment cost, measured in one run.

    python eval/rmt_memorization.py --quick                 # tiny backbone, N = 2, minutes on a CPU
    python eval/rmt_memorization.py                         # MiniLM, N = 4 (GPU or hours of CPU)
    python eval/rmt_memorization.py --quick --seed 1 --filler PATH.txt

Writes ``eval/results/rmt_memorization.json`` (``rows``: ``task``, ``model``, ``train_segments``,
``eval_segments``, ``accuracy``, ...; ``cost`` rows separately) and ``rmt_memorization.png``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import time
from typing import Any

import _common  # noqa: F401  (sys.path, offline environment)
import torch

from atlas_kit.memory import RMT
from atlas_kit.storage import atomic_write_json, read_json
from atlas_kit.memory.rmt_training import RMTConfig, RMTStep, curriculum_stages, train_curriculum
from atlas_kit.tasks.memorization import FACT_TASKS, Filler, algorithmic_task, fact_task
from atlas_kit.tokenization import default_tokenizer
from atlas_kit.train.loop import TrainLoop

log = logging.getLogger("rmt_memorization")

PAPER = {  # Bulatov et al. 2022 (Table / Fig. of the algorithmic tasks): RMT vs no-memory figures
    ("copy", "rmt"): 1.00, ("copy", "no_memory"): 0.10, ("associative", "rmt"): 0.999, ("associative", "no_memory"): 0.50,
}


def settings(args: argparse.Namespace) -> dict[str, Any]:
    quick = args.quick
    if args.backbone == "minilm":
        s = {"segment": 64, "mem": 10, "lr": 1e-4, "batch": 8, "weight_decay": 0.01, "scheduler": "cosine"}
    else:
        s = {"segment": 16, "mem": 4, "lr": 2e-3, "batch": 16, "weight_decay": 0.0, "scheduler": "constant"}
    n = args.train_segments or (2 if quick else 4)
    stages = curriculum_stages(n)
    per_stage = args.steps or (300 if args.backbone == "tiny" else 200)
    s.update({"train_segments": n, "stages": stages,
              "stage_steps": [max(50, per_stage // 3)] + [per_stage] * (len(stages) - 1),
              "baseline_steps": per_stage * max(1, len(stages) - 1) + max(50, per_stage // 3),
              "eval_segments": sorted({1, 2, n, 2 * n, 3 * n, 4 * n} if not quick else {1, n, 2 * n, 4 * n}),
              "train_examples": 2000, "eval_examples": 100 if quick else 300})
    return s


def tiny_bert(vocab: int, positions: int, seed: int):
    from transformers import BertConfig, BertModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return BertModel(BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=128, max_position_embeddings=positions))


def make_encoder(args, vocab: int, mem: int, segment: int, seed: int) -> RMT:
    if args.backbone == "minilm":
        return RMT.from_backbone(None, "encoder", num_mem_tokens=mem, segment_size=segment, num_classes=6, seed=seed)
    return RMT(tiny_bert(vocab, max(segment + mem + 3, 64), seed), "encoder", num_mem_tokens=mem,
               segment_size=segment, num_classes=6, seed=seed)


def loop_config(s: dict[str, Any], seed: int, steps: int) -> RMTConfig:
    return RMTConfig(steps=steps, batch_size=s["batch"], lr=s["lr"], scheduler=s["scheduler"], warmup_steps=10,
                     weight_decay=s["weight_decay"], seed=seed, tensorboard=False, log_every=50)


def fact_rows(task: str, args, s, tok, filler) -> list[dict[str, Any]]:
    seg, n, seed = s["segment"], s["train_segments"], args.seed

    def data(segments: int, split_seed: int, size: int):
        return fact_task(task, size, segments * seg, tok, filler, seed=split_seed)

    def evaluate(step: RMTStep, model: str, segments: int, steps: int, seconds: float) -> dict[str, Any]:
        m = step.evaluate(data(segments, seed * 1000 + 700 + segments, s["eval_examples"]), steps, None)
        row = {"task": task, "model": model, "train_segments": n, "eval_segments": segments, "accuracy": m["accuracy"]}
        if "accuracy_memory_reset" in m:
            row["accuracy_memory_reset"] = m["accuracy_memory_reset"]
        row["train_s"] = round(seconds, 1)
        return row

    def fits(segments: int) -> bool:  # reason's two facts and question need ~20 tokens
        try:
            data(segments, 0, 1)
            return True
        except ValueError:
            return False

    stages = [k for k in s["stages"] if fits(k)]
    stage_steps = [st for k, st in zip(s["stages"], s["stage_steps"]) if fits(k)]
    lengths = [e for e in s["eval_segments"] if fits(e)]
    if stages != s["stages"]:
        log.info("%s: %d-token segments cannot hold the task at %s segment(s): curriculum %s", task, seg,
                 sorted(set(s["stages"]) - set(stages)), stages)
    rows = []
    t0 = time.perf_counter()
    step = RMTStep(make_encoder(args, len(tok), s["mem"], seg, seed), "classify", eval_batch_size=32)
    # vary_segments mixes in every shorter length; one the segments cannot hold uses the shortest that fits
    train_curriculum(step, lambda k: (data(max(k, stages[0]), seed * 1000 + k, s["train_examples"]), None), stages,
                     loop_config(s, seed, 0), steps=stage_steps, show_progress=False, vary_segments=args.vary_segments)
    took = time.perf_counter() - t0
    rows += [evaluate(step, "rmt", e, sum(stage_steps), took) for e in lengths]
    log.info("%s rmt: %s", task, [r["accuracy"] for r in rows])

    train = data(n, seed * 1000 + n, s["train_examples"])
    if "no_memory" in args.models:
        t0 = time.perf_counter()
        base = RMTStep(make_encoder(args, len(tok), 0, seg, seed), "classify", last_segment_only=True, eval_batch_size=32)
        TrainLoop(base, loop_config(s, seed, s["baseline_steps"])).fit(train, show_progress=False)
        took = time.perf_counter() - t0
        rows += [evaluate(base, "no_memory", e, s["baseline_steps"], took) for e in lengths]

    limit = args.full_limit - 2  # [CLS] ... [SEP]
    if n * seg <= limit and "full_attention" in args.models:
        t0 = time.perf_counter()
        if args.backbone == "minilm":
            full_model = RMT.from_backbone(None, "encoder", num_mem_tokens=0, segment_size=limit, num_classes=6, seed=seed)
        else:
            full_model = RMT(tiny_bert(len(tok), args.full_limit, seed), "encoder", num_mem_tokens=0,
                             segment_size=limit, num_classes=6, seed=seed)
        full = RMTStep(full_model, "classify", eval_batch_size=32)
        TrainLoop(full, loop_config(s, seed, s["baseline_steps"])).fit(train, show_progress=False)
        took = time.perf_counter() - t0
        rows += [evaluate(full, "full_attention", e, s["baseline_steps"], took)
                 for e in lengths if e * seg <= limit]
    return rows


def tiny_gpt2(vocab: int, positions: int, seed: int, d: int = 64, layers: int = 2):
    from transformers import GPT2Config, GPT2LMHeadModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=d, n_layer=layers, n_head=4, n_positions=positions,
                                          bos_token_id=0, eos_token_id=0))


def algorithmic_examples(task: str, segments: int, segment: int, size: int, seed: int, vocab: int = 10) -> list:
    """``task`` sized so that ``input [sep] target`` fills ``segments`` segments of ``segment`` tokens:
    copy holds ``(segments x segment - 1) // 2`` symbols; associative ``min(vocab, (segments x
    segment - 3) // 2)`` key-value pairs, then the asked key (its value is the one-token target)."""
    room = segments * segment
    if task == "copy":
        return algorithmic_task("copy", size, max(1, (room - 1) // 2), vocab=vocab, seed=seed, offset=2)
    pairs = max(1, min(vocab, (room - 3) // 2))
    return algorithmic_task("associative", size, 2 * pairs, vocab=vocab, seed=seed, pairs=pairs, offset=2)


def algorithmic_rows(task: str, args, quick: bool) -> list[dict[str, Any]]:
    """The 2022 paper's algorithmic tasks with the decoder (lm head: ``input [sep] target``) on a
    GPT-2 built from a config. RMT is trained with the segment curriculum (the paper trains its
    algorithmic tasks with a curriculum over segment counts too); the no-memory baseline (M = 0,
    each segment read on its own) is trained for as many steps on the final length. Accuracy is
    per target token (teacher-forced argmax); ``sequence_accuracy`` = every token right.

    Every stage trains on its length and all shorter ones mixed (``vary_segments``, the reference's
    ``--vary_n_segments``), and the memory has more slots than the symbols it must hold at once
    (with M = 8 for 8 copied symbols the second segment's writes overwrote what the third needed).

    quick: 3 segments of 6 tokens (copy of 8 symbols, M = 12; associative retrieval over 7 pairs,
    M = 16), one stage of 1-3 segments mixed; full: the paper's copy of 24 symbols over 6 segments
    of 9 tokens (M = 32) and associative retrieval over 3 segments, curriculum 1, 2, 4, 6."""
    seed, vocab = args.seed, 10
    if quick:
        segment, n_final, d, layers = 6, 3, 64, 2
        mem = 12 if task == "copy" else 16
        stages, steps = [3], [args.alg_steps or (1200 if task == "copy" else 3000)]
    else:
        segment, n_final, mem, d, layers = (9, 6, 32, 128, 4) if task == "copy" else (6, 3, 16, 128, 4)
        stages = curriculum_stages(n_final)
        steps = [args.alg_steps or 3000] * len(stages)
    held_out = algorithmic_examples(task, n_final, segment, 200, seed * 1000 + 2)
    rows = []
    for model, m in (("rmt", mem), ("no_memory", 0)):
        t0 = time.perf_counter()
        rmt = RMT(tiny_gpt2(vocab + 2, segment + 2 * m, seed, d, layers), "decoder", num_mem_tokens=m,
                  segment_size=segment, seed=seed)
        step = RMTStep(rmt, "lm", sep_token_id=1, eval_batch_size=50)
        cfg = RMTConfig(batch_size=32, lr=2e-3, scheduler="constant", warmup_steps=20, weight_decay=0.0, seed=seed,
                        tensorboard=False, log_every=100)
        plan = (stages, steps) if model == "rmt" else ([n_final], [sum(steps)])
        train_curriculum(step, lambda n: (algorithmic_examples(task, n, segment, 8000, seed * 1000 + n), None),
                         plan[0], cfg, steps=plan[1], show_progress=False, vary_segments=True)
        r = step.evaluate(held_out, sum(steps), None)
        row = {"task": task, "model": model, "train_segments": n_final, "eval_segments": n_final,
               "accuracy": r["token_accuracy"], "sequence_accuracy": r["accuracy"],
               "position_accuracy": [round(x, 3) for x in r["position_accuracy"]],
               "paper": PAPER.get((task, model)), "train_s": round(time.perf_counter() - t0, 1)}
        if "token_accuracy_memory_reset" in r:
            row["accuracy_memory_reset"] = r["token_accuracy_memory_reset"]
        rows.append(row)
        log.info("%s %s: %s", task, model, row)
    return rows


@torch.no_grad()
def cost_rows(args, s, vocab: int) -> list[dict[str, Any]]:
    """Forward seconds per input token (batch 8, best of 5), RMT over n segments of 64 tokens vs
    full attention over the same n x 64 tokens (up to 7 x 64 + 2 <= 512 positions; RMT goes on to
    16 segments). ``--cost-backbone``: the bundled MiniLM (default) or the tiny BERT."""
    seg = 64
    if args.cost_backbone == "minilm":
        rmt = RMT.from_backbone(None, "encoder", num_mem_tokens=10, segment_size=seg, num_classes=6).eval()
        full = RMT.from_backbone(None, "encoder", num_mem_tokens=0, segment_size=510, num_classes=6).eval()
    else:
        rmt = RMT(tiny_bert(vocab, 512, 0), "encoder", num_mem_tokens=4, segment_size=seg, num_classes=6).eval()
        full = RMT(tiny_bert(vocab, 512, 0), "encoder", num_mem_tokens=0, segment_size=510, num_classes=6).eval()
    gen = torch.Generator().manual_seed(0)
    rows, base = [], {}
    for n in [1, 2, 4, 7, 16]:
        x = torch.randint(1000, vocab, (8, n * seg), generator=gen)
        for name, model in (("rmt", rmt), ("full_attention", full)):
            if name == "full_attention" and n * seg > 510:
                continue
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
            per_token = min(times) / x.numel()
            base.setdefault(name, per_token)
            rows.append({"model": name, "backbone": args.cost_backbone, "segments": n, "tokens": n * seg,
                         "us_per_token": per_token * 1e6, "ratio_to_1_segment": per_token / base[name]})
    return rows


def plot(rows: list[dict[str, Any]], cost: list[dict[str, Any]], path, train_segments: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in FACT_TASKS if any(r["task"] == t for r in rows)]
    fig, axes = plt.subplots(1, len(tasks) + 1, figsize=(4.2 * (len(tasks) + 1), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for model, style in (("rmt", "-o"), ("no_memory", "--s"), ("full_attention", ":^")):
            pts = [(r["eval_segments"], r["accuracy"]) for r in rows if r["task"] == task and r["model"] == model]
            if pts:
                ax.plot(*zip(*pts), style, ms=4, label=model)
        pts = [(r["eval_segments"], r["accuracy_memory_reset"]) for r in rows
               if r["task"] == task and r["model"] == "rmt" and "accuracy_memory_reset" in r]
        ax.plot(*zip(*pts), "-.x", ms=4, label="rmt, memory reset")
        ax.axhline(1 / 6, color="grey", lw=0.8)
        ax.axvline(train_segments, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_title(task)
        ax.set_xlabel("evaluation segments (dashed: trained)")
        ax.set_ylabel("accuracy")
    axes[0][0].legend(fontsize=7)
    ax = axes[0][-1]
    for model in ("rmt", "full_attention"):
        pts = [(r["tokens"], r["ratio_to_1_segment"]) for r in cost if r["model"] == model]
        ax.plot(*zip(*pts), "-o", ms=4, label=model)
    ax.set_xlabel("input tokens")
    ax.set_ylabel("time per token / 1-segment time per token")
    ax.set_title("cost")
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    print(f"wrote {path}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny backbone, N = 2, fewer examples (minutes on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--filler", default=None, help="natural-text file (passages or .txt) for the bAbI-style tasks")
    p.add_argument("--backbone", choices=["minilm", "tiny"], default=None, help="default: tiny with --quick, else minilm")
    p.add_argument("--tasks", default="memorize,detect,reason,copy,associative")
    p.add_argument("--train-segments", type=int, default=None, help="N (default 2 quick, 4 full)")
    p.add_argument("--steps", type=int, default=None, help="steps per curriculum stage after the first")
    p.add_argument("--alg-steps", type=int, default=None, help="training steps of each algorithmic model")
    p.add_argument("--cost-backbone", choices=["minilm", "tiny"], default="minilm")
    p.add_argument("--full-limit", type=int, default=512, help="positions of the full-attention baseline")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--models", default="rmt,no_memory,full_attention", help="fact tasks: which models to train")
    p.add_argument("--vary-segments", action="store_true",
                   help="fact tasks: each curriculum stage of n segments trains on 1..n segments mixed")
    p.add_argument("--resume", action="store_true", help="reuse finished tasks of an interrupted run (same settings)")
    p.add_argument("--name", default="rmt_memorization")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    args.backbone = args.backbone or ("tiny" if args.quick else "minilm")
    s = settings(args)
    tasks = [t for t in args.tasks.split(",") if t]
    tok = default_tokenizer()
    filler = Filler(args.filler or _common.shared_data("dpr_wiki_sample", "sample_data.jsonl"), tok,
                    max_texts=2000) if any(t in FACT_TASKS for t in tasks) else None
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    # each finished task's rows are kept in NAME.partial.json; --resume reuses those of the same settings
    partial = _common.RESULTS / f"{args.name}.partial.json"
    key = {"seed": args.seed, "quick": args.quick, "backbone": args.backbone, "filler": args.filler, "settings": s,
           "alg_steps": args.alg_steps, "models": args.models, "vary_segments": args.vary_segments}
    done: dict[str, list] = {}
    if args.resume and partial.is_file():
        saved = read_json(partial)
        if saved.get("key") == json.loads(json.dumps(key)):
            done = saved["tasks"]
    for task in tasks:
        if task in done:
            log.info("%s: reusing the rows of %s", task, partial)
        else:
            done[task] = fact_rows(task, args, s, tok, filler) if task in FACT_TASKS else algorithmic_rows(task, args, args.quick)
            atomic_write_json(partial, {"key": key, "tasks": done})
        rows += done[task]
    cost = cost_rows(args, s, len(tok))
    meta = {"seed": args.seed, "quick": args.quick, "backbone": args.backbone, "filler": filler.path if filler else None,
            "settings": s, "vary_segments": args.vary_segments, "models": args.models, "cost": cost, "seconds": round(time.perf_counter() - t0, 1),
            "chance": {"fact_tasks": 1 / 6, "copy": 0.1, "associative": 0.1}}
    _common.report(args.name, rows, meta, title="RMT memorisation: accuracy vs evaluation segments")
    _common.report(args.name + "_cost", cost, {"seed": args.seed, "backbone": args.backbone},
                   title="cost per input token (ratio to one segment)")
    if any(t in FACT_TASKS for t in tasks):
        plot(rows, cost, _common.RESULTS / f"{args.name}.png", s["train_segments"])
    partial.unlink(missing_ok=True)  # the run is complete: nothing left to resume


if __name__ == "__main__":
    main()
