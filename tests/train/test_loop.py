"""The generic training loop with a step that is not Atlas's: a tiny regression model."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch

from atlas_kit.train import LoopConfig, TrainLoop, TrainStep


@dataclass
class TinyConfig(LoopConfig):
    lr: float = 0.05


class Regression(TrainStep):
    """y = w.x + noise; the loss is the mean squared error of a linear layer."""

    primary_log = "mse"

    def __init__(self) -> None:
        torch.manual_seed(0)
        self.model = torch.nn.Linear(4, 1)

    def modules(self):
        return {"model": self.model}

    def loss(self, batch, step):
        x = torch.stack([b[0] for b in batch])
        y = torch.stack([b[1] for b in batch])
        mse = torch.nn.functional.mse_loss(self.model(x).squeeze(-1), y)
        return mse, {"mse": mse.item()}

    def evaluate(self, examples, step, out=None):
        with torch.no_grad():
            _, logs = self.loss(list(examples), step)
        return logs


def data(n=64):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 4, generator=g)
    w = torch.tensor([1.0, -2.0, 0.5, 3.0])
    return [(xi, (xi @ w) + 0.01 * torch.randn((), generator=g)) for xi in x]


def test_the_loop_trains_a_step_that_is_not_atlas(tmp_path):
    cfg = TinyConfig(steps=60, batch_size=8, warmup_steps=2, output_dir=str(tmp_path / "run"), tensorboard=False)
    loop = TrainLoop(Regression(), cfg)
    before = loop.evaluate(data())["mse"]
    final = loop.fit(data(), data(16))
    assert final["mse"] < 0.2 * before
    log = [json.loads(line) for line in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert [h["step"] for h in log] == list(range(1, 61)) and "lr_model" in log[0]
    assert (tmp_path / "run" / "loss.png").is_file()


def test_exact_resume(tmp_path):
    cfg = TinyConfig(steps=10, batch_size=8, save_every=5, output_dir=str(tmp_path / "a"), tensorboard=False)
    full = TrainLoop(Regression(), cfg)
    full.fit(data())
    resumed = TrainLoop(Regression(), TinyConfig(**{**cfg.to_dict(), "output_dir": str(tmp_path / "b")}))
    resumed.fit(data(), resume_from=tmp_path / "a" / "checkpoint-5")
    for a, b in zip(full.task_step.model.parameters(), resumed.task_step.model.parameters()):
        assert torch.equal(a, b)
    assert [h["mse"] for h in full.history] == [h["mse"] for h in resumed.history]


def test_accumulation_equals_the_bigger_batch():
    """2 micro-batches of 4 == 1 batch of 8 (same examples, the loss averaged the same way)."""
    big = TrainLoop(Regression(), TinyConfig(steps=3, batch_size=8, clip_norm=1e9))
    acc = TrainLoop(Regression(), TinyConfig(steps=3, batch_size=4, accumulation=2, clip_norm=1e9))
    assert [x[0].tolist() for x in big.batch(data(), 0, 0)] == \
        [x[0].tolist() for m in range(2) for x in acc.batch(data(), 0, m)]
    big.fit(data(), show_progress=False)
    acc.fit(data(), show_progress=False)
    for a, b in zip(big.task_step.model.parameters(), acc.task_step.model.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_schedules_atlas_and_transformers():
    atlas = TrainLoop(Regression(), TinyConfig(steps=20, warmup_steps=0, scheduler="linear", lr_min_ratio=0.1))
    hf = TrainLoop(Regression(), TinyConfig(steps=20, warmup_steps=0, scheduler="cosine_with_min_lr", lr_min_ratio=0.1))
    for loop in (atlas, hf):
        for _ in range(20):
            loop.optimizer.step()
            loop.scheduler.step()
    assert atlas.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # Atlas's: ends at the floor
    assert hf.optimizer.param_groups[0]["lr"] == pytest.approx(0.005)  # transformers' cosine to min_lr_rate
    with pytest.raises(ValueError, match="scheduler must be one of"):
        TinyConfig(scheduler="cosin")


def test_separate_clipping_logs_each_group():
    class TwoGroups(Regression):
        def __init__(self):
            super().__init__()
            self.other = torch.nn.Linear(4, 1)

        def modules(self):
            return {"model": self.model, "other": self.other}

        def loss(self, batch, step):
            mse, logs = super().loss(batch, step)
            return mse + self.other(torch.stack([b[0] for b in batch])).pow(2).mean(), logs

    loop = TrainLoop(TwoGroups(), TinyConfig(steps=1, clip_groups="separate"))
    logs = loop.train_step(data())
    assert {"grad_norm_model", "grad_norm_other"} <= set(logs)


def test_a_group_without_learning_rate_is_an_error():
    class NoLr(Regression):
        def param_groups(self, cfg):
            return [{"name": "model", "params": list(self.model.parameters())}]

    with pytest.raises(ValueError, match="no learning rate"):
        TrainLoop(NoLr(), TinyConfig())
    with pytest.raises(TypeError, match="has no 'lr'"):
        TrainLoop(Regression(), LoopConfig())
