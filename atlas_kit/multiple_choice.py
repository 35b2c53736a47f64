"""Multiple-choice evaluation: option likelihoods, Atlas's permutation de-biasing, generation.

Three ways to read the reader's answer to a lettered question (:func:`format_mc_query`):

* likelihood - score each option letter as the answer (log p of the letter + eos, the target the
  reader is trained on) and take the best; no free-form generation can miss the format.
* de-biased (Atlas, Izacard et al. 2022, section 4.5) - a small model tends to prefer a letter
  ("A") whatever the content. Score every cyclic shift of the options, map each shift's
  probabilities (softmax over the letters) back to the original options and average; a pure
  position preference is spread evenly over the options and cancels out.
* generation - greedy-decode an answer and map it to an option (:func:`letter_of_generation`).

The scoring is injectable - :func:`evaluate_multiple_choice` takes a :class:`Reader` or any
``scorer(queries, passages, n_options) -> [B, n_options]`` log-prob callable - so the de-biasing
is tested on constructed biased models, and other scorers (a different reader, an API) plug in.

Tie rule: every argmax here picks the LOWEST option index among the scores within
:data:`TIE_TOLERANCE` of the maximum. Averaged probabilities of a model with no preference are
equal only up to float rounding (the same numbers are summed in different orders), so an exact
comparison would break such ties at random; the tolerance makes them land on option 0 ("A").
"""
from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import replace
from typing import Any, Callable, Sequence

import torch

from atlas_kit.metrics import normalize_answer
from atlas_kit.reader import Reader
from atlas_kit.reader_signals import eval_mode
from atlas_kit.tasks.mmlu import LETTERS, MCExample, category_of, format_mc_query

__all__ = ["option_logprobs", "letter_of_generation", "cyclic_permutations", "evaluate_multiple_choice",
           "summarize_records", "pick", "Scorer", "TIE_TOLERANCE", "METHODS"]

log = logging.getLogger(__name__)

Scorer = Callable[[Sequence[str], Sequence[Sequence[Any]], int], torch.Tensor]
"""``scorer(queries, passages, n_options) -> [B, n_options]`` log-probs of the option letters."""

TIE_TOLERANCE = 1e-6
METHODS = ("likelihood", "debiased", "generation")


def pick(scores: torch.Tensor, tol: float = TIE_TOLERANCE) -> torch.Tensor:
    """Argmax over the last dim with the module's tie rule: the lowest index whose score is within
    ``tol`` of the maximum (see the module docstring for why a tolerance)."""
    best = scores.max(dim=-1, keepdim=True).values
    near = scores >= best - tol
    return near.float().argmax(dim=-1)  # argmax of a 0/1 mask: the first True


# ------------------------------------------------------------------------------ scoring
def _letter_labels(reader: Reader, n_options: int, letters: str) -> torch.Tensor:
    """Labels [n, T] for the letters, refusing letters the tokenizer cannot tell apart (e.g. all
    ``<unk>`` in a word vocabulary without them) - they would tie and make every score equal."""
    if not 2 <= n_options <= len(letters):
        raise ValueError(f"n_options must be between 2 and {len(letters)}, got {n_options}")
    labels = reader.tokenize_answers(list(letters[:n_options]))
    seen: dict[tuple[int, ...], str] = {}
    for letter, row in zip(letters, labels):
        key = tuple(int(t) for t in row if t != -100)
        if key in seen:
            raise ValueError(f"option letters {seen[key]!r} and {letter!r} tokenize identically ({list(key)}): "
                             "the reader cannot tell them apart (missing from its vocabulary?)")
        seen[key] = letter
    return labels


