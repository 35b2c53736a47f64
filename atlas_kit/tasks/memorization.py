"""Generated memory tasks for models that read long inputs segment by segment (RMT, kNN memory).

Nothing is downloaded: facts, questions and symbol sequences come from a seeded generator, and the
text that pads a task to its length is natural text read from a corpus file given by path.

bAbI-style tasks of the RMT report (Bulatov et al., 2023, "Scaling Transformer to 1M tokens and
beyond with RMT"), each a 6-way classification over the same six answers:

* ``memorize`` - the fact at the very start, the question at the end, filler in between;
* ``detect`` - the fact at a random *token* position inside the filler (the model must spot it,
  not just remember a segment start);
* ``reason`` - two facts at random positions (bAbI's two supporting facts: who took an object,
  where that person went), asked about the object.

Algorithmic tasks of the RMT paper (Bulatov et al., 2022), over symbols ``0 .. vocab-1``:

* ``copy`` / ``reverse`` - a symbol sequence, then the model writes it again (reversed);
* ``associative`` - key-value pairs spread over the input, then one key; the answer is its value.

Inputs are token-id lists (the tokenizer's ids, no special tokens: the model wrapper adds its own)
so their length in tokens is exact.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

__all__ = ["MemoryExample", "Filler", "FACT_TASKS", "ALGORITHMIC_TASKS", "fact_task", "algorithmic_task",
           "PEOPLE", "PLACES", "OBJECTS"]

PEOPLE = ("Mary", "John", "Sandra", "Daniel", "Julie", "Fred")
PLACES = ("kitchen", "garden", "office", "bathroom", "hallway", "bedroom")  # the six answers
OBJECTS = ("apple", "football", "milk", "book", "key", "umbrella")
FACT_TASKS = ("memorize", "detect", "reason")
ALGORITHMIC_TASKS = ("copy", "reverse", "associative")


@dataclass
class MemoryExample:
    """``input_ids``: the whole input; ``label``: the answer's class (fact tasks: index in
    :data:`PLACES`); ``target``: the tokens to write (algorithmic tasks); ``facts``: (start, text) of
    each fact in the input, for checks and analysis."""

    input_ids: list[int]
    label: int = -1
    answer: str = ""
    question: str = ""
    target: list[int] = field(default_factory=list)
    facts: list[tuple[int, str]] = field(default_factory=list)


class Filler:
    """An endless stream of natural-text token ids, read from a corpus file.

    ``path``: any passage format :func:`atlas_kit.load_passages` reads (jsonl, tsv, SQuAD json is not
    one - give a passage file), or a plain ``.txt`` file. Texts are tokenised once; a task takes
    consecutive tokens from a seeded random offset, so fillers differ across examples but are
    reproducible.
    """

    def __init__(self, path: str | os.PathLike, tokenizer: Any, max_texts: int | None = 20_000) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"filler text file not found: {path}")
        if path.suffix.lower() == ".txt":
            texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            from atlas_kit.passages import load_passages

            texts = [p.text for p in load_passages(path)]
        texts = texts[:max_texts] if max_texts else texts
        ids: list[int] = []
        for chunk in tokenizer(texts, add_special_tokens=False)["input_ids"]:
            ids.extend(chunk)
        if len(ids) < 1000:
            raise ValueError(f"{path}: only {len(ids)} tokens of filler text; give a larger corpus file")
        self.ids = ids
        self.path = str(path)

    def take(self, n: int, rng: random.Random) -> list[int]:
        """``n`` consecutive filler tokens from a random offset (wrapping around the stream)."""
        start = rng.randrange(len(self.ids))
        out = self.ids[start : start + n]
        while len(out) < n:
            out += self.ids[: n - len(out)]
        return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def fact_task(kind: str, n: int, total_tokens: int, tokenizer: Any, filler: Filler, seed: int = 0) -> list[MemoryExample]:
    """``n`` examples of a bAbI-style task, each exactly ``total_tokens`` tokens long.

    Labels are balanced over the six answers (``i % 6`` before shuffling). The question always
    ends the input, so a model that reads only the last segment sees the question but not the fact.
    """
    if kind not in FACT_TASKS:
        raise ValueError(f"kind must be one of {FACT_TASKS}, got {kind!r}")
    rng = random.Random(seed)
    labels = [i % len(PLACES) for i in range(n)]
    rng.shuffle(labels)
    out = []
    for label in labels:
        place = PLACES[label]
        if kind == "reason":
            person, obj = rng.choice(PEOPLE), rng.choice(OBJECTS)
            facts = [f"{person} picked up the {obj}.", f"{person} went to the {place}."]
            question = f"Where is the {obj}?"
        else:
            person = rng.choice(PEOPLE)
            facts = [f"{person} travelled to the {place}."]
            question = f"Where is {person}?"
        fact_ids = [_encode(tokenizer, f) for f in facts]
        q_ids = _encode(tokenizer, question)
        room = total_tokens - len(q_ids) - sum(len(f) for f in fact_ids)
        if room < 0:
            raise ValueError(f"total_tokens={total_tokens} cannot hold the facts and the question")
        body = filler.take(room, rng)
        if kind == "memorize":
            positions = [0]
        else:  # random token positions in the filler, in order (the person takes the object first)
            positions = sorted(rng.sample(range(room + 1), len(fact_ids)))
        ids: list[int] = []
        placed: list[tuple[int, str]] = []
        cursor = 0
        for pos, f_ids, text in zip(positions, fact_ids, facts):
            ids += body[cursor:pos]
            cursor = pos
            placed.append((len(ids), text))
            ids += f_ids
        ids += body[cursor:] + q_ids
        out.append(MemoryExample(ids, label=label, answer=place, question=question, facts=placed))
    return out


def algorithmic_task(kind: str, n: int, length: int, vocab: int = 10, seed: int = 0, pairs: int | None = None,
                     offset: int = 0) -> list[MemoryExample]:
    """``n`` examples over symbols ``offset .. offset + vocab - 1`` (``offset`` keeps them clear of a
    model's special ids).

    ``copy`` / ``reverse``: ``input_ids`` = ``length`` symbols, ``target`` = them again (reversed).
    ``associative``: ``pairs`` (default ``length // 2``) distinct keys each followed by its value,
    then one of the keys: ``label`` / ``target`` = its value (keys and values share the symbols).
    """
    if kind not in ALGORITHMIC_TASKS:
        raise ValueError(f"kind must be one of {ALGORITHMIC_TASKS}, got {kind!r}")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        if kind == "associative":
            k = pairs or max(1, length // 2)
            if k > vocab:
                raise ValueError(f"{k} distinct keys need vocab >= {k}, got {vocab}")
            keys = rng.sample(range(vocab), k)
            values = [rng.randrange(vocab) for _ in keys]
            asked = rng.randrange(k)
            ids = [offset + s for kv in zip(keys, values) for s in kv] + [offset + keys[asked]]
            out.append(MemoryExample(ids, label=values[asked], target=[offset + values[asked]]))
        else:
            seq = [offset + rng.randrange(vocab) for _ in range(length)]
            out.append(MemoryExample(seq, target=seq[::-1] if kind == "reverse" else list(seq)))
    return out


def segments_of(example: MemoryExample, segment_size: int) -> list[Sequence[int]]:
    """The example's input cut into segments (the last may be shorter)."""
    ids = example.input_ids
    return [ids[i : i + segment_size] for i in range(0, len(ids), segment_size)]
