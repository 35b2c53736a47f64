"""MMLU (Hendrycks et al., 2021) as multiple-choice examples, in Atlas's query format.

Atlas shows the reader the question with its lettered options and trains/evaluates it to produce
the letter of the right option, so an :class:`MCExample` is a :class:`QAExample` whose
``question`` is that formatted query and whose single answer is the gold letter - the rest of
atlas_kit (retrieval, training, EM) works on it unchanged. The options, the gold index and the
subject are kept alongside for :mod:`atlas_kit.multiple_choice`, which re-formats permuted
copies (de-biasing) and aggregates accuracy per subject and per category.

Two csv layouts are read, detected per file: the original Hendrycks release (no header, answers
``A``-``D``) and the copy under ``shared/data/mmlu`` (a ``question,choice0,...,answer`` header and
answers ``0``-``3``).
"""
from __future__ import annotations

import csv
import logging
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from atlas_kit.tasks.qa import QAExample

__all__ = ["MCExample", "LETTERS", "format_mc_query", "SUBJECT_CATEGORIES", "CATEGORIES", "category_of", "load_mmlu"]

log = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
"""Option letters, in order; ``format_mc_query`` and the evaluation use a prefix of them."""

_SPLIT_SUFFIXES = ("dev", "test", "val")


@dataclass
class MCExample(QAExample):
    """A multiple-choice question.

    ``question`` is the formatted query (question + lettered options, see :func:`format_mc_query`)
    and ``answers == [gold letter]``, so code written for open QA trains and scores it as is; the
    raw question is in ``metadata["raw_question"]`` (permutations are re-formatted from it).
    """

    options: list[str] = field(default_factory=list)
    label: int = 0
    subject: str = ""

    @property
    def raw_question(self) -> str:
        """The question without its options (falls back to ``question`` for hand-built examples)."""
        return str(self.metadata.get("raw_question", self.question))


def format_mc_query(question: str, options: Sequence[str], letters: str = LETTERS) -> str:
    """Atlas's multiple-choice query: ``"{question} answers: (A) {o0} (B) {o1} ..."``.

    The reader's template adds the ``question:`` prefix, so it is not repeated here. Any number of
    options from 2 up to ``len(letters)``.
    """
    if len(options) < 2:
        raise ValueError(f"a multiple-choice question needs at least 2 options, got {len(options)}")
    if len(options) > len(letters):
        raise ValueError(f"{len(options)} options but only {len(letters)} letters ({letters!r})")
    shown = " ".join(f"({letters[i]}) {str(o).strip()}" for i, o in enumerate(options))
    return f"{question.strip()} answers: {shown}"


# The standard grouping of the 57 subjects (MMLU paper; hendrycks/test categories.py, where each
# subject has a subcategory - math, health, law, ... - and subcategories form 4 categories; the
# last one is called "other (business, health, misc.)" there).
_GROUPS: dict[str, tuple[str, ...]] = {
    "STEM": (
        "abstract_algebra", "astronomy", "college_biology", "college_chemistry", "college_computer_science",
        "college_mathematics", "college_physics", "computer_security", "conceptual_physics",
        "electrical_engineering", "elementary_mathematics", "high_school_biology", "high_school_chemistry",
        "high_school_computer_science", "high_school_mathematics", "high_school_physics", "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history", "high_school_world_history",
        "international_law", "jurisprudence", "logical_fallacies", "moral_disputes", "moral_scenarios", "philosophy",
        "prehistory", "professional_law", "world_religions",
    ),
    "social sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics", "high_school_macroeconomics",
        "high_school_microeconomics", "high_school_psychology", "human_sexuality", "professional_psychology",
        "public_relations", "security_studies", "sociology", "us_foreign_policy",
    ),
    "other": (
        "anatomy", "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition", "professional_accounting",
        "professional_medicine", "virology",
    ),
}

SUBJECT_CATEGORIES: dict[str, str] = {s: cat for cat, subjects in _GROUPS.items() for s in subjects}
"""All 57 MMLU subjects (file-name spelling) -> "STEM", "humanities", "social sciences" or "other"."""

