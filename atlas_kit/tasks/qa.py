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


def load_qa(path: str | os.PathLike, limit: int | None = None) -> list[QAExample]:
    """Read QA jsonl: NQ-open ``{"question","answer":[...]}``, Atlas ``{"question","answers"}``,
    FlashRAG ``{"id","question","golden_answers"}``, TriviaQA ``{"context","answer","aliases"}``.

    Errors name the file, line and the missing field.
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
        answers = rec[akey]
        answers = [answers] if isinstance(answers, str) else list(answers)
        for alias in rec.get("aliases", []) or []:
            if alias not in answers:
                answers.append(alias)
        gold = rec.get("gold_ids") or []
        meta = {k: v for k, v in rec.items() if k not in {qkey, akey, "id", "gold_ids", "aliases"}}
        out.append(QAExample(str(rec.get("id", f"{path.stem}-{lineno}")), _clean_question(rec[qkey]),
                             [str(a) for a in answers], [str(g) for g in gold], meta))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise ValueError(f"{path}: no examples")
    return out
