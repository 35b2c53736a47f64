"""A long-context QA reader on RMT: the question with many passages read as one long input, segment
by segment with memory, then the answer generated - the alternative to Fusion-in-Decoder that the
RMT papers point to, built so the two can be compared on the same questions and token budget.

FiD (:class:`atlas_kit.reader.Reader`) encodes each ``question: Q title: T context: X`` input apart
(``k`` inputs of at most ``text_maxlength`` tokens) and lets the decoder attend to all of them.
:class:`RMTReader` reads *exactly those tokens* - the same ``k`` inputs, formatted and truncated by
the same :meth:`Reader.tokenize` - concatenated in retrieval order, through an encoder-decoder
:class:`~atlas_kit.memory.rmt.RMT`: ``[mem x M] segment`` into the T5 encoder, segment after
segment, and the decoder attends to the last segment's states (its memory included) only. So the
token budget is identical; the difference is how the passages are combined (FiD: in the decoder's
cross-attention over all encoder states; RMT: in ``M`` memory vectors carried through the
passages in order). With ``segment_size = text_maxlength`` each encoder call is as wide as one of
FiD's (plus ``M``), and cost grows linearly with the number of passages for both.

Because each FiD input repeats the question, every segment of the RMT input holds (most of) it too,
so the memory can keep what is relevant to that question as it reads; the last segment always ends
with the last passage's input, which starts with the question.

The reader keeps the :class:`Reader` it was built from (tokenizer, template, lengths, and the T5,
which it shares with the RMT), so :meth:`loss` and :meth:`generate` take the same arguments as
the FiD reader's and the FiD training code (``atlas_kit.demo.train_reader_curriculum``) trains
either one with the same batches.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch.nn.utils.rnn import pad_sequence
from tqdm.auto import tqdm

from atlas_kit.memory.rmt import RMT
from atlas_kit.reader import Reader
from atlas_kit.storage import atomic_dir, atomic_write_json, read_json

__all__ = ["RMTReader"]

log = logging.getLogger(__name__)

SETTINGS_NAME = "rmt_reader.json"
MEMORY_NAME = "rmt_memory.safetensors"


class RMTReader(torch.nn.Module):
    """A FiD :class:`Reader`'s T5 read as an encoder-decoder RMT over the concatenated passages.

    Args:
        reader: the FiD reader whose tokenizer, template, ``text_maxlength`` (per passage, as in
            FiD) and ``answer_maxlength`` are used; its T5 becomes the RMT backbone (shared).
        num_mem_tokens: ``M`` memory vectors.
        segment_size: tokens per encoder segment (default: the reader's ``text_maxlength``).
        bptt_depth: segments the gradient flows back through the memory (None = all).
        seed: the initial memory's seed.
    """

    def __init__(self, reader: Reader, num_mem_tokens: int = 10, segment_size: int | None = None,
                 bptt_depth: int | None = None, seed: int = 0) -> None:
        super().__init__()
        self.reader = reader
        self.rmt = RMT(reader.model, "encoder-decoder", num_mem_tokens=num_mem_tokens,
                       segment_size=segment_size or reader.text_maxlength, bptt_depth=bptt_depth, seed=seed)

    @property
    def device(self) -> torch.device:
        return self.rmt.device

    @property
    def tokenizer(self) -> Any:
        return self.reader.tokenizer

    def settings(self) -> dict[str, Any]:
        s = self.rmt.settings()
        return {"num_mem_tokens": s["num_mem_tokens"], "segment_size": s["segment_size"], "bptt_depth": s["bptt_depth"]}

    # ------------------------------------------------------------------ inputs
    def tokenize(self, questions: Sequence[str], passages: Sequence[Sequence[Any]]) -> dict[str, torch.Tensor]:
        """``input_ids`` / ``attention_mask`` [B, T]: each question's FiD inputs (the FiD reader's
        own :meth:`Reader.tokenize`: same format, same truncation) without their padding, one after
        the other in passage order, right-padded to the batch's longest."""
        fid = self.reader.tokenize(questions, passages)
        ids, mask = fid["input_ids"], fid["attention_mask"].bool()
        rows = [ids[b][mask[b]] for b in range(ids.shape[0])]
        pad = self.tokenizer.pad_token_id
        out_ids = pad_sequence(rows, batch_first=True, padding_value=pad if pad is not None else 0)
        lengths = torch.tensor([len(r) for r in rows])
        out_mask = (torch.arange(out_ids.shape[1])[None] < lengths[:, None]).long()
        return {"input_ids": out_ids, "attention_mask": out_mask}

    # ------------------------------------------------------------------ model
    def loss(self, questions: Sequence[str], passages: Sequence[Sequence[Any]], answers: Sequence[str]) -> torch.Tensor:
        """Mean token cross-entropy of the answers (teacher forcing), as :meth:`Reader.loss`."""
        if not (len(questions) == len(passages) == len(answers)):
            raise ValueError(f"{len(questions)} questions, {len(passages)} passage lists, {len(answers)} answers")
        batch = self.tokenize(questions, passages)
        labels = self.reader.tokenize_answers(answers).to(self.device)
        return self.rmt(batch["input_ids"], batch["attention_mask"], labels=labels).loss

    def generate(self, questions: Sequence[str], passages: Sequence[Sequence[Any]], max_length: int | None = None,
                 num_beams: int = 1, batch_size: int = 16, show_progress: bool = False,
                 reset_memory: bool = False) -> list[str]:
        """Answers for every question (greedy or beam), in batches of ``batch_size``; the same
        arguments as :meth:`Reader.generate`. ``reset_memory``: every segment starts from the
        initial memory (the ablation: only the last segment's tokens reach the answer)."""
        if len(questions) != len(passages):
            raise ValueError(f"{len(questions)} questions but {len(passages)} passage lists")
        out: list[str] = []
        starts = range(0, len(questions), batch_size)
        for s in tqdm(starts, desc="generate (rmt)", disable=not show_progress):
            batch = self.tokenize(questions[s : s + batch_size], passages[s : s + batch_size])
            with warnings.catch_warnings():  # newer transformers call the cache argument `cache`
                warnings.filterwarnings("ignore", message=".*past_key_values.*deprecated", category=FutureWarning)
                ids = self.rmt.generate(batch["input_ids"], batch["attention_mask"], reset_memory=reset_memory,
                                        max_new_tokens=max_length or self.reader.answer_maxlength, num_beams=num_beams,
                                        do_sample=False, **self.reader.generation_cache_kwargs())
            out.extend(t.strip() for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True))
        return out

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """``reader/`` (the FiD reader's own folder: T5, tokenizer, reader settings), the memory
        (safetensors) and the RMT settings, written atomically."""
        with atomic_dir(folder) as tmp:
            self.reader.save_pretrained(tmp / "reader")
            save_file({"memory": self.rmt.memory.detach().contiguous()}, str(tmp / MEMORY_NAME))
            atomic_write_json(tmp / SETTINGS_NAME, self.settings())

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "RMTReader":
        folder = Path(folder)
        settings = read_json(folder / SETTINGS_NAME)
        unknown = set(settings) - {"num_mem_tokens", "segment_size", "bptt_depth"}
        if unknown:
            raise ValueError(f"{folder / SETTINGS_NAME}: unknown keys {sorted(unknown)}")
        model = cls(Reader.from_pretrained(folder / "reader"), **settings)
        memory = load_file(str(folder / MEMORY_NAME))["memory"]
        if tuple(memory.shape) != tuple(model.rmt.memory.shape):
            raise ValueError(f"{folder / MEMORY_NAME}: memory of shape {tuple(memory.shape)}, the settings say "
                             f"{tuple(model.rmt.memory.shape)}")
        with torch.no_grad():
            model.rmt.memory.copy_(memory)
        return model
