"""Recurrent Memory Transformer (Bulatov, Kuratov & Burtsev, NeurIPS 2022; "Scaling Transformer to
1M tokens and beyond with RMT", 2023): an input of any length read segment by segment, with a few
memory vectors carried from each segment to the next. The backbone is an unmodified Hugging Face
model; memory enters as input embeddings, and the states at the memory positions become the next
segment's memory.

Layouts (``S`` = segment tokens, ``M`` memory vectors; nothing is added when ``M = 0``, so a
one-segment input with no memory is exactly the backbone's own forward):

* ``encoder`` (BERT family): ``[CLS] [mem x M] [SEP] S [SEP]``; the output states at the memory
  positions are the next memory; a classification head reads the last segment's ``[CLS]``.
* ``decoder`` (GPT-2, Llama, any causal LM): ``[mem x M] S [mem x M]`` - memory is read at the
  start and written at the end; the causal mask applies as usual, so the write block sees the
  whole segment and its outputs are the next memory. Logits of the segment tokens are returned
  in input order.
* ``encoder-decoder`` (T5): ``[mem x M] S`` into the encoder; the encoder states at the memory
  positions are the next memory, and the decoder attends to the last segment's states (memory
  included) when it scores or generates the target.

Backpropagation through time: the gradient flows through the memory across segments; with
``bptt_depth = d`` the memory entering each document's segment ``i`` is detached when ``i`` is
``d`` or more segments before that document's last one, so the final segment's loss reaches
exactly its last ``d`` segments (``d = 1``: no gradient between segments at all). The reference
code has a truncation option that detaches a local variable and changes nothing; here the cut is
real and tested (gradient exactly zero at the first segment's inputs with ``d = 1``).

Ragged batches: each row's length comes from its attention mask (right padding); a document with
fewer segments stops early and keeps its memory; each row's last segment has its own length and
its write memory / special tokens come right after its last real token, so a ragged batch equals
its documents processed one by one.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from transformers import (AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM, PreTrainedModel)
from transformers.modeling_outputs import BaseModelOutput

from atlas_kit.storage import atomic_dir, atomic_write_json, read_json

__all__ = ["RMT", "RMTOutput", "KINDS"]

log = logging.getLogger(__name__)

KINDS = ("encoder", "decoder", "encoder-decoder")
CONFIG_NAME = "rmt_config.json"
WEIGHTS_NAME = "rmt.safetensors"


@dataclass
class RMTOutput:
    """``logits``: [B, classes] (encoder with a head), [B, T, vocab] (decoder: per input token),
    [B, T_target, vocab] (encoder-decoder: the decoder's); ``loss`` when labels were given;
    ``memory``: [B, M, d], each document's memory after its last segment; ``segments``: [B]."""

    logits: torch.Tensor
    loss: torch.Tensor | None
    memory: torch.Tensor
    segments: torch.Tensor


class RMT(torch.nn.Module):
    """Segment-level recurrence with memory tokens around any Hugging Face backbone.

    Args:
        backbone: ``AutoModel`` (encoder), ``AutoModelForCausalLM`` (decoder) or a T5-style
            ``AutoModelForSeq2SeqLM`` (encoder-decoder).
        kind: one of :data:`KINDS`.
        num_mem_tokens: ``M`` (0 = no memory: each segment is read on its own).
        segment_size: input tokens per segment (special and memory tokens not counted).
        bptt_depth: segments the gradient flows back through the memory (None = all).
        num_classes: a linear classification head on the last segment's [CLS] (encoder kind).
        cls_token_id, sep_token_id: the encoder's special tokens (read from the config when None).
    """

    def __init__(self, backbone: PreTrainedModel, kind: str = "encoder", num_mem_tokens: int = 10,
                 segment_size: int = 128, bptt_depth: int | None = None, num_classes: int | None = None,
                 cls_token_id: int | None = None, sep_token_id: int | None = None, seed: int = 0) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        if num_mem_tokens < 0 or segment_size < 1:
            raise ValueError(f"need num_mem_tokens >= 0 and segment_size >= 1, got {num_mem_tokens}, {segment_size}")
        if bptt_depth is not None and bptt_depth < 1:
            raise ValueError(f"bptt_depth must be >= 1 or None (full), got {bptt_depth}")
        if num_classes is not None and kind != "encoder":
            raise ValueError("a classification head is for the encoder kind (decoders have their LM head)")
        self.backbone = backbone
        self.kind = kind
        self.num_mem_tokens = int(num_mem_tokens)
        self.segment_size = int(segment_size)
        self.bptt_depth = bptt_depth
        cfg = backbone.config
        self.hidden_size = int(getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or cfg.n_embd)
        if kind == "encoder":
            self.cls_token_id = int(cls_token_id if cls_token_id is not None else _config_id(cfg, "cls_token_id", "bos_token_id", 101))
            self.sep_token_id = int(sep_token_id if sep_token_id is not None else _config_id(cfg, "sep_token_id", "eos_token_id", 102))
        else:
            self.cls_token_id = self.sep_token_id = None
        # encoder: [CLS] mem [SEP] S [SEP], or [CLS] S [SEP] without memory
        extra = (self.num_mem_tokens + 3 if self.num_mem_tokens else 2) if kind == "encoder" else (2 * self.num_mem_tokens if kind == "decoder" else self.num_mem_tokens)
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
        if limit is not None and kind != "encoder-decoder" and self.segment_size + extra > limit:
            raise ValueError(f"segment_size {self.segment_size} + {extra} memory/special positions exceeds the "
                             f"backbone's {limit} positions")
        embeddings = backbone.get_input_embeddings().weight
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            std = float(embeddings.detach().float().std())
            self.memory = torch.nn.Parameter(torch.randn(self.num_mem_tokens, self.hidden_size) * std)
            self.head = torch.nn.Linear(self.hidden_size, num_classes) if num_classes else None

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_backbone(cls, path_or_model: str | os.PathLike | PreTrainedModel | None = None, kind: str = "encoder",
                      **kwargs: Any) -> "RMT":
        """A backbone from a hub id, a local folder or a model object; ``None`` = the bundled
        all-MiniLM-L6-v2 (a 6-layer BERT, the offline encoder default)."""
        if isinstance(path_or_model, PreTrainedModel):
            return cls(path_or_model, kind=kind, **kwargs)
        if path_or_model is None:
            from atlas_kit.retriever import default_retriever_path

            path_or_model = default_retriever_path()
        loader = {"encoder": AutoModel, "decoder": AutoModelForCausalLM, "encoder-decoder": AutoModelForSeq2SeqLM}[kind]
        return cls(loader.from_pretrained(str(path_or_model)), kind=kind, **kwargs)

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "num_mem_tokens": self.num_mem_tokens, "segment_size": self.segment_size,
                "bptt_depth": self.bptt_depth, "num_classes": self.head.out_features if self.head else None,
                "cls_token_id": self.cls_token_id, "sep_token_id": self.sep_token_id}

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Backbone (its own ``save_pretrained``), memory and head (safetensors) and settings, atomically."""
        with atomic_dir(folder) as tmp:
            self.backbone.save_pretrained(tmp / "backbone", safe_serialization=True)
            own = {"memory": self.memory.detach().contiguous()}
            if self.head is not None:
                own.update({f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()})
            save_file(own, str(tmp / WEIGHTS_NAME))
            atomic_write_json(tmp / CONFIG_NAME, self.settings())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "RMT":
        folder = Path(folder)
        settings = read_json(folder / CONFIG_NAME)
        kind = settings.pop("kind")
        backbone_cfg = AutoConfig.from_pretrained(folder / "backbone")
        loader = {"encoder": AutoModel, "decoder": AutoModelForCausalLM, "encoder-decoder": AutoModelForSeq2SeqLM}[kind]
        model = cls(loader.from_pretrained(folder / "backbone", config=backbone_cfg), kind=kind, **settings)
        state = load_file(str(folder / WEIGHTS_NAME))
        with torch.no_grad():
            model.memory.copy_(state["memory"])
            if model.head is not None:
                model.head.load_state_dict({k[len("head."):]: v for k, v in state.items() if k.startswith("head.")})
        return model

    @property
    def device(self) -> torch.device:
        return self.memory.device if self.memory.numel() else next(self.backbone.parameters()).device

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, decoder_input_ids: torch.Tensor | None = None,
                reset_memory: bool = False) -> RMTOutput:
        """Read ``input_ids`` [B, T] segment by segment (rows right-padded; their lengths are the
        attention mask's sums).

        ``reset_memory``: every segment starts from the learned initial memory instead of the
        previous segment's (the "memory reset between segments" ablation of a trained model: the
        same weights and layout, nothing carried across segments).

        ``labels``: class ids [B] (encoder with a head), token ids [B, T] aligned with the input
        (decoder: position t's logits predict token t + 1, -100 ignored), or target ids [B, T']
        (encoder-decoder, T5 style; with neither labels nor ``decoder_input_ids`` the decoder
        reads its start token alone: the logits of the first target token).
        """
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(input_ids.shape)}")
        final, lm_logits, memory, n_segments = self._read(input_ids, attention_mask, reset_memory)
        return self._finish(final, lm_logits, memory, n_segments, labels, decoder_input_ids)

    def _read(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, reset_memory: bool = False
              ) -> tuple[list[Any], torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The recurrence: (each row's last-segment output, decoder logits [B, T, V] or None,
        memory after each row's last segment, segments per row)."""
        device = self.device
        input_ids = input_ids.to(device)
        b, t = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        lengths = attention_mask.to(device).long().sum(-1)
        if bool((lengths == 0).any()):
            raise ValueError("every row needs at least one token")
        n_segments = ((lengths + self.segment_size - 1) // self.segment_size).clamp(min=1)
        initial = memory = self.memory.unsqueeze(0).expand(b, -1, -1)
        final: list[Any] = [None] * b
        lm_logits = None
        for i in range(int(n_segments.max())):
            rows = torch.nonzero(n_segments > i).squeeze(-1)
            start = i * self.segment_size
            seg_len = (lengths[rows] - start).clamp(max=self.segment_size)
            seg_ids = input_ids[rows, start : start + int(seg_len.max())]
            mem_in = initial[rows] if reset_memory else memory[rows]
            if self.bptt_depth is not None and i > 0:
                cut = (n_segments[rows] - i) >= self.bptt_depth  # this row's last segment is d or more ahead
                mem_in = torch.where(cut[:, None, None], mem_in.detach(), mem_in)
            out, new_memory = self._segment(seg_ids, seg_len, mem_in)
            if self.num_mem_tokens:
                memory = memory.index_put((rows,), new_memory)
            if self.kind == "decoder":
                if lm_logits is None:
                    lm_logits = out.new_zeros(b, t, out.shape[-1])
                width = out.shape[1]
                cols = start + torch.arange(width, device=device)[None]
                keep = torch.arange(width, device=device)[None] < seg_len[:, None]
                lm_logits = lm_logits.index_put((rows[:, None], cols), out * keep[..., None])
            else:
                for j, r in enumerate(rows.tolist()):
                    if int(n_segments[r]) - 1 == i:
                        final[r] = out[j] if self.kind == "encoder" else (out[0][j], out[1][j])
        return final, lm_logits, memory, n_segments

    def _segment(self, ids: torch.Tensor, lengths: torch.Tensor, memory: torch.Tensor) -> tuple[Any, torch.Tensor]:
        """One segment step for a sub-batch: (per-kind output, the new memory [n, M, d])."""
        n, width = ids.shape
        m = self.num_mem_tokens
        embed = self.backbone.get_input_embeddings()
        device = ids.device
        pos = torch.arange(width, device=device)[None]
        real = pos < lengths[:, None]  # [n, width]
        tokens = embed(ids) * real[..., None]
        if self.kind == "encoder":
            specials = embed(torch.tensor([self.cls_token_id, self.sep_token_id], device=device))
            # [CLS] (mem [SEP])? S [SEP] pad..., the closing [SEP] right after each row's last token
            prefix = [specials[0].expand(n, 1, -1)] + ([memory, specials[1].expand(n, 1, -1)] if m else [])
            offset = 1 + (m + 1 if m else 0)
            total = offset + width + 1
            embeds = torch.cat(prefix + [tokens, tokens.new_zeros(n, 1, tokens.shape[-1])], dim=1)
            close = offset + lengths  # [n]
            embeds = embeds.index_put((torch.arange(n, device=device), close), specials[1].expand(n, -1))
            mask = (torch.arange(total, device=device)[None] <= close[:, None]).long()
            hidden = self.backbone(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
            new_memory = hidden[:, 1 : 1 + m]
            return hidden[:, 0], new_memory
        if self.kind == "decoder":
            # mem S mem pad...: the write block right after each row's last token
            total = m + width + m
            embeds = torch.cat([memory, tokens, tokens.new_zeros(n, m, tokens.shape[-1])], dim=1)
            if m:
                rows = torch.arange(n, device=device)[:, None].expand(n, m)
                write_pos = m + lengths[:, None] + torch.arange(m, device=device)[None]
                embeds = embeds.index_put((rows, write_pos), memory)
            mask = (torch.arange(total, device=device)[None] < (2 * m + lengths)[:, None]).long()
            out = self.backbone(inputs_embeds=embeds, attention_mask=mask, output_hidden_states=bool(m))
            logits = out.logits[:, m : m + width]
            new_memory = (out.hidden_states[-1][torch.arange(n, device=device)[:, None], write_pos] if m
                          else memory)
            return logits, new_memory
        # encoder-decoder: mem S pad... into the encoder
        embeds = torch.cat([memory, tokens], dim=1)
        mask = (torch.arange(m + width, device=device)[None] < (m + lengths)[:, None]).long()
        hidden = self.backbone.get_encoder()(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
        return (hidden, mask), hidden[:, :m]

    def _finish(self, final: list[Any], lm_logits: torch.Tensor | None, memory: torch.Tensor,
                n_segments: torch.Tensor, labels: torch.Tensor | None,
                decoder_input_ids: torch.Tensor | None) -> RMTOutput:
        loss = None
        if self.kind == "decoder":
            if labels is not None:
                labels = labels.to(lm_logits.device)
                loss = torch.nn.functional.cross_entropy(lm_logits[:, :-1].reshape(-1, lm_logits.shape[-1]).float(),
                                                         labels[:, 1:].reshape(-1), ignore_index=-100)
            return RMTOutput(lm_logits, loss, memory, n_segments)
        if self.kind == "encoder":
            cls = torch.stack(final)  # [B, d]
            logits = self.head(cls) if self.head is not None else cls
            if labels is not None:
                if self.head is None:
                    raise ValueError("labels need a classification head (num_classes=...)")
                loss = torch.nn.functional.cross_entropy(logits.float(), labels.to(logits.device))
            return RMTOutput(logits, loss, memory, n_segments)
        hidden, mask = self._pad_encoder_states(final)
        if labels is None and decoder_input_ids is None:  # no target: the logits of the first target token
            start = self.backbone.config.decoder_start_token_id
            decoder_input_ids = torch.full((hidden.shape[0], 1), int(start or 0), dtype=torch.long, device=hidden.device)
        out = self.backbone(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask,
                            labels=None if labels is None else labels.to(hidden.device),
                            decoder_input_ids=decoder_input_ids)
        return RMTOutput(out.logits, out.loss, memory, n_segments)

    @staticmethod
    def _pad_encoder_states(final: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's last-segment encoder states (different widths across rows) as one batch."""
        width = max(h.shape[0] for h, _ in final)
        hidden = torch.stack([torch.nn.functional.pad(h, (0, 0, 0, width - h.shape[0])) for h, _ in final])
        mask = torch.stack([torch.nn.functional.pad(m, (0, width - m.shape[0])) for _, m in final])
        return hidden, mask

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 reset_memory: bool = False, **kwargs: Any) -> torch.Tensor:
        """Encoder-decoder kind: read the input with memory, then ``generate`` from the last
        segment's states (``kwargs`` go to the backbone's ``generate``)."""
        if self.kind != "encoder-decoder":
            raise ValueError("generate is for the encoder-decoder kind")
        was = self.training
        self.eval()
        try:
            final = self._read(input_ids, attention_mask, reset_memory)[0]
            hidden, enc_mask = self._pad_encoder_states(final)
            return self.backbone.generate(encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                                          attention_mask=enc_mask, **kwargs)
        finally:
            self.train(was)

def _config_id(cfg: Any, *names_and_default: Any) -> int:
    *names, default = names_and_default
    for name in names:
        value = getattr(cfg, name, None)
        if isinstance(value, int):
            return value
    return int(default)

