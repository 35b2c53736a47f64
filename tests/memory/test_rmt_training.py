"""RMT through the library's TrainLoop: batches for the three heads, a learning test that proves the
memory carries a fact across segments (with the memory-reset ablation in the same test), the
curriculum as successive fits, save/load through the step, and the recipe runner."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from atlas_kit.memory import RMT
from atlas_kit.memory.rmt_recipe import load_rmt_recipe, run_rmt_recipe
from atlas_kit.memory.rmt_training import (IGNORE, RMTConfig, RMTStep, curriculum_stages, encode_batch, mixed_lengths,
                                           train_curriculum)
from atlas_kit.tasks.memorization import Filler, MemoryExample, algorithmic_task, fact_task
from atlas_kit.tokenization import default_tokenizer
from atlas_kit.train.loop import TrainLoop
from tests.conftest import shared_data

FILLER = ("dpr_wiki_sample", "sample_data.jsonl")


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(scope="module")
def filler(tok):
    return Filler(shared_data(*FILLER), tok, max_texts=300)


def tiny_bert_rmt(vocab, segment_size=16, mem=4, seed=0, **kw):
    torch.manual_seed(seed)
    bert = BertModel(BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=128, max_position_embeddings=segment_size + mem + 3))
    return RMT(bert, "encoder", num_mem_tokens=mem, segment_size=segment_size, num_classes=6, **kw)


def test_rmt_carries_a_fact_across_segments_and_forgets_it_when_memory_is_reset(tok, filler):
    """Fact memorisation over 3 segments of 16 tokens: the fact opens segment 1, the question
    closes segment 3, natural text between. With memory: ~1.0; the same trained weights with the
    memory reset before every segment: chance (1/6) - the answer is nowhere else."""
    train = fact_task("memorize", 2000, 48, tok, filler, seed=0)
    held_out = fact_task("memorize", 300, 48, tok, filler, seed=1)
    step = RMTStep(tiny_bert_rmt(len(tok)), "classify")
    loop = TrainLoop(step, RMTConfig(steps=300, batch_size=16, lr=2e-3, scheduler="constant", warmup_steps=10,
                                     weight_decay=0.0, seed=0, tensorboard=False))
    loop.fit(train, show_progress=False)
    metrics = step.evaluate(held_out, loop.step, None)
    assert metrics["segments"] == 3.0
    assert metrics["accuracy"] >= 0.95, metrics
    assert abs(metrics["accuracy_memory_reset"] - 1 / 6) <= 0.08, metrics


def test_training_is_seeded(tok, filler):
    train = fact_task("memorize", 64, 32, tok, filler, seed=0)
    runs = []
    for _ in range(2):
        step = RMTStep(tiny_bert_rmt(len(tok)), "classify")
        loop = TrainLoop(step, RMTConfig(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, seed=3, tensorboard=False))
        loop.fit(train, show_progress=False)
        runs.append([h["loss"] for h in loop.history if "loss" in h])
    assert runs[0] == runs[1] and len(runs[0]) > 0


def test_batches_for_each_head():
    e = [MemoryExample([5, 6, 7], label=2, target=[7, 6]), MemoryExample([8], label=0, target=[9, 9, 9])]
    c = encode_batch(e, "classify")
    assert c["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and c["labels"].tolist() == [2, 0]
    assert c["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    lm = encode_batch(e, "lm", sep_token_id=1)
    assert lm["input_ids"].tolist() == [[5, 6, 7, 1, 7, 6], [8, 1, 9, 9, 9, 0]]
    i = IGNORE
    assert lm["labels"].tolist() == [[i, i, i, i, 7, 6], [i, i, 9, 9, 9, i]]
    s2s = encode_batch(e, "seq2seq")
    assert s2s["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]] and s2s["labels"].tolist() == [[7, 6, i], [9, 9, 9]]
    with pytest.raises(ValueError, match="sep_token_id"):
        encode_batch(e, "lm")
    with pytest.raises(ValueError, match="no label"):
        encode_batch([MemoryExample([3])], "classify")
    with pytest.raises(ValueError, match="head"):
        encode_batch(e, "regress")


def _lm_rmt(kind, seed=0):
    torch.manual_seed(seed)
    if kind == "decoder":
        backbone = GPT2LMHeadModel(GPT2Config(vocab_size=12, n_embd=32, n_layer=2, n_head=2, n_positions=32,
                                              bos_token_id=0, eos_token_id=0))
    else:
        backbone = T5ForConditionalGeneration(T5Config(vocab_size=12, d_model=32, d_kv=16, d_ff=64, num_layers=2,
                                                       num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                                                       eos_token_id=1))
    return RMT(backbone, kind, num_mem_tokens=2, segment_size=4)


@pytest.mark.parametrize("kind,head", [("decoder", "lm"), ("encoder-decoder", "seq2seq")])
def test_lm_and_seq2seq_heads_train_and_score_every_target_position(kind, head):
    """One-segment copy of 3 symbols (the target sits in the same window: no memory needed) is
    learned by both heads; evaluation scores exactly the target positions."""
    train = algorithmic_task("copy", 500, 3, vocab=6, seed=0, offset=3)
    step = RMTStep(_lm_rmt(kind), head, sep_token_id=1 if head == "lm" else None)
    step.model.segment_size = 8  # input [sep] target = 7 tokens: one segment
    before = step.evaluate(train[:100], 0, None)
    TrainLoop(step, RMTConfig(steps=300, batch_size=16, lr=3e-3, warmup_steps=5, weight_decay=0.0,
                               seed=0, tensorboard=False)).fit(train, show_progress=False)
    after = step.evaluate(train[:100], 300, None)
    assert len(after["position_accuracy"]) == 3 and after["segments"] == 1.0
    assert after["token_accuracy"] >= 0.9 > before["token_accuracy"] + 0.3, (before, after)


def test_curriculum_runs_successive_fits_each_starting_from_the_last(tok, filler, tmp_path):
    step = RMTStep(tiny_bert_rmt(len(tok)), "classify")
    seen = {}

    def make(n):
        seen[n] = {k: v.clone() for k, v in step.model.state_dict().items()}
        return fact_task("memorize", 32, 16 * n, tok, filler, seed=n), fact_task("memorize", 12, 16 * n, tok, filler, seed=9)

    stages = train_curriculum(step, make, [1, 2], RMTConfig(batch_size=4, lr=1e-3, warmup_steps=1, seed=0,
                                                             tensorboard=False), steps=[3, 2], output_dir=tmp_path,
                              show_progress=False)
    assert [s["segments"] for s in stages] == [1, 2] and [s["steps"] for s in stages] == [3, 2]
    assert stages[1]["metrics"]["segments"] == 2.0
    changed = any(not torch.equal(seen[1][k], seen[2][k]) for k in seen[1])
    assert changed  # stage 2 began from stage 1's trained weights, not the initial ones
    assert (tmp_path / "stage-0-1seg").is_dir() and (tmp_path / "stage-1-2seg").is_dir()
    assert curriculum_stages(6) == [1, 2, 4, 6] and curriculum_stages(4) == [1, 2, 4] and curriculum_stages(1) == [1]
    with pytest.raises(ValueError, match="stages"):
        train_curriculum(step, make, [], RMTConfig())


def test_step_save_load_round_trip(tok, filler, tmp_path):
    held_out = fact_task("memorize", 20, 32, tok, filler, seed=4)
    trained = RMTStep(tiny_bert_rmt(len(tok), seed=1), "classify")
    trained.save(tmp_path)
    other = RMTStep(tiny_bert_rmt(len(tok), seed=2), "classify")
    batch = trained.batch(held_out)
    with torch.no_grad():
        assert not torch.equal(trained.model.eval()(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits,
                               other.model.eval()(**{k: batch[k] for k in ("input_ids", "attention_mask")}).logits)
        other.load(tmp_path)
        assert torch.equal(trained.model(batch["input_ids"], batch["attention_mask"]).logits,
                           other.model.eval()(batch["input_ids"], batch["attention_mask"]).logits)
    with pytest.raises(ValueError, match="settings"):
        RMTStep(tiny_bert_rmt(len(tok), mem=2), "classify").load(tmp_path)


def test_last_segment_only_baseline_sees_only_the_question(tok, filler):
    ex = fact_task("memorize", 3, 40, tok, filler, seed=0)
    step = RMTStep(tiny_bert_rmt(len(tok)), "classify", last_segment_only=True)
    batch = step.batch(ex)
    assert batch["input_ids"].shape[1] == 8  # 40 tokens, segments of 16: the last one holds 8
    assert batch["input_ids"][0].tolist() == ex[0].input_ids[32:]


def test_step_refuses_a_mismatched_model():
    with pytest.raises(ValueError, match="kind"):
        RMTStep(_lm_rmt("decoder"), "classify")
    with pytest.raises(ValueError, match="sep_token_id"):
        RMTStep(_lm_rmt("decoder"), "lm")


def test_recipe_runs_end_to_end_and_checks_its_keys(tmp_path):
    recipe = {"name": "t", "output_dir": str(tmp_path / "run"),
              "task": {"name": "associative", "vocab": 6, "train_examples": 64, "eval_examples": 16},
              "model": {"config": {"model_type": "bert", "hidden_size": 32, "num_hidden_layers": 1,
                                   "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 16},
                        "kind": "encoder", "num_mem_tokens": 2, "segment_size": 6},
              "curriculum": [1, 2], "vary_segments": True, "steps": 2, "train": {"batch_size": 4, "tensorboard": False},
              "eval_segments": [1, 3]}
    result = run_rmt_recipe(recipe)
    assert [r["eval_segments"] for r in result["eval"]] == [1, 3]
    assert [r["segments"] for r in result["eval"]] == [1.0, 3.0]
    assert (tmp_path / "run" / "metrics.json").is_file() and (tmp_path / "run" / "model" / "rmt_config.json").is_file()
    assert RMT.from_pretrained(tmp_path / "run" / "model").cls_token_id == 2
    with pytest.raises(ValueError, match="unknown key"):
        load_rmt_recipe({"task": {"name": "copy"}, "modle": {}})
    with pytest.raises(ValueError, match="vary_segments"):
        load_rmt_recipe({"task": {"name": "copy"}, "model": {"kind": "decoder"}, "vary_segments": "yes"})
    with pytest.raises(ValueError, match="task.filler"):
        load_rmt_recipe({"task": {"name": "memorize"}})
    with pytest.raises(ValueError, match="unknown train keys"):
        load_rmt_recipe({"task": {"name": "copy"}, "model": {"kind": "decoder"}, "train": {"stpes": 3}})
    assert load_rmt_recipe({"task": {"name": "copy"}, "model": {"kind": "decoder"}, "curriculum": {"max_segments": 5}},
                           ["train.lr=3e-4"])["curriculum"] == [1, 2, 4, 5]


def test_rmt_copies_across_three_segments_and_without_memory_stays_at_chance():
    """The issue's copy test: 5 symbols, [sep], the copy, over 3 segments of 4 tokens
    (``s0 s1 s2 s3 | s4 sep t0 t1 | t2 t3 t4``): every target is predicted in a later segment than
    its symbol, and t3 needs two hops (written in segment 1, kept through segment 2, read in 3).
    A 2-layer 64-d GPT-2 (dropout 0), M = 8, trained 400 steps on 1-, 2- and 3-segment copies
    mixed (``vary_segments``, the reference's --vary_n_segments): token accuracy >= 0.95 (1.00,
    0.999, 1.00, 1.00 for model seeds 0-3 in the measurements behind this test); a model trained
    the same way without memory within 0.05 of chance (0.1), and the trained weights with the
    memory reset no better than chance.

    The longer copy (8 symbols over segments of 6, in ``eval/rmt_memorization.py``) is not used
    here: with M = 12 it reached >= 0.98 for 2-3 of 4 model seeds in 400-600 steps and left one
    position at chance for the others (with M = 8, fewer slots than symbols, 0.79)."""

    def copy_of(segments, n, seed):  # input [sep] target fills the segments
        return algorithmic_task("copy", n, (segments * 4 - 1) // 2, vocab=10, seed=seed, offset=2)

    def gpt2(positions):
        torch.manual_seed(0)
        return GPT2LMHeadModel(GPT2Config(vocab_size=12, n_embd=64, n_layer=2, n_head=4, n_positions=positions,
                                          bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0,
                                          attn_pdrop=0.0))

    held_out = copy_of(3, 200, seed=99)
    results = {}
    for name, mem in (("rmt", 8), ("no_memory", 0)):
        step = RMTStep(RMT(gpt2(4 + 2 * mem), "decoder", num_mem_tokens=mem, segment_size=4), "lm", sep_token_id=1,
                       eval_batch_size=100)
        cfg = RMTConfig(batch_size=32, lr=2e-3, scheduler="constant", warmup_steps=20, weight_decay=0.0, seed=0,
                        tensorboard=False)
        train_curriculum(step, lambda n: (copy_of(n, 8000, seed=n), None), [3], cfg, steps=400, show_progress=False,
                         vary_segments=True)
        results[name] = step.evaluate(held_out, 400, None)
    assert results["rmt"]["segments"] == 3.0 and len(results["rmt"]["position_accuracy"]) == 5
    assert results["rmt"]["token_accuracy"] >= 0.95, results["rmt"]
    assert results["rmt"]["token_accuracy_memory_reset"] <= 0.15, results["rmt"]
    assert abs(results["no_memory"]["token_accuracy"] - 0.1) <= 0.05, results["no_memory"]


def test_vary_segments_mixes_every_shorter_length_evenly():
    made = []

    def make(n):
        made.append(n)
        return [MemoryExample([n] * n) for _ in range(30)], [MemoryExample([n] * n)]

    mixed = mixed_lengths(make(3)[0], [make(1)[0], make(2)[0]], seed=0)
    assert len(mixed) == 30 and sorted({len(e.input_ids) for e in mixed}) == [1, 2, 3]
    assert all(sum(len(e.input_ids) == k for e in mixed) == 10 for k in (1, 2, 3))
    assert mixed != mixed_lengths(make(3)[0], [make(1)[0], make(2)[0]], seed=1)  # the seed draws and shuffles


def test_shipped_rmt_recipes_are_valid():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[2] / "recipes" / "memory").glob("rmt-*.yaml"))
    assert len(recipes) == 3
    for path in recipes:
        recipe = load_rmt_recipe(path)
        assert recipe["curriculum"][0] == 1 and recipe["task"]["name"] == "memorize", path
    report = load_rmt_recipe(next(p for p in recipes if "bert-base" in p.name))
    assert report["model"]["backbone"] == "bert-base-cased" and report["model"]["num_mem_tokens"] == 10
    assert report["model"]["segment_size"] + report["model"]["num_mem_tokens"] + 3 == 512
    assert report["curriculum"] == [1, 2, 4, 7] and len(report["steps"]) == 4
