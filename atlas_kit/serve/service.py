"""The live model behind the HTTP API: batched retrieve/ask, index description, swap and publish.

Every batch reads ``atlas.index`` once and passes that object to ``Atlas.retrieve(index=...)``, so
all passages of a batch come from one index, and the version each response names is the version
they came from, even while an admin swaps indexes under load. Swaps load the new index off the
model thread (no pause in serving) and then flip the reference with ``Atlas.swap_index``, which
refuses an index built by another encoder before anything changes.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any, Hashable

from atlas_kit.api import Atlas
from atlas_kit.index.base import Index, read_manifest
from atlas_kit.index.store import IndexStore, parse_ref
from atlas_kit.serve.batcher import Batcher
from atlas_kit.serve.schemas import IndexInfo, IndexVersion, Passage, StoreEntry

__all__ = ["Service", "NoReaderError", "describe_index", "index_info"]

log = logging.getLogger(__name__)


class NoReaderError(RuntimeError):
    """The served model has no reader: only retrieval is available."""


def describe_index(index: Index) -> IndexVersion:
    """Name and version of ``index``: its store ref when it has one, else its folder and manifest version."""
    ref = getattr(index, "ref", None)
    if ref:
        name, version = parse_ref(ref)
        return IndexVersion(name=name, version=version or "", ref=ref)
    path = getattr(index, "path", None)
    name = Path(path).name if path else index.kind
    return IndexVersion(name=name, version=str(index.manifest.get("version", 1)), ref=None)


def index_info(index: Index) -> IndexInfo:
    v = describe_index(index)
    retriever = index.manifest.get("retriever") or {}
    return IndexInfo(name=v.name, version=v.version, ref=v.ref, kind=index.kind, count=len(index),
                     manifest_version=index.manifest.get("version"), retriever_name=retriever.get("name"),
                     retriever_fingerprint=retriever.get("fingerprint"))


def _passages(hits: Any) -> list[Passage]:
    return [Passage(id=h.id, title=h.title, text=h.text, score=float(h.score)) for h in hits]


class Service:
    """A live :class:`~atlas_kit.Atlas`, its index store, and the batcher in front of it.

    Args:
        atlas: the model; needs an index, and a reader for ``ask``.
        store: where ``NAME@VERSION`` refs resolve (swap, publish, listing).
        window_ms / max_batch: see :class:`~atlas_kit.serve.batcher.Batcher`; ``max_batch=1``
            turns batching off.
    """

    def __init__(self, atlas: Atlas, store: IndexStore, window_ms: float = 0.0, max_batch: int = 32) -> None:
        atlas.index  # raises now, with a clear message, if the model has no index
        self.atlas = atlas
        self.store = store
        self.batcher = Batcher(self._run_batch, window_ms=window_ms, max_batch=max_batch)
        self._swap_lock = asyncio.Lock()

    @property
    def has_reader(self) -> bool:
        return self.atlas.reader is not None

    # ------------------------------------------------------------------ batched model calls
    def _run_batch(self, key: Hashable, questions: list[str]) -> list[tuple[IndexVersion, list[Passage], str | None]]:
        op, k, candidates, max_length = key  # type: ignore[misc]
        index = self.atlas.index  # read once: the whole batch uses this index
        version = describe_index(index)
        hits = self.atlas.retrieve(questions, k=k, candidates=candidates, index=index)
        if op == "retrieve":
            return [(version, _passages(h), None) for h in hits]
        reader = self.atlas.reader
        if reader is None:
            raise NoReaderError("this server's model has no reader: use /v1/retrieve")
        texts = reader.generate(questions, [list(h) for h in hits], max_length=max_length, batch_size=len(questions))
        return [(version, _passages(h), t) for h, t in zip(hits, texts)]

    async def retrieve(self, questions: list[str], k: int, candidates: int | None = None
                       ) -> tuple[IndexVersion, list[list[Passage]]]:
        """Ranked passages for each question, all from one index version."""
        results = await self.batcher.submit(("retrieve", k, candidates, None), questions)
        versions = {r[0].ref or (r[0].name, r[0].version) for r in results}
        if len(versions) != 1:  # cannot happen: one request is never split across batches
            raise RuntimeError(f"one request was answered from {len(versions)} index versions")
        return results[0][0], [r[1] for r in results]

    async def ask(self, question: str, k: int, candidates: int | None = None, max_length: int | None = None
                  ) -> tuple[IndexVersion, list[Passage], str]:
        """The reader's answer, the passages it read, and their index version."""
        if not self.has_reader:
            raise NoReaderError("this server's model has no reader: use /v1/retrieve")
        [(version, passages, text)] = await self.batcher.submit(("ask", k, candidates, max_length), [question])
        return version, passages, text or ""

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` by the reader's tokenizer (chat-completions usage)."""
        tokenizer = getattr(self.atlas.reader, "tokenizer", None)
        if tokenizer is None:
            return len(text.split())
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    # ------------------------------------------------------------------ index admin
    def info(self) -> IndexInfo:
        return index_info(self.atlas.index)

    def listing(self) -> list[StoreEntry]:
        """Every version in the store, marking the published (``CURRENT``) one of each name."""
        out = []
        for name in self.store.names():
            current = self.store.current(name)
            for version in self.store.versions(name):
                try:
                    m = read_manifest(self.store.root / name / version)
                except (OSError, ValueError) as e:
                    log.warning("skipping %s@%s: %s", name, version, e)
                    continue
                out.append(StoreEntry(name=name, version=version, ref=f"{name}@{version}", current=current == version,
                                      kind=m.get("kind"), count=m.get("count")))
        return out

    def _folder(self, ref: str) -> Path:
        """The store folder of ``ref``; refuses anything that resolves outside the store (e.g. a symlink)."""
        folder = self.store.path(ref)
        if not folder.resolve().is_relative_to(self.store.root.resolve()):
            raise PermissionError(f"{ref} resolves outside the index store")
        return folder

    async def swap(self, ref: str) -> tuple[IndexInfo, IndexVersion]:
        """Load ``ref`` from the store and make it the live index; returns (new info, previous version).

        Raises ``IndexMismatchError`` (another encoder built it) or ``FileNotFoundError``; the live
        index is untouched then. Swaps are serialised; requests keep being served meanwhile.
        """
        async with self._swap_lock:
            self._folder(ref)
            new = await asyncio.to_thread(self.store.load, ref, retriever=self.atlas.retriever)
            old = self.atlas.swap_index(new)
        return index_info(new), describe_index(old) if old is not None else None

    async def publish(self, ref: str, swap: bool = False) -> tuple[IndexInfo, bool]:
        """Make ``ref`` the store's current version of its name; with ``swap``, first make it the
        live index (a refused swap publishes nothing)."""
        self._folder(ref)
        info = (await self.swap(ref))[0] if swap else self.info()
        await asyncio.to_thread(self.store.publish, ref)
        return info, swap
