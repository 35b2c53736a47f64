"""A seeded fictional world: a corpus and questions that no pretrained model can answer by heart.

Names are invented from syllables, so the only way to answer "What is the capital of Zorvania?" is
to read the passage that says so. That makes the world the honest offline test bed for every claim
atlas_kit makes: the demo (a reader that answers from retrieved passages), retriever training
(``paraphrase`` questions word the fact differently from the passage), and index hot-swapping
(``evolve`` changes some facts in a "later" version of the same corpus).

Guarantees the benchmarks lean on (all tested):

* everything is a pure function of the arguments and the seed (byte-identical files);
* every invented word is unique (case-insensitively) across entity names and values, and is never a
  piece of the fixed template wording, so a value is never "guessable" from the question text;
* at a given time each value is used by one fact only, so an answer occurs, as whole words, only in
  its own gold passage - a hit on the answer string is a hit on the gold passage;
* no answer occurs in its question, not even as a substring of the entity's name;
* splits are by entity: dev and test questions are about entities never seen in training;
* ``evolve`` keeps every id and every question's wording; changed facts get values never used in the
  world they evolved from, so "says the old value" and "says the new value" are always distinct.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Iterator

from atlas_kit.storage import atomic_write_text

__all__ = ["Attribute", "Fact", "Question", "World", "KINDS", "TYPE_WORDS", "SPLITS"]

SPLITS = ("train", "dev", "test")

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "th", "nd", "rk"]


@dataclass(frozen=True)
class Attribute:
    """One attribute of a kind of entity, with every way the world words it."""

    name: str
    pool: str  # which value pool answers come from
    sentence: str  # inside an entity passage, after "{name} is a {kind}."
    fact: str  # a self-contained sentence (one-fact passages)
    direct: str  # question with the passage's own wording
    paraphrases: tuple[str, ...]  # questions worded differently


KINDS: dict[str, tuple[Attribute, ...]] = {
    "country": (
        Attribute("capital", "city", "Its capital is {v}.", "The capital of {e} is {v}.", "What is the capital of {e}?",
                  ("Which city is the seat of government of {e}?", "Where does the government of {e} sit?")),
        Attribute("leader", "person", "Its leader is {v}.", "The leader of {e} is {v}.", "Who is the leader of {e}?",
                  ("Who governs {e}?", "Who is the head of state in {e}?")),
        Attribute("currency", "thing", "Its currency is the {v}.", "The currency of {e} is the {v}.", "What is the currency of {e}?",
                  ("What money do people pay with in {e}?", "Which coin is used for trade in {e}?")),
        Attribute("language", "language", "Its language is {v}.", "The language of {e} is {v}.", "What is the language of {e}?",
                  ("What do the people of {e} speak?", "Which tongue is spoken in {e}?")),
    ),
    "person": (
        Attribute("birthplace", "city", "Their birthplace is {v}.", "The birthplace of {e} is {v}.", "What is the birthplace of {e}?",
                  ("Where was {e} born?", "In which town did {e} come into the world?")),
        Attribute("employer", "company", "Their employer is {v}.", "The employer of {e} is {v}.", "What is the employer of {e}?",
                  ("Which firm does {e} work for?", "Who pays the wages of {e}?")),
        Attribute("spouse", "person", "Their spouse is {v}.", "The spouse of {e} is {v}.", "Who is the spouse of {e}?",
                  ("Who is {e} married to?", "Whom did {e} wed?")),
        Attribute("instrument", "thing", "Their instrument is the {v}.", "The instrument of {e} is the {v}.",
                  "What is the instrument of {e}?", ("What does {e} play?", "Which musical instrument does {e} perform on?")),
    ),
    "river": (
        Attribute("source", "mountain", "Its source is {v}.", "The source of {e} is {v}.", "What is the source of {e}?",
                  ("Where does {e} begin?", "From which mountain does {e} spring?")),
        Attribute("mouth", "sea", "Its mouth is the {v}.", "The mouth of {e} is the {v}.", "What is the mouth of {e}?",
                  ("Where does {e} end?", "Into which sea does {e} flow?")),
        Attribute("fish", "thing", "Its fish is the {v}.", "The fish of {e} is the {v}.", "What is the fish of {e}?",
                  ("What swims in the waters of {e}?", "Which creature do anglers catch in {e}?")),
        Attribute("bridge", "city", "Its bridge is at {v}.", "The bridge of {e} is at {v}.", "Where is the bridge of {e}?",
                  ("In which town can you cross {e}?", "Where does a road span {e}?")),
    ),
    "company": (
        Attribute("founder", "person", "Its founder is {v}.", "The founder of {e} is {v}.", "Who is the founder of {e}?",
                  ("Who started {e}?", "Who set up {e}?")),
        Attribute("headquarters", "city", "Its headquarters is in {v}.", "The headquarters of {e} is in {v}.",
                  "Where is the headquarters of {e}?", ("In which city does {e} have its main office?", "Where is {e} based?")),
        Attribute("product", "thing", "Its product is the {v}.", "The product of {e} is the {v}.", "What is the product of {e}?",
                  ("What does {e} make?", "What do the factories of {e} build?")),
        Attribute("rival", "company", "Its rival is {v}.", "The rival of {e} is {v}.", "What is the rival of {e}?",
                  ("Which firm competes with {e}?", "Who does {e} fight for customers?")),
    ),
}


# A type word per attribute, distinct within each kind ("Port Blim" is a city, "Lord Trell" a
# person). With ``typed_values=True`` every answer starts with its attribute's type word: a reader
# trained from scratch learns "capital -> Port" quickly and then only has to copy the name that
# follows "Port" in whichever retrieved passage has it - it can tell same-entity passages apart.
TYPE_WORDS: dict[str, dict[str, str]] = {
    "country": {"capital": "Port", "leader": "Lord", "currency": "Crown", "language": "Old"},
    "person": {"birthplace": "Fort", "employer": "House", "spouse": "Lady", "instrument": "Horn"},
    "river": {"source": "Mount", "mouth": "Gulf", "fish": "Silver", "bridge": "Port"},
    "company": {"founder": "Lord", "headquarters": "Port", "product": "Model", "rival": "House"},
}

_ATTRIBUTE = {(kind, a.name): a for kind, attrs in KINDS.items() for a in attrs}
_POOL_OF = {a.name: a.pool for attrs in KINDS.values() for a in attrs}


def _fixed_wording() -> str:
    """All text the world writes around the invented words (templates, kinds, type words, suffixes)."""
    parts = [*KINDS, "is a", " Sea", "Mount ", "ish", "question: title: context:"]
    parts += [w for words in TYPE_WORDS.values() for w in words.values()]
    for attrs in KINDS.values():
        for a in attrs:
            parts += [a.name, a.sentence, a.fact, a.direct, *a.paraphrases]
    return " ".join(parts).replace("{e}", " ").replace("{v}", " ").lower()


def _substrings(text: str, lo: int = 4, hi: int = 16) -> frozenset[str]:
    return frozenset(text[i:i + n] for n in range(lo, hi + 1) for i in range(len(text) - n + 1))


# No invented word may be a piece of the fixed wording: otherwise a value such as "make" could turn
# up inside its own question ("What does X make?") and be guessable.
_RESERVED = _substrings(_fixed_wording())
_FIXED_WORDS = frozenset(_fixed_wording().split())


@dataclass(frozen=True)
class Fact:
    entity: str
    attribute: str
    value: str


@dataclass(frozen=True)
class Question:
    id: str
    question: str
    answers: list[str]
    entity: str
    attribute: str
    gold_ids: list[str]
    split: str


def _typed(kind: str, attribute: str, name: str, typed: bool) -> str:
    return f"{TYPE_WORDS[kind][attribute]} {name}" if typed else name


class _Namer:
    """Unique invented words: no two words (in entity names or values) are ever equal."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()  # lower-cased, so "brykan" and "Brykan" count as one

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        rng = self.rng
        while True:
            n = rng.randint(*syllables)
            w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(n)) + rng.choice(_CODAS)
            if len(w) >= 4 and w not in self.used and w not in _RESERVED:
                self.used.add(w)
                return w.capitalize()

    def value(self, pool: str) -> str:
        """A value for a pool; multi-word values are unique because each of their words is."""
        if pool == "person":
            return f"{self.word((1, 2))} {self.word((2, 2))}"
        if pool == "sea":
            return self.word((2, 2)) + " Sea"
        if pool == "mountain":
            return "Mount " + self.word((2, 2))
        if pool == "thing":
            return self.word((2, 2)).lower()
        if pool == "language":
            while True:  # "Brairkish", "Braish"; never equal to any other word, before or after
                stem = self.word((1, 2))
                v = stem + ("sh" if stem[-1] in "aeiouy" else "ish")
                if v.lower() not in self.used:
                    self.used.add(v.lower())
                    return v
        return self.word()


