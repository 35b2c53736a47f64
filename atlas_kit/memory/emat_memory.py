"""``QAMemory``: EMAT's key-value memory of question-answer pairs, on a :class:`KVMemory`.

Each slot is one QA pair: its search key (the normalised mean key vector, ``d_model`` wide) is the
``KVMemory`` key; its value row holds the raw key tokens and the value tokens (``2 x P x d_model``
floats), which the encoder prepends / adds when the slot is read. The pairs' texts are kept too:
training needs them to re-encode retrieved slots with gradients, to find weakly labelled positives
(slots whose answer matches the gold answer) and to re-encode the whole memory on a schedule.

On disk a memory is an index folder (``manifest.json`` with ``kind: emat_memory``, the encoder
fingerprint and sizes; ``pairs.jsonl``; ``kv/``, the ``KVMemory`` folder), written to a temporary
folder and published atomically, so :class:`~atlas_kit.index.store.IndexStore` versions it and a
live model swaps one memory for another (:meth:`atlas_kit.Atlas.swap_memory`). A memory encoded by
other weights than the model's is refused (``IndexMismatchError``) unless ``allow_mismatch``.

Pairs come from PAQ's jsonl ``{"question", "answer"}`` (answer a string or a list: the first one is
used, as EMAT does) or any QA format the library reads (``format="qa" | "squad" | "kilt"``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch

from atlas_kit.index.base import FORMAT_VERSION, MANIFEST, IndexMismatchError, now_iso, read_manifest
from atlas_kit.memory.emat import EMAT, Slots
from atlas_kit.memory.kv_memory import KVMemory, MemoryHits
from atlas_kit.storage import atomic_dir, atomic_write_json, iter_jsonl

__all__ = ["QAMemory", "load_qa_pairs"]

log = logging.getLogger(__name__)

PAIRS = "pairs.jsonl"


def load_qa_pairs(path: str | os.PathLike, format: str = "qa", limit: int | None = None) -> list[tuple[str, str]]:
    """(question, answer) pairs from a QA file: PAQ / NQ-open / Atlas jsonl (``format="qa"``, via
    :func:`atlas_kit.tasks.qa.load_qa`), SQuAD json (``"squad"``) or KILT jsonl (``"kilt"``). The
    first answer of each question is its value, as in EMAT; questions without an answer are an error
    naming the file and line (the loaders' own checks)."""
    if format == "qa":
        from atlas_kit.tasks.qa import load_qa

        examples = load_qa(path, limit=limit)
    elif format == "squad":
        from atlas_kit.tasks.squad import load_squad

        examples = load_squad(path)[:limit]
    elif format == "kilt":
        from atlas_kit.tasks.kilt import load_kilt

        examples = load_kilt(path, limit=limit)
    else:
        raise ValueError(f"unknown QA format {format!r} (known: qa, squad, kilt)")
    pairs = [(ex.question, ex.target) for ex in examples if ex.answers]
    if len(pairs) < len(examples):
        log.warning("%s: %d question(s) without an answer left out of the memory", path, len(examples) - len(pairs))
    return pairs


class QAMemory:
    """QA pairs and their EMAT keys and values.

    Build with :meth:`build` (from pairs or a file) or :meth:`load`; :meth:`slots` is what
    :meth:`EMAT.encode` calls at the key layer.
    """

    kind = "emat_memory"
    needs_embeddings = False

    def __init__(self, questions: Sequence[str], answers: Sequence[str], kv: KVMemory, fingerprint: str,
                 prefix_length: int, d_model: int, manifest: dict[str, Any] | None = None) -> None:
        if len(questions) != len(answers) or len(questions) != len(kv):
            raise ValueError(f"{len(questions)} questions, {len(answers)} answers, {len(kv)} memory entries")
        if kv.dim != d_model or kv.value_dim != 2 * prefix_length * d_model:
            raise ValueError(f"KVMemory of dim {kv.dim}/{kv.value_dim} does not fit prefix_length={prefix_length}, "
                             f"d_model={d_model}")
        self.questions, self.answers = list(questions), list(answers)
        self.kv, self.fingerprint = kv, fingerprint
        self.prefix_length, self.d_model = int(prefix_length), int(d_model)
        self.manifest: dict[str, Any] = dict(manifest or {"created": now_iso()})
        self.path: str | None = None
        self.ref: str | None = None

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, pairs: Iterable[tuple[str, str]] | str | os.PathLike, emat: EMAT, backend: str = "Flat",
              format: str = "qa", batch_size: int = 256, show_progress: bool = False,
              search_params: dict[str, Any] | None = None) -> "QAMemory":
        """Encode every pair with ``emat`` (keys at its key layer, values at its value layer) into a
        ``KVMemory`` with ``backend`` (``"Flat"`` exact MIPS, or a FAISS factory string such as
        ``"IVF1024,Flat"`` / ``"HNSW32"``; EMAT used HNSW with efSearch 128)."""
        if isinstance(pairs, (str, os.PathLike)):
            pairs = load_qa_pairs(pairs, format=format)
        pairs = list(pairs)
        if not pairs:
            raise ValueError("a memory needs at least one question-answer pair")
        questions = [str(q) for q, _ in pairs]
        answers = [str(a) for _, a in pairs]
        kv = cls._encode(questions, answers, emat, backend, batch_size, show_progress, search_params)
        memory = cls(questions, answers, kv, emat.fingerprint(), emat.prefix_length, emat.d_model)
        log.info("built an EMAT memory of %d QA pairs (%s, %d bytes per slot)", len(memory), backend, memory.bytes_per_slot)
        return memory

    @staticmethod
    def _encode(questions: list[str], answers: list[str], emat: EMAT, backend: str, batch_size: int,
                show_progress: bool, search_params: dict[str, Any] | None) -> KVMemory:
        search, raw, values = emat.encode_memory(questions, answers, batch_size=batch_size, show_progress=show_progress)
        d, p = emat.d_model, emat.prefix_length
        kv = KVMemory(d, capacity=len(questions), backend=backend, metric="ip", value_dim=2 * p * d,
                      train_size=min(len(questions), max(256, 39 * _nlist(backend))))
        if search_params:
            kv.set_search_params(**search_params)
        kv.add(search, torch.cat([raw.reshape(len(raw), -1), values.reshape(len(values), -1)], dim=1))
        return kv

    def refresh(self, emat: EMAT, batch_size: int = 256, show_progress: bool = False) -> None:
        """Re-encode every pair with the current weights (EMAT's ``update_kv_embeds``): keys and
        values are replaced, the backend and its search parameters are kept."""
        self.kv = self._encode(self.questions, self.answers, emat, self.kv.backend, batch_size, show_progress,
                               dict(self.kv.search_params))
        self.fingerprint = emat.fingerprint()
        self.manifest["refreshed"] = now_iso()

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self.questions)

    def __repr__(self) -> str:
        return f"QAMemory({len(self)} pairs, backend={self.kv.backend!r}, d={self.d_model}, P={self.prefix_length})"

    @property
    def bytes_per_slot(self) -> int:
        """Float32 bytes one slot occupies in the vectors (search key + key tokens + value tokens)."""
        return 4 * (self.kv.dim + self.kv.value_dim)

    def search(self, queries: Any, k: int) -> MemoryHits:
        """Top-``k`` slots per query [B, d] by inner product (``slots`` of the hits = pair rows)."""
        return self.kv.search(queries, min(k, max(len(self), 1)))

    def slots(self, queries: torch.Tensor, k: int, device: Any = None, dtype: torch.dtype | None = None) -> Slots:
        """The top-``k`` slots of each query as :class:`Slots` (no gradient: stored vectors)."""
        hits = self.search(queries.detach(), k)
        b, kk = hits.scores.shape
        p, d = self.prefix_length, self.d_model
        rows = hits.values.view(b, kk, 2, p, d)
        out = Slots(rows[:, :, 0], rows[:, :, 1], hits.mask, hits.slots, hits.scores)
        if kk < k:  # a memory smaller than k: pad with empty slots
            pad = k - kk
            out = Slots(torch.cat([out.keys, out.keys.new_zeros(b, pad, p, d)], 1),
                        torch.cat([out.values, out.values.new_zeros(b, pad, p, d)], 1),
                        torch.cat([out.mask, out.mask.new_zeros(b, pad)], 1),
                        torch.cat([out.ids, out.ids.new_full((b, pad), -1)], 1),
                        torch.cat([out.scores, out.scores.new_full((b, pad), float("-inf"))], 1))
        if device is not None or dtype is not None:
            out = Slots(out.keys.to(device=device, dtype=dtype), out.values.to(device=device, dtype=dtype),
                        out.mask.to(device), out.ids.to(device), out.scores.to(device))
        return out

    def pairs(self, rows: Iterable[int]) -> list[tuple[str, str]]:
        """(question, answer) of the given rows."""
        return [(self.questions[i], self.answers[i]) for i in rows]

    def check_compatible(self, emat: EMAT, allow_mismatch: bool = False) -> None:
        """Refuse a memory encoded by other weights or another shape than ``emat``'s."""
        if (emat.d_model, emat.prefix_length) != (self.d_model, self.prefix_length):
            raise IndexMismatchError(f"memory has d_model={self.d_model}, prefix_length={self.prefix_length}; the model "
                                     f"has {emat.d_model}, {emat.prefix_length}")
        if self.fingerprint != emat.fingerprint():
            message = (f"memory {self.path or ''} was encoded by weights {self.fingerprint[:12]}, the model's are "
                       f"{emat.fingerprint()[:12]}: re-encode it (memory.refresh(model)) or pass allow_mismatch")
            if not allow_mismatch:
                raise IndexMismatchError(message)
            log.warning("%s (allowed)", message)

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike) -> None:
        """Write the index folder atomically (manifest, ``pairs.jsonl``, ``kv/``)."""
        with atomic_dir(folder) as tmp:
            self.kv.save(tmp / "kv")
            with open(tmp / PAIRS, "w", encoding="utf-8") as f:
                for q, a in zip(self.questions, self.answers):
                    f.write(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n")
            atomic_write_json(tmp / MANIFEST, {
                **self.manifest, "format_version": FORMAT_VERSION, "kind": self.kind, "count": len(self),
                "d_model": self.d_model, "prefix_length": self.prefix_length, "backend": self.kv.backend,
                "fingerprint": self.fingerprint, "bytes_per_slot": self.bytes_per_slot,
            })
        self.path = str(folder)

    @classmethod
    def load(cls, folder: str | os.PathLike, emat: EMAT | None = None, allow_mismatch: bool = False,
             **_: Any) -> "QAMemory":
        """Open a folder written by :meth:`save`; with ``emat``, check it was encoded by its weights."""
        folder = Path(folder)
        m = read_manifest(folder)
        if m.get("kind") != cls.kind:
            raise ValueError(f"{folder}: is a {m.get('kind')!r} index, not an {cls.kind!r}")
        questions, answers = [], []
        for lineno, rec in iter_jsonl(folder / PAIRS):
            if "question" not in rec or "answer" not in rec:
                raise ValueError(f"{folder / PAIRS}:{lineno}: needs fields 'question' and 'answer'")
            questions.append(rec["question"])
            answers.append(rec["answer"])
        try:
            memory = cls(questions, answers, KVMemory.load(folder / "kv"), m["fingerprint"], m["prefix_length"],
                         m["d_model"], manifest={k: m[k] for k in ("created", "refreshed", "version") if k in m})
        except KeyError as e:
            raise ValueError(f"{folder / MANIFEST}: missing field {e.args[0]!r}") from None
        memory.path = str(folder)
        if emat is not None:
            memory.check_compatible(emat, allow_mismatch=allow_mismatch)
        return memory

    def info(self) -> dict[str, Any]:
        return {"kind": self.kind, "count": len(self), "d_model": self.d_model, "prefix_length": self.prefix_length,
                "backend": self.kv.backend, "bytes_per_slot": self.bytes_per_slot, "fingerprint": self.fingerprint[:12]}


def _nlist(backend: str) -> int:
    """The number of IVF lists in a factory string (1 when it has none)."""
    for part in backend.split(","):
        if part.upper().startswith("IVF"):
            digits = "".join(ch for ch in part[3:] if ch.isdigit())
            return int(digits) if digits else 1
    return 1
