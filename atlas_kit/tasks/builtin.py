"""The built-in tasks: open QA, multiple choice (MMLU), KILT, FEVER and masked-span pre-training.

Each is a :class:`~atlas_kit.tasks.base.Task` whose fields are its recipe options:

* ``qa`` - open-domain QA (``format: qa`` NQ-open / TriviaQA / Atlas / FlashRAG jsonl, or
  ``format: squad`` SQuAD json): SQuAD-normalised EM/F1, recall@k over gold passage ids when known
  and answer recall@k (the answer string in a top-k passage, DPR's measure) always;
* ``mmlu`` (alias ``mc``) - multiple choice: accuracy by generation, by option likelihood and
  de-biased over cyclic permutations (``debias``), per subject and per category; ``permutations:
  cyclic`` trains on every cyclic option order (Atlas's MMLU training);
* ``kilt`` - any KILT task's jsonl: EM/F1/accuracy/ROUGE-L, page-level R-Precision and recall@k,
  the KILT scores, and predictions in KILT's submission format;
* ``fever`` - FEVER claims (original or KILT jsonl), 3-way or ``labels: [SUPPORTS, REFUTES]``;
  scored as a KILT task (label accuracy, evidence pages, KILT-accuracy);
* ``mlm`` - masked-span pre-training examples cut from a corpus file (any passage format); scored
  as QA on the masked spans.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Sequence

from atlas_kit.kilt_submission import submission_records
from atlas_kit.metrics import answer_recall_at_k, qa_scores, recall_at_k
from atlas_kit.multiple_choice import cyclic_permutations, evaluate_multiple_choice, summarize_records
from atlas_kit.passages import load_passages
from atlas_kit.provenance import kilt_scores
from atlas_kit.tasks.base import Task, recall_ks, register_task
from atlas_kit.tasks.fever import FEVER_LABELS, load_fever
from atlas_kit.tasks.kilt import load_kilt
from atlas_kit.tasks.mlm import mlm_examples
from atlas_kit.tasks.mmlu import load_mmlu
from atlas_kit.tasks.qa import load_qa
from atlas_kit.tasks.squad import load_squad

__all__ = ["OpenQA", "MultipleChoice", "KILT", "FEVER", "MaskedSpans"]


class _GeneratedAnswers(Task):
    """Scoring shared by tasks whose prediction is a generated answer string."""

    def score(self, examples: list[Any], records: list[dict[str, Any]], hits: Sequence[Any], k: int) -> dict[str, Any]:
        metrics = dict(qa_scores([r["prediction"] for r in records], [e.answers for e in examples]))
        ks = recall_ks(k) if k > 0 else []
        if ks and all(e.gold_ids for e in examples):
            metrics.update(recall_at_k([h.ids for h in hits], [e.gold_ids for e in examples], ks=ks))
        if ks:
            metrics.update(answer_recall_at_k([[p.text for p in h] for h in hits], [e.answers for e in examples], ks=ks))
        return metrics


class OpenQA(_GeneratedAnswers):
    """Open-domain QA: generate the answer from the retrieved passages."""

    name = "qa"
    format: Literal["qa", "squad"] = "qa"

    def read(self, path: Path, **options: Any) -> list[Any]:
        return load_squad(path, **options) if self.format == "squad" else load_qa(path, **options)


class MultipleChoice(Task):
    """Multiple choice in Atlas's lettered format (:mod:`atlas_kit.multiple_choice`)."""

    name = "mmlu"
    debias: bool = True  # also score every cyclic permutation of the options (Atlas section 4.5)
    permutations: Literal["cyclic", "none"] = "none"  # training examples: every cyclic option order, or as read

    def read(self, path: Path, **options: Any) -> list[Any]:
        return load_mmlu(path, **options)

    def load_hf(self, spec: str, **options: Any) -> list[Any]:
        raise ValueError(f"{spec}: task 'mmlu' reads local csv files only (export the dataset to files first)")

    def training_examples(self, examples: Sequence[Any]) -> list[Any]:
        if self.permutations == "cyclic":
            return [p for e in examples for p in cyclic_permutations(e)]
        return list(examples)

    def predict(self, reader: Any, examples: list[Any], passages: list[list[Any]], batch_size: int) -> list[dict[str, Any]]:
        _, records = evaluate_multiple_choice(reader, examples, passages, debias=self.debias, batch_size=batch_size)
        return records

    def score(self, examples: list[Any], records: list[dict[str, Any]], hits: Sequence[Any], k: int) -> dict[str, Any]:
        return summarize_records(records)

    def retrieval_scores(self, examples: list[Any], hits: Sequence[Any], ks: Sequence[int]) -> dict[str, Any]:
        return {}  # an option letter is not a string to find in a passage


class KILT(Task):
    """A KILT task (downstream + provenance); predictions also in KILT's submission format."""

    name = "kilt"

    def read(self, path: Path, **options: Any) -> list[Any]:
        return load_kilt(path, **options)

    def predict(self, reader: Any, examples: list[Any], passages: list[list[Any]], batch_size: int) -> list[dict[str, Any]]:
        records = super().predict(reader, examples, passages, batch_size)
        for rec, sub in zip(records, submission_records(examples, [r["prediction"] for r in records], passages)):
            rec["kilt"] = sub
        return records

    def score(self, examples: list[Any], records: list[dict[str, Any]], hits: Sequence[Any], k: int) -> dict[str, Any]:
        # hits are matched to provenance pages by wikipedia_id (metadata) or title
        pages = [list(h) for h in hits] if k > 0 else None
        return dict(kilt_scores([r["prediction"] for r in records], examples, retrieved_pages=pages,
                                ks=tuple(recall_ks(k)) if k > 0 else (1,), skip_without_provenance=True))

    def retrieval_scores(self, examples: list[Any], hits: Sequence[Any], ks: Sequence[int]) -> dict[str, Any]:
        return kilt_scores(None, examples, retrieved_pages=[list(h) for h in hits], ks=tuple(ks),
                           skip_without_provenance=True)

    def add_retrieval_records(self, records: list[dict[str, Any]], examples: list[Any], hits: Sequence[Any]) -> None:
        for rec, sub in zip(records, submission_records(examples, None, hits)):
            rec["kilt"] = sub


class FEVER(KILT):
    """FEVER fact verification: original FEVER jsonl or KILT's; ``labels`` keeps a subset of
    SUPPORTS / REFUTES / NOT ENOUGH INFO (KILT's task is the two-way one)."""

    name = "fever"
    labels: tuple[str, ...] = FEVER_LABELS

    def read(self, path: Path, **options: Any) -> list[Any]:
        return load_fever(path, labels=self.labels, **options)


class MaskedSpans(_GeneratedAnswers):
    """Masked-span pre-training (Atlas's MLM task): T5-style sentinel targets cut from the
    passages of a corpus file; the source passage is never retrieved for its own query."""

    name = "mlm"
    mask_ratio: float = 0.15
    mean_span: float = 3.0
    max_words: int = 128
    seed: int = 0

    def read(self, path: Path, **options: Any) -> list[Any]:
        return mlm_examples(load_passages(path), seed=self.seed, mask_ratio=self.mask_ratio,
                            mean_span=self.mean_span, max_words=self.max_words, **options)


register_task(OpenQA)
register_task(MultipleChoice, "mc")
register_task(KILT)
register_task(FEVER)
register_task(MaskedSpans)
