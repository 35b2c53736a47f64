from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from atlas_kit.tasks.qa import QAExample
from atlas_kit.train import TrainConfig, Trainer
from atlas_kit.train.config import due, parse_schedule
from tests.conftest import make_setup


def params(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_schedule_parsing():
    s = parse_schedule("0-100:10,100-1000:500")
    assert s == [(0, 100, 10), (100, 1000, 500)]
    assert due(s, 10) and due(s, 100) and due(s, 600) and not due(s, 15) and not due(s, 0)
    with pytest.raises(ValueError, match="bad refresh schedule"):
        parse_schedule("0-100")
    # Atlas's bare period and "never"
    assert due(parse_schedule("1000"), 3000) and not due(parse_schedule("1000"), 1500)
    assert parse_schedule(250) == parse_schedule("250")
    assert parse_schedule("-1") == [] and not any(due([], step) for step in range(1, 50))
    # overlapping ranges: the first range holding the step decides (Atlas), not any range
    overlap = parse_schedule("0-100:10,50-200:7")
    assert not due(overlap, 57)  # 57 is in 0-100 (not a multiple of 10), though (57 - 50) % 7 == 0
    assert due(overlap, 60) and due(overlap, 106) and not due(overlap, 110)
    with pytest.raises(ValueError, match="refresh must be one of"):
        TrainConfig(refresh="sometimes")
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})


def test_retriever_dropout_option_turns_training_noise_off_and_survives_saving(tmp_path):
    with pytest.raises(ValueError, match="retriever_dropout"):
        TrainConfig(retriever_dropout=1.0)
    atlas, _ = make_setup()
    r = atlas.retriever
    r.train()
    qs = ["capital of zorvania", "who leads oska"]
    assert not torch.allclose(r.embed_queries(qs), r.embed_queries(qs))  # dropout 0.1: two draws differ
    Trainer(atlas, TrainConfig(retriever_dropout=0.0))
    r.train()
    assert torch.equal(r.embed_queries(qs), r.embed_queries(qs))  # training mode, no noise
    assert all(m.p == 0.0 for m in r.query_encoder.modules() if isinstance(m, torch.nn.Dropout))
    r.save_pretrained(tmp_path / "r")
    assert type(r).from_pretrained(str(tmp_path / "r")).query_encoder.config.hidden_dropout_prob == 0.0


def test_query_side_leaves_passage_encoder_bitwise_unchanged():
    atlas, examples = make_setup()
    before_q = params(atlas.retriever.query_encoder)
    trainer = Trainer(atlas, TrainConfig(steps=3, batch_size=2, n_context=2, refresh="query_side",
                                         retriever_loss="pdist", retriever_lr=1e-3))
    before_p = params(trainer.retriever.passage_encoder)
    trainer.fit(examples[:8], show_progress=False)
    after_p = params(atlas.retriever.passage_encoder)
    assert all(torch.equal(before_p[k], after_p[k]) for k in before_p)
    after_q = params(atlas.retriever.query_encoder)
    assert any(not torch.equal(before_q[k], after_q[k]) for k in before_q)


def test_rerank_with_unchanged_encoder_reproduces_plain_retrieval():
    atlas, examples = make_setup()
    qs = [e.question for e in examples[:6]]
    plain = Trainer(atlas, TrainConfig(n_context=3, retriever_loss="none")).retrieve(qs)
    reranked = Trainer(atlas, TrainConfig(n_context=3, refresh="rerank", rerank_candidates=10,
                                          retriever_loss="none")).retrieve(qs)
    assert [[h.id for h in x] for x in plain] == [[h.id for h in x] for x in reranked]
    np.testing.assert_allclose([[h.score for h in x] for x in plain], [[h.score for h in x] for x in reranked], rtol=1e-4)


