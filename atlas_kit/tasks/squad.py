"""SQuAD-format files, and "SQuAD-open": every paragraph becomes a passage of an open corpus.

SQuAD-open is the small real open-domain setting used by atlas_kit's benchmarks: the corpus is
all paragraphs of the given files (titled by article), the questions are the answerable ones, and
a passage is relevant when it is the question's own paragraph.
"""
from __future__ import annotations

import os
from pathlib import Path

from atlas_kit.passages import Passage, Passages
from atlas_kit.storage import read_json
from atlas_kit.tasks.qa import QAExample

__all__ = ["load_squad", "squad_open"]


def _paragraphs(path: Path):
    data = read_json(path)
    if "data" not in data:
        raise ValueError(f"{path}: not a SQuAD file (missing field 'data')")
    for a, article in enumerate(data["data"]):
        title = str(article.get("title", "")).replace("_", " ")
        for p, para in enumerate(article.get("paragraphs", [])):
            if "context" not in para:
                raise ValueError(f"{path}: data[{a}].paragraphs[{p}]: missing field 'context'")
            yield f"{path.stem}-{a}-{p}", title, para["context"], para.get("qas", [])


def load_squad(path: str | os.PathLike, answerable_only: bool = True) -> list[QAExample]:
    """Questions of a SQuAD v1/v2 json file; ``gold_ids`` is the question's paragraph id."""
    path = Path(path)
    out = []
    for pid, _, _, qas in _paragraphs(path):
        for qa in qas:
            answers = list(dict.fromkeys(a["text"] for a in qa.get("answers", [])))
            if qa.get("is_impossible") or not answers:
                if answerable_only:
                    continue
            out.append(QAExample(str(qa["id"]), qa["question"], answers, [pid]))
    return out


def squad_open(*paths: str | os.PathLike, questions_from: int = 0) -> tuple[Passages, list[QAExample]]:
    """(corpus of every paragraph of ``paths``, answerable questions of ``paths[questions_from]``)."""
    if not paths:
        raise ValueError("squad_open needs at least one SQuAD file")
    records = []
    for path in paths:
        for pid, title, context, _ in _paragraphs(Path(path)):
            records.append(Passage(pid, title, context))
    return Passages.from_records(records), load_squad(paths[questions_from])
