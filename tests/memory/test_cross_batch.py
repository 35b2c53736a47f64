"""FoT's cross-batch training forward and the kNN-memory LM step."""
from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from atlas_kit.memory.cross_batch import cross_batch_forward
from atlas_kit.memory.memory_layers import KNNMemoryModel
from atlas_kit.memory.memory_training import MemoryLMConfig, MemoryLMStep, dense_score, knn_score
from atlas_kit.tasks.long_documents import IGNORE, LMExample
from atlas_kit.train.loop import TrainLoop

V, W = 40, 8


def gpt2(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=W, bos_token_id=0,
                                      eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)).double()


def llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=W,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0)).double()


def ids(seed, b=3, windows=2):
    return torch.randint(1, V, (b, windows * W), generator=torch.Generator().manual_seed(seed))


def examples(n, windows=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        x = torch.randint(1, V, (windows * W,), generator=g).tolist()
        labels = [IGNORE] * len(x)
        labels[-1] = x[-1]
        labels[-2] = x[-2]
        out.append(LMExample(x, labels, document=f"doc{i}"))
    return out


@pytest.mark.parametrize("make", [gpt2, llama])
@pytest.mark.parametrize("combine", ["single", "gate"])
def test_d1_cross_batch_equals_plain_memory_reading(make, combine):
    """d = 1: window 2 sees exactly window 1 of its own document, as the kNN memory does when it
    holds one window (capacity W) and returns all of it (k = W, exact search)."""
    x = ids(0)
    model = KNNMemoryModel(make().eval(), layers=[1], k=W, combine=combine, capacity=W)
    with torch.no_grad():
        dense, _ = cross_batch_forward(model, x, W, d=1)
        docs = ["a", "b", "c"]
        knn = torch.cat([model(x[:, t * W : (t + 1) * W], documents=docs, hidden_only=True) for t in range(2)], 1)
    assert torch.allclose(dense, knn, atol=1e-8)


def test_other_documents_reach_a_row_only_with_d_above_one():
    model = KNNMemoryModel(gpt2().eval(), layers=[1], k=W)
    x = ids(1)
    y = x.clone()
    y[1, :W] = torch.randint(1, V, (W,), generator=torch.Generator().manual_seed(9))  # row 1's first window
    with torch.no_grad():
        for d, changes in ((1, False), (2, True)):
            a, _ = cross_batch_forward(model, x, W, d=d)
            b, _ = cross_batch_forward(model, y, W, d=d)
            # row 0 reads rows 0 and 1 (the next row, cyclically) when d = 2
            assert (not torch.allclose(a[0, W:], b[0, W:])) == changes
            assert torch.allclose(a[2, W:], b[2, W:])  # row 2 reads rows 2 and 0
            assert torch.allclose(a[0, :W], b[0, :W])  # the first window has no memory


def test_no_window_sees_a_later_one_and_relevant_mass_is_part_of_memory_mass():
    model = KNNMemoryModel(gpt2().eval(), layers=[1], k=W)
    x = ids(2, windows=3)
    y = x.clone()
    y[:, 2 * W :] = 1
    with torch.no_grad():
        a, own = cross_batch_forward(model, x, W, d=3)
        mass = model.memory_mass()[1]
        b, _ = cross_batch_forward(model, y, W, d=3)
    assert torch.allclose(a[:, : 2 * W], b[:, : 2 * W])
    assert bool((own[:, :W] == 0).all()) and bool((own[:, W:] > 0).all())
    assert bool((own[:, 2 * W :] <= mass.mean(1) + 1e-9).all())


def test_memory_grad_reaches_the_previous_window_only_through_the_memory_when_asked():
    x = ids(3, b=2)
    grads = {}
    for memory_grad in (True, False):
        model = KNNMemoryModel(gpt2(), layers=[1], k=W)
        hidden, _ = cross_batch_forward(model, x, W, d=2, memory_grad=memory_grad)
        # the loss of the second window only; the first window's value projection gets gradient
        # from it only through the memory entries it wrote
        weights = torch.randn(hidden[:, W:].shape, generator=torch.Generator().manual_seed(0), dtype=hidden.dtype)
        (hidden[:, W:] * weights).sum().backward()
        grads[memory_grad] = model.model.transformer.h[1].attn.inner.c_attn.weight.grad.clone()
    assert (grads[True] - grads[False]).abs().max() > 1e-3 * grads[True].abs().max()


def test_bad_arguments_are_refused():
    model = KNNMemoryModel(gpt2(), layers=[1], k=W)
    with pytest.raises(ValueError, match="whole number"):
        cross_batch_forward(model, ids(0)[:, :-1], W)
    with pytest.raises(ValueError, match="batch size"):
        cross_batch_forward(model, ids(0), W, d=4)
    with pytest.raises(ValueError, match="no memory attention"):
        model(ids(0)[:, :W], dense={0: None})


def test_knn_score_and_dense_score_agree_for_one_document_memory():
    model = KNNMemoryModel(gpt2().eval(), layers=[1], k=W, capacity=W)
    ex = examples(4)
    knn = knn_score(model, ex, W)
    dense = dense_score(model, ex, W, d=1)
    assert knn["perplexity"] == pytest.approx(dense["perplexity"], rel=1e-9)
    assert knn["token_accuracy"] == dense["token_accuracy"]
    assert dense["relevant_mass"] == pytest.approx(dense["memory_mass"])
    assert model.memory.namespaces == [] or all(model.memory.count(n) == 0 for n in model.memory.namespaces)


def test_step_trains_through_the_loop_and_resumes_exactly(tmp_path):
    def run(steps, out, resume=None):
        model = KNNMemoryModel(gpt2().float(), layers=[1], k=W)
        step = MemoryLMStep(model, W, d=2, eval_batch_size=4)
        cfg = MemoryLMConfig(steps=steps, batch_size=4, lr=3e-3, warmup_steps=1, save_every=2, log_every=1,
                             tensorboard=False, output_dir=str(out), seed=0)
        loop = TrainLoop(step, cfg)
        if resume:
            loop.load_checkpoint(resume)
        loop.fit(examples(16, seed=1), show_progress=False)
        return model, loop

    full, loop = run(4, tmp_path / "full")
    losses = [h["loss"] for h in loop.history]
    assert losses[-1] < losses[0]
    resumed, _ = run(4, tmp_path / "resumed", resume=tmp_path / "full" / "checkpoint-2")
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    metrics = MemoryLMStep(full, W).evaluate(examples(3, seed=2), step=4, out=tmp_path / "eval")
    assert {"accuracy", "perplexity", "accuracy_window_only", "perplexity_window_only"} <= set(metrics)
    assert (tmp_path / "eval" / "predictions.jsonl").read_text().count("\n") == 3


@pytest.mark.parametrize("make", [gpt2, llama])
def test_save_load_round_trip(tmp_path, make):
    model = KNNMemoryModel(make().eval(), layers=[1], k=4, combine="gate", capacity=64)
    with torch.no_grad():
        model.memory_layers["1"].gate.fill_(0.7)
    model.save_pretrained(tmp_path / "m")
    loaded = KNNMemoryModel.from_pretrained(tmp_path / "m").double().eval()
    assert loaded.settings == model.settings
    x = ids(4)
    with torch.no_grad():
        assert torch.allclose(cross_batch_forward(model, x, W, d=2)[0], cross_batch_forward(loaded, x, W, d=2)[0])
    with pytest.raises(FileNotFoundError, match="knn_memory.json"):
        KNNMemoryModel.from_pretrained(tmp_path)
