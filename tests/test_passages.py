from __future__ import annotations

import gc
import gzip
import json
import os
import pickle
from types import SimpleNamespace

import datasets
import pytest

import atlas_kit.passages.arrow as passages_arrow
from atlas_kit.passages import Passage, Passages, load_passages, passage_text
from tests.conftest import shared_data


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path, records):
    return write(path, "".join(json.dumps(r) + "\n" for r in records))


# ---------------------------------------------------------------------- formats
def test_atlas_jsonl_keeps_extra_fields_as_metadata(tmp_path):
    f = write(tmp_path / "c.jsonl", '{"id": 1, "title": "T", "text": "hello", "year": 2020}\n\n{"id": "b", "text": "x"}\n')
    ps = load_passages(f)
    assert len(ps) == 2 and ps.ids == ["1", "b"]  # int ids become strings; blank lines are skipped
    assert ps[0] == Passage("1", "T", "hello", {"year": 2020})
    assert ps.get("b") == Passage("b", "", "x", {})


def test_metadata_object_is_merged_not_nested(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"id": "a", "title": None, "text": "x", "metadata": {"url": "u"}, "lang": "en"}])
    assert load_passages(f)[0] == Passage("a", "", "x", {"url": "u", "lang": "en"})


@pytest.mark.parametrize("header", [True, False])
def test_dpr_tsv(tmp_path, header):
    body = "id\ttext\ttitle\n" if header else ""
    body += 'd1\tsome text\tTitle One\nd2\t"quoted, ""text"" \there"\tTitle Two\n'
    ps = load_passages(write(tmp_path / "psgs.tsv", body))
    assert ps.ids == ["d1", "d2"]
    assert ps[0] == Passage("d1", "Title One", "some text", {})
    assert ps[1].text == 'quoted, "text" \there' and ps[1].title == "Title Two"


def test_dpr_tsv_extra_columns_become_metadata(tmp_path):
    named = load_passages(write(tmp_path / "a.tsv", "id\ttext\ttitle\turl\n1\tx\tT\thttp://a\n"))
    assert named[0] == Passage("1", "T", "x", {"url": "http://a"})
    unnamed = load_passages(write(tmp_path / "b.tsv", "1\tx\tT\textra\n"))
    assert unnamed[0].metadata == {"col3": "extra"}
    reordered = load_passages(write(tmp_path / "c.tsv", "title\tid\ttext\nT\t9\tbody\n"))
    assert reordered[0] == Passage("9", "T", "body", {})


def test_gzipped_tsv(tmp_path):
    with gzip.open(tmp_path / "psgs_w100.tsv.gz", "wt", encoding="utf-8") as f:
        f.write("id\ttext\ttitle\n1\tbody\tT\n")
    assert load_passages(tmp_path / "psgs_w100.tsv.gz")[0] == Passage("1", "T", "body", {})


def test_beir_corpus_and_folder(tmp_path):
    rec = {"_id": "x1", "title": "A", "text": "aa", "metadata": {"url": "u"}}
    beir = load_passages(jsonl(tmp_path / "corpus.jsonl", [rec]))
    assert beir[0] == Passage("x1", "A", "aa", {"url": "u"})
    assert load_passages(tmp_path)[0] == beir[0]  # a BEIR dataset folder holds corpus.jsonl


def test_contents_format(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"id": 7, "contents": '"Quoted Title"\nbody text\nmore'},
                                     {"id": 8, "contents": "Plain Title\nx", "src": "wiki"},
                                     {"id": 9, "contents": "a single-line passage"}])
    ps = load_passages(f)
    assert ps[0] == Passage("7", "Quoted Title", "body text\nmore", {})
    assert ps[1] == Passage("8", "Plain Title", "x", {"src": "wiki"})
    assert ps[2] == Passage("9", "", "a single-line passage", {})  # no title line: all text


