from __future__ import annotations

import json

from atlas_kit.passages import load_passages
from atlas_kit.world import KINDS, World


def test_deterministic_and_unique():
    a, b = World.generate(120, seed=3), World.generate(120, seed=3)
    assert a.passages() == b.passages() and a.questions() == b.questions()
    assert World.generate(120, seed=4).passages() != a.passages()
    names = [n for _, n, _ in a.entities]
    assert len(set(names)) == len(names)
    values = {f.value for f in a.facts}
    assert not values & set(names)
    assert len({p["id"] for p in a.passages()}) == 120
    assert len({q.id for q in a.questions()}) == len(a.questions()) == 480


def test_answers_are_in_gold_passages_not_questions():
    for gran in ("entity", "fact"):
        w = World.generate(80, seed=1, granularity=gran, paraphrase=0.5)
        by_id = {p["id"]: p for p in w.passages()}
        for q in w.questions():
            for gid in q.gold_ids:
                assert q.answers[0] in by_id[gid]["text"]
            assert q.answers[0] not in q.question
            assert q.entity in q.question


def test_splits_disjoint_by_entity():
    w = World.generate(100, seed=0)
    ents = {s: {q.entity for q in w.questions(s)} for s in ("train", "dev", "test")}
    assert not ents["train"] & ents["test"] and not ents["train"] & ents["dev"] and not ents["dev"] & ents["test"]
    assert len(ents["train"]) == 70 and len(ents["test"]) == 15


def test_evolve_changes_exact_share_and_keeps_ids():
    w = World.generate(100, seed=0)
    later = w.evolve(0.25, seed=5)
    changed = w.changed(later)
    assert len(changed) == 100  # 25% of 400 facts
    assert [p["id"] for p in later.passages()] == [p["id"] for p in w.passages()]
    assert [q.id for q in later.questions()] == [q.id for q in w.questions()]
    assert [q.question for q in later.questions()] == [q.question for q in w.questions()]
    new_by_key = {(q.entity, q.attribute): q for q in later.questions()}
    by_id = {p["id"]: p for p in later.passages()}
    for f in changed:
        q = new_by_key[(f.entity, f.attribute)]
        assert q.answers[0] != f.value and q.answers[0] in by_id[q.gold_ids[0]]["text"]


def test_fact_granularity_and_paraphrase():
    w = World.generate(40, seed=2, granularity="fact", paraphrase=1.0)
    assert len(w.passages()) == 160
    directs = {a.direct.split("{e}")[0] for attrs in KINDS.values() for a in attrs}
    for q in w.questions():
        assert not any(q.question.startswith(d) and q.question.endswith("?") and d for d in directs if q.question.startswith(d))


def test_to_jsonl(tmp_path):
    w = World.generate(30, seed=0)
    paths = w.to_jsonl(tmp_path)
    assert len(load_passages(paths["passages"])) == 30
    rec = json.loads(paths["train"].read_text().splitlines()[0])
    assert set(rec) == {"id", "question", "answers", "gold_ids"}


def test_typed_values_carry_a_type_word_distinct_within_each_kind():
    from atlas_kit.world import TYPE_WORDS

    for kind, words in TYPE_WORDS.items():
        assert len(set(words.values())) == len(words) == 4, kind
    w = World.generate(60, seed=0, granularity="fact", typed_values=True)
    kind_of = {name: kind for _, name, kind in w.entities}
    for f in w.facts:
        assert f.value.split()[0] == TYPE_WORDS[kind_of[f.entity]][f.attribute] and len(f.value.split()) == 2
    later = w.evolve(0.5, seed=2)
    for f in w.changed(later):
        new = next(g for g in later.facts if (g.entity, g.attribute) == (f.entity, f.attribute))
        assert new.value.split()[0] == f.value.split()[0] and new.value != f.value