CATEGORIES: tuple[str, ...] = tuple(_GROUPS)


def _subject_key(subject: str) -> str:
    return subject.strip().lower().replace(" ", "_").replace("-", "_")


def category_of(subject: str, default: str | None = None) -> str:
    """The MMLU category of ``subject`` (``"high_school_biology"`` or ``"high school biology"``).

    An unknown subject returns ``default`` when one is given (evaluation of non-MMLU data passes
    one so it does not crash) and raises ``ValueError`` otherwise, so a typo is not silently
    counted as "other".
    """
    cat = SUBJECT_CATEGORIES.get(_subject_key(subject))
    if cat is not None:
        return cat
    if default is not None:
        return default
    raise ValueError(f"{subject!r} is not an MMLU subject (known: {', '.join(sorted(SUBJECT_CATEGORIES))})")


# ---------------------------------------------------------------------------------------- loading
def _subject_and_split(path: Path) -> tuple[str, str | None]:
    """``anatomy_test.csv`` -> ("anatomy", "test"); a csv without a split suffix -> (stem, None)."""
    stem = path.stem
    for split in _SPLIT_SUFFIXES:
        if stem.endswith(f"_{split}"):
            return stem[: -len(split) - 1], split
    return stem, None


def _is_header(row: Sequence[str]) -> bool:
    """The local layout's header: ``question,choice0,...,choiceN,answer``."""
    cells = [c.strip().lower() for c in row]
    return (len(cells) >= 4 and cells[0] == "question" and cells[-1] == "answer"
            and all(c == f"choice{i}" for i, c in enumerate(cells[1:-1])))


def _parse_answer(value: str, n_options: int, where: str) -> int:
    """``"2"`` or ``"C"`` -> 2; anything else is a ValueError naming the file and line."""
    v = value.strip()
    if v.isdigit() and int(v) < n_options:
        return int(v)
    if len(v) == 1 and v.upper() in LETTERS[:n_options]:
        return LETTERS.index(v.upper())
    last = n_options - 1
    raise ValueError(f"{where}: answer {value!r} is not one of {LETTERS[0]}-{LETTERS[last]} / 0-{last}")


