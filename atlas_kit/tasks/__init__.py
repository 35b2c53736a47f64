"""Task data: open QA, SQuAD files, multiple choice (MMLU), KILT tasks and FEVER.

Every loader returns :class:`QAExample` s (multiple choice: :class:`MCExample`, a subclass), so the
trainer and :mod:`atlas_kit.evaluation` handle every task through one path.
"""
from atlas_kit.tasks.fever import FEVER_LABELS, load_fever
from atlas_kit.tasks.kilt import kilt_pages, load_kilt
from atlas_kit.tasks.mmlu import SUBJECT_CATEGORIES, MCExample, category_of, format_mc_query, load_mmlu
from atlas_kit.tasks.qa import QAExample, load_qa
from atlas_kit.tasks.squad import load_squad, squad_open

__all__ = ["QAExample", "MCExample", "load_qa", "load_squad", "squad_open", "load_mmlu", "format_mc_query",
           "category_of", "SUBJECT_CATEGORIES", "load_kilt", "kilt_pages", "load_fever", "FEVER_LABELS"]
