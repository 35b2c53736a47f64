from __future__ import annotations

import math

import pytest
import torch

from atlas_kit.memory.knn_attention import cross_batch_memory, memory_attention, rotary_cos_sin, rotate

B, H, T, D, K = 2, 3, 5, 8, 4


def tensors(seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    return r(B, H, T, D), r(B, H, T, D), r(B, H, T, D), r(B, H, T, K, D), r(B, H, T, K, D)


def test_without_memory_it_is_plain_causal_attention():
    q, k, v, mk, mv = tensors()
    plain = memory_attention(q, k, v)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(plain, ref, atol=1e-12)
    none = torch.zeros(B, H, T, K, dtype=torch.bool)
    for combine in ("single", "gate"):  # an all-masked memory is exactly no memory
        out = memory_attention(q, k, v, mk, mv, none, combine=combine, gate=torch.zeros(H, dtype=torch.float64))
        assert torch.equal(out, plain)


def test_single_softmax_over_memory_and_local_keys():
    q, k, v, mk, mv = tensors(1)
    mask = torch.rand(B, H, T, K, generator=torch.Generator().manual_seed(2)) > 0.3
    out, mass = memory_attention(q, k, v, mk, mv, mask, return_memory_mass=True)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                keys = torch.cat([mk[b, h, t][mask[b, h, t]], k[b, h, : t + 1]])  # causal: local 0..t
                values = torch.cat([mv[b, h, t][mask[b, h, t]], v[b, h, : t + 1]])
                p = torch.softmax(keys @ q[b, h, t] / math.sqrt(D), dim=0)
                assert torch.allclose(out[b, h, t], p @ values, atol=1e-12)
                assert mass[b, h, t].item() == pytest.approx(p[: int(mask[b, h, t].sum())].sum().item(), abs=1e-12)


def test_memorizing_gate_mixes_two_softmaxes():
    q, k, v, mk, mv = tensors(3)
    gate = torch.tensor([-1.0, 0.0, 2.0], dtype=torch.float64)
    out = memory_attention(q, k, v, mk, mv, combine="gate", gate=gate)
    g = torch.sigmoid(gate)[None, :, None, None]
    mem = torch.einsum("bhtk,bhtkd->bhtd", torch.softmax(torch.einsum("bhtd,bhtkd->bhtk", q, mk) / math.sqrt(D), -1), mv)
    assert torch.allclose(out, g * mem + (1 - g) * memory_attention(q, k, v), atol=1e-12)
    with pytest.raises(ValueError, match="gate"):
        memory_attention(q, k, v, mk, mv, combine="gate")


def test_no_position_attends_to_a_later_one():
    q, k, v, mk, mv = tensors(4)
    out = memory_attention(q, k, v, mk, mv)
    k2, v2 = k.clone(), v.clone()
    k2[:, :, 3:], v2[:, :, 3:] = 100.0, -100.0  # change positions 3 and 4
    changed = memory_attention(q, k2, v2, mk, mv)
    assert torch.equal(out[:, :, :3], changed[:, :, :3]) and not torch.allclose(out[:, :, 3:], changed[:, :, 3:])


def test_as_if_first_is_rotation_at_position_zero():
    cos0, sin0 = rotary_cos_sin(torch.tensor([0]), D)
    key = torch.randn(4, D)
    assert torch.equal(rotate(key, cos0, sin0), key)  # position 0: the identity
    cos, sin = rotary_cos_sin(torch.arange(T), D)
    q = torch.randn(T, D)
    scores_first = rotate(q, cos, sin) @ key.T  # the query at its position, memory keys "as if first"
    assert torch.allclose(scores_first, rotate(q, cos, sin) @ rotate(key, cos0, sin0).T)
    # relative positions: a key rotated at position p scored by a query at p + r depends on r only
    qr = rotate(q[:1], *rotary_cos_sin(torch.tensor([7]), D)) @ rotate(key[:1], *rotary_cos_sin(torch.tensor([5]), D)).T
    q0 = rotate(q[:1], *rotary_cos_sin(torch.tensor([2]), D)) @ rotate(key[:1], cos0, sin0).T
    assert torch.allclose(qr, q0, atol=1e-5)


def test_cross_batch_memory():
    prev_k, prev_v = torch.randn(4, H, 6, D), torch.randn(4, H, 6, D)
    keys, values, mask, owner = cross_batch_memory(prev_k, prev_v, 1)
    assert torch.equal(keys, prev_k) and torch.equal(values, prev_v) and mask.all() and (owner == torch.arange(4)[:, None]).all()
    pad = torch.ones(4, 6, dtype=torch.bool)
    pad[2, 4:] = False
    keys, values, mask, owner = cross_batch_memory(prev_k, prev_v, 3, pad)
    assert keys.shape == (4, H, 18, D) and owner[0].tolist() == [0] * 6 + [1] * 6 + [2] * 6
    assert torch.equal(keys[3, :, 6:12], prev_k[0]) and owner[3, 6] == 0  # cyclic: element 3's negatives are 0, 1
    assert not mask[1, 0, 10:12].any() and mask[1, 0, :10].all()  # element 2's padding travels with it
    with pytest.raises(ValueError, match="cross-batch"):
        cross_batch_memory(prev_k, prev_v, 5)
