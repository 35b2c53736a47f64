"""What the reader tells the retriever: per-passage scores for each retriever objective.

Every function takes ``(reader, questions, passages, answers)`` - B questions, B lists of the same
k passages, B answer strings - and returns a float32 [B, k] tensor that
:func:`atlas_kit.losses.retriever_loss` turns into the retriever's training signal. All of them run
under ``torch.no_grad()`` in eval mode (dropout off) and restore the reader's previous mode. They
reuse the reader's own tokenisation, :meth:`Reader.encode` and FiD forward; nothing here
re-implements the reader. Padded answer positions (label -100) never count.

=========================  ========  ===========================================================
function                   loss      score of passage i
=========================  ========  ===========================================================
attention_scores           adist     decoder cross-attention mass on passage i
passage_loglik             pdist     mean per-token log-likelihood of the answer, passage i alone
leave_one_out_nll          loop      mean per-token NLL of the answer with passage i hidden
passage_logprob_sum        emdr2     log p(answer | question, passage i), summed over tokens
=========================  ========  ===========================================================
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch

from atlas_kit.reader import Reader

__all__ = ["attention_scores", "passage_loglik", "passage_logprob_sum", "leave_one_out_nll", "reader_signal", "SIGNALS",
           "eval_mode", "token_logprobs"]


@contextlib.contextmanager
def eval_mode(reader: Reader) -> Iterator[None]:
    was = reader.training
    reader.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        reader.train(was)


def _check(questions: Sequence[str], passages: Sequence[Sequence[Any]], answers: Sequence[str]) -> int:
    """k, after checking that the batch is consistent and non-empty."""
    if not (len(questions) == len(passages) == len(answers)):
        raise ValueError(f"{len(questions)} questions, {len(passages)} passage lists and {len(answers)} answers: "
                         "need one of each per example")
    if len(questions) == 0:
        raise ValueError("reader signals need at least one example")
    k = len(passages[0])
    if k == 0:
        raise ValueError("reader signals score retrieved passages: got k = 0")
    for i, ps in enumerate(passages):
        if len(ps) != k:
            raise ValueError(f"example {i} has {len(ps)} passages but example 0 has {k}: every example needs the same k")
    return k


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each label token [N, T] (0 at padding), mask of real tokens [N, T]), in float32 at
    least (half-precision logits are promoted; a float64 model keeps float64)."""
    labels = labels.to(logits.device)
    mask = labels != -100
    logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return tok * mask, mask