def test_explicit_format_overrides_detection(tmp_path):
    f = jsonl(tmp_path / "c.txt", [{"id": "1", "contents": "T\nbody", "text": "ignored?"}])
    assert load_passages(f)[0].text == "ignored?"  # auto: has "text" -> atlas
    assert load_passages(f, format="contents")[0] == Passage("1", "T", "body", {"text": "ignored?"})
    with pytest.raises(ValueError, match=r"c\.txt:1: missing field '_id'"):
        load_passages(f, format="beir")


def test_json_list_and_json_lines_in_a_json_file(tmp_path):
    ps = load_passages(write(tmp_path / "c.json", json.dumps([{"id": "a", "title": "t", "text": "x", "k": 1}])))
    assert ps[0] == Passage("a", "t", "x", {"k": 1})
    lines = load_passages(jsonl(tmp_path / "d.json", [{"_id": "b", "text": "y"}]), format="json")
    assert lines[0] == Passage("b", "", "y", {})


def test_hf_dataset_input():
    ds = datasets.Dataset.from_dict({"_id": [1, 2], "title": ["a", None], "text": ["x", "y"], "score": [1, 2]})
    ps = load_passages(ds)
    assert ps.ids == ["1", "2"] and ps[1] == Passage("2", "", "y", {"score": 2})
    contents = datasets.Dataset.from_dict({"id": ["c"], "contents": ['"T"\nbody']})
    assert load_passages(contents)[0] == Passage("c", "T", "body", {})
    native = datasets.Dataset.from_dict({"id": ["n"], "title": ["t"], "text": ["z"]})
    assert load_passages(native).dataset.num_rows == 1 and load_passages(native)[0].metadata == {}
    with pytest.raises(ValueError, match="no 'text' or 'contents' column"):
        load_passages(datasets.Dataset.from_dict({"id": ["1"], "body": ["x"]}))
    with pytest.raises(ValueError, match=r"dataset row 1: duplicate passage id '1' \(first seen on row 0\)"):
        load_passages(datasets.Dataset.from_dict({"id": [1, 1], "text": ["x", "y"]}))


def test_arrow_folder_from_plain_hf_dataset(tmp_path):
    datasets.Dataset.from_dict({"_id": ["q"], "text": ["x"], "lang": ["en"]}).save_to_disk(str(tmp_path / "hf"))
    assert load_passages(tmp_path / "hf", format="arrow")[0] == Passage("q", "", "x", {"lang": "en"})


