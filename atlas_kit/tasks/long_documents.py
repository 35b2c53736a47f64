"""Generated long documents for language models with a kNN memory (Memorizing Transformer, FoT).

Nothing is downloaded: the facts come from a seeded generator and the text around them is natural
text from a corpus file given by path (:class:`~atlas_kit.tasks.memorization.Filler`).

* :func:`passkey_documents` - FoT's passkey retrieval (Mohtashami & Jaggi 2023; Tworkowski et al.
  2023): a numeric pass key stated once somewhere in a long filler text, asked at the very end.
  Each document's key belongs to a named person ("the pass key of mary is 7 1 4 3 2 ."), so a
  memory that also holds other documents (FoT's distraction setting) holds other people's keys:
  the model must find *its* document's key, not just any key.
* :func:`recurring_fact_documents` - documents whose facts recur far apart (the Memorizing
  Transformer's motivation: a long document restates what it said thousands of tokens earlier).
  Each fact is stated once and asked again after a gap drawn log-uniformly up to ``max_gap``
  tokens, so a memory of ``m`` tokens can help with the facts whose gap it spans and perplexity
  on the restated values falls as the memory grows.

A key is ``key_tokens`` two-digit numbers (10-99, one token each for WordPiece and the common BPE
vocabularies; chance is 1/90 per number). The papers' keys are five-digit numbers, which a
LLaMA tokenizer writes as five digit tokens: copying them needs an induction circuit (each digit
found from the previous one), which the small models trained here on a CPU in minutes do not form
(a 4-layer model stayed at chance on five single-digit tokens after 1,500 steps); one number per
key keeps the test about the memory - finding the one statement among up to 32 windows of text
that contains other numbers - and ``key_tokens=5`` gives a five-token key for longer runs.
Every example is a :class:`LMExample` of exactly the requested length, with ``labels`` = the token
id at the scored positions (the asked digits) and ``IGNORE`` elsewhere; a model is scored on them
by teacher forcing, which is greedy decoding's result when every digit is right.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from atlas_kit.tasks.memorization import Filler

__all__ = ["LMExample", "NAMES", "IGNORE", "passkey_documents", "recurring_fact_documents"]

IGNORE = -100
NAMES = ("mary", "john", "sandra", "daniel", "julie", "fred", "anna", "peter", "laura", "george", "emma", "david",
         "sarah", "james", "lucy", "paul", "alice", "henry", "clara", "oscar", "helen", "frank", "nina", "victor",
         "rose", "simon", "grace", "hugo", "irene", "louis", "maria", "tom", "ella", "max", "olga", "leo", "ruth",
         "adam", "eva", "ivan")


@dataclass
class LMExample:
    """``input_ids`` and aligned ``labels`` (``IGNORE`` where not scored); ``document``: a name for
    the document (its memory namespace); ``facts``: (stated at, asked at, name, key) per fact."""

    input_ids: list[int]
    labels: list[int]
    document: str = ""
    facts: list[tuple[int, int, str, str]] = field(default_factory=list)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _key(rng: random.Random, key_tokens: int) -> str:
    return " ".join(str(rng.randrange(10, 100)) for _ in range(key_tokens))


def _statement(name: str, key: str) -> str:
    return f"the pass key of {name} is {key} . remember it ."


def _question(name: str) -> str:
    return f"what is the pass key of {name} ? the pass key of {name} is"


def passkey_documents(n: int, total_tokens: int, tokenizer: Any, filler: Filler, seed: int = 0, key_tokens: int = 1,
                      window: int | None = None, key_window: int | None = None,
                      names: tuple[str, ...] = NAMES) -> list[LMExample]:
    """``n`` passkey documents of exactly ``total_tokens`` tokens: filler, the key's statement at a
    uniformly random token position, and the question with the key (scored) closing the document.

    ``window`` with ``key_window``: the statement lies entirely inside that window (0 = the first;
    negative counts from the end) - e.g. ``key_window=0`` for a key that only the memory can reach
    once the document is longer than one window.
    """
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name, key = rng.choice(names), _key(rng, key_tokens)
        fact = _ids(tokenizer, _statement(name, key))
        ask = _ids(tokenizer, _question(name))
        answer = _ids(tokenizer, key)
        tail = len(ask) + len(answer)
        room = total_tokens - tail - len(fact)
        if room < 0:
            raise ValueError(f"total_tokens={total_tokens} cannot hold the pass key and the question ({len(fact) + tail} tokens)")
        lo, hi = 0, room
        if key_window is not None:
            if not window:
                raise ValueError("key_window needs window (tokens per window)")
            w = key_window % max(1, total_tokens // window)
            lo, hi = w * window, min(room, (w + 1) * window - len(fact))
            if hi < lo:
                raise ValueError(f"window {key_window} of {window} tokens cannot hold the statement before the question")
        pos = rng.randint(lo, hi)
        body = filler.take(total_tokens - tail, rng)
        body[pos : pos + len(fact)] = fact
        ids = body + ask + answer
        labels = [IGNORE] * (len(body) + len(ask)) + answer
        out.append(LMExample(ids, labels, document=f"passkey-{seed}-{i}",
                             facts=[(pos, len(body) + len(ask), name, key)]))
    return out


def recurring_fact_documents(n: int, total_tokens: int, tokenizer: Any, filler: Filler, seed: int = 0,
                             facts: int = 16, max_gap: int | None = None, min_gap: int = 64,
                             key_tokens: int = 1, names: tuple[str, ...] = NAMES) -> list[LMExample]:
    """``n`` documents of ``total_tokens`` tokens in which ``facts`` pass keys (distinct names) are
    each stated once and asked again ``gap`` tokens later, ``gap`` log-uniform in
    [``min_gap``, ``max_gap``] (default: the document's length less the sentences). The asked
    keys' numbers are scored.
    """
    if facts > len(names):
        raise ValueError(f"facts={facts} needs as many distinct names; {len(names)} given")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        body = filler.take(total_tokens, rng)
        labels = [IGNORE] * total_tokens
        taken = [False] * total_tokens
        placed = []
        for name in rng.sample(list(names), facts):
            key = _key(rng, key_tokens)
            fact, ask, answer = _ids(tokenizer, _statement(name, key)), _ids(tokenizer, _question(name)), _ids(tokenizer, key)
            q = ask + answer
            hi_gap = min(max_gap or total_tokens, total_tokens - len(q) - len(fact))
            if hi_gap < min_gap:
                raise ValueError(f"{total_tokens} tokens cannot hold a fact and its question {min_gap} tokens apart")
            for _ in range(200):  # rejection sampling of free, non-overlapping places
                gap = int(round(min_gap * (hi_gap / min_gap) ** rng.random())) if hi_gap > min_gap else min_gap
                start = rng.randrange(0, max(1, total_tokens - gap - len(q) - len(fact)))
                ask_at = start + len(fact) + gap
                if ask_at + len(q) > total_tokens:
                    continue
                spans = [(start, start + len(fact)), (ask_at, ask_at + len(q))]
                if any(any(taken[a:b]) for a, b in spans):
                    continue
                for a, b in spans:
                    taken[a:b] = [True] * (b - a)
                body[start : start + len(fact)] = fact
                body[ask_at : ask_at + len(q)] = q
                labels[ask_at + len(ask) : ask_at + len(q)] = answer
                placed.append((start, ask_at, name, key))
                break
            else:
                raise ValueError(f"could not place {facts} facts in {total_tokens} tokens; use fewer facts or longer documents")
        out.append(LMExample(body, labels, document=f"facts-{seed}-{i}", facts=sorted(placed)))
    return out