def _single_passage_logprobs(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                             answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Token log-probs of each answer with each passage alone, as B*k one-passage FiD inputs in
    one batch (example-major: row b*k + i is question b with passage i)."""
    k = _check(questions, passages, answers)
    b = len(questions)
    flat_q = [q for q in questions for _ in range(k)]
    flat_p = [[p] for ps in passages for p in ps]
    batch = reader.tokenize(flat_q, flat_p)
    labels = reader.tokenize_answers([a for a in answers for _ in range(k)]).to(reader.device)
    out = reader(batch["input_ids"], batch["attention_mask"], labels=labels, use_cache=False)
    tok, mask = token_logprobs(out.logits, labels)
    return tok, mask, b, k


def passage_loglik(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                   answers: Sequence[str]) -> torch.Tensor:
    """PDist target [B, k]: mean per-token log-likelihood of the answer (eos included) when the
    reader sees passage i alone."""
    with eval_mode(reader):
        tok, mask, b, k = _single_passage_logprobs(reader, questions, passages, answers)
        return (tok.sum(-1) / mask.sum(-1).clamp(min=1)).view(b, k)


def passage_logprob_sum(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                        answers: Sequence[str]) -> torch.Tensor:
    """EMDR² term [B, k]: log p(answer | question, passage i), summed over answer tokens."""
    with eval_mode(reader):
        tok, _, b, k = _single_passage_logprobs(reader, questions, passages, answers)
        return tok.sum(-1).view(b, k)


def leave_one_out_nll(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                      answers: Sequence[str]) -> torch.Tensor:
    """LOOP target [B, k]: mean per-token NLL of the answer with passage i hidden from the decoder.

    One encoder pass (:meth:`Reader.encode`), then k decoder passes, each masking one passage out
    of the cross-attention (``passage_mask``) - the same as k FiD forwards over the other k-1
    passages, since FiD encodes each passage on its own. The passage whose removal hurts most
    gets the highest score. With k = 1 the decoder sees nothing, and the softmax over one passage
    is constant anyway.
    """
    k = _check(questions, passages, answers)
    with eval_mode(reader):
        batch = reader.tokenize(questions, passages)
        labels = reader.tokenize_answers(answers).to(reader.device)
        encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
        b = len(questions)
        out = torch.empty(b, k, device=reader.device)
        for i in range(k):
            keep = torch.ones(b, k, device=reader.device)
            keep[:, i] = 0
            logits = reader(labels=labels, encoded=encoded, passage_mask=keep, use_cache=False).logits
            tok, mask = token_logprobs(logits, labels)
            out[:, i] = -tok.sum(-1) / mask.sum(-1).clamp(min=1)
        return out


def attention_scores(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                     answers: Sequence[str], normalize: bool = False, value_norms: bool = False,
                     tokens: str = "all") -> torch.Tensor:
    """ADist target [B, k]: the decoder's cross-attention mass on each passage.

    One teacher-forced FiD forward with ``output_attentions=True``; the attention weights are
    summed over decoder layers, heads, answer tokens (padded label positions excluded) and the
    passage's non-padding tokens. Each (layer, head, answer token) spreads mass 1 over the fused
    input, so the scores of one example sum to layers x heads x answer tokens.

    Options (Atlas's aggregation variants):

    * ``normalize=True`` divides by that count, so the scores sum to 1 per example (the share of
      attention each passage gets; not with ``value_norms``). It keeps the target's scale
      independent of model size and answer length - worth considering with a small
      ``temperature_gold``, since the raw sum makes softmax(g/τg) nearly one-hot. Atlas instead
      divides by a constant (256 x layers x answer tokens).
    * ``value_norms=True`` weights each attention weight by the norm of the value vector it reads
      (α·‖v‖, Atlas's "norms" scores): a token attended to but carrying a small value contributes
      little to the output, so it should count little as evidence.
    * ``tokens="first"`` uses the first answer token only (FiD-KD's choice) instead of all of them.

    The reader is switched to eager attention for the forward (SDPA cannot return weights) and
    switched back afterwards.
    """
    if tokens not in ("all", "first"):
        raise ValueError(f"tokens must be 'all' or 'first', got {tokens!r}")
    k = _check(questions, passages, answers)
    previous = getattr(reader.model.config, "_attn_implementation", None)
    values: dict[int, torch.Tensor] = {}
    hooks = []
    try:
        if value_norms:
            for i, block in enumerate(reader.model.decoder.block):
                projection = block.layer[1].EncDecAttention.v  # values of the cross-attention, [B, k*L, inner]
                hooks.append(projection.register_forward_hook(
                    lambda _m, _inp, out, i=i: values.__setitem__(i, out.detach())))
        with eval_mode(reader):
            batch = reader.tokenize(questions, passages)
            labels = reader.tokenize_answers(answers).to(reader.device)
            out = reader(batch["input_ids"], batch["attention_mask"], labels=labels, output_attentions=True,
                         use_cache=False)
            answer_mask = (labels != -100).float()  # [B, T]
            if tokens == "first":
                answer_mask = torch.zeros_like(answer_mask)
                answer_mask[:, 0] = 1.0
            b, _, length = batch["input_ids"].shape
            total = None
            for i, layer in enumerate(out.cross_attentions):  # each [B, heads, T, k*L]; accumulated, not stacked
                weights = layer.float()
                if value_norms:
                    heads = weights.shape[1]
                    norms = values[i].float().view(b, k * length, heads, -1).norm(dim=-1)  # [B, k*L, heads]
                    weights = weights * norms.permute(0, 2, 1)[:, :, None, :]
                mass = torch.einsum("bhtn,bt->bn", weights, answer_mask)
                total = mass if total is None else total + mass
            if total is None:
                raise ValueError("the reader returned no cross-attentions (a decoder with no layers?)")
            context = batch["attention_mask"].to(total.device).view(b, k * length).float()
            scores = (total * context).view(b, k, length).sum(-1)
            if normalize:
                heads = out.cross_attentions[0].shape[1]
                count = answer_mask.sum(-1, keepdim=True) * heads * len(out.cross_attentions)
                scores = scores / count.clamp(min=1)
            return scores
    finally:
        for h in hooks:
            h.remove()
        if previous is not None and getattr(reader.model.config, "_attn_implementation", None) != previous:
            reader.model.set_attn_implementation(previous)


SIGNALS: dict[str, Callable[..., torch.Tensor]] = {
    "adist": attention_scores,
    "pdist": passage_loglik,
    "loop": leave_one_out_nll,
    "emdr2": passage_logprob_sum,
}


def reader_signal(name: str, reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                  answers: Sequence[str], **kwargs: Any) -> torch.Tensor | None:
    """The reader scores the named retriever objective needs, [B, k] (``None`` for ``none``).
    ``kwargs`` go to the signal function (e.g. ``normalize=True`` for ``adist``)."""
    if name == "none":
        return None
    if name not in SIGNALS:
        raise ValueError(f"unknown retriever loss {name!r} (known: none, {', '.join(SIGNALS)})")
    return SIGNALS[name](reader, questions, passages, answers, **kwargs)
