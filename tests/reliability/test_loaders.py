"""Loaders never mangle data silently: wrong types, stray quotes, bad bytes, BOMs, corrupt gzip."""
from __future__ import annotations

import gzip
import json

import pytest

from atlas_kit import load_passages
from atlas_kit.tasks import load_qa, load_squad
from atlas_kit.tasks.mmlu import load_mmlu

# DPR's psgs_w100.tsv style: header, csv-quoted text with doubled inner quotes, quotes mid-field
DPR_LINES = [
    "id\ttext\ttitle",
    '1\t"Aaron Aaron ( or ; ""Ahärôn"") is a prophet, high priest."\tAaron',
    "2\tSo called \"Golden Age\" of the city.\tAthens",
    "3\tPlain passage three.\tThree",
]


def _write(path, lines, encoding="utf-8"):
    path.write_bytes(("\n".join(lines) + "\n").encode(encoding))
    return path


def test_dpr_real_style_quoting_is_read_exactly(tmp_path):
    ps = load_passages(_write(tmp_path / "psgs.tsv", DPR_LINES))
    assert [p.text for p in ps] == ['Aaron Aaron ( or ; "Ahärôn") is a prophet, high priest.',
                                    'So called "Golden Age" of the city.', "Plain passage three."]
    assert [p.title for p in ps] == ["Aaron", "Athens", "Three"]


def test_dpr_stray_quote_does_not_swallow_lines(tmp_path):
    lines = ["id\ttext\ttitle"] + [f"{i}\tpassage {i}\tT{i}" for i in range(10)]
    lines[4] = '3\t"Weird Al Yankovic text\tT3'  # a stray opening quote, never closed
    with pytest.raises(ValueError, match=r"psgs\.tsv:5: malformed tsv"):
        load_passages(_write(tmp_path / "psgs.tsv", lines))


def test_dpr_non_utf8_byte_reported_on_its_line(tmp_path):
    path = tmp_path / "bad.tsv"  # line 5 holds the bad byte, after a quoted field on line 2
    path.write_bytes(b"\n".join(line.encode("utf-8") for line in DPR_LINES) + b"\n4\tbad \xff byte\tFour\n")
    with pytest.raises(ValueError, match=r"bad\.tsv:5: not UTF-8"):
        load_passages(path)


@pytest.mark.parametrize("record, message", [
    ({"id": "p1", "title": "T", "text": True}, "'text' must be a string"),
    ({"id": "p1", "title": "T", "text": "   "}, "'text' is empty"),
    ({"id": "  ", "title": "T", "text": "x"}, "'id' is blank"),
    ({"id": True, "title": "T", "text": "x"}, "'id' must be a string"),
    ({"id": "p1", "title": 3, "text": "x"}, "'title' must be a string"),
])
def test_passage_fields_of_the_wrong_type_are_refused(tmp_path, record, message):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "p0", "title": "T", "text": "ok"}) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=rf"c\.jsonl:2: field {message}"):
        load_passages(path)


def test_corrupt_gzip_names_the_file(tmp_path):
    good = gzip.compress(b'{"id": "p0", "text": "x"}\n' * 200)
    for name, loader in (("c.jsonl.gz", load_passages), ("qa.jsonl.gz", load_qa)):
        (tmp_path / name).write_bytes(good[: len(good) // 2])
        with pytest.raises(ValueError, match=rf"{name.replace('.', r'[.]')}.*(corrupt|truncated)"):
            loader(tmp_path / name)


def _qa(tmp_path, *records, bom=False):
    path = tmp_path / "qa.jsonl"
    text = "".join(json.dumps(r) + "\n" for r in records)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def test_qa_string_where_a_list_belongs_is_one_item(tmp_path):
    (ex,) = load_qa(_qa(tmp_path, {"question": "Who?", "answer": "me", "aliases": "Bob", "gold_ids": "p12"}))
    assert ex.answers == ["me", "Bob"] and ex.gold_ids == ["p12"]


@pytest.mark.parametrize("record, field", [
    ({"question": "Q?", "answers": {"text": "x"}}, "answers"),
    ({"question": "Q?", "answers": ["x"], "aliases": {"a": 1}}, "aliases"),
    ({"question": "Q?", "answers": ["x"], "gold_ids": {"p1": 1}}, "gold_ids"),
    ({"question": 42, "answers": ["x"]}, "question"),
    ({"question": None, "answers": ["x"]}, "question"),
    ({"question": "  ", "answers": ["x"]}, "question"),
    ({"question": "Q?", "answers": ["x", None]}, r"answers\[1\]"),
    ({"question": "Q?", "answers": ["x"], "id": ""}, "id"),
])
def test_qa_wrong_types_name_file_line_and_field(tmp_path, record, field):
    path = _qa(tmp_path, {"question": "ok?", "answers": ["y"]}, record)
    with pytest.raises(ValueError, match=rf"qa\.jsonl:2: field '{field}'"):
        load_qa(path)


def test_qa_file_with_a_bom_is_accepted(tmp_path):
    (ex,) = load_qa(_qa(tmp_path, {"question": "Who?", "answers": ["me"]}, bom=True))
    assert ex.question == "Who?"


def test_qa_non_utf8_names_the_line(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_bytes(b'{"question": "a?", "answers": ["x"]}\n{"question": "b\xff?", "answers": ["x"]}\n')
    with pytest.raises(ValueError, match=r"qa\.jsonl:2: not UTF-8"):
        load_qa(path)


@pytest.mark.parametrize("qa, field", [
    ({"id": "q1", "answers": [{"text": "x"}]}, "question"),
    ({"question": "Q?", "answers": [{"text": "x"}]}, "id"),
    ({"id": "q1", "question": "Q?", "answers": [{"answer_start": 0}]}, "text"),
])
def test_squad_missing_fields_name_the_record(tmp_path, qa, field):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"data": [{"title": "T", "paragraphs": [{"context": "c", "qas": [qa]}]}]}))
    with pytest.raises(ValueError, match=rf"squad\.json: data\[0\]\.paragraphs\[0\]\.qas\[0\].*missing field '{field}'"):
        load_squad(path)


def test_mmlu_non_utf8_names_file_and_line(tmp_path):
    path = tmp_path / "anatomy_test.csv"
    path.write_bytes(b"What is x?,a,b,c,d,A\nWhat is \xe9?,a,b,c,d,B\n")
    with pytest.raises(ValueError, match=r"anatomy_test\.csv:2: not UTF-8"):
        load_mmlu(path)
