"""EMAT through the library's training loop: the auto-encoding losses fall on a toy run, the memory
is re-encoded on its refresh schedule, weakly labelled positives and hard negatives are picked
from the memory, and the matching loss ranks the positive first."""
from __future__ import annotations

import pytest
import torch

from atlas_kit.memory.emat import EMAT
from atlas_kit.memory.emat_losses import matching_loss
from atlas_kit.memory.emat_memory import QAMemory
from atlas_kit.memory.emat_train import EMATStep, EMATTrainConfig
from atlas_kit.tasks.qa import QAExample
from atlas_kit.train.loop import TrainLoop
from atlas_kit.world import World


def toy(n_entities: int = 6):
    world = World.generate(n_entities, seed=0, typed_values=True)
    qs = world.questions()
    pairs = [(q.question, q.answers[0]) for q in qs]
    examples = [QAExample(q.id, q.question, q.answers) for q in qs]
    model = EMAT.from_config(d_model=32, num_layers=3, num_heads=2, dropout=0.0,
                             emat={"key_layer": 0, "value_layer": 1})
    return model, QAMemory.build(pairs, model), examples


def test_auto_encoding_losses_fall_and_the_memory_is_refreshed_on_schedule(tmp_path):
    torch.set_num_threads(1)
    model, memory, examples = toy()
    cfg = EMATTrainConfig(steps=30, batch_size=8, lr=3e-3, k=2, candidates=8, negatives=4, warmup_steps=4,
                          weights={"key_ae": 0.5, "value_ae": 0.5, "generation": 1.0}, refresh_schedule="0-100:12",
                          tensorboard=False, log_every=1, output_dir=str(tmp_path / "run"), seed=0)
    step = EMATStep(model, memory, cfg)
    before = memory.fingerprint
    loop = TrainLoop(step, cfg)
    loop.fit(examples)
    hist = [h for h in loop.history if "key_ae" in h]
    first, last = hist[:5], hist[-5:]
    for name in ("key_ae", "value_ae", "generation"):
        start = sum(h[name] for h in first) / len(first)
        end = sum(h[name] for h in last) / len(last)
        assert end < 0.8 * start, (name, start, end)
    assert step.refreshes == 2  # after steps 12 and 24
    assert memory.fingerprint != before
    metrics = step.evaluate(examples[:6], loop.step, out=tmp_path / "eval")
    assert memory.fingerprint == model.fingerprint()  # evaluation read a memory encoded by these weights
    assert {"EM", "F1", "slot_hit@1", "slot_hit@2"} <= set(metrics)
    assert (tmp_path / "eval" / "predictions.jsonl").is_file()


def test_positives_and_hard_negatives_come_from_the_memory():
    model, memory, examples = toy(4)
    cfg = EMATTrainConfig(steps=1, k=3, candidates=16, negatives=5, positive_in_slots=1.0)
    step = EMATStep(model, memory, cfg)
    import random

    batch = examples[:6]
    slots, matches = step._select([e.question for e in batch], [e.answers for e in batch], random.Random(0))
    for ex, rows, (pos, neg) in zip(batch, slots, matches):
        assert memory.answers[pos] == ex.answers[0]  # weak label: the slot's answer is the gold answer
        assert pos in rows  # positive_in_slots=1: always read
        assert len(neg) == 5 and all(memory.answers[r] != ex.answers[0] for r in neg)
        assert len(rows) == 3
    loss, logs = step.loss(batch, 1)
    assert torch.isfinite(loss) and {"generation", "matching", "positive_in_slots"} <= set(logs)
    assert logs["positive_in_slots"] == 1.0


def test_matching_loss_prefers_the_positive_and_ignores_padding():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    good = torch.tensor([[[5.0, 0.0], [0.0, 1.0], [9.0, 9.0]], [[0.0, 5.0], [1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    bad = good[:, [1, 0, 2]]
    assert matching_loss(q, good, mask) < matching_loss(q, bad, mask)
    # the masked candidate (score 9 for the first query) does not count
    assert matching_loss(q[:1], good[:1], mask[:1]) == pytest.approx(
        torch.nn.functional.cross_entropy(torch.tensor([[5.0, 0.0]]), torch.tensor([0])).item(), rel=1e-6)
    with pytest.raises(ValueError, match="candidates"):
        matching_loss(q, good[0])


def test_unknown_objective_is_refused():
    with pytest.raises(ValueError, match="unknown EMAT objective"):
        EMATTrainConfig(weights={"gen": 1.0})


def test_the_offline_recipe_runs_and_its_saved_model_answers(tmp_path):
    from pathlib import Path

    from atlas_kit.api import Atlas
    from atlas_kit.memory.emat_recipe import load_emat_recipe, run_emat_recipe

    root = Path(__file__).resolve().parents[2] / "recipes" / "memory"
    recipe = load_emat_recipe(root / "emat-world.yaml", [
        f"output_dir={tmp_path / 'run'}", "data.world.entities=8", "data.world.practice_words=200",
        "model.config={d_model: 32, num_layers: 3, num_decoder_layers: 1, num_heads: 2, dropout: 0.0}",
        "model.emat={key_layer: 0, value_layer: 1}", "stages.0.train.batch_size=4",
    ], smoke=True)
    metrics = run_emat_recipe(recipe)
    assert {"EM", "F1", "slot_hit@1"} <= set(metrics["eval"])
    atlas = Atlas.from_pretrained(tmp_path / "run" / "model")
    assert atlas.memory_k == 4 and len(atlas.memory) == 32
    assert isinstance(atlas.ask("What is the capital of Pakyseal?").text, str)
    # the GPU recipe parses, with the paper's settings
    paper = load_emat_recipe(root / "emat-paq-nq.yaml")
    assert paper["model"]["emat"] == {"prefix_length": 2, "key_layer": 3, "value_layer": 7}
    assert [EMATTrainConfig.from_dict(s["train"]).k for s in paper["stages"]] == [10, 10]  # valid loop settings
    with pytest.raises(ValueError, match="not key=value"):
        load_emat_recipe(root / "emat-world.yaml", ["steps"])