def test_streams_in_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(passages_arrow, "_CHUNK", 3)
    f = jsonl(tmp_path / "c.jsonl", [{"id": i, "text": f"t{i}"} for i in range(10)])
    ps = load_passages(f)
    assert ps.ids == [str(i) for i in range(10)] and ps[7].text == "t7"
    assert ps.dataset.cache_files  # memory-mapped Arrow, not an in-memory table


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "content, message",
    [
        ('{"id": "a", "text": "x"}\n{"id": "b"}\n', r"c\.jsonl:2: missing field 'text'"),
        ('{"id": "a", "text": null}\n', r"c\.jsonl:1: missing field 'text'"),
        ('{"title": "t", "text": "x"}\n', r"c\.jsonl:1: missing field 'id'"),
        ('{"id": "a", "text": "x"}\n\n{broken\n', r"c\.jsonl:3: invalid JSON \(Expecting"),
        ('{"id": "a", "text": "x"}\n["a"]\n', r"c\.jsonl:2: expected a JSON object, got list"),
        ('{"id": "a", "text": "x"}\n{"id": "z", "text": "y"}\n{"id": "a", "text": "y"}\n',
         r"c\.jsonl:3: duplicate passage id 'a' \(first seen on line 1\)"),
        ('{"id": "a", "contents": "x"}\n{"id": "b"}\n', r"c\.jsonl:2: missing field 'contents'"),
        ('{"_id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n', r"c\.jsonl:2: missing field '_id'"),
        ('{"id": {"x": 1}, "text": "x"}\n', r"c\.jsonl:1: field 'id' must be a string or an integer"),
    ],
)
def test_jsonl_errors_name_file_line_field(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_passages(write(tmp_path / "c.jsonl", content))


@pytest.mark.parametrize(
    "content, message",
    [
        ('[\n {"id": 1, "text": "a"},\n {"id": 2,\n  "title": "x"}\n]', r"l\.json:3: missing field 'text'"),
        ('[\n {"id": 1, "text": "a"},\n {"id": 1, "text": "b"}]', r"l\.json:3: duplicate passage id '1' \(first seen on line 2\)"),
        ('[\n {"id": 1, "text": "a"}\n {"id": 2, "text": "b"}]', r"l\.json:3: invalid JSON \(expected ',' or ']'"),
        ('[\n {"id": 1, "text": "a"},\n {"id": 2, "text": b"}]', r"l\.json:3: invalid JSON \(Expecting value"),
        ('[]', r"l\.json: no passages found \(empty file\)"),
    ],
)
def test_json_list_errors_name_line(tmp_path, content, message):
    with pytest.raises(ValueError, match=message):
        load_passages(write(tmp_path / "l.json", content))


def test_tsv_errors(tmp_path):
    with pytest.raises(ValueError, match=r"p\.tsv:2: expected 3 tab-separated columns \(id, text, title\), got 2"):
        load_passages(write(tmp_path / "p.tsv", "a\tx\tT\nb\ty\n"))
    with pytest.raises(ValueError, match=r"h\.tsv:3: expected 3 tab-separated columns \(id, text, title\), got 1"):
        load_passages(write(tmp_path / "h.tsv", "id\ttext\ttitle\na\tx\tT\nb\n"))
    with pytest.raises(ValueError, match=r"d\.tsv:3: duplicate passage id 'a' \(first seen on line 2\)"):
        load_passages(write(tmp_path / "d.tsv", "id\ttext\ttitle\na\tx\tT\na\ty\tT\n"))
    with pytest.raises(ValueError, match=r"o\.tsv: no passages found \(empty file\)"):
        load_passages(write(tmp_path / "o.tsv", "id\ttext\ttitle\n"))


def test_empty_missing_unknown(tmp_path):
    with pytest.raises(ValueError, match=r"e\.jsonl: no passages found \(empty file\)"):
        load_passages(write(tmp_path / "e.jsonl", ""))
    with pytest.raises(ValueError, match=r"w\.jsonl: no passages found \(empty file\)"):
        load_passages(write(tmp_path / "w.jsonl", "\n  \n"))
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_passages(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="unknown passage format 'xml'"):
        load_passages(tmp_path / "e.jsonl", format="xml")
    with pytest.raises(ValueError, match=r"x\.txt: cannot tell the passage format"):
        load_passages(write(tmp_path / "x.txt", "just words\n"))


def test_passages_constructor_validates():
    with pytest.raises(ValueError, match="duplicate passage id 'a'"):
        Passages(datasets.Dataset.from_dict({"id": ["a", "b", "a"], "title": ["", "", ""], "text": ["1", "2", "3"]}))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['title'\]"):
        Passages(datasets.Dataset.from_dict({"id": ["a"], "text": ["1"]}))
    with pytest.raises(ValueError, match="extra column"):
        Passages(datasets.Dataset.from_dict({"id": ["a"], "title": [""], "text": ["1"], "url": ["u"]}))
    with pytest.raises(ValueError, match="duplicate passage id 'x'"):
        Passages.from_records([{"id": "x", "text": "1"}, {"id": "x", "text": "2"}])
    with pytest.raises(ValueError, match=r"record 1: missing field 'text'"):
        Passages.from_records([{"id": "x", "text": "1"}, {"id": "y"}])


# ---------------------------------------------------------------------- collection behaviour
def test_save_load_round_trip_is_memory_mapped(tmp_path, toy_passages):
    toy_passages.save(tmp_path / "p")
    loaded = Passages.load(tmp_path / "p")
    assert list(loaded) == list(toy_passages) and loaded.ids == toy_passages.ids
    assert loaded.checksum() == toy_passages.checksum()
    assert loaded.dataset.cache_files  # backed by Arrow files on disk, not RAM
    assert load_passages(tmp_path / "p").ids == toy_passages.ids
    sel = loaded.select([4, 1])  # a selection saves through its indices mapping
    sel.save(tmp_path / "s")
    assert list(Passages.load(tmp_path / "s")) == list(sel)
    assert not [n for n in os.listdir(tmp_path / "p") if n.startswith("cache-")]  # no cache files in a saved folder


def test_metadata_survives_save_and_jsonl_export(tmp_path):
    ps = Passages.from_records([Passage("a", "T", "x", {"url": "u", "id": "orig", "n": [1, 2]}),
                                {"id": "b", "text": "y", "lang": "en"}])
    assert ps[1].metadata == {"lang": "en"}
    ps.save(tmp_path / "p")
    assert list(Passages.load(tmp_path / "p")) == list(ps)
    ps.to_jsonl(tmp_path / "out.jsonl")
    assert list(load_passages(tmp_path / "out.jsonl")) == list(ps)  # clashing keys nest and come back
    assert sorted(os.listdir(tmp_path)) == ["out.jsonl", "p"]


def test_collection_operations(toy_passages):
    assert toy_passages[-1].id == "p5" and "p2" in toy_passages and "zz" not in toy_passages
    assert toy_passages.position("p3") == 3 and toy_passages.get("p3") == toy_passages[3]
    assert [p.id for p in toy_passages.take([3, 0])] == ["p3", "p0"] and toy_passages.take([]) == []
    assert [p.id for p in toy_passages[1:3]] == ["p1", "p2"]
    sub = toy_passages.select([0, 1])
    rest = toy_passages.remove(["p0", "p1"])
    assert rest.ids == ["p2", "p3", "p4", "p5"] and rest.get("p4") == toy_passages[4]
    both = sub.concat(rest)
    assert both.ids == toy_passages.ids and both.position("p5") == 5
    assert both.checksum() == toy_passages.checksum() and list(both) == list(toy_passages)
    shuffled = toy_passages.select([2, 0])
    assert shuffled.ids == ["p2", "p0"] and shuffled.take([1])[0].id == "p0"
    assert shuffled.checksum() != toy_passages.select([0, 2]).checksum()  # order matters
    with pytest.raises(ValueError, match="duplicate passage id 'p0'"):
        sub.concat(sub)
    with pytest.raises(ValueError, match="duplicate passage id 'p1'"):
        toy_passages.select([1, 1])
    with pytest.raises(KeyError, match="zz"):
        toy_passages.remove(["zz"])
    with pytest.raises(KeyError, match="zz"):
        toy_passages.position("zz")
    with pytest.raises(IndexError):
        toy_passages[99]
    with pytest.raises(IndexError):
        toy_passages.take([-1])  # FAISS pads with -1: never wrap it to the last passage


def test_checksum_changes_with_content(toy_records):
    a = Passages.from_records(toy_records)
    assert a.checksum() == Passages.from_records(toy_records).checksum()
    toy_records[0]["text"] += "!"
    assert a.checksum() != Passages.from_records(toy_records).checksum()


def test_to_jsonl_round_trip(tmp_path, toy_passages):
    toy_passages.to_jsonl(tmp_path / "out.jsonl")
    back = load_passages(tmp_path / "out.jsonl")
    assert list(back) == list(toy_passages) and back.checksum() == toy_passages.checksum()
    assert os.listdir(tmp_path) == ["out.jsonl"]  # the temporary file was renamed, not left behind


def test_passage_text():
    assert passage_text(Passage("1", "T", "body")) == "T body"
    assert passage_text(Passage("1", "", "body")) == "body"
    assert passage_text(Passage("1", "T", "body"), with_title=False) == "body"
    assert passage_text(SimpleNamespace(title="A", text="b")) == "A b"
    assert passage_text(SimpleNamespace(title=None, text="b")) == "b"


def test_texts_match_passage_text(toy_passages):
    assert list(toy_passages.texts()) == [passage_text(p) for p in toy_passages]
    assert list(toy_passages.texts(with_title=False)) == [p.text for p in toy_passages]


def test_repeated_loads_reuse_and_temp_files_are_released(tmp_path):
    f = jsonl(tmp_path / "c.jsonl", [{"id": i, "text": str(i)} for i in range(5)])
    a = load_passages(f)
    assert load_passages(f) is a  # same unchanged file: no second parse, no second temp file
    arrow_file = a.dataset.cache_files[0]["filename"]
    derived = a.select([3, 1])
    del a
    gc.collect()
    assert os.path.exists(arrow_file)  # still needed by the derived collection (and by pickling)
    assert pickle.loads(pickle.dumps(derived)).ids == ["3", "1"]
    del derived
    gc.collect()
    assert not os.path.exists(arrow_file)
    jsonl(f, [{"id": "new", "text": "changed"}])
    assert load_passages(f).ids == ["new"]  # a changed file is read again


def test_real_dpr_wiki_sample():
    path = shared_data("dpr_wiki_sample", "sample_data.jsonl")
    ps = load_passages(path)
    assert len(ps) == 1000 and len(set(ps.ids)) == 1000
    first = ps[0]
    assert first.id == "0" and first.title == "Evan Morris"
    assert first.text.startswith("Evan Morris") and "\n" not in first.title
    assert all(p.title and not p.title.startswith('"') and p.text for p in ps)


def test_appends_share_the_store_and_old_collections_stay_valid(toy_passages):
    more = Passages.from_records([{"id": f"n{i}", "text": f"new {i}"} for i in range(3)])
    grown = toy_passages.concat(more)
    assert len(toy_passages) == 6 and "n0" not in toy_passages and toy_passages.ids == [f"p{i}" for i in range(6)]
    assert grown.ids == [*toy_passages.ids, "n0", "n1", "n2"] and grown.position("n2") == 8
    assert list(toy_passages.id_array()) == list(toy_passages.ids)
    # a second branch from the same parent is copied, and neither branch sees the other's passages
    other = toy_passages.concat(Passages.from_records([{"id": "x", "text": "x"}]))
    assert other.ids[-1] == "x" and "x" not in grown and "n0" not in other
    assert [p.id for p in grown.take([8, 0, 6])] == ["n2", "p0", "n0"] and grown.checksum() == Passages.from_records(list(grown)).checksum()


def test_removal_marks_rows_and_positions_skip_them(toy_passages):
    rest = toy_passages.remove(["p1", "p4"])
    assert rest.ids == ["p0", "p2", "p3", "p5"] and len(rest) == 4 and "p1" not in rest and "p1" in toy_passages
    assert rest.position("p5") == 3 and rest[1].id == "p2" and [p.id for p in rest.take([3, 0])] == ["p5", "p0"]
    assert list(rest.id_array()) == ["p0", "p2", "p3", "p5"] and [p.id for p in rest] == list(rest.ids)
    assert rest.dataset.num_rows == 4 and rest.compacted().ids == rest.ids
    back = rest.concat(Passages.from_records([{"id": "p1", "text": "again"}]))  # a removed id returns
    assert back.ids == ["p0", "p2", "p3", "p5", "p1"] and back.get("p1").text == "again"
    assert pickle.loads(pickle.dumps(rest)).ids == rest.ids
    with pytest.raises(KeyError, match="p1"):
        rest.remove(["p1"])
