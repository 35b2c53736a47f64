"""MMLU loader: both csv layouts, quoting, errors that say where, filters, and the real shared copy."""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from atlas_kit.tasks.mmlu import (CATEGORIES, SUBJECT_CATEGORIES, MCExample, category_of, format_mc_query,
                                  load_mmlu)
from atlas_kit.tasks.qa import QAExample
from tests.conftest import shared_data

HEADER = "question,choice0,choice1,choice2,choice3,answer\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path):
    """A data folder with both layouts: anatomy (local layout), virology (Hendrycks layout, with a
    quoted field holding commas, quotes and a newline), and a test split."""
    root = tmp_path / "mmlu"
    write(root / "dev" / "anatomy_dev.csv", HEADER + "Where is the hyoid?,neck,arm,leg,foot,0\nBones?,1,206,3,4,1\n")
    tricky = 'Which, of these, is "odd"?\nPick one.'
    with open(root / "dev" / "virology_dev.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([tricky, "a, b", 'say "hi"', "x\ny", "z", "D"])
        w.writerow(["Second?", "p", "q", "r", "s", "b"])
    write(root / "test" / "anatomy_test.csv", HEADER + "T1?,a,b,c,d,3\n")
    return root, tricky


def test_format_mc_query():
    assert format_mc_query("Q?", ["x", "y", "z", "w"]) == "Q? answers: (A) x (B) y (C) z (D) w"
    assert format_mc_query(" Q? ", ["yes", "no"]) == "Q? answers: (A) yes (B) no"
    assert format_mc_query("Q", list("abcde"), letters="VWXYZ") == "Q answers: (V) a (W) b (X) c (Y) d (Z) e"
    with pytest.raises(ValueError, match="at least 2"):
        format_mc_query("Q", ["only"])
    with pytest.raises(ValueError, match="letters"):
        format_mc_query("Q", list("abc"), letters="AB")


def test_both_layouts_and_quoting(data):
    root, tricky = data
    ex = load_mmlu(root, "dev")
    assert [e.id for e in ex] == ["anatomy-dev-0", "anatomy-dev-1", "virology-dev-0", "virology-dev-1"]
    a0, a1, v0, v1 = ex
    assert isinstance(a0, MCExample) and isinstance(a0, QAExample)
    assert a0.options == ["neck", "arm", "leg", "foot"] and a0.label == 0 and a0.answers == ["A"]
    assert a0.question == "Where is the hyoid? answers: (A) neck (B) arm (C) leg (D) foot"
    assert a0.metadata["raw_question"] == "Where is the hyoid?" and a0.subject == "anatomy"
    assert a1.label == 1 and a1.answers == ["B"] and a1.target == "B"
    # Hendrycks layout: no header row swallowed, letters A-D (any case), quoted commas/quotes/newlines kept
    assert v0.metadata["raw_question"] == tricky and v0.options == ["a, b", 'say "hi"', "x\ny", "z"]
    assert v0.label == 3 and v0.answers == ["D"] and v0.question.startswith(tricky + " answers: (A) a, b (B) say")
    assert v1.label == 1 and v1.metadata["line"] == 4  # the first record spans lines 1-3
    assert v0.metadata["layout"] == "hendrycks" and a0.metadata["layout"] == "header"


def test_paths_split_folder_and_file(data):
    root, _ = data
    assert [e.id for e in load_mmlu(root, "test")] == ["anatomy-test-0"]
    assert len(load_mmlu(root / "dev")) == 4  # a split folder
    assert len(load_mmlu(root / "dev", split="dev")) == 4
    one = load_mmlu(root / "test" / "anatomy_test.csv")
    assert one[0].id == "anatomy-test-0" and one[0].label == 3
    with pytest.raises(ValueError, match="'dev' file but split='test'"):
        load_mmlu(root / "dev" / "anatomy_dev.csv", split="test")
    with pytest.raises(ValueError, match="pass split="):
        load_mmlu(root)


def test_subjects_filter_and_limit(data):
    root, _ = data
    ex = load_mmlu(root, "dev", subjects=["virology"])
    assert {e.subject for e in ex} == {"virology"} and len(ex) == 2
    assert [e.id for e in load_mmlu(root, "dev", limit_per_subject=1)] == ["anatomy-dev-0", "virology-dev-0"]
    with pytest.raises(ValueError, match=r"unknown subject\(s\) \['anatomyy'\].*known: anatomy, virology"):
        load_mmlu(root, "dev", subjects=["anatomyy"])


@pytest.mark.parametrize("row, message", [
    ("Q,a,b,c,d,E\n", r"anatomy_test\.csv:3: answer 'E' is not one of A-D / 0-3"),
    ("Q,a,b,c,d,4\n", r"anatomy_test\.csv:3: answer '4' is not one of A-D / 0-3"),
    ("Q,a,b,c,0\n", r"anatomy_test\.csv:3: expected 6 columns \(question, 4 options, answer\), got 5"),
    ("Q,a,b,c,d,e,0\n", r"anatomy_test\.csv:3: expected 6 columns"),
    (",a,b,c,d,0\n", r"anatomy_test\.csv:3: question is empty"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    for text in (HEADER + "ok,a,b,c,d,1\n" + row, "ok,a,b,c,d,B\n\n" + row):  # both layouts; line 3 either way
        f = write(tmp_path / "anatomy_test.csv", text)
        with pytest.raises(ValueError, match=message):
            load_mmlu(f)


def test_missing_data_says_what_to_put_where(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dev/<subject>_dev\.csv"):
        load_mmlu(tmp_path / "nowhere", "dev")
    (tmp_path / "empty" / "dev").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"empty/dev/<subject>_dev\.csv"):
        load_mmlu(tmp_path / "empty", "dev")


def test_categories_table():
    assert len(SUBJECT_CATEGORIES) == 57
    assert Counter(SUBJECT_CATEGORIES.values()) == {"STEM": 18, "humanities": 13, "social sciences": 12, "other": 14}
    assert set(CATEGORIES) == {"STEM", "humanities", "social sciences", "other"}
    assert category_of("anatomy") == "other" and category_of("high school biology") == "STEM"
    assert category_of("professional_law") == "humanities" and category_of("econometrics") == "social sciences"
    assert category_of("cooking", default="cooking") == "cooking"
    with pytest.raises(ValueError, match="not an MMLU subject"):
        category_of("cooking")


def test_real_mmlu_dev():
    root = shared_data("mmlu")
    dev = load_mmlu(root, "dev")
    assert len(dev) == 285
    per_subject = Counter(e.subject for e in dev)
    assert len(per_subject) == 57 and set(per_subject.values()) == {5}
    assert set(per_subject) == set(SUBJECT_CATEGORIES)  # every subject in the data has a category
    assert {category_of(s) for s in per_subject} == set(CATEGORIES)
    assert all(len(e.options) == 4 and e.answers == ["ABCD"[e.label]] for e in dev)
    first = dev[0]  # abstract_algebra's first dev question; its answer is B in the original release
    assert first.id == "abstract_algebra-dev-0" and first.label == 1
    assert first.question.endswith("answers: (A) 0 (B) 1 (C) 2 (D) 3")
    assert [e.subject for e in dev] == sorted(e.subject for e in dev)
    assert len(load_mmlu(root, "test", subjects=["anatomy"], limit_per_subject=7)) == 7
