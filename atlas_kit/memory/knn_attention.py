"""The attention of kNN-memory layers: local causal attention plus attention over retrieved memory.

Memorizing Transformer (Wu, Rabe, Hutchins & Szegedy, ICLR 2022): each query also attends to the
top-k (key, value) pairs retrieved for it from an external memory of earlier tokens; the local and
the memory attention have separate softmaxes, mixed by a learned per-head gate
(``combine="gate"``). Focused Transformer / LongLLaMA (Tworkowski et al., NeurIPS 2023): one softmax
over the memory keys and the local keys together (``combine="single"``), and cross-batch training,
where a layer's memory during training also holds the previous contexts of ``d - 1`` other
documents as negatives (:func:`cross_batch_memory`).

Positions: memory keys are stored without positional encoding. With rotary embeddings the query
is rotated at its own position as usual; ``memory_positions="first"`` treats every memory key as
if it stood at position 0 of the local context (LongLLaMA), ``"none"`` scores memory with the
unrotated query (no position at all). :func:`rotate` at position 0 is the identity, which is what
"as if first" relies on.

These functions are model-agnostic (per-head tensors in, per-head output out): the layer wrappers
for GPT-2 / Llama blocks put the projections around them.
"""
from __future__ import annotations

import math

import torch

__all__ = ["memory_attention", "cross_batch_memory", "rotate", "rotary_cos_sin", "COMBINES"]

COMBINES = ("single", "gate")


def rotary_cos_sin(positions: torch.Tensor, dim: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin) [..., dim] of rotary embeddings (RoFormer / Llama layout: two halves)."""
    inv = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim))
    freqs = positions.float()[..., None] * inv
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Apply rotary embeddings (``x * cos + rotate_half(x) * sin``, Llama's convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def memory_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mem_k: torch.Tensor | None = None,
    mem_v: torch.Tensor | None = None,
    mem_mask: torch.Tensor | None = None,
    *,
    combine: str = "single",
    gate: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    q_for_memory: torch.Tensor | None = None,
    scale: float | None = None,
    return_memory_mass: bool = False,
    return_memory_probs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Causal local attention over ``k``/``v`` plus attention over retrieved memory entries.

    Args:
        q, k, v: [B, H, T, D] queries, keys and values of the local segment (rotated already,
            when the model uses rotary positions).
        mem_k, mem_v: [B, H, T, K, D] the top-K memory entries retrieved for each query (or
            [B, H, K, D], the same entries for every query); None = no memory.
        mem_mask: [B, H, T, K] (or [B, H, K]) True where an entry is real.
        combine: ``"single"`` (FoT: one softmax over memory and local keys) or ``"gate"``
            (Memorizing: separate softmaxes mixed by ``sigmoid(gate)``, ``gate`` [H]).
        key_padding_mask: [B, T] True for real local tokens.
        q_for_memory: the queries to score memory with (e.g. unrotated ones for
            ``memory_positions="none"``); default ``q``.
        scale: logit scale (default 1 / sqrt(D)).
        return_memory_mass: also return [B, H, T] the attention probability mass on the memory.
        return_memory_probs: also return [B, H, T, K] the weight of each memory entry in the
            output (FoT: its softmax probability; Memorizing: the gate times the memory softmax);
            it sums to the memory mass. Returned after the mass when both are asked for.

    A query whose memory entries are all masked - or no memory at all - gets exactly the plain
    causal attention over the local keys. Local attention is causal: position t sees 0 .. t only.
    """
    if combine not in COMBINES:
        raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
    b, h, t, d = q.shape
    scale = 1.0 / math.sqrt(d) if scale is None else scale
    local = torch.einsum("bhtd,bhsd->bhts", q, k) * scale
    allowed = torch.ones(t, k.shape[2], dtype=torch.bool, device=q.device).tril()
    allowed = allowed[None, None]
    if key_padding_mask is not None:
        allowed = allowed & key_padding_mask[:, None, None, :].bool()
    local = local.masked_fill(~allowed, float("-inf"))
    if mem_k is None or mem_v is None:
        out = torch.softmax(local, dim=-1) @ v
        extra = ([q.new_zeros(b, h, t)] if return_memory_mass else []) + (
            [q.new_zeros(b, h, t, 0)] if return_memory_probs else [])
        return (out, *extra) if extra else out
    shared = mem_k.dim() == 4  # the same entries for every query: no [B, H, T, K, D] copies
    if mem_mask is None:
        mem_mask = torch.ones(mem_k.shape[:-1], dtype=torch.bool, device=q.device)
    if shared and mem_mask.dim() == 3:
        mem_mask = mem_mask[:, :, None].expand(b, h, t, -1)
    qm = q if q_for_memory is None else q_for_memory
    mem = torch.einsum("bhtd,bhkd->bhtk" if shared else "bhtd,bhtkd->bhtk", qm, mem_k) * scale
    mem = mem.masked_fill(~mem_mask.bool(), float("-inf"))
    has_memory = mem_mask.any(dim=-1)  # [B, H, T]
    plain = torch.softmax(local, dim=-1) @ v
    if combine == "single":
        probs = torch.softmax(torch.cat([mem, local], dim=-1), dim=-1)
        p_mem, p_loc = probs[..., : mem.shape[-1]], probs[..., mem.shape[-1]:]
        mixed = (p_mem @ mem_v if shared else torch.einsum("bhtk,bhtkd->bhtd", p_mem, mem_v)) + p_loc @ v
        mass = p_mem.sum(-1)
        weights = p_mem
    else:
        if gate is None:
            raise ValueError("combine='gate' needs the per-head gate logits (gate=[H])")
        g = torch.sigmoid(gate.to(q.dtype))[None, :, None, None]
        p_mem = torch.softmax(mem.masked_fill(~has_memory[..., None], 0.0), dim=-1)  # rows without memory: unused
        read = p_mem @ mem_v if shared else torch.einsum("bhtk,bhtkd->bhtd", p_mem, mem_v)
        mixed = g * read + (1 - g) * plain
        mass = (g[..., 0] * torch.ones_like(has_memory, dtype=q.dtype))
        weights = g * p_mem
    out = torch.where(has_memory[..., None], mixed, plain)
    extra = []
    if return_memory_mass:
        extra.append(torch.where(has_memory, mass, torch.zeros_like(mass)))
    if return_memory_probs:
        extra.append(torch.where(has_memory[..., None], weights, torch.zeros_like(weights)))
    return (out, *extra) if extra else out


