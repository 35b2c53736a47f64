from __future__ import annotations

import json

import datasets
import pytest

from atlas_kit.passages import Passage, Passages, load_passages, passage_text
from tests.conftest import shared_data


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_atlas_jsonl_keeps_extra_fields_as_metadata(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"id": 1, "title": "T", "text": "hello", "year": 2020}\n\n{"id": "b", "text": "x"}\n')
    ps = load_passages(f)
    assert len(ps) == 2 and ps.ids == ["1", "b"]
    assert ps[0] == Passage("1", "T", "hello", {"year": 2020})
    assert ps.get("b").title == ""


@pytest.mark.parametrize("header", [True, False])
def test_dpr_tsv(tmp_path, header):
    body = "id\ttext\ttitle\n" if header else ""
    body += 'd1\tsome text\tTitle One\nd2\t"quoted, text"\tTitle Two\n'
    ps = load_passages(write(tmp_path / "psgs.tsv", body))
    assert ps.ids == ["d1", "d2"]
    assert ps[1].text == "quoted, text" and ps[1].title == "Title Two"


def test_beir_and_contents_formats(tmp_path):
    beir = load_passages(write(tmp_path / "corpus.jsonl", '{"_id": "x1", "title": "A", "text": "aa", "metadata": {}}\n'))
    assert beir[0].id == "x1" and beir[0].title == "A"
    cont = load_passages(write(tmp_path / "c.jsonl", json.dumps({"id": "7", "contents": '"Quoted Title"\nbody text'}) + "\n"))
    assert cont[0].title == "Quoted Title" and cont[0].text == "body text"


def test_json_list_and_hf_dataset(tmp_path):
    ps = load_passages(write(tmp_path / "c.json", json.dumps([{"id": "a", "title": "t", "text": "x"}])))
    assert ps[0].text == "x"
    ds = datasets.Dataset.from_dict({"_id": ["1", "2"], "title": ["a", "b"], "text": ["x", "y"], "score": [1, 2]})
    ps = load_passages(ds)
    assert ps.ids == ["1", "2"] and ps[1].metadata == {"score": 2}


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "text": "x"}\n{"id": "b"}\n', r"c\.jsonl:2: missing field 'text'"),
        ('{"title": "t", "text": "x"}\n', r"c\.jsonl:1: missing field 'id'"),
        ('{"id": "a", "text": "x"}\n{broken\n', r"c\.jsonl:2: invalid JSON"),
        ('{"id": "a", "text": "x"}\n{"id": "z", "text": "y"}\n{"id": "a", "text": "y"}\n', r"c\.jsonl:3: duplicate passage id 'a' \(first seen on line 1\)"),
        ('{"id": "a", "contents": "x"}\n{"id": "b"}\n', r"c\.jsonl:2: missing field 'contents'"),
    ],
)
def test_jsonl_errors_name_file_line_field(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_passages(write(tmp_path / "c.jsonl", content))


def test_tsv_column_error_and_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match=r"p\.tsv:2: expected 3 tab-separated columns \(id, text, title\), got 2"):
        load_passages(write(tmp_path / "p.tsv", "a\tx\tT\nb\ty\n"))
    with pytest.raises(ValueError, match="empty"):
        load_passages(write(tmp_path / "e.jsonl", ""))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_passages(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown passage format"):
        load_passages(tmp_path / "e.jsonl", format="xml")


def test_save_load_round_trip_is_memory_mapped(tmp_path, toy_passages):
    toy_passages.save(tmp_path / "p")
    loaded = Passages.load(tmp_path / "p")
    assert list(loaded) == list(toy_passages)
    assert loaded.checksum() == toy_passages.checksum()
    assert loaded.dataset.cache_files  # backed by Arrow files on disk, not RAM
    assert load_passages(tmp_path / "p").ids == toy_passages.ids


def test_collection_operations(toy_passages):
    assert toy_passages[-1].id == "p5" and "p2" in toy_passages and "zz" not in toy_passages
    assert [p.id for p in toy_passages.take([3, 0])] == ["p3", "p0"]
    assert [p.id for p in toy_passages[1:3]] == ["p1", "p2"]
    sub = toy_passages.select([0, 1])
    rest = toy_passages.remove(["p0", "p1"])
    assert rest.ids == ["p2", "p3", "p4", "p5"]
    assert sub.concat(rest).ids == toy_passages.ids
    assert sub.concat(rest).checksum() == toy_passages.checksum()
    with pytest.raises(ValueError, match="duplicate passage id 'p0'"):
        sub.concat(sub)
    with pytest.raises(KeyError, match="zz"):
        toy_passages.remove(["zz"])
    with pytest.raises(IndexError):
        toy_passages[99]


def test_checksum_changes_with_content(toy_records):
    a = Passages.from_records(toy_records)
    toy_records[0]["text"] += "!"
    assert a.checksum() != Passages.from_records(toy_records).checksum()


def test_to_jsonl_round_trip(tmp_path, toy_passages):
    toy_passages.to_jsonl(tmp_path / "out.jsonl")
    assert list(load_passages(tmp_path / "out.jsonl")) == list(toy_passages)


def test_passage_text():
    assert passage_text(Passage("1", "T", "body")) == "T body"
    assert passage_text(Passage("1", "", "body")) == "body"
    assert passage_text(Passage("1", "T", "body"), with_title=False) == "body"


def test_real_dpr_wiki_sample():
    path = shared_data("dpr_wiki_sample", "sample_data.jsonl")
    ps = load_passages(path)
    assert len(ps) == 1000
    assert ps[0].title and not ps[0].title.startswith('"') and "\n" not in ps[0].title