def option_logprobs(
    reader: Reader,
    queries: Sequence[str],
    passages: Sequence[Sequence[Any]],
    n_options: int,
    letters: str = LETTERS,
    batch_size: int = 16,
) -> torch.Tensor:
    """log p(letter_j | query_b, passages_b) for the first ``n_options`` letters: float32 [B, n] on CPU.

    The target of option j is exactly what :meth:`Reader.tokenize_answers` makes of its letter
    (letter tokens + eos) and its token log-probs are summed. Per batch of ``batch_size`` queries:
    ONE encoder pass (:meth:`Reader.encode`), then one decoder pass per option over the shared
    encoder states - the passages dominate the cost, so this is ~n times cheaper than n full
    forwards. Runs under ``no_grad`` in eval mode (no dropout) and restores the previous mode.
    """
    if len(queries) != len(passages):
        raise ValueError(f"{len(queries)} queries but {len(passages)} passage lists")
    labels = _letter_labels(reader, n_options, letters)
    out = torch.empty(len(queries), n_options, dtype=torch.float32)
    with eval_mode(reader):
        labels = labels.to(reader.device)
        for s in range(0, len(queries), batch_size):
            batch = reader.tokenize(queries[s : s + batch_size], passages[s : s + batch_size])
            encoded = reader.encode(batch["input_ids"], batch["attention_mask"])
            b = batch["input_ids"].shape[0]
            for j in range(n_options):  # one row of labels, broadcast over the batch
                out[s : s + b, j] = reader.score(labels[j : j + 1], encoded=encoded).float().cpu()
    return out


# ------------------------------------------------------------------------------ generation
_BARE_LETTER = re.compile(r"^\(?\s*([A-Za-z])\s*\)?\s*[.:]?$")
_LETTER_PREFIX = re.compile(r"^\(?\s*([A-Za-z])\s*\)\s+\S")


def letter_of_generation(text: str, options: Sequence[str], letters: str = LETTERS) -> int | None:
    """The option a generated answer names, or None.

    In order: a bare letter (``"B"``, ``"(B)"``, ``"b)"``, ``"B."``, any case); a letter
    marker followed by text (``"(B) Paris"``, ``"b) paris"``); the option's own text (SQuAD
    normalisation, first matching option). A letter beyond the options, an empty answer or
    anything else is None - counted as wrong, not guessed.
    """
    text = (text or "").strip()
    valid = letters[: len(options)].upper()
    for pattern in (_BARE_LETTER, _LETTER_PREFIX):
        m = pattern.match(text)
        if m and m.group(1).upper() in valid:
            return valid.index(m.group(1).upper())
    norm = normalize_answer(text)
    if norm:
        for i, option in enumerate(options):
            if normalize_answer(str(option)) == norm:
                return i
    return None


# ------------------------------------------------------------------------------ permutations
def cyclic_permutations(example: MCExample, letters: str = LETTERS) -> list[MCExample]:
    """The n cyclic shifts of the options; shift s shows original option (j + s) % n at position j.

    Each copy is re-formatted from the raw question (:func:`format_mc_query`), with ``label``,
    ``answers`` and ``metadata["shift"]`` updated; shift 0 is the original order.
    """
    n = len(example.options)
    if n < 2:
        raise ValueError(f"example {example.id!r} has {n} options: need at least 2")
    raw = example.raw_question
    out = []
    for s in range(n):
        options = list(example.options[s:]) + list(example.options[:s])
        label = (example.label - s) % n
        out.append(replace(
            example,
            question=format_mc_query(raw, options, letters),
            answers=[letters[label]],
            options=options,
            label=label,
            gold_ids=list(example.gold_ids),
            metadata={**example.metadata, "raw_question": raw, "shift": s},
        ))
    return out


# ------------------------------------------------------------------------------ evaluation
def _as_scorer(reader_or_scorer: Reader | Scorer, letters: str, batch_size: int) -> Scorer:
    if isinstance(reader_or_scorer, Reader):
        reader = reader_or_scorer

        def score(queries: Sequence[str], passages: Sequence[Sequence[Any]], n_options: int) -> torch.Tensor:
            return option_logprobs(reader, queries, passages, n_options, letters=letters, batch_size=batch_size)

        return score
    if not callable(reader_or_scorer):
        raise TypeError(f"expected a Reader or a scorer callable, got {type(reader_or_scorer).__name__}")
    return reader_or_scorer