def cross_batch_memory(prev_k: torch.Tensor, prev_v: torch.Tensor, d: int,
                       prev_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """FoT's cross-batch training memory: for each batch element, its own previous context plus
    those of ``d - 1`` other elements (the next ones, cyclically) as negatives.

    ``prev_k`` / ``prev_v``: [B, H, C, D] each element's previous-context keys and values;
    ``prev_mask``: [B, C] real positions. Returns (keys [B, H, d*C, D], values, mask [B, H, d*C],
    owner [B, d*C] = the batch element each entry came from). ``d = 1`` is plain memory training:
    exactly the element's own context. Needs ``1 <= d <= B``.
    """
    b, h, c, dim = prev_k.shape
    if not 1 <= d <= b:
        raise ValueError(f"cross-batch d must be between 1 and the batch size {b}, got {d}")
    if prev_mask is None:
        prev_mask = torch.ones(b, c, dtype=torch.bool, device=prev_k.device)
    order = (torch.arange(b, device=prev_k.device)[:, None] + torch.arange(d, device=prev_k.device)[None]) % b  # [B, d]
    keys = prev_k[order].permute(0, 2, 1, 3, 4).reshape(b, h, d * c, dim)
    values = prev_v[order].permute(0, 2, 1, 3, 4).reshape(b, h, d * c, dim)
    mask = prev_mask.bool()[order].reshape(b, 1, d * c).expand(b, h, d * c)
    owner = order[:, :, None].expand(b, d, c).reshape(b, d * c)
    return keys, values, mask, owner
