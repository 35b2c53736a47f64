"""Named, versioned indexes side by side: ``indexes/NAME/VERSION/`` plus a ``CURRENT`` pointer.

This is what makes "swap the corpus without retraining" an everyday operation: build
``wiki@2020`` next to ``wiki@2017``, then ``publish`` moves the pointer (an atomic file replace),
and a live :class:`~atlas_kit.Atlas` is pointed at it with ``swap_index``. Old versions stay on
disk until removed, so rolling back is another pointer move.
"""
from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from atlas_kit.index.base import Index, read_manifest
from atlas_kit.storage import atomic_write_text

__all__ = ["IndexStore", "resolve_index_path", "parse_ref"]

POINTER = "CURRENT"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"wiki@2020"`` -> ("wiki", "2020"); ``"wiki"`` -> ("wiki", None)."""
    name, _, version = ref.partition("@")
    for part, what in ((name, "name"), (version, "version")):
        if part and not _NAME.match(part):
            raise ValueError(f"invalid index {what} {part!r} in {ref!r} (letters, digits, '.', '_', '-')")
    return name, version or None


class IndexStore:
    """Versions of named indexes under one root folder (default ``indexes/``)."""

    def __init__(self, root: str | os.PathLike = "indexes") -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def versions(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / "manifest.json").is_file())

    def current(self, name: str) -> str | None:
        pointer = self.root / name / POINTER
        return pointer.read_text().strip() if pointer.is_file() else None

    def path(self, ref: str) -> Path:
        """Folder of ``NAME@VERSION`` (or of NAME's current version)."""
        name, version = parse_ref(ref)
        version = version or self.current(name)
        if version is None:
            known = self.versions(name)
            raise FileNotFoundError(
                f"index {name!r} has no current version in {self.root}"
                + (f" (versions: {', '.join(known)}; publish one)" if known else "")
            )
        folder = self.root / name / version
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"index {name}@{version} not found in {self.root} (versions: {self.versions(name)})")
        return folder

    def add(self, ref: str, index: Index, publish: bool = True) -> Path:
        """Save ``index`` as ``NAME@VERSION`` (atomically) and, by default, make it current."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError(f"give a version: {name}@VERSION")
        folder = self.root / name / version
        index.save(folder)
        if publish:
            self.publish(f"{name}@{version}")
        return folder

    def publish(self, ref: str) -> None:
        """Point NAME's ``CURRENT`` at VERSION (atomic replace of a one-line file)."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError(f"give a version to publish: {name}@VERSION")
        read_manifest(self.root / name / version)  # must exist and be valid
        atomic_write_text(self.root / name / POINTER, version + "\n")

    def remove(self, ref: str) -> None:
        """Delete a version (never the current one)."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError("give the version to remove: NAME@VERSION")
        if self.current(name) == version:
            raise ValueError(f"{name}@{version} is the current version: publish another one first")
        shutil.rmtree(self.path(ref))

    def load(self, ref: str, retriever: Any = None, allow_mismatch: bool = False, **kwargs: Any) -> Index:
        from atlas_kit.index import load_index

        index = load_index(self.path(ref), retriever=retriever, allow_mismatch=allow_mismatch, **kwargs)
        index.ref = ref if "@" in ref else f"{ref}@{self.current(ref)}"
        return index


def resolve_index_path(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An index folder from a path, or from ``NAME[@VERSION]`` in the store at ``root``
    (default ``$ATLAS_KIT_INDEXES`` or ``indexes/``)."""
    path = Path(spec)
    if (path / "manifest.json").is_file():
        return path
    store = IndexStore(root or os.environ.get("ATLAS_KIT_INDEXES", "indexes"))
    try:
        return store.path(str(spec))
    except ValueError:
        raise FileNotFoundError(f"{spec} is neither an index folder nor NAME[@VERSION] in {store.root}") from None