def _take(candidates: list[str], ok: Callable[[str], bool]) -> str | None:
    """Remove and return the last acceptable candidate (candidates are pre-shuffled), or None."""
    for i in range(len(candidates) - 1, -1, -1):
        if ok(candidates[i]):
            return candidates.pop(i)
    return None


class World:
    """Entities of four kinds, four facts each, with passages, questions and splits.

    Build with :meth:`generate`; everything is a pure function of the arguments and the seed.
    ``entities`` holds ``(entity id, name, kind)`` triples; ``facts`` is in entity order, then in
    the kind's attribute order.
    """

    def __init__(self, entities: list[tuple[str, str, str]], facts: list[Fact], granularity: str,
                 paraphrase: float, seed: int, splits: dict[str, str], pools: dict[str, list[str]],
                 typed_values: bool = False) -> None:
        self.typed_values = typed_values
        self.entities = entities  # (entity id, name, kind)
        self.facts = facts
        self.granularity = granularity
        self.paraphrase = paraphrase
        self.seed = seed
        self.splits = splits  # entity name -> split
        self.pools = pools  # pool name -> every word a value of that pool may be built from
        self._by_entity = {(f.entity, f.attribute): f for f in facts}
        self._kind = {name: kind for _, name, kind in entities}

    # ------------------------------------------------------------------ building
    @classmethod
    def generate(cls, n_entities: int = 200, seed: int = 0, granularity: str = "entity", paraphrase: float = 0.0,
                 splits: tuple[float, float, float] = (0.7, 0.15, 0.15), typed_values: bool = False) -> "World":
        """A new world of ``n_entities`` entities (kinds in rotation: country, person, river, company).

        ``granularity``: "entity" (one passage per entity, its four facts) or "fact" (one passage per
        fact, all titled with the entity's name, so a retriever must match the attribute too).
        ``paraphrase``: probability that a question uses a paraphrase template instead of the
        passage's own wording. ``splits``: train/dev/test shares of the *entities*; train gets
        ``round(share * n)``, dev ``round(share * n)``, test the rest. ``typed_values``: every
        answer is "<type word> <name>" (see ``TYPE_WORDS``), easier for a reader trained from scratch.
        """
        if n_entities < 1:
            raise ValueError(f"n_entities must be at least 1, got {n_entities}")
        if granularity not in ("entity", "fact"):
            raise ValueError(f"granularity must be 'entity' or 'fact', got {granularity!r}")
        if not 0.0 <= paraphrase <= 1.0:
            raise ValueError(f"paraphrase must be in [0, 1], got {paraphrase}")
        if len(splits) != 3 or min(splits) < 0 or abs(sum(splits) - 1.0) > 1e-6:
            raise ValueError(f"splits must be three non-negative shares summing to 1, got {splits}")
        rng = random.Random(seed)
        namer = _Namer(rng)
        kinds = list(KINDS)
        entities = [(f"p{i:05d}", namer.word(), kinds[i % len(kinds)]) for i in range(n_entities)]

        # Pools twice as large as the number of facts drawing from them: each value is used once at
        # time A, and ``evolve`` has as many never-used values left for time B.
        demand: dict[str, int] = {}
        for _, _, kind in entities:
            for a in KINDS[kind]:
                demand[a.pool] = demand.get(a.pool, 0) + 1
        pools = {p: [namer.word() if typed_values else namer.value(p) for _ in range(2 * demand[p] + 8)]
                 for p in sorted(demand)}
        unused = {p: rng.sample(words, len(words)) for p, words in pools.items()}

        facts = []
        for _, name, kind in entities:
            for a in KINDS[kind]:
                value = _take(unused[a.pool], _acceptable(name, kind, a, typed_values))
                if value is None:  # cannot happen with pools of 2x demand; a clear error if it ever does
                    raise RuntimeError(f"value pool {a.pool!r} exhausted")
                facts.append(Fact(name, a.name, _typed(kind, a.name, value, typed_values)))

        order = list(range(n_entities))
        rng.shuffle(order)
        n_train, n_dev = round(splits[0] * n_entities), round(splits[1] * n_entities)
        split_of = {}
        for rank, i in enumerate(order):
            split_of[entities[i][1]] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
        return cls(entities, facts, granularity, paraphrase, seed, split_of, pools, typed_values)

    # ------------------------------------------------------------------ corpus
    def kind(self, entity: str) -> str:
        """The kind ("country", "person", ...) of an entity, by name."""
        return self._kind[entity]

    def _attributes(self, kind: str) -> tuple[Attribute, ...]:
        return KINDS[kind]

    def passages(self) -> list[dict]:
        """Atlas jsonl records ``{"id", "title", "text"}``; ids depend only on the entity's position."""
        out = []
        for eid, name, kind in self.entities:
            attrs = self._attributes(kind)
            if self.granularity == "entity":
                sentences = [f"{name} is a {kind}."] + [
                    a.sentence.format(v=self._by_entity[(name, a.name)].value) for a in attrs
                ]
                out.append({"id": eid, "title": name, "text": " ".join(sentences)})
            else:
                for j, a in enumerate(attrs):
                    out.append({"id": f"{eid}-{j}", "title": name,
                                "text": a.fact.format(e=name, v=self._by_entity[(name, a.name)].value)})
        return out

    def _gold_id(self, eid: str, kind: str, attribute: str) -> str:
        if self.granularity == "entity":
            return eid
        return f"{eid}-{[a.name for a in self._attributes(kind)].index(attribute)}"

    def questions(self, split: str | None = None) -> list[Question]:
        """One question per fact (ids ``q<entity number>-<attribute>``), optionally one split only."""
        if split is not None and split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
        # A stream of its own, seeded by the world's seed only: the wording never depends on fact
        # values, so an evolved world asks the very same questions as the world it came from.
        rng = random.Random(self.seed * 7919 + 17)
        out = []
        for eid, name, kind in self.entities:
            for a in self._attributes(kind):
                use_para = rng.random() < self.paraphrase
                template = rng.choice(a.paraphrases) if use_para else a.direct
                if split is not None and self.splits[name] != split:
                    continue
                out.append(Question(f"q{eid[1:]}-{a.name}", template.format(e=name),
                                    [self._by_entity[(name, a.name)].value], name, a.name,
                                    [self._gold_id(eid, kind, a.name)], self.splits[name]))
        return out

    def invented_words(self) -> set[str]:
        """Every invented word of this world as written in its text: entity names and the pool
        words values are built from (a typed value "Port Blim" contributes "Blim")."""
        words = {name for _, name, _ in self.entities}
        for f in self.facts:
            words.update(w for w in self._raw(f.value).split() if w.lower() not in _FIXED_WORDS)  # "Mount", "Sea"
        return words

    def practice_words(self, n: int, seed: int = 0) -> list[str]:
        """``n`` invented words that are not words of this world (no entity name, no pool word -
        so no value of any evolution either) and not pieces of the fixed wording.

        For training a reader on renamed copies of training facts (see :mod:`atlas_kit.demo`):
        its words are then never those of held-out entities, and it cannot learn answers by heart.
        """
        namer = _Namer(random.Random(f"practice-{self.seed}-{seed}"))
        namer.used |= {w.lower() for w in self.invented_words()}
        namer.used |= {w.lower() for words in self.pools.values() for w in words}
        return [namer.word() for _ in range(n)]

    def texts(self) -> list[str]:
        """Every passage and question string (e.g. to train a word-level tokenizer).

        Also every template's wording (any paraphrase setting, either granularity) and the reader's
        prompt words, so one tokenizer covers every variant of this world and its evolutions' wording.
        """
        texts = [f"{p['title']} {p['text']}" for p in self.passages()]
        for attrs in KINDS.values():
            for a in attrs:
                texts += [t.replace("{e} ", "").replace(" {e}", "").replace(" {v}", "")
                          for t in (a.sentence, a.fact, a.direct, *a.paraphrases)]
        texts += [q.question for q in self.questions()]
        texts.append("question: title: context:")
        return texts

    # ------------------------------------------------------------------ time
    def evolve(self, fraction: float = 0.3, seed: int = 1) -> "World":
        """The same world at a later time: exactly ``round(fraction * len(facts))`` facts get a new value.

        Entities, splits, passage ids, question ids and question wording stay the same; only the
        text stating a changed fact differs. New values come from the same pools and are never a
        value of this world, so old and new answers never coincide.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"fraction must be in [0, 1], got {fraction}")
        rng = random.Random(seed)
        n_change = round(fraction * len(self.facts))
        change = set(rng.sample(range(len(self.facts)), n_change))
        in_use = {self._raw(f.value) for f in self.facts}
        unused = {p: [w for w in words if w not in in_use] for p, words in sorted(self.pools.items())}
        for words in unused.values():
            rng.shuffle(words)
        facts = []
        for i, f in enumerate(self.facts):
            if i in change:
                kind, a = self._kind[f.entity], _ATTRIBUTE[(self._kind[f.entity], f.attribute)]
                ok = _acceptable(f.entity, kind, a, self.typed_values)
                new = _take(unused[a.pool], ok)
                if new is None:  # only after many evolutions: reuse a value, never the old one
                    old = self._raw(f.value)
                    new = _take(rng.sample(self.pools[a.pool], len(self.pools[a.pool])), lambda w: w != old and ok(w))
                    if new is None:
                        raise RuntimeError(f"value pool {a.pool!r} has no other value for {f.entity} {f.attribute}")
                f = replace(f, value=_typed(kind, f.attribute, new, self.typed_values))
            facts.append(f)
        return World(self.entities, facts, self.granularity, self.paraphrase, self.seed, self.splits, self.pools,
                     self.typed_values)

    def _raw(self, value: str) -> str:
        """The pool word a fact's value was built from (drops the type word of typed values)."""
        return value.split(" ", 1)[1] if self.typed_values else value

    def changed(self, other: "World") -> list[Fact]:
        """Facts of this world whose value is different in ``other`` (the same world at another time)."""
        if [e[:2] for e in other.entities] != [e[:2] for e in self.entities]:
            raise ValueError("changed() compares two times of the same world; the entities differ")
        return [f for f in self.facts if other._by_entity[(f.entity, f.attribute)].value != f.value]

    # ------------------------------------------------------------------ files
    def to_jsonl(self, folder: str | Path) -> dict[str, Path]:
        """Write passages.jsonl and train/dev/test.jsonl (``{"id","question","answers","gold_ids"}``).

        Returns ``{"passages": path, "train": path, "dev": path, "test": path}``; each file is
        written atomically, so a reader never sees half a corpus.
        """
        folder = Path(folder)
        paths = {"passages": folder / "passages.jsonl"}
        atomic_write_text(paths["passages"], "".join(json.dumps(p) + "\n" for p in self.passages()))
        keep = ("id", "question", "answers", "gold_ids")
        for split in SPLITS:
            paths[split] = folder / f"{split}.jsonl"
            atomic_write_text(paths[split], "".join(
                json.dumps({k: v for k, v in asdict(q).items() if k in keep}) + "\n" for q in self.questions(split)))
        return paths

    def __iter__(self) -> Iterator[Fact]:
        return iter(self.facts)

    def __len__(self) -> int:
        return len(self.facts)


def _acceptable(entity: str, kind: str, a: Attribute, typed: bool) -> Callable[[str], bool]:
    """A test for a pool word as the value of (entity, a): the answer must not hide in any wording
    of its question (e.g. value "Blim" inside the entity name "Blimorak")."""
    forms = [t.format(e=entity).lower() for t in (a.direct, *a.paraphrases)]

    def ok(word: str) -> bool:
        answer = _typed(kind, a.name, word, typed).lower()
        return not any(answer in q for q in forms)

    return ok
