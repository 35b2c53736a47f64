"""Crash-safe writing of files and folders.

Everything atlas_kit publishes on disk (indexes, checkpoints, run artefacts) goes through these
helpers so that a reader never sees a half-written file: content is written to a temporary sibling
and then published with an atomic ``os.replace``/``rename``.

Temporary siblings are named ``.NAME.tmp-PID-TOKEN`` (and, while a folder is being replaced,
``.NAME.old-PID-TOKEN``) so that what a killed process left behind can be told from what a live
one is still writing: :func:`recover_dir` finishes (or rolls back) a publish interrupted between its
two renames and sweeps leftovers whose process is dead. Published files and folders get the
umask's ordinary modes (``mkstemp``/``mkdtemp`` would leave them 0600/0700).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

__all__ = ["atomic_dir", "atomic_write_text", "atomic_write_json", "read_json", "iter_jsonl", "sha256_file",
           "recover_dir", "is_temporary", "temporary_target", "default_mode", "pid_alive"]

log = logging.getLogger(__name__)

#: ``.NAME.tmp-PID-TOKEN`` / ``.NAME.old-PID-TOKEN`` (folders) and ``.NAME.PID-TOKEN.tmp`` (files)
_TEMP = re.compile(r"\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-(?P<token>[0-9a-f]+)")
_TEMP_FILE = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-(?P<token>[0-9a-f]+)\.tmp")


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` would race other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the classic read-by-setting (briefly process-wide)
    os.umask(mask)
    return mask


def default_mode(directory: bool) -> int:
    """The mode ``open``/``mkdir`` would give a new file or folder under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: alive, owned by someone else
        return True
    return True


def temporary_target(name: str) -> str | None:
    """For one of these helpers' temporary siblings, the name it stands in for; else None."""
    m = _TEMP.fullmatch(name) or _TEMP_FILE.fullmatch(name)
    return m["name"] if m else None


def is_temporary(name: str) -> bool:
    """Whether ``name`` is one of these helpers' temporary siblings (never a published entry)."""
    return temporary_target(name) is not None


def _token() -> str:
    return f"{os.getpid()}-{secrets.token_hex(6)}"


def recover_dir(target: str | os.PathLike) -> None:
    """Repair what a killed :func:`atomic_dir` publish of ``target`` left behind.

    Only leftovers of dead processes are touched (a live writer may be between its renames). If
    ``target`` is missing but the killed publish had moved the old folder aside, the new folder is
    put in place when it is still there (finish), else the old one is moved back (roll back); then
    stale temporary and old copies are deleted.
    """
    target = Path(target)
    parent = target.parent
    if not parent.is_dir():
        return
    stale: dict[str, dict[str, Path]] = {}
    for entry in parent.iterdir():
        m = _TEMP.fullmatch(entry.name)
        if m is None or m["name"] != target.name or pid_alive(int(m["pid"])):
            continue
        stale.setdefault(f"{m['pid']}-{m['token']}", {})[m["kind"]] = entry
    for token, parts in stale.items():
        with contextlib.suppress(FileNotFoundError):
            if "old" in parts and not os.path.lexists(target):
                if "tmp" in parts:  # the new folder was complete before the old one moved aside
                    os.replace(parts.pop("tmp"), target)
                    log.warning("%s: finished a publish interrupted by a crash", target)
                else:
                    os.replace(parts.pop("old"), target)
                    log.warning("%s: rolled back a publish interrupted by a crash", target)
        for leftover in parts.values():
            if leftover.is_symlink() or not leftover.is_dir():
                with contextlib.suppress(FileNotFoundError):
                    leftover.unlink()
            else:
                shutil.rmtree(leftover, ignore_errors=True)
    for entry in parent.iterdir():  # files left by a killed atomic_write_text
        m = _TEMP_FILE.fullmatch(entry.name)
        if m and m["name"] == target.name and not pid_alive(int(m["pid"])):
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                entry.unlink()


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary folder next to ``target``; publish it as ``target`` on success.

    The temporary folder lives in the same parent so the final rename is atomic on POSIX. If the
    body raises, the temporary folder is removed and ``target`` is untouched. When ``target``
    exists and ``overwrite`` is true, the old folder is moved aside first and deleted only after
    the new one is in place (two renames; a reader sees either the old or the new folder, and a
    crash between them is repaired by the next publish or :func:`recover_dir`).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(target)
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} already exists (pass overwrite=True to replace it)")
    token = _token()
    tmp = target.parent / f".{target.name}.tmp-{token}"
    tmp.mkdir(mode=0o700)  # private while being written; opened up to the umask's mode on publish
    try:
        yield tmp
        tmp.chmod(default_mode(directory=True))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old-{token}"
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and an atomic replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{_token()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the umask applies, as for open()
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    """Read JSON with an error that names the file when it is malformed."""
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 ({e.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks (works for multi-GB files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _open_maybe_gzip(path: Path):
    import gzip

    return gzip.open(path, "rb") if path.suffix.lower() == ".gz" else path.open("rb")


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a (optionally ``.gz``) UTF-8 file, a
    leading BOM allowed; errors (bad JSON, bad UTF-8, a corrupt ``.gz``) name the file and line."""
    import gzip
    import zlib

    path = Path(path)
    lineno = 0
    try:
        with _open_maybe_gzip(path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not UTF-8 (byte {e.start + 1} of the line: {e.reason})") from None
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
                if not isinstance(rec, dict):
                    raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
                yield lineno, rec
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise ValueError(f"{path}:{lineno + 1}: corrupt gzip file ({e or type(e).__name__})") from None
