"""Fusion-in-Decoder reader (Izacard & Grave, 2021) on an unmodified T5.

Each (question, passage) pair is encoded on its own - cost grows linearly with the number of
passages, not quadratically - and the encoder states of all k passages are concatenated so the
decoder cross-attends over everything at once. Instead of wrapping T5's encoder as the original
FiD code did, the fused states are handed to T5 through ``encoder_outputs=``, so any T5 checkpoint
(and ``generate``, beam search, gradient checkpointing) works unchanged.

Retriever training needs two things from the reader, both available here without a second
encoder pass: cross-attention weights (``forward(..., output_attentions=True)``; the model is
switched to eager attention for that, since SDPA cannot return weights) and per-passage masking
of the cross-attention (``forward(..., encoded=reader.encode(...), passage_mask=...)``).
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput, Seq2SeqLMOutput

from atlas_kit.model_card import reader_card
from atlas_kit.passages import passage_fields
from atlas_kit.storage import atomic_dir, atomic_write_json, atomic_write_text, read_json

__all__ = ["Reader", "CONFIG_NAME", "token_logprobs"]

log = logging.getLogger(__name__)

CONFIG_NAME = "reader_config.json"
_SETTINGS = ("template", "text_maxlength", "answer_maxlength")


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each label token [N, T] (0 at padding), mask of real tokens [N, T]), in float32 at
    least (half-precision logits are promoted; a float64 model keeps float64)."""
    labels = labels.to(logits.device)
    mask = labels != -100
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return tok * mask, mask


def _first_id(value: Any) -> int | None:
    """Token ids in configs may be an int or a list of ints (several eos tokens)."""
    if isinstance(value, (list, tuple)):
        return int(value[0]) if value else None
    return None if value is None else int(value)


