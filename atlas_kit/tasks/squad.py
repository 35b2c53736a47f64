"""SQuAD-format files, and "SQuAD-open": every paragraph becomes a passage of an open corpus.

SQuAD-open is the small real open-domain setting used by atlas_kit's benchmarks: the corpus is
all paragraphs of the given files (titled by article), the questions are the answerable ones, and
a passage is relevant when it is the question's own paragraph.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from atlas_kit.passages import Passage, Passages
from atlas_kit.storage import read_json
from atlas_kit.tasks.qa import QAExample

__all__ = ["load_squad", "squad_open"]


def _paragraphs(path: Path):
    data = read_json(path)
    if not isinstance(data, dict) or "data" not in data:
        raise ValueError(f"{path}: not a SQuAD file (missing field 'data')")
    if not isinstance(data["data"], list):
        raise ValueError(f"{path}: field 'data' must be a list of articles")
    for a, article in enumerate(data["data"]):
        if not isinstance(article, dict):
            raise ValueError(f"{path}: data[{a}]: expected an object, got {type(article).__name__}")
        title = str(article.get("title", "")).replace("_", " ")
        for p, para in enumerate(article.get("paragraphs", [])):
            if not isinstance(para, dict) or not isinstance(para.get("context"), str):
                raise ValueError(f"{path}: data[{a}].paragraphs[{p}]: missing field 'context' (a string)")
            yield f"{path.stem}-{a}-{p}", title, para["context"], para.get("qas", [])


def _field(rec: Any, key: str, where: str) -> str:
    if not isinstance(rec, dict):
        raise ValueError(f"{where}: expected an object, got {type(rec).__name__}")
    value = rec.get(key)
    if value is None:
        raise ValueError(f"{where}: missing field {key!r}")
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise ValueError(f"{where}: field {key!r} must be a non-empty string, got {value!r}"[:300])
    return str(value)


def load_squad(path: str | os.PathLike, answerable_only: bool = True) -> list[QAExample]:
    """Questions of a SQuAD v1/v2 json file; ``gold_ids`` is the question's paragraph id.
    Errors name the file and the record (``data[a].paragraphs[p].qas[q]``) and field."""
    path = Path(path)
    out = []
    for pid, _, _, qas in _paragraphs(path):
        a, p = pid.rsplit("-", 2)[1:]
        if not isinstance(qas, list):
            raise ValueError(f"{path}: data[{a}].paragraphs[{p}]: field 'qas' must be a list")
        for q, qa in enumerate(qas):
            where = f"{path}: data[{a}].paragraphs[{p}].qas[{q}]"
            qid, question = _field(qa, "id", where), _field(qa, "question", where)
            raw_answers = qa.get("answers") or []
            if not isinstance(raw_answers, list):
                raise ValueError(f"{where}: field 'answers' must be a list")
            answers = list(dict.fromkeys(_field(x, "text", f"{where}.answers[{i}]") for i, x in enumerate(raw_answers)))
            if qa.get("is_impossible") or not answers:
                if answerable_only:
                    continue
            out.append(QAExample(qid, question, answers, [pid]))
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
