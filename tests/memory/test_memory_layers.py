from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from atlas_kit.memory.memory_layers import KNNMemoryModel

V = 50


def gpt2(seed=0):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0,
                                      eos_token_id=0, attn_pdrop=0.0, resid_pdrop=0.0, embd_pdrop=0.0)).double().eval()


def llama(seed=0):
    torch.manual_seed(seed)
    return LlamaForCausalLM(LlamaConfig(vocab_size=V, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                        bos_token_id=0, eos_token_id=0, pad_token_id=0)).double().eval()


def segment(seed, b=2, t=6):
    return torch.randint(1, V, (b, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", [gpt2, llama])
@pytest.mark.parametrize("combine", ["single", "gate"])
def test_with_an_empty_memory_the_model_is_unchanged(make, combine):
    x = segment(0)
    with torch.no_grad():
        plain = make()(x).logits
        wrapped = KNNMemoryModel(make(), layers=[1], k=4, combine=combine)
        assert torch.allclose(wrapped(x).logits, plain, atol=1e-10)  # no documents: no memory
        assert torch.allclose(wrapped(x, documents=["a", "b"]).logits, plain, atol=1e-10)  # empty memory


@pytest.mark.parametrize("make", [gpt2, llama])
def test_segments_write_then_read_their_own_document_only(make):
    wrapped = KNNMemoryModel(make(), layers=[0, 1], k=4, capacity=8)
    fresh = make()
    heads, layers = 4, 2
    with torch.no_grad():
        first, second = segment(1), segment(2)
        wrapped(first, documents=["a", "b"])
        assert wrapped.entries("a") == 6 * heads * layers  # 6 tokens per (layer, head)
        reading = wrapped(second, documents=["a", "c"], update_memory=False).logits
        assert not torch.allclose(reading[0], fresh(second[:1]).logits[0], atol=1e-6)  # a reads its memory
        assert torch.allclose(reading[1], fresh(second[1:]).logits[0], atol=1e-10)  # c has none: b's is not read
        mass = wrapped.memory_mass()[1]
        assert mass.shape == (2, heads, 6) and (mass[0] > 0).all() and (mass[1] == 0).all()
        wrapped(second, documents=["a", "b"])  # 6 more per head: FIFO keeps the newest 8
        assert wrapped.entries("a") == 8 * heads * layers
        wrapped.reset(["a"])
        assert wrapped.entries("a") == 0 and wrapped.entries("b") == 8 * heads * layers


def test_llama_memory_positions_first_and_none_differ():
    outs = []
    for positions in ("first", "none"):
        wrapped = KNNMemoryModel(llama(), layers=[1], k=4, memory_positions=positions)
        with torch.no_grad():
            wrapped(segment(3, b=1), documents=["d"])
            outs.append(wrapped(segment(4, b=1), documents=["d"]).logits)
    assert not torch.allclose(outs[0], outs[1], atol=1e-8)


def test_gradients_reach_the_gate_and_not_the_stored_entries():
    wrapped = KNNMemoryModel(gpt2(), layers=[1], k=4, combine="gate")
    wrapped.train()
    with torch.no_grad():
        wrapped(segment(5), documents=[0, 1])
    x = segment(6)
    out = wrapped(x, documents=[0, 1], labels=x)
    out.loss.backward()
    gate = wrapped.memory_layers["1"].gate
    assert gate.grad is not None and gate.grad.abs().sum() > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="layers"):
        KNNMemoryModel(gpt2(), layers=[5])
    with pytest.raises(ValueError, match="combine"):
        KNNMemoryModel(gpt2(), layers=[0], combine="sum")
    with pytest.raises(ValueError, match="documents"):
        KNNMemoryModel(gpt2(), layers=[0])(segment(0), documents=["only one"])
