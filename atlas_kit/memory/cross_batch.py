"""FoT's cross-batch training forward (Tworkowski et al., NeurIPS 2023, "Focused Transformer").

A training example is ``n`` consecutive windows of one document. Window ``t`` is read with a dense
memory in every memory layer: the keys and values that layer computed for the previous
``memory_windows`` windows of the same document (the positives) and of ``d - 1`` other documents
of the batch (the negatives, :func:`~atlas_kit.memory.knn_attention.cross_batch_memory`). The
keys are those of the same forward pass, so the loss reaches them (FoT's training is
differentiable through the memory; ``memory_grad=False`` detaches them, the Memorizing
Transformer's non-differentiable memory). ``d = 1`` is plain memory training: a window sees only
its own document's earlier windows.

Deliberate differences from LongLLaMA's code: the negatives are the previous windows of the other
batch rows *at the same step* (cyclically the next ``d - 1`` rows), not a rolling cache of earlier
batches; and a window never sees a later one - its own keys reach it through the local causal
attention only.
"""
from __future__ import annotations

import torch

from atlas_kit.memory.knn_attention import cross_batch_memory
from atlas_kit.memory.memory_layers import DenseMemory, KNNMemoryModel

__all__ = ["cross_batch_forward"]


def cross_batch_forward(model: KNNMemoryModel, input_ids: torch.Tensor, window: int, d: int = 1,
                        memory_windows: int = 1, memory_grad: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Read ``input_ids`` [B, n x window] window by window with FoT's cross-batch memory.

    Returns the backbone's last hidden states [B, n x window, E] (apply ``model.lm_head`` where
    logits are needed) and [B, n x window] the attention mass on the row's *own* memory entries,
    averaged over memory layers and heads (0 in the first window, which has no memory).
    """
    b, length = input_ids.shape
    if window < 1 or length % window:
        raise ValueError(f"inputs of {length} tokens are not a whole number of {window}-token windows")
    if not 1 <= d <= b:
        raise ValueError(f"cross-batch d={d} needs 1 <= d <= the batch size ({b})")
    if memory_windows < 1:
        raise ValueError(f"memory_windows must be >= 1, got {memory_windows}")
    hidden, relevant = [], []
    past: list[dict[int, tuple[torch.Tensor, torch.Tensor]]] = []
    for t in range(length // window):
        dense = None
        if past:
            dense = {}
            for layer in model.layers:
                keys = torch.cat([p[layer][0] for p in past[-memory_windows:]], dim=2)
                values = torch.cat([p[layer][1] for p in past[-memory_windows:]], dim=2)
                if not memory_grad:
                    keys, values = keys.detach(), values.detach()
                k, v, mask, owner = cross_batch_memory(keys, values, d)
                dense[layer] = DenseMemory(k, v, mask, owner)
        capture: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        hidden.append(model(input_ids[:, t * window : (t + 1) * window], dense=dense, capture=capture,
                            hidden_only=True))
        if dense is None:
            relevant.append(hidden[-1].new_zeros(b, window))
        else:
            mass = model.relevant_mass()
            relevant.append(torch.stack([mass[layer].mean(1) for layer in model.layers]).mean(0))
        past.append(capture)
    return torch.cat(hidden, dim=1), torch.cat(relevant, dim=1)
