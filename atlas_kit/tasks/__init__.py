"""Tasks: the task protocol (:mod:`atlas_kit.tasks.base`), the built-in tasks
(:mod:`atlas_kit.tasks.builtin`) and their data: open QA, SQuAD files, multiple choice (MMLU),
KILT tasks, FEVER, masked spans, and the generated memorisation tasks.

Every loader returns :class:`QAExample` s (multiple choice: :class:`MCExample`, a subclass), so the
trainer handles every retrieve-and-read task through one path; a :class:`Task` says how its
examples are loaded, expanded for training, predicted and scored.
"""
from atlas_kit.tasks.base import Evaluation, Task, get_task, register_task, task_for_examples, task_names
from atlas_kit.tasks.fever import FEVER_LABELS, load_fever
from atlas_kit.tasks.kilt import kilt_pages, load_kilt
from atlas_kit.tasks.mmlu import SUBJECT_CATEGORIES, MCExample, category_of, format_mc_query, load_mmlu
from atlas_kit.tasks.qa import QAExample, load_qa
from atlas_kit.tasks.squad import load_squad, squad_open

__all__ = ["Task", "Evaluation", "get_task", "register_task", "task_names", "task_for_examples",
           "QAExample", "MCExample", "load_qa", "load_squad", "squad_open", "load_mmlu", "format_mc_query",
           "category_of", "SUBJECT_CATEGORIES", "load_kilt", "kilt_pages", "load_fever", "FEVER_LABELS"]
