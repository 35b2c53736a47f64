from __future__ import annotations

import json
from collections import Counter

import pytest

from atlas_kit.provenance import decode_fever_title, kilt_scores
from atlas_kit.tasks.fever import FEVER_LABELS, load_fever
from atlas_kit.tasks.kilt import kilt_pages
from tests.conftest import shared_data


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


SUPPORTED = {"id": 137334, "verifiable": "VERIFIABLE", "label": "SUPPORTS",
             "claim": "Fox 2000 Pictures released the film Soul Food.",
             "evidence": [[[289914, 283015, "Soul_Food_-LRB-film-RRB-", 0]],
                          [[291259, 284217, "Soul_Food_-LRB-film-RRB-", 0]],
                          [[1, 2, "Fox_2000_Pictures", 0], [1, 3, "Soul_Food_-LRB-film-RRB-", 1]]]}
NEI = {"id": 91198, "verifiable": "NOT VERIFIABLE", "label": "NOT ENOUGH INFO",
       "claim": "Tilda Swinton is a vegan.", "evidence": [[[227768, None, None, None]]]}
KILT_FEVER = {"id": "k1", "input": "Nikolaj Coster-Waldau worked with the Fox Broadcasting Company.",
              "output": [{"answer": "SUPPORTS"}, {"provenance": [{"wikipedia_id": "1", "title": "Nikolaj Coster-Waldau"}]}]}


def test_decode_fever_title():
    assert decode_fever_title("Soul_Food_-LRB-film-RRB-") == "Soul Food (film)"
    assert decode_fever_title("Star_Wars-COLON-_The_Force_Awakens") == "Star Wars: The Force Awakens"
    assert decode_fever_title("X_-LSB-a-RSB-_-LCB-b-RCB-") == "X [a] {b}"


def test_load_fever_original_and_kilt_formats(tmp_path):
    f = _write(tmp_path / "fever.jsonl", [SUPPORTED, NEI, KILT_FEVER])
    ex = load_fever(f)
    assert [e.id for e in ex] == ["137334", "91198", "k1"]
    assert ex[0].question == SUPPORTED["claim"] and ex[0].answers == ["SUPPORTS"]
    # evidence sets -> provenance sets of decoded titles; the set repeated by annotators is kept once
    assert ex[0].metadata["provenance"] == [
        [{"wikipedia_id": None, "title": "Soul Food (film)"}],
        [{"wikipedia_id": None, "title": "Fox 2000 Pictures"}, {"wikipedia_id": None, "title": "Soul Food (film)"}],
    ]
    assert ex[0].metadata["fever_id"] == 137334 and ex[0].metadata["evidence"] == SUPPORTED["evidence"]
    assert kilt_pages(ex[0]) == [{"soul food (film)"}, {"fox 2000 pictures", "soul food (film)"}]
    assert ex[1].answers == ["NOT ENOUGH INFO"] and ex[1].metadata["provenance"] == []
    assert ex[2].answers == ["SUPPORTS"] and kilt_pages(ex[2]) == [{"1"}]  # delegated to the KILT parser
    two_way = load_fever(f, labels=("SUPPORTS", "REFUTES"))
    assert [e.id for e in two_way] == ["137334", "k1"]
    assert len(load_fever(f, limit=1)) == 1
    with pytest.raises(ValueError, match="labels must be"):
        load_fever(f, labels=("TRUE",))


@pytest.mark.parametrize("record, message", [
    ({**NEI, "label": "MAYBE"}, r"bad\.jsonl:2: field 'label': 'MAYBE' is not one of"),
    ({k: v for k, v in NEI.items() if k != "claim"}, r"bad\.jsonl:2: missing field 'claim'"),
    ({k: v for k, v in NEI.items() if k != "label"}, r"bad\.jsonl:2: missing field 'label'"),
    ({**NEI, "evidence": [[["short"]]]}, r"bad\.jsonl:2: field 'evidence\[0\]\[0\]'"),
    ({**KILT_FEVER, "output": [{"answer": "TRUE"}]}, r"bad\.jsonl:2: field 'output\[\]\.answer'"),
])
def test_load_fever_errors_name_file_line_field(tmp_path, record, message):
    f = _write(tmp_path / "bad.jsonl", [SUPPORTED, record])
    with pytest.raises(ValueError, match=message):
        load_fever(f)


def test_real_fever_paper_dev():
    ex = load_fever(shared_data("fever", "paper_dev.jsonl"))
    assert len(ex) == 9999
    assert Counter(e.target for e in ex) == {label: 3333 for label in FEVER_LABELS}
    assert all(e.metadata["provenance"] for e in ex if e.target != "NOT ENOUGH INFO")
    assert not any(e.metadata["provenance"] for e in ex if e.target == "NOT ENOUGH INFO")
    soul = next(e for e in ex if e.id == "137334")
    assert kilt_pages(soul) == [{"soul food (film)"}]
    # page-level recall works against Wikipedia titles (retrieved passage titles)
    scores = kilt_scores(["SUPPORTS"], [soul], [["Soul Food (film)", "Soul Food"]], ks=(1,))
    assert scores["r_precision"] == 100.0 and scores["recall@1"] == 100.0 and scores["kilt_accuracy"] == 100.0
    assert len(load_fever(shared_data("fever", "paper_dev.jsonl"), labels=("SUPPORTS", "REFUTES"))) == 6666
