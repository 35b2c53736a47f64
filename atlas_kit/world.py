"""A seeded fictional world: a corpus and questions that no pretrained model can answer by heart.

Names are invented from syllables, so the only way to answer "What is the capital of Zorvania?" is
to read the passage that says so. That makes the world the honest offline test bed for every claim
atlas_kit makes: the demo (a reader that answers from retrieved passages), retriever training
(``paraphrase`` questions word the fact differently from the passage), and index hot-swapping
(``evolve`` changes some facts in a "later" version of the same corpus).
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterator

from atlas_kit.storage import atomic_write_text

__all__ = ["Fact", "Question", "World", "KINDS", "TYPE_WORDS"]

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "st", "t", "tr", "v", "z", "th", "sh"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "y"]
_CODAS = ["", "", "n", "r", "l", "s", "k", "m", "th", "nd", "rk"]


@dataclass(frozen=True)
class Attribute:
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
        Attribute("birthplace", "city", "Its birthplace is {v}.", "The birthplace of {e} is {v}.", "What is the birthplace of {e}?",
                  ("Where was {e} born?", "In which town did {e} come into the world?")),
        Attribute("employer", "company", "Its employer is {v}.", "The employer of {e} is {v}.", "What is the employer of {e}?",
                  ("Which firm does {e} work for?", "Who pays the wages of {e}?")),
        Attribute("spouse", "person", "Its spouse is {v}.", "The spouse of {e} is {v}.", "Who is the spouse of {e}?",
                  ("Who is {e} married to?", "Whom did {e} wed?")),
        Attribute("instrument", "thing", "Its instrument is the {v}.", "The instrument of {e} is the {v}.",
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
    """Unique invented words: no two names (entities or values) are ever equal."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def word(self, syllables: tuple[int, int] = (2, 3)) -> str:
        while True:
            n = self.rng.randint(*syllables)
            w = "".join(self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) for _ in range(n)) + self.rng.choice(_CODAS)
            if w not in self.used and len(w) >= 4:
                self.used.add(w)
                return w.capitalize()

    def value(self, pool: str) -> str:
        if pool == "person":
            return f"{self.word((1, 2))} {self.word((2, 2))}"
        if pool == "language":
            return self.word((1, 2)) + "ish"
        if pool == "sea":
            return self.word((2, 2)) + " Sea"
        if pool == "mountain":
            return "Mount " + self.word((2, 2))
        if pool == "thing":
            return self.word((2, 2)).lower()
        return self.word()


class World:
    """Entities of a few kinds, four facts each, with passages, questions and splits.

    Build with :meth:`generate`; everything is a pure function of the arguments and the seed.
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
        self.pools = pools
        self._by_entity = {(f.entity, f.attribute): f for f in facts}

    @classmethod
    def generate(cls, n_entities: int = 200, seed: int = 0, granularity: str = "entity", paraphrase: float = 0.0,
                 splits: tuple[float, float, float] = (0.7, 0.15, 0.15), typed_values: bool = False) -> "World":
        if granularity not in ("entity", "fact"):
            raise ValueError(f"granularity must be 'entity' or 'fact', got {granularity!r}")
        if not 0.0 <= paraphrase <= 1.0:
            raise ValueError(f"paraphrase must be in [0, 1], got {paraphrase}")
        rng = random.Random(seed)
        namer = _Namer(rng)
        kinds = list(KINDS)
        entities = [(f"p{i:05d}", namer.word(), kinds[i % len(kinds)]) for i in range(n_entities)]
        pool_names = sorted({a.pool for attrs in KINDS.values() for a in attrs})
        if typed_values:  # plain invented names; the type word comes from the attribute
            pools = {p: [namer.word() for _ in range(max(2 * n_entities, 50))] for p in pool_names}
        else:
            pools = {p: [namer.value(p) for _ in range(max(2 * n_entities, 50))] for p in pool_names}
        facts = [Fact(name, a.name, _typed(kind, a.name, rng.choice(pools[a.pool]), typed_values))
                 for _, name, kind in entities for a in KINDS[kind]]
        order = list(range(n_entities))
        rng.shuffle(order)
        n_train, n_dev = round(splits[0] * n_entities), round(splits[1] * n_entities)
        split_of = {}
        for rank, i in enumerate(order):
            split_of[entities[i][1]] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
        return cls(entities, facts, granularity, paraphrase, seed, split_of, pools, typed_values)

    # ------------------------------------------------------------------ corpus
    def _attributes(self, kind: str) -> tuple[Attribute, ...]:
        return KINDS[kind]

    def passages(self) -> list[dict]:
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
        # a separate stream per world seed: question wording does not depend on fact values, so
        # an evolved world asks the very same questions
        rng = random.Random(self.seed * 7919 + 17)
        out = []
        for eid, name, kind in self.entities:
            for a in self._attributes(kind):
                use_para = rng.random() < self.paraphrase
                template = rng.choice(a.paraphrases) if use_para else a.direct
                q = Question(f"q{eid[1:]}-{a.name}", template.format(e=name), [self._by_entity[(name, a.name)].value],
                             name, a.name, [self._gold_id(eid, kind, a.name)], self.splits[name])
                if split is None or q.split == split:
                    out.append(q)
        return out

    def texts(self) -> list[str]:
        """Every passage and question string (e.g. to train a word-level tokenizer)."""
        texts = [f"{p['title']} {p['text']}" for p in self.passages()]
        for attrs in KINDS.values():
            for a in attrs:
                texts += [a.direct, *a.paraphrases]
        texts += [q.question for q in self.questions()]
        texts.append("question: title: context:")
        return texts

    # ------------------------------------------------------------------ time
    def evolve(self, fraction: float = 0.3, seed: int = 1) -> "World":
        """The same world at a later time: ``round(fraction * len(facts))`` facts get a new value."""
        rng = random.Random(seed)
        n_change = round(fraction * len(self.facts))
        change = set(rng.sample(range(len(self.facts)), n_change))
        attr_pool = {a.name: a.pool for attrs in KINDS.values() for a in attrs}
        kind_of = {name: kind for _, name, kind in self.entities}
        facts = []
        for i, f in enumerate(self.facts):
            if i in change:
                pool = self.pools[attr_pool[f.attribute]]
                new = f.value
                while new == f.value:
                    new = _typed(kind_of[f.entity], f.attribute, rng.choice(pool), self.typed_values)
                f = replace(f, value=new)
            facts.append(f)
        return World(self.entities, facts, self.granularity, self.paraphrase, self.seed, self.splits, self.pools,
                     self.typed_values)

    def changed(self, other: "World") -> list[Fact]:
        """Facts of this world whose value is different in ``other``."""
        return [f for f in self.facts if other._by_entity[(f.entity, f.attribute)].value != f.value]

    # ------------------------------------------------------------------ files
    def to_jsonl(self, folder: str | Path) -> dict[str, Path]:
        """Write passages.jsonl and train/dev/test.jsonl; return their paths."""
        folder = Path(folder)
        paths = {"passages": folder / "passages.jsonl"}
        atomic_write_text(paths["passages"], "".join(json.dumps(p) + "\n" for p in self.passages()))
        for split in ("train", "dev", "test"):
            paths[split] = folder / f"{split}.jsonl"
            atomic_write_text(paths[split], "".join(
                json.dumps({k: v for k, v in asdict(q).items() if k in ("id", "question", "answers", "gold_ids")}) + "\n"
                for q in self.questions(split)))
        return paths

    def __iter__(self) -> Iterator[Fact]:
        return iter(self.facts)
