"""Masked-span pre-training examples: masking, targets, determinism, and the source passage kept
out of the query's own retrieval."""
from __future__ import annotations

import random
import re

import pytest

from atlas_kit.passages import Passage
from atlas_kit.tasks.mlm import SENTINEL, mask_spans, mlm_examples


def unmask(masked: list[str], spans: list[list[str]]) -> list[str]:
    out = []
    for w in masked:
        m = re.fullmatch(r"<extra_id_(\d+)>", w)
        out.extend(spans[int(m.group(1))] if m else [w])
    return out


@pytest.mark.parametrize("n", [2, 5, 20, 100])
def test_mask_spans_reconstructs_and_masks_about_the_ratio(n):
    words = [f"w{i}" for i in range(n)]
    masked, spans = mask_spans(words, random.Random(n), mask_ratio=0.15, mean_span=3)
    assert unmask(masked, spans) == words
    n_masked = sum(len(s) for s in spans)
    assert 1 <= n_masked < n and abs(n_masked - max(1, round(0.15 * n))) <= 1
    assert [w for w in masked if w.startswith("<extra_id_")] == [SENTINEL.format(i) for i in range(len(spans))]
    # spans never touch: two sentinels are never adjacent
    assert not any(a.startswith("<extra_id_") and b.startswith("<extra_id_") for a, b in zip(masked, masked[1:]))


def test_mask_spans_edge_cases():
    assert mask_spans(["one"], random.Random(0)) == (["one"], [])
    with pytest.raises(ValueError, match="mask_ratio"):
        mask_spans(["a", "b"], random.Random(0), mask_ratio=1.0)


def test_mlm_examples_are_seeded_and_exclude_their_source():
    passages = [Passage(f"p{i}", f"T{i}", " ".join(f"word{i}_{j}" for j in range(30))) for i in range(5)]
    passages.append(Passage("short", "S", "too short"))
    a, b = mlm_examples(passages, seed=1), mlm_examples(passages, seed=1)
    assert [(e.question, e.answers) for e in a] == [(e.question, e.answers) for e in b]
    assert len(a) == 5  # the 2-word passage is skipped
    e = a[0]
    assert e.metadata["exclude_ids"] == ["p0"] and e.question.startswith("T0: ")
    assert e.target.startswith("<extra_id_0> ")
    spans = [s.split() for s in re.split(r"<extra_id_\d+>", e.target)[1:]]
    assert unmask(e.question[len("T0: "):].split(), spans) == passages[0].text.split()
    assert len(mlm_examples(passages, max_words=10)[0].question.split()) <= 12  # title + cut window


def test_trainer_keeps_the_source_passage_out_of_retrieval():
    from atlas_kit.train import TrainConfig, Trainer
    from tests.conftest import make_setup

    atlas, _ = make_setup()
    passages = list(atlas.index.passages)
    examples = mlm_examples(passages, seed=0)
    trainer = Trainer(atlas, TrainConfig(steps=2, batch_size=4, n_context=3, retriever_loss="pdist",
                                         retriever_lr=1e-3, tensorboard=False))
    qs = [e.question for e in examples[:8]]
    plain = trainer.retrieve(qs)
    kept = trainer.retrieve(qs, [e.metadata["exclude_ids"] for e in examples[:8]])
    assert any(e.metadata["exclude_ids"][0] in [p.id for p in ps] for e, ps in zip(examples, plain))
    assert all(len(ps) == 3 and e.metadata["exclude_ids"][0] not in [p.id for p in ps] for e, ps in zip(examples, kept))
    trainer.fit(examples, show_progress=False)  # the whole step runs on MLM examples
    assert trainer.step == 2


def test_mlm_format_in_recipes(tmp_path):
    from atlas_kit.tasks import get_task

    corpus = tmp_path / "c.jsonl"
    corpus.write_text("".join(f'{{"id": "p{i}", "title": "T", "text": "{" ".join(["w"] * 12)} end{i}"}}\n' for i in range(3)))
    examples = get_task({"name": "mlm", "seed": 3}).load(corpus)
    assert [e.metadata["exclude_ids"] for e in examples] == [["p0"], ["p1"], ["p2"]]