def test_reindex_refresh_swaps_in_fresh_vectors():
    atlas, examples = make_setup()
    old = atlas.index
    trainer = Trainer(atlas, TrainConfig(steps=2, batch_size=2, n_context=2, refresh="reindex",
                                         refresh_schedule="0-10:2", retriever_loss="emdr2", retriever_lr=1e-3))
    trainer.fit(examples[:6], show_progress=False)
    assert atlas.index is not old
    assert atlas.index.manifest["retriever"]["fingerprint"] == atlas.retriever.fingerprint()
    assert atlas.index.manifest["retriever"]["fingerprint"] != old.manifest["retriever"]["fingerprint"]


@pytest.mark.parametrize("loss", ["pdist", "loop", "adist", "emdr2", "none"])
def test_every_objective_trains_and_writes_run_folder(tmp_path, loss):
    atlas, examples = make_setup()
    cfg = TrainConfig(steps=4, batch_size=2, n_context=2, retriever_loss=loss, retriever_lr=1e-3,
                      reader_lr=1e-3, warmup_steps=1, output_dir=str(tmp_path / "run"), eval_every=2, tensorboard=False)
    metrics = Trainer(atlas, cfg).fit(examples[:10], examples[10:14], show_progress=False)
    assert {"EM", "F1", "R@1", "n"} <= set(metrics)
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["retriever_loss"] == loss
    assert (run / "metrics.json").is_file() and (run / "loss.png").is_file()
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 4
    logs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs] == [1, 2, 3, 4] and "eval_EM" in logs[1]
    assert all(np.isfinite(x["reader_loss"]) and np.isfinite(x["retriever_loss"]) for x in logs)


def test_reader_loss_decreases():
    atlas, examples = make_setup()
    cfg = TrainConfig(steps=40, batch_size=4, n_context=1, retriever_loss="none", reader_lr=3e-3, warmup_steps=2)
    trainer = Trainer(atlas, cfg)
    trainer.fit(examples[:8], show_progress=False)
    losses = [h["reader_loss"] for h in trainer.history]
    assert np.mean(losses[-5:]) < 0.65 * np.mean(losses[:5])


def test_resume_reproduces_uninterrupted_run(tmp_path):
    cfg = dict(steps=6, batch_size=2, n_context=2, retriever_loss="pdist", retriever_lr=1e-3, reader_lr=1e-3,
               warmup_steps=2, tensorboard=False)
    atlas, examples = make_setup()
    full = Trainer(atlas, TrainConfig(**cfg, output_dir=str(tmp_path / "a"), save_every=3))
    full.fit(examples, show_progress=False)
    atlas2, _ = make_setup()
    resumed = Trainer(atlas2, TrainConfig(**cfg, output_dir=str(tmp_path / "b")))
    resumed.fit(examples, resume_from=tmp_path / "a" / "checkpoint-3", show_progress=False)
    assert resumed.step == 6
    assert [h["reader_loss"] for h in resumed.history] == pytest.approx([h["reader_loss"] for h in full.history], abs=1e-6)
    for a, b in ((atlas.reader, atlas2.reader), (atlas.retriever, atlas2.retriever)):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)


def test_gold_objective_trains_the_retriever_from_passage_labels():
    atlas, examples = make_setup()
    before = params(atlas.retriever.query_encoder)
    trainer = Trainer(atlas, TrainConfig(steps=2, batch_size=4, n_context=3, retriever_loss="gold", retriever_lr=1e-3,
                                         tensorboard=False))
    trainer.fit(examples, show_progress=False)
    assert any(not torch.equal(before[k], v) for k, v in params(atlas.retriever.query_encoder).items())
    unlabelled = [QAExample(e.id, e.question, e.answers) for e in examples]
    with pytest.raises(ValueError, match="needs gold passage ids"):
        Trainer(atlas, TrainConfig(steps=1, batch_size=2, n_context=2, retriever_loss="gold")).fit(unlabelled, show_progress=False)


