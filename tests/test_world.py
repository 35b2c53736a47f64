"""The generated world's guarantees: the demo and the benchmarks take them for granted."""
from __future__ import annotations

import json
import re

import pytest

from atlas_kit.passages import load_passages
from atlas_kit.world import KINDS, SPLITS, TYPE_WORDS, World


def _occurs(answer: str, text: str) -> bool:
    """Whole-word occurrence, as a token-level answer matcher would see it."""
    return re.search(rf"(?<!\w){re.escape(answer)}(?!\w)", text) is not None


def _worlds():
    for gran in ("entity", "fact"):
        for typed in (False, True):
            yield World.generate(80, seed=1, granularity=gran, paraphrase=0.5, typed_values=typed)


def test_templates_are_well_formed():
    assert 3 <= len(KINDS) <= 5
    for kind, attrs in KINDS.items():
        assert len(attrs) == 4 and len({a.name for a in attrs}) == 4, kind
        assert len(set(TYPE_WORDS[kind].values())) == 4 and set(TYPE_WORDS[kind]) == {a.name for a in attrs}
        for a in attrs:
            assert 2 <= len(a.paraphrases) <= 3 and a.direct not in a.paraphrases
            assert "{e}" in a.direct and all("{e}" in p for p in a.paraphrases) and "{v}" in a.sentence


def test_same_seed_gives_byte_identical_files(tmp_path):
    for gran in ("entity", "fact"):
        a = World.generate(120, seed=3, granularity=gran, paraphrase=0.5).to_jsonl(tmp_path / f"a-{gran}")
        b = World.generate(120, seed=3, granularity=gran, paraphrase=0.5).to_jsonl(tmp_path / f"b-{gran}")
        assert set(a) == {"passages", *SPLITS}
        for key in a:
            assert a[key].read_bytes() == b[key].read_bytes(), key
    w = World.generate(120, seed=3)
    assert World.generate(120, seed=4).passages() != w.passages()
    assert w.evolve(0.3, seed=9).passages() == w.evolve(0.3, seed=9).passages()
    assert w.evolve(0.3, seed=9).passages() != w.evolve(0.3, seed=10).passages()


def test_names_values_and_ids_are_unique():
    for w in _worlds():
        names = [name for _, name, _ in w.entities]
        assert len(set(names)) == len(names)
        values = [f.value for f in w.facts]
        assert len(set(values)) == len(values)  # each value belongs to one fact
        value_words = {t.lower() for v in values for t in v.split()} - {t.lower() for d in TYPE_WORDS.values() for t in d.values()}
        assert not value_words & {n.lower() for n in names}
        ps, qs = w.passages(), w.questions()
        assert len({p["id"] for p in ps}) == len(ps) == (80 if w.granularity == "entity" else 320)
        assert len({q.id for q in qs}) == len(qs) == len(w.facts) == 320
        assert all(re.fullmatch(r"q\d{5}-[a-z]+", q.id) for q in qs)


def test_answers_are_in_their_gold_passages_only_and_never_in_the_question():
    for w in _worlds():
        ps = w.passages()
        by_id = {p["id"]: p for p in ps}
        for q in w.questions():
            answer = q.answers[0]
            assert q.answers == [w._by_entity[(q.entity, q.attribute)].value]
            assert q.gold_ids and all(_occurs(answer, by_id[g]["text"]) for g in q.gold_ids)
            assert answer.lower() not in q.question.lower()  # not even inside the entity's name
            assert q.entity in q.question and all(by_id[g]["title"] == q.entity for g in q.gold_ids)
            others = [p["id"] for p in ps if p["id"] not in q.gold_ids and _occurs(answer, p["text"])]
            assert not others, (q, others)


def test_splits_are_disjoint_by_entity():
    w = World.generate(100, seed=0)
    ents = {s: {q.entity for q in w.questions(s)} for s in SPLITS}
    assert not ents["train"] & ents["test"] and not ents["train"] & ents["dev"] and not ents["dev"] & ents["test"]
    assert [len(ents[s]) for s in SPLITS] == [70, 15, 15]
    assert sum(len(w.questions(s)) for s in SPLITS) == len(w.questions()) == 400
    assert all(q.split == w.splits[q.entity] for q in w.questions())
    odd = World.generate(7, seed=0, splits=(0.5, 0.0, 0.5))
    assert [len({q.entity for q in odd.questions(s)}) for s in SPLITS] == [4, 0, 3]


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 1.0])
def test_evolve_changes_exactly_round_fraction_and_keeps_ids(fraction):
    w = World.generate(100, seed=0, paraphrase=0.5)
    later = w.evolve(fraction, seed=5)
    changed = w.changed(later)
    assert len(changed) == round(fraction * len(w.facts))
    assert later.changed(w) == [f for f in later.facts if (f.entity, f.attribute) in {(c.entity, c.attribute) for c in changed}]
    assert [p["id"] for p in later.passages()] == [p["id"] for p in w.passages()]
    assert [(q.id, q.question, q.gold_ids, q.split) for q in later.questions()] == \
           [(q.id, q.question, q.gold_ids, q.split) for q in w.questions()]
    old_values = {f.value for f in w.facts}
    new_q = {(q.entity, q.attribute): q for q in later.questions()}
    by_id = {p["id"]: p for p in later.passages()}
    for f in changed:
        q = new_q[(f.entity, f.attribute)]
        assert q.answers[0] != f.value and q.answers[0] not in old_values  # never a value of time A
        assert _occurs(q.answers[0], by_id[q.gold_ids[0]]["text"]) and not _occurs(f.value, by_id[q.gold_ids[0]]["text"])
        assert q.answers[0].lower() not in q.question.lower()
    assert len({f.value for f in later.facts}) == len(later.facts)


