"""EMAT (Wu et al., EMNLP 2022): a key-value memory of question-answer pairs fused inside T5's encoder.

:class:`EMAT` wraps any T5 (a :class:`~atlas_kit.reader.Reader` loaded from a checkpoint or built
from a config) and adds three small parts, as the paper and its reference code (uclnlp/EMAT) do:

* ``prefix_length`` learned **prefix embeddings**, put before the token embeddings of every input;
* a **key encoder** at an early encoder layer (``key_layer``): a width-3 convolution over the hidden
  states, ReLU, a masked mean over the positions, and a linear map to ``prefix_length`` key tokens,
  followed by a layer norm (EMAT's ``ConvKeyEncoder`` + ``kv_output_layer``). The mean of the
  normalised key tokens is the vector searched by maximum inner product;
* nothing else: **values** are the prefix positions' hidden states after a later layer
  (``value_layer``) when the encoder reads ``"answer: <answer>"``.

A memory question ``"question: <q>"`` run to the key layer (early exit) gives its key; the same text
asked as a question gives, at the same layer, exactly the same vector as the search query (tested).
At question time the encoder runs to the key layer, the query is searched in the key memory
(:class:`~atlas_kit.memory.emat_memory.QAMemory`: exact, or FAISS through ``KVMemory``), the top-k
slots' (un-normalised) key tokens are prepended to the hidden states, the next layers run over the
longer sequence, after the value layer each slot's value is added onto its key positions (EMAT's
``cat_k_delay+v``), and the rest of the encoder and the decoder run as usual. With 0 slots the model
is exactly T5 reading ``prefix + question`` (tested).

Where this differs from the reference code, deliberately:

* EMAT resets the relative position bias after prepending the slots and gives it to no layer, so
  every layer above the key layer runs without position information; here the first block's bias
  is recomputed for the longer sequence (no new parameters), so a pretrained T5 keeps its position
  bias and 0 slots equals plain T5 with the prefix.
* EMAT's memory code is CUDA-only (``.cuda()`` everywhere, fp16 keys); here everything follows the
  model's device and the memory is a CPU ``KVMemory``/FAISS index in float32.
* Layer indices are 0-based block indices as in EMAT (``key_layer=3`` = after the 4th block).
  Config-built T5s here are small, so the defaults are ``key_layer=1, value_layer=2``; the paper's
  T5-base settings are ``key_layer=3, value_layer=7, prefix_length=2, k=10`` (``recipes/memory``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.t5.modeling_t5 import T5LayerNorm

from atlas_kit.reader import Reader
from atlas_kit.storage import atomic_dir, atomic_write_json, read_json

__all__ = ["EMAT", "EMATEncoding", "Slots", "ConvKeyEncoder", "EMAT_CONFIG"]

log = logging.getLogger(__name__)

EMAT_CONFIG = "emat_config.json"
_WEIGHTS = "emat_parts.safetensors"


class ConvKeyEncoder(nn.Module):
    """Conv1d (width 3, same padding, no bias) -> ReLU -> masked mean over positions -> Linear to
    ``key_tokens`` x d_model (EMAT's ``ConvKeyEncoder``; its ``d_key`` is key_tokens x d_model)."""

    def __init__(self, d_model: int, key_tokens: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.key_tokens = int(key_tokens)
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=kernel_size, padding="same", bias=False)
        self.linear = nn.Linear(d_model, key_tokens * d_model, bias=False)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """hidden [B, L, d], mask [B, L] -> raw key tokens [B, key_tokens, d]."""
        m = mask[:, None, :].to(hidden.dtype)
        x = torch.relu(self.conv(hidden.transpose(1, 2) * m)) * m
        pooled = x.sum(-1) / m.sum(-1).clamp(min=1)
        return self.linear(pooled).view(hidden.shape[0], self.key_tokens, hidden.shape[-1])


@dataclass
class Slots:
    """Memory slots given to the encoder: ``keys`` [B, k, P, d] (raw key tokens, prepended at the
    key layer), ``values`` [B, k, P, d] (added at the value layer), ``mask`` [B, k] (False = no
    slot: its positions are hidden from attention), ``ids`` [B, k] (memory rows, -1 for none) and
    ``scores`` [B, k] (query . key)."""

    keys: torch.Tensor
    values: torch.Tensor
    mask: torch.Tensor
    ids: torch.Tensor | None = None
    scores: torch.Tensor | None = None

    @property
    def k(self) -> int:
        return self.keys.shape[1]


@dataclass
class EMATEncoding:
    """The encoder's output for the decoder (``hidden`` [B, S, d], ``mask`` [B, S]), the search
    ``query`` [B, d] (normalised, with gradient) and the slots that were read."""

    hidden: torch.Tensor
    mask: torch.Tensor
    query: torch.Tensor
    slots: Slots | None


class EMAT(nn.Module):
    """The EMAT reader around a T5 :class:`~atlas_kit.reader.Reader`.

    Args:
        reader: the T5 and its tokenizer (any checkpoint, or ``Reader.from_config``).
        prefix_length: learned prefix embeddings (= key tokens = value tokens per slot; EMAT: 2).
        key_layer: block after which keys/queries are computed and slots prepended (EMAT: 3).
        value_layer: block after which values are taken / added (EMAT: 7); ``>= key_layer``.
        question_prefix / answer_prefix: what the encoder reads for keys and values (EMAT's
            ``"question: "`` / ``"answer: "``).
        seed: initial weights of the new parts, without touching the global RNG.
    """

    def __init__(self, reader: Reader, prefix_length: int = 2, key_layer: int = 1, value_layer: int = 2,
                 question_prefix: str = "question: ", answer_prefix: str = "answer: ", seed: int = 0) -> None:
        super().__init__()
        blocks = len(reader.model.get_encoder().block)
        if not 0 <= key_layer <= value_layer < blocks:
            raise ValueError(f"need 0 <= key_layer <= value_layer < {blocks} (encoder blocks), "
                             f"got key_layer={key_layer}, value_layer={value_layer}")
        if prefix_length < 1:
            raise ValueError(f"prefix_length must be >= 1, got {prefix_length}")
        self.reader = reader
        self.prefix_length, self.key_layer, self.value_layer = int(prefix_length), int(key_layer), int(value_layer)
        self.question_prefix, self.answer_prefix = question_prefix, answer_prefix
        cfg = reader.model.config
        d = cfg.d_model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # EMAT initialises the prefix as N(0, initializer_factor), like T5's token embeddings
            self.prefix = nn.Parameter(torch.randn(self.prefix_length, d) * cfg.initializer_factor)
            self.key_encoder = ConvKeyEncoder(d, self.prefix_length)
        self.key_norm = T5LayerNorm(d, eps=cfg.layer_norm_epsilon)
        self._fingerprint_cache: tuple[int, str] | None = None

    # ------------------------------------------------------------------ basics
    @property
    def model(self):  # the T5ForConditionalGeneration
        return self.reader.model

    @property
    def tokenizer(self):
        return self.reader.tokenizer

    @property
    def d_model(self) -> int:
        return self.model.config.d_model

    @property
    def device(self) -> torch.device:
        return self.prefix.device

    def settings(self) -> dict[str, Any]:
        return {"prefix_length": self.prefix_length, "key_layer": self.key_layer, "value_layer": self.value_layer,
                "question_prefix": self.question_prefix, "answer_prefix": self.answer_prefix}

    @classmethod
    def from_config(cls, tokenizer: Any = None, emat: dict[str, Any] | None = None, **reader_kwargs: Any) -> "EMAT":
        """A config-built T5 (``Reader.from_config(tokenizer, **reader_kwargs)``) with EMAT's parts."""
        return cls(Reader.from_config(tokenizer, **reader_kwargs), **(emat or {}))

    @classmethod
    def from_backbone(cls, path_or_id: str | os.PathLike, **emat: Any) -> "EMAT":
        """Any T5 checkpoint (hub id or folder) as the backbone, new EMAT parts on top."""
        return cls(Reader.from_pretrained(path_or_id), **emat)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """The reader folder (T5 + tokenizer + reader settings) plus ``emat_config.json`` and the
        EMAT parts (prefix, key encoder, key norm) in safetensors; published atomically."""
        from safetensors.torch import save_file

        with atomic_dir(folder) as tmp:
            self.reader.save_pretrained(tmp / "reader")
            parts = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("reader.")}
            save_file(parts, str(tmp / _WEIGHTS))
            atomic_write_json(tmp / EMAT_CONFIG, self.settings())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike, device: str | None = None) -> "EMAT":
        """Inverse of :meth:`save_pretrained`."""
        from safetensors.torch import load_file

        folder = Path(folder)
        if not (folder / EMAT_CONFIG).is_file():
            raise FileNotFoundError(f"{folder}: no {EMAT_CONFIG} (not an EMAT folder written by save_pretrained)")
        emat = cls(Reader.from_pretrained(str(folder / "reader")), **read_json(folder / EMAT_CONFIG))
        missing, unexpected = emat.load_state_dict(load_file(str(folder / _WEIGHTS)), strict=False)
        missing = [m for m in missing if not m.startswith("reader.")]
        if missing or unexpected:
            raise ValueError(f"{folder / _WEIGHTS}: missing {missing}, unexpected {unexpected}")
        return emat.to(device) if device else emat

    def fingerprint(self) -> str:
        """SHA-256 over every weight that shapes keys and values (token embeddings, the encoder
        blocks up to ``value_layer``, prefix, key encoder, key norm) and the settings: a memory
        must have been encoded by a model with this fingerprint. Cached until a weight changes."""
        enc = self.model.get_encoder()
        named = {"settings": torch.tensor(list(hashlib.sha256(repr(sorted(self.settings().items())).encode()).digest()))}
        named["embed"] = self.model.get_input_embeddings().weight
        for i in range(self.value_layer + 1):
            named.update({f"block{i}.{k}": v for k, v in enc.block[i].state_dict().items()})
        if self.value_layer > 0:  # blocks above 0 read block 0's position bias
            named.update({f"block0.{k}": v for k, v in enc.block[0].state_dict().items()})
        named.update({f"emat.{k}": v for k, v in self.state_dict().items() if not k.startswith("reader.")})
        weights = [t for name, t in named.items() if name != "settings"]  # the settings tensor is new each call
        key = hash((sum(t._version for t in weights), tuple(t.data_ptr() for t in weights)))
        if self._fingerprint_cache is not None and self._fingerprint_cache[0] == key:
            return self._fingerprint_cache[1]
        h = hashlib.sha256()
        for name in sorted(named):
            t = named[name].detach().to("cpu").contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        self._fingerprint_cache = (key, h.hexdigest())
        return self._fingerprint_cache[1]

    # ------------------------------------------------------------------ tokens
    def _tokens(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.reader.text_maxlength, padding=True,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def question_texts(self, questions: Sequence[str]) -> list[str]:
        return [self.question_prefix + q for q in questions]

    def answer_texts(self, answers: Sequence[str]) -> list[str]:
        return [self.answer_prefix + a for a in answers]

    # ------------------------------------------------------------------ encoder pieces
    def _start(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix embeddings + token embeddings (and their mask), after the encoder's input dropout."""
        enc = self.model.get_encoder()
        embeds = enc.embed_tokens(input_ids)
        b = embeds.shape[0]
        prefix = self.prefix.to(embeds.dtype)[None].expand(b, -1, -1)
        hidden = torch.cat([prefix, embeds], dim=1)
        mask = torch.cat([torch.ones(b, self.prefix_length, dtype=attention_mask.dtype, device=attention_mask.device),
                          attention_mask], dim=1)
        return enc.dropout(hidden), mask

    def _blocks(self, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run encoder blocks ``start .. stop-1``; the relative position bias is computed by block
        0's attention for the current length (so a longer sequence gets a bias of its own)."""
        if start >= stop:
            return hidden
        from transformers.masking_utils import create_bidirectional_mask

        enc = self.model.get_encoder()
        ext = create_bidirectional_mask(config=enc.config, inputs_embeds=hidden, attention_mask=mask)
        n = hidden.shape[1]
        bias = enc.block[0].layer[0].SelfAttention.compute_bias(n, n, device=hidden.device).to(hidden.dtype)
        for i in range(start, stop):
            hidden = enc.block[i](hidden, ext, bias, None, None, None)[0]
        return hidden

    def _finish(self, hidden: torch.Tensor) -> torch.Tensor:
        enc = self.model.get_encoder()
        return enc.dropout(enc.final_layer_norm(hidden))

    def _key_tokens(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw key tokens [B, P, d], normalised search vector [B, d]) from key-layer states."""
        raw = self.key_encoder(hidden, mask)
        normed = self.model.get_encoder().dropout(self.key_norm(raw))
        return raw, normed.mean(dim=1)

    def normed_key_tokens(self, raw: torch.Tensor) -> torch.Tensor:
        """EMAT's ``kv_output_layer``: layer norm (+ dropout) of key or value tokens."""
        return self.model.get_encoder().dropout(self.key_norm(raw))

    # ------------------------------------------------------------------ keys and values
    def embed_keys(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory keys of questions: (search vectors [N, d], raw key tokens [N, P, d]); the encoder
        exits at the key layer. Gradients flow unless the caller disables them."""
        ids, att = self._tokens(self.question_texts(questions))
        hidden, mask = self._start(ids, att)
        hidden = self._blocks(hidden, mask, 0, self.key_layer + 1)
        raw, query = self._key_tokens(hidden, mask)
        return query, raw

    def embed_values(self, answers: Sequence[str]) -> torch.Tensor:
        """Memory values of answers: the prefix positions' states after the value layer [N, P, d]."""
        ids, att = self._tokens(self.answer_texts(answers))
        hidden, mask = self._start(ids, att)
        hidden = self._blocks(hidden, mask, 0, self.value_layer + 1)
        return hidden[:, : self.prefix_length]

    def slots_from_pairs(self, pairs: Sequence[Sequence[tuple[str, str] | None]]) -> Slots:
        """Slots encoded now from their texts (``pairs[b][j]`` = (question, answer) or None for an
        empty slot), with gradients: how training reads retrieved slots through the current
        weights (EMAT re-embeds the retrieved QAs of each batch the same way)."""
        b = len(pairs)
        k = max((len(row) for row in pairs), default=0)
        p, d = self.prefix_length, self.d_model
        flat = [(i, j, qa) for i, row in enumerate(pairs) for j, qa in enumerate(row) if qa is not None]
        keys = torch.zeros(b, k, p, d, device=self.device)
        values = torch.zeros(b, k, p, d, device=self.device)
        mask = torch.zeros(b, k, dtype=torch.bool, device=self.device)
        if flat:
            _, raw = self.embed_keys([qa[0] for _, _, qa in flat])
            vals = self.embed_values([qa[1] for _, _, qa in flat])
            rows = torch.tensor([i for i, _, _ in flat], device=self.device)
            cols = torch.tensor([j for _, j, _ in flat], device=self.device)
            keys = keys.to(raw.dtype).index_put((rows, cols), raw)
            values = values.to(vals.dtype).index_put((rows, cols), vals)
            mask[rows, cols] = True
        return Slots(keys, values, mask)

    @torch.inference_mode()
    def encode_memory(self, questions: Sequence[str], answers: Sequence[str], batch_size: int = 256,
                      show_progress: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(search keys [N, d], raw key tokens [N, P, d], values [N, P, d]) on the CPU, in eval mode."""
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        was = self.training
        self.eval()
        out: list[tuple[torch.Tensor, ...]] = []
        try:
            for s in tqdm(range(0, len(questions), batch_size), desc="encode memory", disable=not show_progress):
                q, raw = self.embed_keys(questions[s : s + batch_size])
                v = self.embed_values(answers[s : s + batch_size])
                out.append((q.float().cpu(), raw.float().cpu(), v.float().cpu()))
        finally:
            self.train(was)
        if not out:
            d, p = self.d_model, self.prefix_length
            return torch.zeros(0, d), torch.zeros(0, p, d), torch.zeros(0, p, d)
        return tuple(torch.cat(parts) for parts in zip(*out))  # type: ignore[return-value]

    # ------------------------------------------------------------------ the forward pass
    def encode(self, questions: Sequence[str], memory: Any = None, k: int = 0, slots: Slots | None = None,
               passages: Sequence[Sequence[Any]] | None = None) -> EMATEncoding:
        """Encode questions with ``k`` memory slots searched in ``memory`` at the key layer (or
        the ``slots`` given, e.g. re-encoded with gradients for training); ``k=0`` and no slots
        is T5 with the prefix.

        With ``passages`` (one list per question, as for the FiD reader), each (question,
        passage) input is encoded with the same slots and the states are fused FiD-style; the
        query then comes from the question alone (one more pass to the key layer).
        """
        b = len(questions)
        if passages is not None and any(len(p) for p in passages):
            query, _ = self.embed_keys(questions)
            batch = self.reader.tokenize(list(questions), [list(p) for p in passages])
            n = batch["input_ids"].shape[1]
            ids = batch["input_ids"].reshape(b * n, -1).to(self.device)
            att = batch["attention_mask"].reshape(b * n, -1).to(self.device)
            hidden, mask = self._start(ids, att)
            hidden = self._blocks(hidden, mask, 0, self.key_layer + 1)
        else:
            n = 1
            ids, att = self._tokens(self.question_texts(questions))
            hidden, mask = self._start(ids, att)
            hidden = self._blocks(hidden, mask, 0, self.key_layer + 1)
            _, query = self._key_tokens(hidden, mask)
        if slots is None and memory is not None and k > 0:
            slots = memory.slots(query.detach(), k, device=self.device, dtype=hidden.dtype)
        if slots is not None and slots.k > 0:
            p = self.prefix_length
            kk = slots.k
            keys = slots.keys.to(device=hidden.device, dtype=hidden.dtype)
            smask = slots.mask.to(hidden.device)
            keys = keys * smask[:, :, None, None].to(keys.dtype)
            keys = keys.reshape(b, kk * p, -1).repeat_interleave(n, dim=0)
            slot_mask = smask[:, :, None].expand(b, kk, p).reshape(b, kk * p).repeat_interleave(n, dim=0).to(mask.dtype)
            hidden = torch.cat([keys, hidden], dim=1)
            mask = torch.cat([slot_mask, mask], dim=1)
            hidden = self._blocks(hidden, mask, self.key_layer + 1, self.value_layer + 1)
            values = slots.values.to(device=hidden.device, dtype=hidden.dtype)
            values = (values * smask[:, :, None, None].to(values.dtype)).reshape(b, kk * p, -1).repeat_interleave(n, dim=0)
            hidden = torch.cat([hidden[:, : kk * p] + values, hidden[:, kk * p:]], dim=1)  # cat_k_delay+v
            hidden = self._blocks(hidden, mask, self.value_layer + 1, len(self.model.get_encoder().block))
        else:
            hidden = self._blocks(hidden, mask, self.key_layer + 1, len(self.model.get_encoder().block))
        hidden = self._finish(hidden)
        if n > 1:
            hidden = hidden.reshape(b, n * hidden.shape[1], -1)
            mask = mask.reshape(b, -1)
        return EMATEncoding(hidden, mask, query, slots)

    def forward(self, questions: Sequence[str], answers: Sequence[str] | torch.Tensor, memory: Any = None, k: int = 0,
                slots: Slots | None = None, passages: Sequence[Sequence[Any]] | None = None) -> tuple[torch.Tensor, EMATEncoding]:
        """(mean token cross-entropy of the answers, the encoding) - the generation loss."""
        enc = self.encode(questions, memory=memory, k=k, slots=slots, passages=passages)
        labels = answers if isinstance(answers, torch.Tensor) else self.reader.tokenize_answers(list(answers))
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=enc.hidden), attention_mask=enc.mask,
                         labels=labels.to(self.device), use_cache=False)
        return out.loss, enc

    def decode_loss(self, states: torch.Tensor, targets: Sequence[str]) -> torch.Tensor:
        """Cross-entropy of ``targets`` decoded from ``states`` [N, P, d] alone (the auto-encoding
        losses: question from its key tokens, answer from its value tokens)."""
        labels = self.reader.tokenize_answers(list(targets)).to(self.device)
        mask = torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=mask, labels=labels,
                         use_cache=False)
        return out.loss

    def _generation_cache(self) -> dict[str, Any]:
        """A decoder deeper than the encoder needs a cache that grows with the layers it sees
        (``generate`` sizes its own by the encoder's depth)."""
        cfg = self.model.config
        if (getattr(cfg, "num_decoder_layers", None) or cfg.num_layers) <= cfg.num_layers:
            return {}
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return {"past_key_values": EncoderDecoderCache(DynamicCache(), DynamicCache())}

    @torch.inference_mode()
    def generate(self, questions: Sequence[str], passages: Sequence[Sequence[Any]] | None = None, memory: Any = None,
                 k: int = 10, max_length: int | None = None, num_beams: int = 1, batch_size: int = 64,
                 show_progress: bool = False, return_slots: bool = False) -> list[str] | tuple[list[str], list[list[int]]]:
        """Answers (greedy or beam) reading ``k`` slots of ``memory`` (and ``passages`` when given),
        in eval mode, restoring the previous mode. ``return_slots`` also gives each question's slot
        rows (-1 = empty)."""
        import warnings

        was = self.training
        self.eval()
        texts: list[str] = []
        rows: list[list[int]] = []
        try:
            for s in tqdm(range(0, len(questions), batch_size), desc="generate", disable=not show_progress):
                qs = list(questions[s : s + batch_size])
                ps = None if passages is None else [list(p) for p in passages[s : s + batch_size]]
                enc = self.encode(qs, memory=memory, k=k if memory is not None else 0, passages=ps)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
                    ids = self.model.generate(encoder_outputs=BaseModelOutput(last_hidden_state=enc.hidden),
                                              attention_mask=enc.mask, max_new_tokens=max_length or self.reader.answer_maxlength,
                                              num_beams=num_beams, do_sample=False, **self._generation_cache())
                texts.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
                if return_slots:
                    if enc.slots is not None and enc.slots.ids is not None:
                        rows.extend(enc.slots.ids.tolist())
                    else:
                        rows.extend([[] for _ in qs])
        finally:
            self.train(was)
        return (texts, rows) if return_slots else texts