def _bad_utf8_line(path: Path) -> int:
    """The first line of ``path`` that is not valid UTF-8 (the csv reader decodes in chunks)."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 1


def _read_csv(path: Path, subject: str, split: str) -> list[MCExample]:
    """Every row of one subject file, in file order. Line numbers in errors are those where the
    record starts (a quoted field may span several lines)."""
    out: list[MCExample] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        n_cols: int | None = None
        header = False
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise ValueError(f"{path}:{start}: malformed csv ({err})") from err
            except UnicodeDecodeError as err:
                raise ValueError(f"{path}:{_bad_utf8_line(path)}: not UTF-8 ({err.reason})") from None
            if not row or all(not c.strip() for c in row):
                continue  # blank line (e.g. a trailing newline)
            if n_cols is None:
                if _is_header(row):
                    n_cols, header = len(row), True
                    continue
                n_cols = 6  # Hendrycks layout: question, 4 options, answer
            where = f"{path}:{start}"
            if len(row) != n_cols:
                raise ValueError(f"{where}: expected {n_cols} columns (question, {n_cols - 2} options, answer), "
                                 f"got {len(row)}")
            question, options, answer = row[0], [o.strip() for o in row[1:-1]], row[-1]
            if not question.strip():
                raise ValueError(f"{where}: question is empty")
            label = _parse_answer(answer, len(options), where)
            idx = len(out)
            out.append(MCExample(
                id=f"{subject}-{split}-{idx}",
                question=format_mc_query(question, options),
                answers=[LETTERS[label]],
                metadata={"raw_question": question.strip(), "split": split, "line": start,
                          "layout": "header" if header else "hendrycks"},
                options=options,
                label=label,
                subject=subject,
            ))
    return out


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"MMLU data not found at {path}: put the subject files as {path}/dev/<subject>_dev.csv and "
        f"{path}/test/<subject>_test.csv (e.g. the data/dev and data/test folders of hendrycks/test's "
        "data.tar, or shared/data/mmlu), or pass one split folder or one csv file"
    )


def _files(path: Path, split: str | None) -> list[Path]:
    """The csv files ``path`` designates (a data folder + split, a split folder, or one file)."""
    if path.is_file():
        if path.suffix.lower() != ".csv":
            raise ValueError(f"{path}: MMLU files are csv files (<subject>_<split>.csv)")
        file_split = _subject_and_split(path)[1]
        if split is not None and file_split is not None and file_split != split:
            raise ValueError(f"{path} is a {file_split!r} file but split={split!r} was asked for")
        return [path]
    if not path.is_dir():
        raise _missing(path)
    folder = path
    if split is not None and (path / split).is_dir():
        folder = path / split
    pattern = f"*_{split}.csv" if split is not None else "*.csv"
    files = sorted(folder.glob(pattern), key=lambda p: p.name)
    if files:
        return files
    subdirs = sorted(p.name for p in path.iterdir() if p.is_dir() and p.name in _SPLIT_SUFFIXES)
    if split is None and subdirs:
        raise ValueError(f"{path} holds the splits {subdirs}: pass split= one of them")
    if split is not None:
        raise FileNotFoundError(
            f"no {pattern} files in {folder}: put the {split!r} split as {path}/{split}/<subject>_{split}.csv"
        )
    raise _missing(path)


def load_mmlu(
    path: str | os.PathLike,
    split: str | None = None,
    subjects: Iterable[str] | None = None,
    limit_per_subject: int | None = None,
) -> list[MCExample]:
    """Read MMLU csv files into :class:`MCExample` s.

    Args:
        path: a data folder holding ``dev/`` and ``test/`` (then ``split`` picks
            ``path/split/*_{split}.csv``), one split folder, or one csv file.
        split: ``"dev"``, ``"test"`` (or ``"val"``); for a split folder it filters by file suffix.
        subjects: keep only these subjects (file names minus ``_{split}.csv``); an unknown one is a
            ValueError listing the subjects found, so a typo is not an empty evaluation.
        limit_per_subject: keep the first N rows of each subject (quick runs; 5-shot pools).

    Both csv layouts are accepted (header + ``0``-``3`` answers, or no header + ``A``-``D``).
    Order is deterministic: subjects sorted by file name, rows in file order. Ids are
    ``f"{subject}-{split}-{row}"`` with ``row`` the 0-based data row in its file.
    """
    root = Path(path)
    files = _files(root, split)
    by_subject: dict[str, list[Path]] = {}
    for f in files:
        by_subject.setdefault(_subject_and_split(f)[0], []).append(f)
    wanted: list[str] | None = None
    if subjects is not None:
        wanted = [subjects] if isinstance(subjects, str) else list(subjects)
        unknown = [s for s in wanted if s not in by_subject]
        if unknown:
            raise ValueError(f"unknown subject(s) {unknown} in {root}; known: {', '.join(sorted(by_subject))}")
    out: list[MCExample] = []
    for subject in sorted(by_subject):
        if wanted is not None and subject not in wanted:
            continue
        rows: list[MCExample] = []
        for f in by_subject[subject]:
            file_split = _subject_and_split(f)[1] or split or "all"
            rows.extend(_read_csv(f, subject, file_split))
        if limit_per_subject is not None:
            rows = rows[: max(int(limit_per_subject), 0)]
        out.extend(rows)
    if not out:
        raise ValueError(f"{root}: no MMLU examples (split={split!r}, subjects={wanted})")
    unknown_cats = sorted({e.subject for e in out if _subject_key(e.subject) not in SUBJECT_CATEGORIES})
    if unknown_cats:
        log.info("subjects outside MMLU's 57 (no category): %s", ", ".join(unknown_cats))
    log.info("loaded %d MMLU examples over %d subjects from %s (split=%s)", len(out),
             len({e.subject for e in out}), root, split)
    return out
