from __future__ import annotations

import json

import pytest

from atlas_kit.tasks.kilt import example_from_kilt_record, kilt_pages, load_kilt
from tests.conftest import shared_data


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _page(wid, title, **extra):
    return {"wikipedia_id": wid, "title": title, "start_paragraph_id": 1, **extra}


def test_load_kilt_answers_provenance_and_metadata(tmp_path):
    f = _write(tmp_path / "k.jsonl", [
        {"id": 7, "input": "who?", "meta": {"x": 1}, "output": [
            {"answer": " Ed Wood ", "provenance": [_page("10520", "Ed Wood"), _page("10520", "Ed Wood", start_paragraph_id=3)]},
            {"answer": "Ed Wood"},                      # duplicate answer, no provenance
            {"answer": ""},                             # empty answer is dropped
            {"provenance": [_page(2816539, "Scott Derrickson")]},  # provenance-only output
            {"answer": "Edward Wood", "provenance": []},  # empty provenance list is skipped
        ]},
        {"id": "wow_1", "input": "I love rap.\nMe too!\nWho started it?",
         "output": [{"provenance": [{"title": "Hip hop"}]}]},  # no answer but provenance: kept
        {"id": "c", "input": "q", "output": [{"answer": "a"}]},
    ])
    ex = load_kilt(f)
    assert [e.id for e in ex] == ["7", "wow_1", "c"]
    assert ex[0].answers == ["Ed Wood", "Edward Wood"] and ex[0].question == "who?"
    assert ex[0].metadata["kilt_id"] == 7 and ex[0].metadata["meta"] == {"x": 1}
    # one provenance list per output that has (non-empty) provenance; paragraphs of one page -> one page
    assert ex[0].metadata["provenance"] == [
        [{"wikipedia_id": "10520", "title": "Ed Wood"}],
        [{"wikipedia_id": "2816539", "title": "Scott Derrickson"}],
    ]
    assert ex[1].question == "I love rap.\nMe too!\nWho started it?" and ex[1].answers == []
    assert ex[1].metadata["provenance"] == [[{"wikipedia_id": None, "title": "Hip hop"}]]
    assert ex[2].metadata["provenance"] == [] and ex[2].target == "a"
    assert len(load_kilt(f, limit=2)) == 2
    # page ids: wikipedia_id when known, else the normalised title
    assert kilt_pages(ex[0]) == [{"10520"}, {"2816539"}]
    assert kilt_pages(ex[1]) == [{"hip hop"}] and kilt_pages(ex[2]) == []


@pytest.mark.parametrize("record, message", [
    ({"id": 1, "input": "q", "output": [{"answer": ""}, {"provenance": []}]}, r"bad\.jsonl:2: field 'output': no answer and no provenance"),
    ({"id": 1, "output": [{"answer": "a"}]}, r"bad\.jsonl:2: missing field 'input'"),
    ({"input": "q", "output": [{"answer": "a"}]}, r"bad\.jsonl:2: missing field 'id'"),
    ({"id": 1, "input": "q"}, r"bad\.jsonl:2: missing field 'output'"),
    ({"id": 1, "input": "q", "output": {"answer": "a"}}, r"bad\.jsonl:2: field 'output' must be a list"),
    ({"id": 1, "input": "q", "output": [{"answer": 3}]}, r"bad\.jsonl:2: field 'output\[0\]\.answer' must be a string"),
    ({"id": 1, "input": "q", "output": [{"answer": "a", "provenance": [_page("1", "A"), {"section": "s"}]}]},
     r"bad\.jsonl:2: field 'output\[0\]\.provenance\[1\]': provenance entry has neither"),
])
def test_load_kilt_errors_name_file_line_field(tmp_path, record, message):
    f = _write(tmp_path / "bad.jsonl", [{"id": 0, "input": "ok", "output": [{"answer": "a"}]}, record])
    with pytest.raises(ValueError, match=message):
        load_kilt(f)


def test_load_kilt_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_kilt(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ValueError, match="no examples"):
        load_kilt(tmp_path / "empty.jsonl")
    (tmp_path / "json.jsonl").write_text('{"id": 1, "input": "q", "output": [{"answer": "a"}]}\n{oops\n')
    with pytest.raises(ValueError, match=r"json\.jsonl:2: invalid JSON"):
        load_kilt(tmp_path / "json.jsonl")
    ex = example_from_kilt_record({"id": 1, "output": [{"answer": "a"}]}, "here", require_input=False)
    assert ex.question == "" and ex.answers == ["a"]


def test_real_hotpotqa_dev():
    ex = load_kilt(shared_data("kilt", "hotpotqa-dev-kilt.jsonl"))
    assert len(ex) == 5600 and all(e.answers and e.metadata["provenance"] for e in ex)
    assert ex[0].question == "Were Scott Derrickson and Ed Wood of the same nationality?" and ex[0].answers == ["yes"]
    assert kilt_pages(ex[0]) == [{"2816539", "10520"}]
    # the second example cites Shirley Temple twice (two paragraphs): one page
    assert kilt_pages(ex[1]) == [{"33022480", "804602"}]


def test_real_wow_dev():
    ex = load_kilt(shared_data("kilt", "wow-dev-kilt.jsonl"))
    assert len(ex) == 3054 and all(e.answers for e in ex)
    assert ex[0].question.startswith("I love the 1980s music") and "\n" in ex[0].question  # dialogue kept as given
    assert ex[0].metadata["provenance"] == [[{"wikipedia_id": "265182", "title": "Tears for Fears"}]]


def test_kilt_repo_test_files_load():
    gold1 = load_kilt(shared_data("kilt", "kilt_repo_tests", "gold1.jsonl"))
    assert [e.answers for e in gold1] == [["suicide"], ["suicide"], ["it was suicide"]]
    gold2 = load_kilt(shared_data("kilt", "kilt_repo_tests", "gold2.jsonl"), require_input=False)
    assert gold2[0].answers == ["test1", "test2", "test3"]
    assert kilt_pages(gold2[0]) == [{"1", "2"}, {"5"}, {"7", "9", "11"}]  # int and str ids read alike
    with pytest.raises(ValueError, match=r"gold2\.jsonl:1: missing field 'input'"):
        load_kilt(shared_data("kilt", "kilt_repo_tests", "gold2.jsonl"))
