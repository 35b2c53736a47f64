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

from atlas_kit.index.base import Index, IndexChangedError, folder_origin, read_manifest
from atlas_kit.index.registry import load_index
from atlas_kit.storage import atomic_write_text, is_temporary, recover_dir, temporary_target

__all__ = ["IndexStore", "resolve_index_path", "parse_ref", "store_root"]

POINTER = "CURRENT"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_LOAD_ATTEMPTS = 3


def _check_part(part: str, what: str, ref: str) -> None:
    if not _NAME.fullmatch(part):
        raise ValueError(f"invalid index {what} {part!r} in {ref!r} (letters, digits, '.', '_', '-'; "
                         "starting with a letter or digit)")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"wiki@2020"`` -> ("wiki", "2020"); ``"wiki"`` -> ("wiki", None). A name is required and
    both parts must be plain folder names (no ``/``, ``..``, newline or leading ``.``)."""
    name, at, version = ref.partition("@")
    _check_part(name, "name", ref)
    if at:
        _check_part(version, "version", ref)
    return name, version or None


class IndexStore:
    """Versions of named indexes under one root folder (default ``indexes/``)."""

    def __init__(self, root: str | os.PathLike = "indexes") -> None:
        self.root = Path(root)

    def _folder(self, name: str, version: str | None = None) -> Path:
        """``root/NAME[/VERSION]``, refused when a link (or anything else) would lead out of the
        store: the NAME and VERSION folders must be real folders, not symlinks."""
        _check_part(name, "name", name)
        parts = [self.root / name]
        if version is not None:
            _check_part(version, "version", f"{name}@{version}")
            parts.append(parts[0] / version)
        for p in parts:
            if p.is_symlink():
                raise ValueError(f"{p} is a symbolic link: the index store does not follow links "
                                 f"(copy or move the index into {self.root} instead)")
        return parts[-1]

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if _NAME.fullmatch(p.name) and p.is_dir() and not p.is_symlink())

    def versions(self, name: str) -> list[str]:
        """Published versions of NAME (never temporary folders, never symlinks); repairs a
        publish that a crash interrupted first (:func:`~atlas_kit.storage.recover_dir`)."""
        folder = self._folder(name)
        if not folder.is_dir():
            return []
        for target in {temporary_target(p.name) for p in folder.iterdir()} - {None}:
            recover_dir(folder / str(target))
        return sorted(p.name for p in folder.iterdir()
                      if _NAME.fullmatch(p.name) and not is_temporary(p.name) and not p.is_symlink()
                      and p.is_dir() and (p / "manifest.json").is_file())

    def current(self, name: str) -> str | None:
        """The version ``CURRENT`` names; a pointer that is not a plain version name (a path,
        ``..``, an absolute path) or is a symlink is refused."""
        pointer = self._folder(name) / POINTER
        if pointer.is_symlink():
            raise ValueError(f"{pointer} is a symbolic link; the index store does not follow links")
        if not pointer.is_file():
            return None
        version = pointer.read_text(encoding="utf-8").strip()
        if not _NAME.fullmatch(version):
            raise ValueError(f"{pointer}: holds {version[:80]!r}, which is not a version name of {name!r} "
                             "(publish a version: atlas-kit index publish NAME@VERSION)")
        return version

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
        folder = self._folder(name, version)
        if not (folder / "manifest.json").is_file():
            recover_dir(folder)  # a publish of this version interrupted by a crash
        if not (folder / "manifest.json").is_file():
            raise FileNotFoundError(f"index {name}@{version} not found in {self.root} (versions: {self.versions(name)})")
        return folder

    def add(self, ref: str, index: Index, publish: bool = True) -> Path:
        """Save ``index`` as ``NAME@VERSION`` (atomically) and, by default, make it current."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError(f"give a version: {name}@VERSION")
        folder = self._folder(name, version)
        index.save(folder)
        if publish:
            self.publish(f"{name}@{version}")
        return folder

    def publish(self, ref: str) -> None:
        """Point NAME's ``CURRENT`` at VERSION (atomic replace of a one-line file)."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError(f"give a version to publish: {name}@VERSION")
        read_manifest(self.path(f"{name}@{version}"))  # must exist, be valid and lie inside the store
        atomic_write_text(self._folder(name) / POINTER, version + "\n")

    def remove(self, ref: str) -> None:
        """Delete a version (never the current one)."""
        name, version = parse_ref(ref)
        if version is None:
            raise ValueError("give the version to remove: NAME@VERSION")
        if self.current(name) == version:
            raise ValueError(f"{name}@{version} is the current version: publish another one first")
        folder = self.path(ref)  # refuses symlinked NAME / VERSION folders
        shutil.rmtree(folder)  # rmtree itself never follows links inside the folder

    def new_version(self, name: str, base: str) -> str:
        """A version name of NAME not taken yet: ``BASE-2``, ``BASE-3``, ... (for updates that must
        not rewrite a published version in place)."""
        taken = set(self.versions(name))
        stem = re.sub(r"-\d+$", "", base) or base
        n = 2
        while f"{stem}-{n}" in taken or os.path.lexists(self.root / name / f"{stem}-{n}"):
            n += 1
        return f"{stem}-{n}"

    def load(self, ref: str, retriever: Any = None, allow_mismatch: bool = False, **kwargs: Any) -> Index:
        """Open NAME[@VERSION]. A load that raced a re-save of the same folder
        (:class:`~atlas_kit.index.base.IndexChangedError`, or any error while the folder was
        being replaced) is retried a few times."""
        for attempt in range(_LOAD_ATTEMPTS):
            folder = self.path(ref)
            before = folder_origin(folder)
            try:
                index = load_index(folder, retriever=retriever, allow_mismatch=allow_mismatch, **kwargs)
                break
            except Exception as e:
                raced = isinstance(e, IndexChangedError) or folder_origin(folder) != before
                if not raced or attempt == _LOAD_ATTEMPTS - 1:
                    raise
        index.ref = ref if "@" in ref else f"{ref}@{self.current(ref)}"
        return index


def store_root(root: str | os.PathLike | None = None) -> Path:
    """``root``, else ``$ATLAS_KIT_INDEXES``, else ``indexes/``."""
    return Path(root or os.environ.get("ATLAS_KIT_INDEXES", "indexes"))


def resolve_index_path(spec: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """An index folder from a path, or from ``NAME[@VERSION]`` in the store at ``root``
    (default ``$ATLAS_KIT_INDEXES`` or ``indexes/``)."""
    path = Path(spec)
    if (path / "manifest.json").is_file():
        return path
    store = IndexStore(store_root(root))
    try:
        return store.path(str(spec))
    except ValueError:
        raise FileNotFoundError(f"{spec} is neither an index folder nor NAME[@VERSION] in {store.root}") from None