def test_evolve_rewrites_only_the_passages_of_changed_facts():
    w = World.generate(60, seed=2, granularity="fact", typed_values=True)
    later = w.evolve(0.2, seed=3)
    golds = {q.gold_ids[0] for q in w.questions() if (q.entity, q.attribute) in
             {(f.entity, f.attribute) for f in w.changed(later)}}
    for a, b in zip(w.passages(), later.passages()):
        assert (a["text"] != b["text"]) == (a["id"] in golds) and a["title"] == b["title"]
    # evolving again keeps working (values may then come back, never the current one)
    again = later.evolve(1.0, seed=4).evolve(1.0, seed=5)
    assert len(later.evolve(1.0, seed=4).changed(again)) == len(w.facts)
    with pytest.raises(ValueError):
        w.changed(World.generate(60, seed=99))


def test_fact_granularity_gives_four_passages_per_entity():
    w = World.generate(40, seed=2, granularity="fact")
    ps = w.passages()
    assert len(ps) == 160
    for (eid, name, _), group in zip(w.entities, (ps[i:i + 4] for i in range(0, 160, 4))):
        assert [p["id"] for p in group] == [f"{eid}-{j}" for j in range(4)]
        assert {p["title"] for p in group} == {name}
        assert all(p["text"].count(".") == 1 for p in group)  # one short sentence each


def test_paraphrase_probability_picks_the_template():
    direct = {(kind, a.name): a.direct for kind, attrs in KINDS.items() for a in attrs}
    para = {(kind, a.name): a.paraphrases for kind, attrs in KINDS.items() for a in attrs}
    for p, expect in ((0.0, "direct"), (1.0, "para")):
        w = World.generate(60, seed=2, granularity="fact", paraphrase=p)
        for q in w.questions():
            key = (w.kind(q.entity), q.attribute)
            is_direct = q.question == direct[key].format(e=q.entity)
            assert is_direct == (expect == "direct")
            assert is_direct or q.question in {t.format(e=q.entity) for t in para[key]}
    half = World.generate(100, seed=2, paraphrase=0.5)
    share = sum(q.question != direct[(half.kind(q.entity), q.attribute)].format(e=q.entity)
                for q in half.questions()) / len(half.questions())
    assert 0.3 < share < 0.7


def test_to_jsonl_writes_atlas_jsonl_that_reads_back(tmp_path):
    w = World.generate(30, seed=0, granularity="fact")
    paths = w.to_jsonl(tmp_path / "out")
    loaded = load_passages(paths["passages"])
    assert len(loaded) == 120
    assert [(p.id, p.title, p.text) for p in loaded] == [(p["id"], p["title"], p["text"]) for p in w.passages()]
    ids = {p["id"] for p in w.passages()}
    for split in SPLITS:
        recs = [json.loads(line) for line in paths[split].read_text(encoding="utf-8").splitlines()]
        assert len(recs) == len(w.questions(split))
        for rec, q in zip(recs, w.questions(split)):
            assert set(rec) == {"id", "question", "answers", "gold_ids"}
            assert rec == {"id": q.id, "question": q.question, "answers": q.answers, "gold_ids": q.gold_ids}
            assert set(rec["gold_ids"]) <= ids


def test_texts_cover_every_word_of_passages_and_questions():
    w = World.generate(50, seed=0, paraphrase=0.5)
    vocab = {t for text in w.texts() for t in re.findall(r"\w+", text)}
    later = w.evolve(0.3)
    words = {t for p in w.passages() for t in re.findall(r"\w+", p["title"] + " " + p["text"])}
    words |= {t for q in World.generate(50, seed=0, paraphrase=1.0).questions() for t in re.findall(r"\w+", q.question)}
    assert words <= vocab
    assert not all(t in vocab for p in later.passages() for t in re.findall(r"\w+", p["text"]))  # new values are new


def test_bad_arguments_are_refused():
    for kwargs in ({"granularity": "sentence"}, {"paraphrase": 1.5}, {"splits": (0.5, 0.5, 0.5)}, {"n_entities": 0}):
        with pytest.raises(ValueError):
            World.generate(**kwargs)
    with pytest.raises(ValueError):
        World.generate(10).evolve(1.2)
    with pytest.raises(ValueError):
        World.generate(10).questions("validation")


def test_typed_values_carry_a_type_word_distinct_within_each_kind():
    w = World.generate(60, seed=0, granularity="fact", typed_values=True)
    for f in w.facts:
        assert f.value.split()[0] == TYPE_WORDS[w.kind(f.entity)][f.attribute] and len(f.value.split()) == 2
    later = w.evolve(0.5, seed=2)
    for f in w.changed(later):
        new = later._by_entity[(f.entity, f.attribute)]
        assert new.value.split()[0] == f.value.split()[0] and new.value != f.value


@pytest.mark.parametrize("typed", [False, True])
def test_practice_words_never_occur_in_the_world_or_its_evolutions(typed):
    w = World.generate(n_entities=60, seed=3, typed_values=typed)
    practice = w.practice_words(300)
    assert practice == w.practice_words(300) and practice != w.practice_words(300, seed=1)
    assert len({p.lower() for p in practice}) == 300
    later = w.evolve(fraction=0.5)
    corpus = " ".join(f"{p['title']} {p['text']}" for world in (w, later) for p in world.passages()).lower()
    words = set(re.findall(r"\w+", corpus))
    assert not words & {p.lower() for p in practice}
    invented = w.invented_words()
    assert {name for _, name, _ in w.entities} <= invented and not invented & {"Mount", "Sea", "Port"}
    assert all(re.search(rf"\b{re.escape(v)}\b", corpus, re.I) for v in invented)