def test_query_side_reads_passage_vectors_from_the_index(monkeypatch):
    atlas, examples = make_setup()
    trainer = Trainer(atlas, TrainConfig(steps=1, batch_size=3, n_context=2, refresh="query_side",
                                         retriever_loss="pdist", retriever_lr=1e-3))
    questions = [e.question for e in examples[:3]]
    passages = trainer.retrieve(questions)
    atlas.retriever.eval()
    with torch.no_grad():
        stored = trainer.retriever_scores(questions, passages)
        q = atlas.retriever.embed_queries(questions)
        p = atlas.retriever.embed_passages([x for ps in passages for x in ps]).view(3, 2, -1)
        fresh = torch.einsum("bd,bkd->bk", q, p) / q.shape[-1] ** 0.5
    assert torch.allclose(stored, fresh, atol=1e-5)
    # no passage encoding at all during a query-side step, and the frozen encoder stays in eval mode
    calls = []
    monkeypatch.setattr(atlas.retriever, "embed_passages", lambda *a, **k: calls.append(1))
    trainer.train_step(examples)
    assert not calls and not atlas.retriever.passage_encoder.training


def test_a_reader_only_run_does_not_freeze_the_retriever_for_later_runs():
    atlas, examples = make_setup()
    Trainer(atlas, TrainConfig(steps=1, batch_size=2, n_context=2, retriever_loss="none")).fit(examples, show_progress=False)
    assert all(p.requires_grad for p in atlas.retriever.parameters())
    before = params(atlas.retriever.query_encoder)
    Trainer(atlas, TrainConfig(steps=2, batch_size=2, n_context=2, retriever_loss="pdist", retriever_lr=1e-3,
                               refresh="query_side")).fit(examples, show_progress=False)
    assert any(not torch.equal(before[k], v) for k, v in params(atlas.retriever.query_encoder).items())


def test_defaults_follow_atlas_and_the_schedules_end_at_the_floor():
    from atlas_kit.train.loop import lr_lambda as _lr_lambda

    cfg = TrainConfig()
    assert (cfg.weight_decay, cfg.scheduler, cfg.lr_min_ratio, cfg.clip_norm, cfg.clip_groups) == (0.1, "cosine", 0.1, 1.0, "joint")
    assert (cfg.reader_lr, cfg.retriever_lr, cfg.temperature_score, cfg.temperature_gold) == (1e-4, 1e-5, 0.01, 0.01)
    for scheduler in ("cosine", "linear"):
        f = _lr_lambda(TrainConfig(steps=110, warmup_steps=10, scheduler=scheduler))
        assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
        assert f(110) == pytest.approx(0.1) and f(10_000) == pytest.approx(0.1)
        assert all(f(i) >= f(i + 1) for i in range(10, 110))
    cosine, linear = (_lr_lambda(TrainConfig(steps=110, warmup_steps=10, scheduler=s)) for s in ("cosine", "linear"))
    assert cosine(60) == pytest.approx(0.1 + 0.9 * np.cos(np.pi / 4)) and linear(60) == pytest.approx(0.55)
    with pytest.raises(ValueError, match="clip_groups"):
        TrainConfig(clip_groups="per-layer")


@pytest.mark.parametrize("groups", ["joint", "separate"])
def test_gradient_clipping_joint_or_per_group(groups):
    atlas, examples = make_setup()
    clip = 1e-3  # far below the real gradient norms: clipping is active
    trainer = Trainer(atlas, TrainConfig(steps=1, batch_size=2, n_context=2, retriever_loss="pdist",
                                         retriever_lr=1e-3, clip_norm=clip, clip_groups=groups, tensorboard=False))
    trainer.train_step(examples)
    norms = [torch.nn.utils.get_total_norm([p.grad for p in g["params"] if p.grad is not None]).item()
             for g in trainer.optimizer.param_groups]
    if groups == "joint":
        assert float(np.hypot(*norms)) == pytest.approx(clip, rel=1e-3)
    else:
        assert norms == pytest.approx([clip, clip], rel=1e-3)  # each group at the clip on its own
