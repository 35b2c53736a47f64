"""RMT against its backbones and its own guarantees: no memory + one segment = the backbone,
backpropagation through time really truncated, save/load, ragged batches."""
from __future__ import annotations

import pytest
import torch
from transformers import BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, T5Config, T5ForConditionalGeneration

from atlas_kit.memory import RMT

V = 40


def bert(seed=0):
    torch.manual_seed(seed)
    return BertModel(BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=64, cls_token_id=1, sep_token_id=2)).eval()


def gpt2(seed=0, layers=2, d=32, tie=True):
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(vocab_size=V, n_embd=d, n_layer=layers, n_head=2, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, tie_word_embeddings=tie)).eval()


def t5(seed=0):
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(T5Config(vocab_size=V, d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                                               decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)).eval()


def ids(b, t, seed=0, low=3):
    return torch.randint(low, V, (b, t), generator=torch.Generator().manual_seed(seed))


def test_no_memory_and_one_segment_is_exactly_the_backbone():
    x = ids(3, 10)
    enc = bert()
    rmt = RMT(enc, "encoder", num_mem_tokens=0, segment_size=16).eval()
    with torch.no_grad():
        full = torch.cat([torch.full((3, 1), 1), x, torch.full((3, 1), 2)], dim=1)  # [CLS] x [SEP]
        assert torch.equal(rmt(x).logits, enc(full).last_hidden_state[:, 0])
        dec = gpt2()
        assert torch.equal(RMT(dec, "decoder", num_mem_tokens=0, segment_size=16)(x).logits, dec(x).logits)
        s2s = t5()
        target = ids(3, 4, seed=1)
        ours = RMT(s2s, "encoder-decoder", num_mem_tokens=0, segment_size=16)(x, labels=target)
        plain = s2s(input_ids=x, labels=target)
        assert torch.equal(ours.logits, plain.logits) and torch.equal(ours.loss, plain.loss)


def _first_segment_grad(bptt_depth, kind="encoder"):
    """Gradient of the final loss w.r.t. embedding rows used only by the first segment's tokens."""
    backbone = bert() if kind == "encoder" else gpt2(tie=False)  # tied: the LM head's gradient reaches every row
    rmt = RMT(backbone, kind, num_mem_tokens=2, segment_size=4, bptt_depth=bptt_depth,
              num_classes=3 if kind == "encoder" else None)
    first = torch.tensor([[3, 4, 5, 6]])  # ids 3-6 only in segment 0, 7-18 in segments 1-3
    later = torch.arange(7, 19).view(1, 12)
    x = torch.cat([first, later], dim=1)
    if kind == "encoder":
        out = rmt(x, labels=torch.tensor([1]))
    else:
        labels = torch.full_like(x, -100)
        labels[:, -3:] = x[:, -3:]  # a loss on the last segment only
        out = rmt(x, labels=labels)
    out.loss.backward()
    grad = backbone.get_input_embeddings().weight.grad
    return grad[3:7].abs().sum().item(), grad[7:11].abs().sum().item()


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_bptt_depth_really_cuts_the_graph(kind):
    full_first, _ = _first_segment_grad(None, kind)
    assert full_first > 0  # full BPTT: the last segment's loss reaches the first segment's inputs
    cut_first, cut_second = _first_segment_grad(1, kind)
    assert cut_first == 0.0 and cut_second == 0.0  # d = 1: nothing before the last segment
    two_first, two_second = _first_segment_grad(3, kind)  # 4 segments, d = 3: segments 1-3 only
    assert two_first == 0.0 and two_second > 0


def test_ragged_batches_equal_documents_one_by_one():
    lengths = [11, 3, 8]  # 3, 1 and 2 segments of 4
    x = ids(3, 11, seed=2)
    mask = torch.tensor([[1] * n + [0] * (11 - n) for n in lengths])
    for kind, backbone in (("encoder", bert()), ("decoder", gpt2()), ("encoder-decoder", t5())):
        rmt = RMT(backbone, kind, num_mem_tokens=3, segment_size=4, num_classes=4 if kind == "encoder" else None).eval()
        target = ids(3, 3, seed=3)
        with torch.no_grad():
            together = rmt(x, mask, decoder_input_ids=target if kind == "encoder-decoder" else None)
            assert together.segments.tolist() == [3, 1, 2]
            for r, n in enumerate(lengths):
                alone = rmt(x[r:r + 1, :n], decoder_input_ids=target[r:r + 1] if kind == "encoder-decoder" else None)
                got = together.logits[r, :n] if kind == "decoder" else together.logits[r]
                assert torch.allclose(got, alone.logits[0], atol=1e-5), kind
                assert torch.allclose(together.memory[r], alone.memory[0], atol=1e-5), kind


def test_save_load_gives_identical_outputs(tmp_path):
    x = ids(2, 9, seed=4)
    for kind, backbone in (("encoder", bert()), ("decoder", gpt2()), ("encoder-decoder", t5())):
        rmt = RMT(backbone, kind, num_mem_tokens=2, segment_size=4, bptt_depth=2,
                  num_classes=5 if kind == "encoder" else None).eval()
        rmt.save_pretrained(tmp_path / kind)
        loaded = RMT.from_pretrained(tmp_path / kind).eval()
        assert loaded.settings() == rmt.settings()
        target = ids(2, 3, seed=5) if kind == "encoder-decoder" else None
        with torch.no_grad():
            assert torch.equal(rmt(x, decoder_input_ids=target).logits, loaded(x, decoder_input_ids=target).logits)
    assert RMT.from_pretrained(tmp_path / "encoder-decoder").generate(x, max_new_tokens=3).shape[0] == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="kind"):
        RMT(bert(), "bidirectional")
    with pytest.raises(ValueError, match="positions"):
        RMT(bert(), "encoder", num_mem_tokens=10, segment_size=60)  # 60 + 13 > 64 positions
    with pytest.raises(ValueError, match="bptt_depth"):
        RMT(bert(), "encoder", bptt_depth=0)


def test_reset_memory_reads_each_segment_from_the_initial_memory():
    x = ids(2, 12, seed=6)
    rmt = RMT(bert(), "encoder", num_mem_tokens=2, segment_size=4, num_classes=3).eval()
    with torch.no_grad():
        reset = rmt(x, reset_memory=True)
        assert torch.allclose(reset.logits, rmt(x[:, 8:]).logits, atol=1e-6)  # only the last segment counts
        carried = rmt(x)
        assert (carried.memory - reset.memory).abs().max() > 0.01  # carried memory changes what is read
        assert not torch.allclose(carried.logits, reset.logits, atol=1e-6)