class Reader(torch.nn.Module):
    """FiD reader around ``transformers.T5ForConditionalGeneration``.

    Args:
        model: the T5 model.
        tokenizer: its tokenizer (for a config-built T5, any tokenizer whose ids match the config).
        template: how one passage is shown with the question (``{question}``, ``{title}``, ``{text}``).
        text_maxlength: truncation of each (question, passage) input, in tokens.
        answer_maxlength: truncation of targets and the default generation length, in tokens.
    """

    DEFAULT_TEMPLATE = "question: {question} title: {title} context: {text}"

    def __init__(
        self,
        model: T5ForConditionalGeneration,
        tokenizer: Any,
        template: str = DEFAULT_TEMPLATE,
        text_maxlength: int = 200,
        answer_maxlength: int = 32,
    ) -> None:
        super().__init__()
        if text_maxlength < 1 or answer_maxlength < 2:
            raise ValueError("text_maxlength must be >= 1 and answer_maxlength >= 2 (the answer needs its eos)")
        self.model = model
        self.tokenizer = tokenizer
        self.template = template
        self.text_maxlength = int(text_maxlength)
        self.answer_maxlength = int(answer_maxlength)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_pretrained(cls, path_or_id: str | os.PathLike, **overrides: Any) -> "Reader":
        """Any T5 checkpoint (hub id or folder) and the tokenizer stored with it.

        Reader settings (template, lengths) come from ``reader_config.json`` when the folder has
        one (a checkpoint saved by :meth:`save_pretrained`); ``overrides`` win over them. Other
        keyword arguments (``dtype``, ``attn_implementation``, ...) go to
        ``T5ForConditionalGeneration.from_pretrained``.
        """
        path = str(path_or_id)
        settings: dict[str, Any] = {}
        cfg_file = Path(path) / CONFIG_NAME
        if cfg_file.is_file():
            settings.update(read_json(cfg_file))
        model_kwargs = {k: v for k, v in overrides.items() if k not in _SETTINGS}
        settings.update({k: v for k, v in overrides.items() if k in _SETTINGS})
        model = T5ForConditionalGeneration.from_pretrained(path, **model_kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path)
        log.info("loaded reader %s (%.1fM parameters)", path, sum(p.numel() for p in model.parameters()) / 1e6)
        return cls(model, tokenizer, **{k: settings[k] for k in _SETTINGS if k in settings})

    @classmethod
    def from_config(
        cls,
        tokenizer: Any = None,
        d_model: int = 128,
        num_layers: int = 2,
        num_decoder_layers: int | None = None,
        num_heads: int = 4,
        d_ff: int | None = None,
        d_kv: int | None = None,
        dropout: float = 0.1,
        tie_word_embeddings: bool = True,
        seed: int = 0,
        **reader_kwargs: Any,
    ) -> "Reader":
        """A randomly initialised T5 sized by the arguments, with ids taken from ``tokenizer``.

        No pretrained T5 exists offline, so the default reader is trained from scratch; its
        vocabulary, pad, eos and decoder-start ids must match the tokenizer it will be fed. A
        BERT-style tokenizer has no eos token: ``[SEP]`` ends answers and ``[PAD]`` starts
        decoding (as ``<pad>`` does in T5). Default tokenizer: the bundled MiniLM WordPiece.
        ``seed`` makes the initial weights reproducible without touching the global RNG.
        """
        if tokenizer is None:
            from atlas_kit.tokenization import default_tokenizer

            tokenizer = default_tokenizer()
        pad_id = tokenizer.pad_token_id
        eos_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id
        if pad_id is None or eos_id is None:
            raise ValueError("the tokenizer needs a pad token and an eos (or sep) token")
        if d_model % num_heads and d_kv is None:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}; pass d_kv")
        config = T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=d_kv or d_model // num_heads,
            d_ff=d_ff or 4 * d_model,
            num_layers=num_layers,
            num_decoder_layers=num_decoder_layers or num_layers,
            num_heads=num_heads,
            dropout_rate=dropout,
            pad_token_id=pad_id,
            eos_token_id=eos_id,
            decoder_start_token_id=pad_id,
            tie_word_embeddings=tie_word_embeddings,
            feed_forward_proj="relu",
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = T5ForConditionalGeneration(config)
        gen = model.generation_config
        gen.eos_token_id, gen.pad_token_id, gen.decoder_start_token_id = eos_id, pad_id, pad_id
        log.info("built a T5 reader from a config: %.1fM parameters, vocab %d",
                 sum(p.numel() for p in model.parameters()) / 1e6, config.vocab_size)
        return cls(model, tokenizer, **reader_kwargs)

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Weights (safetensors), tokenizer and reader settings, published atomically so a
        serving process never loads a half-written checkpoint."""
        with atomic_dir(folder) as tmp:
            self.model.save_pretrained(tmp, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            atomic_write_json(tmp / CONFIG_NAME, self.settings())
            atomic_write_text(tmp / "README.md", reader_card(self.settings()))  # the Hub's model card
        log.info("saved reader to %s", folder)

    def settings(self) -> dict[str, Any]:
        """What ``reader_config.json`` holds: everything besides weights that changes answers."""
        return {"template": self.template, "text_maxlength": self.text_maxlength, "answer_maxlength": self.answer_maxlength}

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def eos_token_id(self) -> int:
        """The id that ends answers: the model's eos (``[SEP]`` for a BERT-tokenizer reader)."""
        for value in (self.model.config.eos_token_id, self.tokenizer.eos_token_id, getattr(self.tokenizer, "sep_token_id", None)):
            eos = _first_id(value)
            if eos is not None:
                return eos
        raise ValueError("neither the model config nor the tokenizer defines an eos token")

    def gradient_checkpointing_enable(self, **kwargs: Any) -> None:
        """Trade compute for memory (many passages x long inputs); passed through to T5."""
        self.model.gradient_checkpointing_enable(**kwargs)

    def gradient_checkpointing_disable(self) -> None:
        self.model.gradient_checkpointing_disable()

    def generation_cache_kwargs(self) -> dict[str, Any]:
        """Extra ``generate`` arguments for this T5 (also for readers built on it, such as
        :class:`~atlas_kit.memory.rmt_reader.RMTReader`): a T5 whose decoder has more layers than
        its encoder gets a cache that grows with the layers it sees: ``generate``'s own cache is
        sized by ``config.num_layers`` (the encoder's depth, which ``num_hidden_layers`` maps to)
        and fails with an IndexError otherwise."""
        cfg = self.model.config
        if (getattr(cfg, "num_decoder_layers", None) or cfg.num_layers) <= cfg.num_layers:
            return {}
        from transformers.cache_utils import DynamicCache, EncoderDecoderCache

        return {"past_key_values": EncoderDecoderCache(DynamicCache(), DynamicCache())}

    # ------------------------------------------------------------------ inputs
    def format_inputs(self, question: str, passages: Sequence[Any]) -> list[str]:
        """One input string per passage; with no passages, a single input with an empty title
        and context, so the closed-book (no-retrieval) baseline runs through the same code."""
        if len(passages) == 0:
            return [self.template.format(question=question, title="", text="")]
        return [self.template.format(question=question, title=title, text=text)
                for title, text in map(passage_fields, passages)]

    def tokenize(self, questions: Sequence[str], passages: Sequence[Sequence[Any]]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` of shape [B, k, L], padded to the batch's longest input.

        An input longer than ``text_maxlength`` tokens loses passage text first (from its end);
        when the question and template alone do not fit, the question is cut from its START, as
        Atlas does for multiple choice (``get_multiple_choice_question_prompt``): the options of
        a multiple-choice query come last and are kept. Every question needs the same k (FiD fuses
        a fixed number of passages per example); a mismatch raises ``ValueError`` naming the
        offending index rather than silently truncating.
        """
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        if len(questions) == 0:
            raise ValueError("tokenize needs at least one question")
        parts: list[tuple[str, str, str]] = []
        k = -1
        for i, (q, ps) in enumerate(zip(questions, passages)):
            n = max(len(ps), 1)  # no passages: one closed-book input
            if i == 0:
                k = n
            elif n != k:
                raise ValueError(
                    f"question {i} has {len(ps)} passages but question 0 has {len(passages[0])}: "
                    "every question in a FiD batch needs the same number of passages"
                )
            if ps:
                parts.extend((q, *passage_fields(p)) for p in ps)
            else:
                parts.append((q, "", ""))
        texts = [self.template.format(question=q, title=t, text=x) for q, t, x in parts]
        limit = self.text_maxlength
        # cut at limit + 1: enough to see which inputs overflow, without long-input warnings
        ids = list(self.tokenizer(texts, truncation=True, max_length=limit + 1)["input_ids"])
        over = [i for i, x in enumerate(ids) if len(x) > limit]
        if over:
            fitted: dict[tuple[str, str], str] = {}
            for i in over:
                q, t, x = parts[i]
                if (q, t) not in fitted:
                    fitted[(q, t)] = self._fit_question(q, t)
                texts[i] = self._fit_text(fitted[(q, t)], t, x)
            refit = self.tokenizer([texts[i] for i in over], truncation=True, max_length=limit)["input_ids"]
            for i, x in zip(over, refit):
                ids[i] = x
        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        input_ids = torch.full((len(ids), width), pad, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            span = slice(width - len(x), width) if left else slice(0, len(x))
            input_ids[i, span] = torch.tensor(x, dtype=torch.long)
            attention_mask[i, span] = 1
        b = len(questions)
        return {"input_ids": input_ids.view(b, k, -1), "attention_mask": attention_mask.view(b, k, -1)}

    def _n_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def _fit_question(self, question: str, title: str) -> str:
        """``question`` cut from its start until the template with it (and ``title``, no text) fits."""
        limit = self.text_maxlength
        over = self._n_tokens(self.template.format(question=question, title=title, text="")) - limit
        if over <= 0:
            return question
        ids = self.tokenizer(question, add_special_tokens=False)["input_ids"]
        for _ in range(4):  # decode -> encode may not round-trip token for token: re-measure
            if over >= len(ids):
                log.warning("the template and title alone exceed text_maxlength=%d: the question is dropped", limit)
                return ""
            kept = self.tokenizer.decode(ids[over:], skip_special_tokens=True).strip()
            extra = self._n_tokens(self.template.format(question=kept, title=title, text="")) - limit
            if extra <= 0:
                log.debug("question cut from the start by %d tokens to fit text_maxlength=%d", over, limit)
                return kept
            over += extra
        return kept

    def _fit_text(self, question: str, title: str, text: str) -> str:
        """The input with ``text`` cut from its end so the whole fits. With the default template the
        text comes last and the tokenizer's own right truncation does exactly that; a template that
        puts the text elsewhere gets it cut explicitly."""
        full = self.template.format(question=question, title=title, text=text)
        if self.template.rstrip().endswith("{text}"):
            return full
        budget = self.text_maxlength - self._n_tokens(self.template.format(question=question, title=title, text=""))
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        cut = self.tokenizer.decode(ids[: max(budget, 0)], skip_special_tokens=True) if budget > 0 else ""
        return self.template.format(question=question, title=title, text=cut)

    def tokenize_answers(self, answers: Sequence[str]) -> torch.Tensor:
        """Labels [B, T]: answer tokens + eos (so the model learns to stop), padded with -100
        (ignored by the loss). The tokenizer's own special tokens ([CLS] etc.) are not added."""
        enc = self.tokenizer(list(answers), add_special_tokens=False, truncation=True, max_length=self.answer_maxlength - 1)
        eos = self.eos_token_id
        ids = [list(x) + [eos] for x in enc["input_ids"]]
        labels = torch.full((len(ids), max(len(x) for x in ids)), -100, dtype=torch.long)
        for i, x in enumerate(ids):
            labels[i, : len(x)] = torch.tensor(x, dtype=torch.long)
        return labels

    # ------------------------------------------------------------------ model
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode each passage separately (as a batch of B*k sequences) and fuse them: return
        states [B, k*L, d] and mask [B, k*L], passage j occupying positions j*L .. (j+1)*L-1."""
        if input_ids.dim() != 3:
            raise ValueError(f"input_ids must be [batch, k, length], got shape {tuple(input_ids.shape)}")
        b, k, length = input_ids.shape
        ids = input_ids.reshape(b * k, length).to(self.device)
        mask = attention_mask.reshape(b * k, length).to(self.device)
        hidden = self.model.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden.reshape(b, k * length, hidden.shape[-1]), mask.reshape(b, k * length)

    @staticmethod
    def mask_passages(mask: torch.Tensor, passage_mask: torch.Tensor) -> torch.Tensor:
        """Hide whole passages from the decoder: ``mask`` [B, k*L] (fused), ``passage_mask`` [B, k]
        (1 keep, 0 hide). Used for leave-one-out scores without re-running the encoder."""
        b, k = passage_mask.shape
        if mask.shape[0] != b or mask.shape[1] % k:
            raise ValueError(f"passage_mask {tuple(passage_mask.shape)} does not fit the fused mask {tuple(mask.shape)}")
        keep = passage_mask.to(device=mask.device, dtype=mask.dtype)
        return (mask.view(b, k, -1) * keep.unsqueeze(-1)).view(b, -1)

    def _ensure_eager_attention(self) -> None:
        """SDPA kernels cannot return attention weights; switch once to eager attention."""
        impl = getattr(self.model.config, "_attn_implementation", None)
        if impl not in (None, "eager"):
            log.info("switching the reader from %s to eager attention to return attention weights", impl)
            self.model.set_attn_implementation("eager")

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        *,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
        passage_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Seq2SeqLMOutput:
        """FiD forward: the fused encoder states go to T5's decoder (``.loss`` when ``labels`` given).

        Args:
            input_ids, attention_mask: [B, k, L] from :meth:`tokenize`.
            labels: [B, T] from :meth:`tokenize_answers`.
            encoded: ``(hidden, mask)`` from :meth:`encode`, to reuse one encoder pass for several
                decoder passes (then ``input_ids``/``attention_mask`` are not needed).
            passage_mask: [B, k], 0 hides that passage from the decoder's cross-attention.
            **kwargs: passed to T5 (``output_attentions``, ``decoder_input_ids``, ``use_cache``...).
        """
        if encoded is None:
            if input_ids is None or attention_mask is None:
                raise ValueError("pass input_ids and attention_mask, or encoded=(hidden, mask)")
            hidden, mask = self.encode(input_ids, attention_mask)
        else:
            hidden, mask = encoded
        if passage_mask is not None:
            mask = self.mask_passages(mask, passage_mask)
        if labels is not None:
            labels = labels.to(self.device)
        if kwargs.get("output_attentions"):
            self._ensure_eager_attention()
        return self.model(encoder_outputs=BaseModelOutput(last_hidden_state=hidden), attention_mask=mask, labels=labels, **kwargs)

    def score(
        self,
        targets: Sequence[str] | torch.Tensor,
        questions: Sequence[str] | None = None,
        passages: Sequence[Sequence[Any]] | None = None,
        *,
        encoded: tuple[torch.Tensor, torch.Tensor] | None = None,
        passage_mask: torch.Tensor | None = None,
        reduction: str = "sum",
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Log-probability of given targets given the passages: the one scoring call that the
        retriever signals (PDist, LOOP, EMDR²) and multiple-choice scoring are written on.

        Args:
            targets: B strings (tokenised as training targets: tokens + eos) or labels [B, T]
                (-100 = padding); one row is broadcast to every example.
            questions, passages: the inputs, encoded here; or pass ``encoded`` instead.
            encoded: ``(hidden, mask)`` from :meth:`encode`, to score several target sets or
                passage masks against ONE encoder pass.
            passage_mask: [B, k], 0 hides that passage from the decoder (leave-one-out).
            reduction: ``"sum"`` (log p of the whole target, [B]), ``"mean"`` (per-token mean,
                [B]) or ``"none"`` (token log-probs [B, T], 0 at padding, and the mask [B, T]).

        Gradients flow unless the caller disables them (the signals run under ``no_grad``).
        """
        if reduction not in ("sum", "mean", "none"):
            raise ValueError(f"reduction must be 'sum', 'mean' or 'none', got {reduction!r}")
        if encoded is None:
            if questions is None or passages is None:
                raise ValueError("pass questions and passages, or encoded=(hidden, mask)")
            batch = self.tokenize(questions, passages)
            encoded = self.encode(batch["input_ids"], batch["attention_mask"])
        b = encoded[0].shape[0]
        labels = targets if isinstance(targets, torch.Tensor) else self.tokenize_answers(targets)
        labels = labels.to(self.device)
        if labels.shape[0] == 1 and b > 1:
            labels = labels.expand(b, -1).contiguous()
        if labels.shape[0] != b:
            raise ValueError(f"{labels.shape[0]} targets for {b} examples")
        logits = self(labels=labels, encoded=encoded, passage_mask=passage_mask, use_cache=False).logits
        tok, mask = token_logprobs(logits, labels)
        if reduction == "none":
            return tok, mask
        total = tok.sum(-1)
        return total if reduction == "sum" else total / mask.sum(-1).clamp(min=1)

    def loss(self, questions: Sequence[str], passages: Sequence[Sequence[Any]], answers: Sequence[str]) -> torch.Tensor:
        """Mean token cross-entropy of the answers given the passages (one call per training step)."""
        batch = self.tokenize(questions, passages)
        return self(batch["input_ids"], batch["attention_mask"], labels=self.tokenize_answers(answers)).loss

    @torch.inference_mode()
    def generate(
        self,
        questions: Sequence[str],
        passages: Sequence[Sequence[Any]],
        max_length: int | None = None,
        num_beams: int = 1,
        batch_size: int = 16,
        show_progress: bool = False,
    ) -> list[str]:
        """Answers for every question, in batches of ``batch_size`` questions (greedy or beam).

        ``max_length`` counts new tokens (default ``answer_maxlength``). Runs in eval mode (no
        dropout) and restores the previous mode afterwards, so it can be called mid-training.
        """
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        was_training = self.training
        self.eval()
        out: list[str] = []
        try:
            starts = range(0, len(questions), batch_size)
            for s in tqdm(starts, desc="generate", disable=not show_progress):
                batch = self.tokenize(questions[s : s + batch_size], passages[s : s + batch_size])
                hidden, mask = self.encode(batch["input_ids"], batch["attention_mask"])
                with warnings.catch_warnings():  # newer transformers call the cache argument `cache`
                    warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
                    ids = self.model.generate(
                        encoder_outputs=BaseModelOutput(last_hidden_state=hidden),
                        attention_mask=mask,
                        max_new_tokens=max_length or self.answer_maxlength,
                        num_beams=num_beams,
                        do_sample=False,
                        **self.generation_cache_kwargs(),
                    )
                out.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        finally:
            self.train(was_training)
        return out
