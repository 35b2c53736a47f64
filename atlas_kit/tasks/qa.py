"""Open-domain QA examples: ``{"question", "answers"}`` jsonl and its common variants."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlas_kit.storage import iter_jsonl

__all__ = ["QAExample", "load_qa"]


@dataclass
class QAExample:
    """A question, its acceptable answers, and (when known) the ids of passages that hold the answer."""

    id: str
    question: str
    answers: list[str]
    gold_ids: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str:
        """The answer the reader is trained to generate (the first one)."""
        return self.answers[0] if self.answers else ""


_ANSWER_KEYS = ("answers", "answer", "golden_answers", "target")
_QUESTION_KEYS = ("question", "query", "input", "context")


def _clean_question(text: str) -> str:
    # TriviaQA (llm-foundry) stores "Question: ...\nAnswer:"
    text = text.strip()
    if text.startswith("Question:"):
        text = text[len("Question:"):]
    if text.endswith("Answer:"):
        text = text[: -len("Answer:")]
    return text.strip()


def _text(value: Any, where: str, key: str, numbers: bool = True) -> str:
    """A non-blank string (numbers too, when ``numbers``: answers and ids are in some sets)."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float) if numbers else str):
        raise ValueError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    text = str(value)
    if not text.strip():
        raise ValueError(f"{where}: field {key!r} is empty")
    return text


def _strings(value: Any, where: str, key: str) -> list[str]:
    """A list of strings; one string is a list of one (never split into characters)."""
    if value is None:
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return [_text(value, where, key)]
    if not isinstance(value, list):
        raise ValueError(f"{where}: field {key!r} must be a list of strings, got {type(value).__name__}")
    return [_text(v, where, f"{key}[{i}]") for i, v in enumerate(value)]


def load_qa(path: str | os.PathLike, limit: int | None = None) -> list[QAExample]:
    """Read QA jsonl: NQ-open ``{"question","answer":[...]}``, Atlas ``{"question","answers"}``,
    FlashRAG ``{"id","question","golden_answers"}``, TriviaQA ``{"context","answer","aliases"}``.

    Errors name the file, line and field: a missing field, a wrong type (``question: 42``, a dict
    where a list belongs), blank text. A string where a list belongs (``"aliases": "Bob"``) is one
    item, never split into characters. UTF-8 with or without a BOM; ``.gz`` is read transparently.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"QA file not found: {path}")
    out: list[QAExample] = []
    for lineno, rec in iter_jsonl(path):
        qkey = next((k for k in _QUESTION_KEYS if k in rec), None)
        akey = next((k for k in _ANSWER_KEYS if k in rec), None)
        if qkey is None:
            raise ValueError(f"{path}:{lineno}: missing field 'question'")
        if akey is None:
            raise ValueError(f"{path}:{lineno}: missing field 'answers'")
        where = f"{path}:{lineno}"
        answers = _strings(rec[akey], where, akey)
        for alias in _strings(rec.get("aliases"), where, "aliases"):
            if alias not in answers:
                answers.append(alias)
        gold = _strings(rec.get("gold_ids"), where, "gold_ids")
        question = _clean_question(_text(rec[qkey], where, qkey, numbers=False))
        if not question:
            raise ValueError(f"{where}: field {qkey!r} is empty")
        qid = _text(rec["id"], where, "id") if "id" in rec else f"{path.stem}-{lineno}"
        meta = {k: v for k, v in rec.items() if k not in {qkey, akey, "id", "gold_ids", "aliases"}}
        out.append(QAExample(qid, question, answers, gold, meta))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: no examples")
    return out
