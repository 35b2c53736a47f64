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
attention_scores           adist     decoder cross-attention on passage i (Atlas's normssum)
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
           "AGGREGATIONS", "eval_mode"]


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


def _single_passage_logprobs(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                             answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Token log-probs of each answer with each passage alone, as B*k one-passage FiD inputs in
    one batch (example-major: row b*k + i is question b with passage i)."""
    k = _check(questions, passages, answers)
    b = len(questions)
    tok, mask = reader.score([a for a in answers for _ in range(k)], [q for q in questions for _ in range(k)],
                             [[p] for ps in passages for p in ps], reduction="none")
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
        labels = reader.tokenize_answers(answers)
        encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
        b = len(questions)
        out = torch.empty(b, k, device=reader.device)
        for i in range(k):
            keep = torch.ones(b, k, device=reader.device)
            keep[:, i] = 0
            out[:, i] = -reader.score(labels, encoded=encoded, passage_mask=keep, reduction="mean")
        return out


SOURCES = ("norms", "probs", "scores")
REDUCTIONS = ("sum", "avg", "first")
AGGREGATIONS = tuple(f"{src}{red}" for src in SOURCES for red in REDUCTIONS)
"""ADist target aggregations, named as Atlas's ``get_crossattention_scores`` names them."""


def _capture(module: torch.nn.Module, store: dict[int, torch.Tensor], i: int) -> Any:
    return module.register_forward_hook(lambda _m, _inp, out: store.__setitem__(i, out.detach()))


def attention_scores(reader: Reader, questions: Sequence[str], passages: Sequence[Sequence[Any]],
                     answers: Sequence[str], aggregation: str = "normssum") -> torch.Tensor:
    """ADist target [B, k]: how much the decoder's cross-attention reads each passage.

    One teacher-forced FiD forward in eval mode. ``aggregation`` is ``SOURCE`` + ``REDUCTION``, with
    Atlas's names and scales (``src/fid.py``: ``get_crossattention_scores`` / ``aggregate_value``):

    * source - per layer, head h, answer token t and encoder position n:
      ``probs`` the attention weight α; ``norms`` α·‖v_h(n)‖, the weight times the norm of the
      value vector it reads (a position attended to but carrying a small value contributes little
      to the output); ``scores`` the pre-softmax score q_h(t)·k_h(n) (T5 does not scale it).
      Each is averaged over heads and summed over decoder layers.
    * reduction - over a passage's non-padding tokens and the answer's tokens (padded label
      positions never count): ``sum`` sums both and divides by 256 x layers x answer tokens;
      ``avg`` divides the same sum by passage tokens x layers x answer tokens; ``first`` uses the
      first answer token only, divided by passage tokens x layers.

    The default ``normssum`` is Atlas's ``adist`` (its option ``evalnormsum``: eval mode, norms,
    sum), at Atlas's scale, so Atlas's temperatures give Atlas's target. (Atlas's own lookup of
    that key asks for ``"normsum"`` where the dict holds ``"normssum"``; this is the aggregation
    the name describes.) ``scoresfirst`` is Atlas's closest to FiD-KD (Izacard & Grave, 2021):
    pre-softmax scores of the first decoded token, averaged over the passage's tokens, heads and
    layers. The reader is switched to eager attention for the forward (SDPA cannot return
    weights) and switched back afterwards.

    The target is only as good as the reader's own reading: attention points at what the reader
    finds, so a reader that cannot tell two passages apart gives them similar scores.
    """
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")
    source, reduction = next((s, aggregation[len(s):]) for s in SOURCES if aggregation.startswith(s))
    k = _check(questions, passages, answers)
    previous = getattr(reader.model.config, "_attn_implementation", None)
    captured: dict[str, dict[int, torch.Tensor]] = {"q": {}, "k": {}, "v": {}}
    wanted = {"norms": ("v",), "scores": ("q", "k"), "probs": ()}[source]
    hooks = []
    try:
        for i, block in enumerate(reader.model.decoder.block):
            attention = block.layer[1].EncDecAttention
            hooks += [_capture(getattr(attention, name), captured[name], i) for name in wanted]
        with eval_mode(reader):
            batch = reader.tokenize(questions, passages)
            labels = reader.tokenize_answers(answers).to(reader.device)
            out = reader(batch["input_ids"], batch["attention_mask"], labels=labels,
                         output_attentions=source != "scores", use_cache=False)
            b, _, length = batch["input_ids"].shape
            heads = reader.model.config.num_heads
            layers = len(reader.model.decoder.block)
            if layers == 0:
                raise ValueError("the reader's decoder has no layers: there is no cross-attention to read")
            total = None
            for i in range(layers):
                if source == "scores":  # [B, T, H, d] x [B, N, H, d] -> [B, H, T, N]
                    q = captured["q"][i].float().view(b, -1, heads, reader.model.config.d_kv)
                    kk = captured["k"][i].float().view(b, k * length, heads, reader.model.config.d_kv)
                    weights = torch.einsum("bthd,bnhd->bhtn", q, kk)
                else:
                    weights = out.cross_attentions[i].float()
                    if source == "norms":
                        norms = captured["v"][i].float().view(b, k * length, heads, -1).norm(dim=-1)  # [B, N, H]
                        weights = weights * norms.permute(0, 2, 1)[:, :, None, :]
                layer = weights.mean(dim=1)  # [B, T, N], averaged over heads
                total = layer if total is None else total + layer
            context = batch["attention_mask"].to(total.device).view(b, 1, k, length).float()
            answer = (labels != -100).float()  # [B, T]
            per_token = (total.view(b, -1, k, length) * context).sum(-1)  # [B, T, k]
            passage_tokens = context.sum(-1).squeeze(1).clamp(min=1)  # [B, k]
            n_answer = answer.sum(-1, keepdim=True).clamp(min=1)  # [B, 1]
            if reduction == "first":
                return per_token[:, 0] / (passage_tokens * layers)
            summed = torch.einsum("btk,bt->bk", per_token, answer)
            if reduction == "sum":
                return summed / (256.0 * layers * n_answer)
            return summed / (passage_tokens * layers * n_answer)
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
    ``kwargs`` go to the signal function (e.g. ``aggregation="probssum"`` for ``adist``)."""
    if name == "none":
        return None
    if name not in SIGNALS:
        raise ValueError(f"unknown retriever loss {name!r} (known: none, {', '.join(SIGNALS)})")
    return SIGNALS[name](reader, questions, passages, answers, **kwargs)