def _warn_if_options_cut(reader: Reader, examples: Sequence[MCExample], letters: str) -> int:
    """Count (and log) queries whose OPTIONS alone exceed ``text_maxlength``.

    A long question is cut from its start by :meth:`Reader.tokenize` (as Atlas does), so its
    options survive; only options that do not fit even without the question lose text.
    """
    inputs = [reader.format_inputs(format_mc_query("", e.options, letters), [])[0] for e in examples]
    lengths = [len(ids) for ids in reader.tokenizer(inputs)["input_ids"]]
    cut = sum(n > reader.text_maxlength for n in lengths)
    if cut:
        log.warning("%d of %d multiple-choice queries have options longer than text_maxlength=%d tokens (longest "
                    "%d) even without their question: options are cut; raise text_maxlength", cut, len(examples),
                    reader.text_maxlength, max(lengths))
    return cut


def _score_all(scorer: Scorer, queries: list[str], passages: list[Sequence[Any]], n_options: list[int],
               batch_size: int) -> list[torch.Tensor]:
    """One [n] log-prob vector per query; queries are grouped by option count (a scorer call
    needs one n) and sent in chunks of ``batch_size``."""
    out: list[torch.Tensor | None] = [None] * len(queries)
    groups: dict[int, list[int]] = defaultdict(list)
    for i, n in enumerate(n_options):
        groups[n].append(i)
    for n, idx in groups.items():
        for s in range(0, len(idx), batch_size):
            chunk = idx[s : s + batch_size]
            scores = torch.as_tensor(scorer([queries[i] for i in chunk], [passages[i] for i in chunk], n))
            if tuple(scores.shape) != (len(chunk), n):
                raise ValueError(f"the scorer returned shape {tuple(scores.shape)} for {len(chunk)} queries "
                                 f"with {n} options: expected ({len(chunk)}, {n})")
            for row, i in enumerate(chunk):
                out[i] = scores[row].detach().float().cpu()
    return out  # type: ignore[return-value]


def _accuracy(hits: list[bool | None]) -> float | None:
    """Percent correct (0-100, like :mod:`atlas_kit.metrics`); None when the method was skipped."""
    if not hits or hits[0] is None:
        return None
    return 100.0 * sum(bool(h) for h in hits) / len(hits)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"n": len(rows), **{f"accuracy_{m}": _accuracy([r["correct"][m] for r in rows]) for m in METHODS}}


