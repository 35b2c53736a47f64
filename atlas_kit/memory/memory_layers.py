"""kNN-memory attention layers inserted into a causal LM (Memorizing Transformer, FoT / LongLLaMA).

:class:`KNNMemoryModel` wraps a Hugging Face causal LM (GPT-2 or Llama family, built from a config
or loaded from the hub) and replaces the self-attention of the chosen layers by
:class:`MemoryAttention`: the layer's queries attend to the local (causal) context and to the top-k
(key, value) pairs retrieved for them from a :class:`~atlas_kit.memory.KVMemory`; after the
segment, its own keys and values are added to the memory, so the next segment of the same document
can retrieve them (a segment never sees its own entries through the memory: no entry attends to a
later one). One memory namespace per (document, layer, head).

Positions: GPT-2 adds absolute positions to its inputs, so keys carry position only through the
hidden states. Llama's rotary positions are applied to the local queries and keys as usual; keys
are stored unrotated, and ``memory_positions`` says how a query scores them: ``"first"`` (as if
every memory key stood at position 0: the rotated query against the unrotated key, LongLLaMA) or
``"none"`` (the unrotated query). With grouped-query attention the keys and values of each query
head (its KV head repeated) are stored per query head - simple, at ``num_heads / num_kv_heads``
times the memory.

Two ways to fill the memory a layer reads:

* the kNN memory (inference, and Memorizing-style training): ``documents`` names each row's
  namespace; the layer searches the top-k entries per query and head and writes its keys after;
* a dense memory given per layer (:class:`DenseMemory`, FoT's cross-batch training, see
  :mod:`atlas_kit.memory.cross_batch`): every query sees all its row's entries (its own previous
  context and ``d - 1`` other documents'), differentiably; ``capture`` collects each memory
  layer's keys and values of the segment (with their graph) to build the next segment's memory.
  The layer also records the attention mass on the row's *own* entries (``relevant_mass``), the
  quantity of FoT's distraction analysis.

Padding inside a segment is not supported by the memory layers (long documents are cut into full
windows); the model's own layers keep their usual attention.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Sequence

import numpy as np
import torch
from safetensors.torch import load_model, save_model

from atlas_kit.storage import atomic_dir, atomic_write_json, read_json

from atlas_kit.memory.knn_attention import COMBINES, memory_attention, rotate
from atlas_kit.memory.kv_memory import KVMemory

__all__ = ["KNNMemoryModel", "MemoryAttention", "DenseMemory", "FAMILIES"]

log = logging.getLogger(__name__)

FAMILIES = ("gpt2", "llama")
POSITIONS = ("first", "none")


def _family(model: torch.nn.Module) -> str:
    kind = getattr(model.config, "model_type", "")
    if kind == "gpt2":
        return "gpt2"
    if kind in ("llama", "mistral", "qwen2"):
        return "llama"
    raise ValueError(f"memory layers support GPT-2 and Llama-family models, not {kind!r}")


def _blocks(model: torch.nn.Module, family: str) -> Any:
    return model.transformer.h if family == "gpt2" else model.model.layers


@dataclass
class DenseMemory:
    """One memory layer's entries for every row, read without search: ``keys`` / ``values``
    [B, H, K, D], ``mask`` [B, H, K] (True = real entry), ``owner`` [B, K] (the row each entry came
    from; the row's own entries are the relevant ones)."""

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    owner: torch.Tensor


class MemoryAttention(torch.nn.Module):
    """One self-attention module with a kNN memory (see the module docstring)."""

    def __init__(self, attention: torch.nn.Module, family: str, owner: "KNNMemoryModel", layer: int) -> None:
        super().__init__()
        self.inner = attention
        self.family = family
        self.layer = layer
        self._owner = [owner]  # a list: not registered as a submodule (the owner holds this module)
        cfg = owner.model.config
        self.num_heads = cfg.num_attention_heads
        self.head_dim = getattr(attention, "head_dim", cfg.hidden_size // self.num_heads)
        self.gate = torch.nn.Parameter(torch.full((self.num_heads,), float(owner.gate_init)))

    def _qkv(self, hidden: torch.Tensor, kwargs: dict[str, Any]) -> tuple[torch.Tensor, ...]:
        """(q, k, v, k stored, q for memory), all [B, H, T, D]."""
        b, t, _ = hidden.shape
        shape = (b, t, -1, self.head_dim)
        att = self.inner
        if self.family == "gpt2":
            q, k, v = att.c_attn(hidden).split(att.split_size, dim=2)
            q, k, v = (x.view(shape).transpose(1, 2) for x in (q, k, v))
            return q, k, v, k, q
        q = att.q_proj(hidden).view(shape).transpose(1, 2)
        k = att.k_proj(hidden).view(shape).transpose(1, 2)
        v = att.v_proj(hidden).view(shape).transpose(1, 2)
        groups = self.num_heads // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        cos, sin = kwargs["position_embeddings"]
        cos, sin = cos[:, None], sin[:, None]  # [B, 1, T, D]
        q_rot, k_rot = rotate(q, cos, sin), rotate(k, cos, sin)
        q_mem = q_rot if self._owner[0].memory_positions == "first" else q
        return q_rot, k_rot, v, k, q_mem

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, None]:
        owner = self._owner[0]
        if self.family == "llama" and "position_embeddings" not in kwargs and args:
            kwargs["position_embeddings"] = args[0]
        q, k, v, k_store, q_mem = self._qkv(hidden_states, kwargs)
        mem_k = mem_v = mem_mask = None
        dense = (owner.dense or {}).get(self.layer)
        if dense is not None:
            mem_k, mem_v, mem_mask = dense.keys, dense.values, dense.mask
        elif owner.documents is not None:
            mem_k, mem_v, mem_mask = owner._retrieve(self.layer, q_mem)
        scale = getattr(self.inner, "scaling", None) or self.head_dim ** -0.5
        out, mass, *probs = memory_attention(q, k, v, mem_k, mem_v, mem_mask, combine=owner.combine, gate=self.gate,
                                             q_for_memory=q_mem, scale=scale, return_memory_mass=True,
                                             return_memory_probs=dense is not None)  # per-entry weights: dense only
        owner._last_mass[self.layer] = mass.detach()
        if dense is not None:
            probs = probs[0]
            rows = torch.arange(q.shape[0], device=q.device)[:, None]
            own = (dense.owner.to(q.device) == rows)[:, None, None, :]  # [B, 1, 1, K]
            owner._last_relevant[self.layer] = (probs * own).sum(-1).detach()
        if owner.capture is not None:
            owner.capture[self.layer] = (k_store, v)
        if dense is None and owner.documents is not None and owner.update_memory:
            owner._store(self.layer, k_store, v)
        out = out.transpose(1, 2).reshape(hidden_states.shape[0], hidden_states.shape[1], -1)
        if self.family == "gpt2":
            return self.inner.resid_dropout(self.inner.c_proj(out)), None
        return self.inner.o_proj(out), None


class KNNMemoryModel(torch.nn.Module):
    """A causal LM whose ``layers`` read from and write to a kNN memory.

    Args:
        model: a GPT-2 or Llama-family ``*ForCausalLM``.
        layers: indices of the blocks that get memory attention (Memorizing Transformer: one layer
            near the top; LongLLaMA: a few).
        k: entries retrieved per query and head.
        combine: ``"single"`` (FoT) or ``"gate"`` (Memorizing Transformer).
        memory_positions: ``"first"`` or ``"none"`` (rotary models; see the module docstring).
        capacity: memory entries per (document, layer, head); FIFO beyond it.
        backend: the :class:`KVMemory` backend (``"Flat"`` exact, or a FAISS factory string).
        gate_init: initial gate logit (``combine="gate"``).
    """

    def __init__(self, model: torch.nn.Module, layers: Sequence[int], k: int = 32, combine: str = "single",
                 memory_positions: str = "first", capacity: int = 65536, backend: str = "Flat",
                 gate_init: float = 0.0) -> None:
        super().__init__()
        if combine not in COMBINES:
            raise ValueError(f"combine must be one of {COMBINES}, got {combine!r}")
        if memory_positions not in POSITIONS:
            raise ValueError(f"memory_positions must be one of {POSITIONS}, got {memory_positions!r}")
        self.model = model
        self.family = _family(model)
        self.k, self.combine, self.memory_positions, self.gate_init = int(k), combine, memory_positions, gate_init
        blocks = _blocks(model, self.family)
        bad = [i for i in layers if not 0 <= i < len(blocks)]
        if bad or not layers:
            raise ValueError(f"layers must be indices of the model's {len(blocks)} blocks, got {list(layers)}")
        self.layers = sorted(set(int(i) for i in layers))
        head_dim = model.config.hidden_size // model.config.num_attention_heads
        self.memory = KVMemory(getattr(model.config, "head_dim", None) or head_dim, capacity=capacity, backend=backend)
        self.memory_layers = torch.nn.ModuleDict()
        for i in self.layers:
            block = blocks[i]
            name = "attn" if self.family == "gpt2" else "self_attn"
            layer = MemoryAttention(getattr(block, name), self.family, self, i)
            setattr(block, name, layer)
            self.memory_layers[str(i)] = layer
        self.documents: list[Hashable] | None = None
        self.update_memory = True
        self.dense: dict[int, DenseMemory] | None = None
        self.capture: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None
        self._last_mass: dict[int, torch.Tensor] = {}
        self._last_relevant: dict[int, torch.Tensor] = {}

    @property
    def settings(self) -> dict[str, Any]:
        """The constructor's arguments besides the LM (what :meth:`save_pretrained` records)."""
        return {"layers": self.layers, "k": self.k, "combine": self.combine, "memory_positions": self.memory_positions,
                "capacity": self.memory.capacity, "backend": self.memory.backend, "gate_init": float(self.gate_init)}

    # ------------------------------------------------------------------ saving and loading
    @classmethod
    def from_backbone(cls, name_or_path: str | os.PathLike, layers: Sequence[int], **settings: Any) -> "KNNMemoryModel":
        """A hub id or local folder of a GPT-2 / Llama-family causal LM, with memory ``layers``."""
        from transformers import AutoModelForCausalLM

        return cls(AutoModelForCausalLM.from_pretrained(str(name_or_path)), layers=layers, **settings)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Backbone config, all weights (safetensors, the gates included) and the memory-layer
        settings, published atomically. The kNN memory itself is not saved here (it is per
        document; :meth:`KVMemory.save` saves one in the index-folder format)."""
        with atomic_dir(folder) as tmp:
            self.model.config.save_pretrained(tmp / "backbone")
            save_model(self, str(tmp / "model.safetensors"))
            atomic_write_json(tmp / "knn_memory.json", self.settings)

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "KNNMemoryModel":
        from transformers import AutoConfig, AutoModelForCausalLM

        folder = Path(folder)
        if not (folder / "knn_memory.json").is_file():
            raise FileNotFoundError(f"{folder}: not a saved KNNMemoryModel (no knn_memory.json)")
        settings = read_json(folder / "knn_memory.json")
        backbone = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder / "backbone"))
        model = cls(backbone, **settings)
        load_model(model, str(folder / "model.safetensors"))
        return model

    # ------------------------------------------------------------------ memory plumbing
    def _namespace(self, doc: Hashable, layer: int, head: int) -> str:
        return f"{doc}|{layer}|{head}"

    def _retrieve(self, layer: int, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, h, t, d = q.shape
        keys = q.new_zeros(b, h, t, self.k, d)
        values = q.new_zeros(b, h, t, self.k, d)
        mask = torch.zeros(b, h, t, self.k, dtype=torch.bool, device=q.device)
        flat = q.detach().to("cpu", torch.float32).numpy()
        for i, doc in enumerate(self.documents or []):
            for head in range(h):
                ns = self._namespace(doc, layer, head)
                if not self.memory.count(ns):
                    continue
                hits = self.memory.search(flat[i, head], self.k, ns)
                keys[i, head] = hits.keys.to(q)
                values[i, head] = hits.values.to(q)
                mask[i, head] = hits.mask.to(q.device)
        return keys, values, mask

    def _store(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        kk = k.detach().to("cpu", torch.float32).numpy()
        vv = v.detach().to("cpu", torch.float32).numpy()
        for i, doc in enumerate(self.documents or []):
            for head in range(k.shape[1]):
                self.memory.add(kk[i, head], vv[i, head], namespace=self._namespace(doc, layer, head))

    def reset(self, documents: Sequence[Hashable] | None = None) -> None:
        """Forget the given documents' memory (all documents with ``None``)."""
        if documents is None:
            self.memory.reset()
            return
        names = [self._namespace(doc, layer, head) for doc in documents for layer in self.layers
                 for head in range(self.model.config.num_attention_heads)]
        self.memory.reset([n for n in names if n in self.memory.namespaces])

    def memory_mass(self) -> dict[int, torch.Tensor]:
        """Per memory layer, [B, H, T] the attention probability on memory in the last forward."""
        return dict(self._last_mass)

    def relevant_mass(self) -> dict[int, torch.Tensor]:
        """Per memory layer, [B, H, T] the attention probability on the row's own entries of the
        dense memory in the last forward that had one (FoT's distraction measure)."""
        return dict(self._last_relevant)

    def new_memory(self, capacity: int | None = None, backend: str | None = None) -> KVMemory:
        """Replace the kNN memory by an empty one (another capacity per namespace - tokens per
        document, layer and head - or another FAISS backend); returns it."""
        self.memory = KVMemory(self.memory.dim, capacity=self.memory.capacity if capacity is None else capacity,
                               backend=backend or self.memory.backend)
        return self.memory

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, documents: Sequence[Hashable] | None = None,
                labels: torch.Tensor | None = None, update_memory: bool = True,
                dense: dict[int, DenseMemory] | None = None,
                capture: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None,
                hidden_only: bool = False, **kwargs: Any) -> Any:
        """One segment per row: ``documents[i]`` names row i's document (its memory namespace);
        ``None`` = no memory (the plain model, same weights). With ``update_memory`` the segment's
        keys and values are written to the memory after it is read.

        ``dense``: per memory layer, a :class:`DenseMemory` read instead of the kNN memory (nothing
        is written to the kNN memory then); ``capture``: a dict that receives, per memory layer,
        the segment's (keys, values) [B, H, T, D] with their graph. ``hidden_only``: return the
        backbone's last hidden states [B, T, E] instead of the LM output (callers that need logits
        at a few positions only apply :meth:`lm_head` there)."""
        if documents is not None and len(documents) != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} rows but {len(documents)} documents")
        if dense is not None and set(dense) - set(self.layers):
            raise ValueError(f"dense memory for layers {sorted(set(dense) - set(self.layers))}, "
                             f"which have no memory attention (memory layers: {self.layers})")
        self.documents = list(documents) if documents is not None else None
        self.update_memory = update_memory
        self.dense, self.capture = dense, capture
        try:
            if hidden_only:
                return self.model.base_model(input_ids=input_ids, **kwargs).last_hidden_state
            return self.model(input_ids=input_ids, labels=labels, **kwargs)
        finally:
            self.documents = None
            self.dense = self.capture = None

    def lm_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The LM's output layer: logits for hidden states from ``forward(..., hidden_only=True)``."""
        return self.model.get_output_embeddings()(hidden)

    def entries(self, document: Hashable) -> int:
        """Memory entries stored for ``document`` (over all memory layers and heads)."""
        return int(np.sum([self.memory.count(self._namespace(document, layer, head)) for layer in self.layers
                           for head in range(self.model.config.num_attention_heads)]))
