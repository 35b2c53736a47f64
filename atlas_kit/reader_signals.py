"""What the reader tells the retriever: per-passage scores for each retriever objective.

All functions run without gradient and in eval mode (dropout off), and return [batch, k] tensors
that :func:`atlas_kit.losses.retriever_loss` turns into the retriever's training signal. They reuse
the reader's own tokenisation and FiD forward; nothing here re-implements the reader.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import torch

from atlas_kit.reader import Reader

__all__ = ["attention_scores", "passage_loglik", "passage_logprob_sum", "leave_one_out_nll", "reader_signal", "SIGNALS"]


@contextlib.contextmanager
def _eval(reader: Reader) -> Iterator[None]:
    was = reader.training
    reader.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        reader.train(was)


def _token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log p of each label token [N, T], mask of real tokens [N, T])."""
    mask = labels != -100
    logp = torch.log_softmax(logits.float(), dim=-1)
    tok = logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return tok * mask, mask


def _single_passage_logprobs(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                             answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Token log-probs of the answer with each passage alone: B*k one-passage FiD inputs."""
    b, k = len(questions), len(passages[0])
    flat_q = [q for q in questions for _ in range(k)]
    flat_p = [[p] for ps in passages for p in ps]
    batch = reader.tokenize(flat_q, flat_p)
    labels = reader.tokenize_answers([a for a in answers for _ in range(k)]).to(reader.device)
    out = reader(batch["input_ids"], batch["attention_mask"], labels=labels)
    tok, mask = _token_logprobs(out.logits, labels)
    return tok, mask, b, k


def passage_loglik(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                   answers: Sequence[str]) -> torch.Tensor:
    """PDist target: mean per-token log-likelihood of the answer given passage i alone."""
    with _eval(reader):
        tok, mask, b, k = _single_passage_logprobs(reader, questions, passages, answers)
        return (tok.sum(-1) / mask.sum(-1).clamp(min=1)).view(b, k)


def passage_logprob_sum(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                        answers: Sequence[str]) -> torch.Tensor:
    """EMDR² term: log p(answer | question, passage i), summed over answer tokens."""
    with _eval(reader):
        tok, _, b, k = _single_passage_logprobs(reader, questions, passages, answers)
        return tok.sum(-1).view(b, k)


def leave_one_out_nll(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                      answers: Sequence[str]) -> torch.Tensor:
    """LOOP target: mean per-token NLL of the answer with passage i hidden from the decoder.

    One encoder pass; k decoder passes, each masking one passage out of the cross-attention.
    """
    with _eval(reader):
        batch = reader.tokenize(questions, passages)
        labels = reader.tokenize_answers(answers).to(reader.device)
        encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
        b, k = batch["input_ids"].shape[:2]
        out = torch.empty(b, k, device=reader.device)
        for i in range(k):
            keep = torch.ones(b, k, device=reader.device)
            keep[:, i] = 0
            logits = reader(labels=labels, encoded=encoded, passage_mask=keep).logits
            tok, mask = _token_logprobs(logits, labels)
            out[:, i] = -tok.sum(-1) / mask.sum(-1).clamp(min=1)
        return out


def attention_scores(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                     answers: Sequence[str]) -> torch.Tensor:
    """ADist target: decoder cross-attention mass on each passage, summed over layers, heads,
    answer tokens (padding excluded) and the passage's non-padding tokens.

    (Atlas optionally weights attention by the norm of the attended values; that variant is not
    implemented here.)
    """
    with _eval(reader):
        batch = reader.tokenize(questions, passages)
        labels = reader.tokenize_answers(answers).to(reader.device)
        out = reader(batch["input_ids"], batch["attention_mask"], labels=labels, output_attentions=True)
        # each: [B, heads, T, k*L]
        att = torch.stack([a.float() for a in out.cross_attentions]).sum(dim=(0, 2))  # [B, T, k*L]
        att = (att * (labels != -100).unsqueeze(-1)).sum(1)  # [B, k*L]
        b, k, length = batch["input_ids"].shape
        mask = batch["attention_mask"].to(att.device).view(b, k * length)
        return (att * mask).view(b, k, length).sum(-1)


SIGNALS = {
    "adist": attention_scores,
    "pdist": passage_loglik,
    "loop": leave_one_out_nll,
    "emdr2": passage_logprob_sum,
}


def reader_signal(name: str, reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                  answers: Sequence[str]) -> torch.Tensor | None:
    """The reader scores the named objective needs (``None`` for ``none``)."""
    if name == "none":
        return None
    if name not in SIGNALS:
        raise ValueError(f"unknown retriever loss {name!r} (known: none, {', '.join(SIGNALS)})")
    return SIGNALS[name](reader, questions, passages, answers)
