"""KILT prediction files: written from KILT runs, checked against KILT's own test fixtures
(facebookresearch/KILT tests/test_data, in ../shared/data/kilt/kilt_repo_tests): the scores of a
file atlas_kit writes equal those of KILT's original guess file."""
from __future__ import annotations

import json

import pytest

from atlas_kit.index.base import Hit
from atlas_kit.kilt_submission import provenance_entries, submission_record, submission_records, write_kilt_submission
from atlas_kit.provenance import evaluate_kilt_files
from atlas_kit.tasks.kilt import load_kilt
from atlas_kit.tasks.qa import QAExample
from tests.conftest import shared_data


def _fixture(name):
    return shared_data("kilt", "kilt_repo_tests", f"{name}.jsonl")


def _as_run(guess_path):
    """A KILT guess file as atlas_kit run output: answers and ranked Hits (two passages per page)."""
    answers, hits = {}, {}
    for line in guess_path.read_text().splitlines():
        rec = json.loads(line)
        out = rec["output"][0]
        answers[str(rec["id"])] = out.get("answer")
        ranked = []
        for j, p in enumerate(out.get("provenance", [])):
            meta = {"wikipedia_id": p["wikipedia_id"]} if "wikipedia_id" in p else {}
            for part in range(2):  # a page retrieved as several passages is one provenance entry
                ranked.append(Hit(f"{p.get('wikipedia_id')}-{j}-{part}", p.get("title", ""), "text", 1.0 - j / 10, 0, meta))
        hits[str(rec["id"])] = ranked
    return answers, hits


@pytest.mark.parametrize("gold,guess", [("gold1", "guess1_1"), ("gold2", "guess2_1"), ("gold2", "guess2_2"),
                                        ("gold3", "guess3_1")])
def test_written_file_scores_like_kilts_guess_file(tmp_path, gold, guess):
    examples = load_kilt(_fixture(gold), require_input=False)
    answers, hits = _as_run(_fixture(guess))
    preds = None if all(a is None for a in answers.values()) else [answers[e.id] for e in examples]
    records = submission_records(examples, preds, [hits[e.id] for e in examples])
    written = write_kilt_submission(tmp_path / "kilt_predictions.jsonl", records)
    assert evaluate_kilt_files(_fixture(gold), written) == evaluate_kilt_files(_fixture(gold), _fixture(guess))
    first = json.loads(written.read_text().splitlines()[0])
    assert set(first) == {"id", "input", "output"} and isinstance(first["id"], type(examples[0].metadata["kilt_id"]))
    pages = first["output"][0]["provenance"]
    assert len(pages) == len({p.get("wikipedia_id") for p in pages})  # each page once
    assert ("answer" in first["output"][0]) == (preds is not None)


def test_provenance_entries_dedup_and_format():
    hits = [Hit("a", "Page A", "", 3.0, 0, {"wikipedia_id": "1"}), Hit("b", "Page A", "", 2.0, 1, {"wikipedia_id": "1"}),
            Hit("c", "Page C", "", 1.0, 2, {}), {"title": "Page C", "text": "x"}, Hit("d", "", "", 0.5, 3, {})]
    assert provenance_entries(hits) == [{"wikipedia_id": "1", "title": "Page A"}, {"title": "Page C"}]
    assert provenance_entries(hits, max_pages=1) == [{"wikipedia_id": "1", "title": "Page A"}]
    assert submission_record(7, "q", None, [{"title": "T"}]) == {"id": 7, "input": "q", "output": [{"provenance": [{"title": "T"}]}]}
    with pytest.raises(ValueError, match="missing field 'output'"):
        write_kilt_submission("/nonexistent/x.jsonl", [{"id": 1, "input": "q"}])


def test_kilt_run_writes_a_submission_that_scores_like_the_run(tmp_path):
    from atlas_kit.evaluation import evaluate, evaluate_retrieval, write_report
    from tests.conftest import make_setup

    atlas, examples = make_setup()
    kilt = [QAExample(e.id, e.question, e.answers, [],
                      {"kilt_id": i, "provenance": [[{"title": atlas.index.passages.get(e.gold_ids[0]).title}]]})
            for i, e in enumerate(examples[:8])]
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"id": e.metadata["kilt_id"], "input": e.question,
                                        "output": [{"answer": e.answers[0], "provenance": e.metadata["provenance"][0]}]}) + "\n"
                            for e in kilt))
    for result, name in ((evaluate(atlas, kilt, k=3, batch_size=4), "full"), (evaluate_retrieval(atlas, kilt, ks=[1, 3]), "ret")):
        write_report(tmp_path / name, result)
        scores = evaluate_kilt_files(gold, tmp_path / name / "kilt_predictions.jsonl", ks=(1, 3))
        for key in ("r_precision", "recall@1", "recall@3", "em", "kilt_em", "f1"):
            if key in result.metrics:
                assert scores[key] == pytest.approx(result.metrics[key]), key
        assert "kilt" not in json.loads((tmp_path / name / "predictions.jsonl").read_text().splitlines()[0])