def evaluate_multiple_choice(
    reader_or_scorer: Reader | Scorer,
    examples: Sequence[MCExample],
    passages: Sequence[Sequence[Any]] | None = None,
    debias: bool = True,
    generate: bool | Callable[[list[str], list[Sequence[Any]]], list[str]] = True,
    batch_size: int = 16,
    letters: str = LETTERS,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Accuracy of a reader (or scorer) on multiple-choice examples, three ways (module docstring).

    Args:
        reader_or_scorer: a :class:`Reader`, or ``scorer(queries, passages, n_options)`` returning
            [B, n_options] log-probs of the option letters.
        examples: :class:`MCExample` s (any number of options >= 2, any subjects).
        passages: ``passages[i]`` = the passages retrieved for example i, reused for all of its
            permutations (retrieval is done once, by the caller); None = closed book.
        debias: also score the n cyclic permutations and report ``accuracy_debiased``.
        generate: True generates with the reader (skipped for a plain scorer); a callable
            ``generate(queries, passages) -> list[str]`` is used instead; False skips it.
        batch_size: queries per scorer / generation call.
        letters: the option letters.

    Returns:
        ``(metrics, records)``. ``metrics``: ``n``, ``accuracy_likelihood``,
        ``accuracy_debiased``, ``accuracy_generation`` (percent, None when skipped), and
        ``per_subject`` / ``per_category`` holding the same per group. The category is MMLU's
        for MMLU subjects and the subject itself otherwise (so non-MMLU data is not folded into
        MMLU's "other"). ``records``: one JSON-ready dict per example (raw question, options,
        gold and predicted letters, scores). Ties: lowest index (module docstring).
    """
    examples = list(examples)
    if not examples:
        raise ValueError("evaluate_multiple_choice needs at least one example")
    if passages is None:
        passages = [[] for _ in examples]
    if len(passages) != len(examples):
        raise ValueError(f"{len(examples)} examples but {len(passages)} passage lists")
    scorer = _as_scorer(reader_or_scorer, letters, batch_size)
    if isinstance(reader_or_scorer, Reader):
        _warn_if_options_cut(reader_or_scorer, examples, letters)

    # every query to score: the original order, plus the non-trivial shifts when de-biasing
    perms = [cyclic_permutations(ex, letters)[: None if debias else 1] for ex in examples]
    flat = [(i, p) for i, ps in enumerate(perms) for p in ps]
    scores = _score_all(scorer, [p.question for _, p in flat], [passages[i] for i, _ in flat],
                        [len(p.options) for _, p in flat], batch_size)
    by_example: list[list[torch.Tensor]] = [[] for _ in examples]
    for (i, _), s in zip(flat, scores):
        by_example[i].append(s)  # in shift order 0..n-1

    generations: list[str] | None = None
    original_queries = [ps[0].question for ps in perms]
    if callable(generate) and not isinstance(generate, bool):
        generations = list(generate(original_queries, list(passages)))
    elif generate and isinstance(reader_or_scorer, Reader):
        generations = reader_or_scorer.generate(original_queries, list(passages), batch_size=batch_size)
    if generations is not None and len(generations) != len(examples):
        raise ValueError(f"generate returned {len(generations)} answers for {len(examples)} queries")

    records: list[dict[str, Any]] = []
    for i, ex in enumerate(examples):
        n = len(ex.options)
        logp = by_example[i][0]
        pred = {"likelihood": int(pick(logp))}
        probs_debiased: list[float] | None = None
        if debias:
            mean = torch.zeros(n, dtype=torch.float64)
            for s, shifted in enumerate(by_example[i]):
                p = torch.softmax(shifted.double(), dim=-1)
                mean[(torch.arange(n) + s) % n] += p  # position j of shift s holds option (j + s) % n
            mean /= n
            pred["debiased"] = int(pick(mean))
            probs_debiased = [float(x) for x in mean]
        if generations is not None:
            pred["generation"] = letter_of_generation(generations[i], ex.options, letters)
        correct = {m: (pred.get(m) == ex.label) if (m in pred) else None for m in METHODS}
        subject = ex.subject or "none"
        records.append({
            "id": ex.id,
            "subject": subject,
            "category": category_of(subject, default=subject),
            "question": ex.raw_question,
            "options": list(ex.options),
            "gold": letters[ex.label],
            **{f"prediction_{m}": (letters[pred[m]] if pred.get(m) is not None else None) for m in METHODS},
            "generation": generations[i] if generations is not None else None,
            "logprobs": [float(x) for x in logp],
            "probs_debiased": probs_debiased,
            "correct": correct,
        })

    metrics = summarize_records(records)
    log.info("multiple choice on %d examples: likelihood %s, de-biased %s, generation %s", len(records),
             *(_fmt(metrics[f"accuracy_{m}"]) for m in METHODS))
    return metrics, records


def summarize_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Overall, per-subject and per-category accuracies from :func:`evaluate_multiple_choice`
    records - also how runs with one model per subject (MMLU 5-shot) combine their groups."""
    metrics: dict[str, Any] = _summary(list(records))
    for key, name in (("per_subject", "subject"), ("per_category", "category")):
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in records:
            groups[r[name]].append(r)
        metrics[key] = {g: _summary(rows) for g, rows in sorted(groups.items())}
    return metrics


def _fmt(x: float | None) -> str:
    return "skipped" if x is None else f"{x:.1f}%"
