"""Task data: QA examples, SQuAD-style files, and (later) multiple choice, KILT and FEVER."""
from atlas_kit.tasks.qa import QAExample, load_qa
from atlas_kit.tasks.squad import load_squad, squad_open

__all__ = ["QAExample", "load_qa", "load_squad", "squad_open"]
