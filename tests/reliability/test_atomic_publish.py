"""A publish killed between its two renames is repaired; temp folders are swept and hidden;
published files get the umask's modes."""
from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest

from atlas_kit.index import FaissIndex
from atlas_kit.index.store import IndexStore
from atlas_kit.passages import Passages
from atlas_kit.storage import atomic_dir, atomic_write_text


def _index(records):
    ps = Passages.from_records(records)
    return FaissIndex.from_embeddings(np.eye(len(ps), 8, dtype=np.float32), ps)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _crash_between_renames(target, pid, finished_tmp=True):
    """What a process killed between ``target -> .old`` and ``.tmp -> target`` leaves."""
    token = f"{pid}-abcdef012345"
    os.replace(target, target.parent / f".{target.name}.old-{token}")
    if finished_tmp:
        return target.parent / f".{target.name}.tmp-{token}"
    return None


def test_crash_between_renames_is_finished_on_next_open(tmp_path, toy_records):
    store = IndexStore(tmp_path)
    store.add("kb@v1", _index(toy_records[:3]))
    folder = tmp_path / "kb" / "v1"
    tmp = _crash_between_renames(folder, _dead_pid())
    _index(toy_records).save(tmp)  # the new copy was complete
    assert not folder.exists()
    assert store.versions("kb") == ["v1"]  # repaired: the new copy is published
    assert len(store.load("kb")) == 6
    assert [p.name for p in (tmp_path / "kb").iterdir() if p.name.startswith(".")] == []


def test_crash_between_renames_without_new_copy_rolls_back(tmp_path, toy_records):
    store = IndexStore(tmp_path)
    store.add("kb@v1", _index(toy_records[:3]))
    _crash_between_renames(tmp_path / "kb" / "v1", _dead_pid(), finished_tmp=False)
    assert len(store.load("kb")) == 3  # the old copy is back
    assert sorted(p.name for p in (tmp_path / "kb").iterdir()) == ["CURRENT", "v1"]


def test_stale_temp_folders_are_swept_and_hidden_live_ones_kept(tmp_path, toy_records):
    store = IndexStore(tmp_path)
    store.add("kb@v1", _index(toy_records))
    dead = tmp_path / "kb" / f".v2.tmp-{_dead_pid()}-0123456789ab"
    live = tmp_path / "kb" / f".v3.tmp-{os.getpid()}-0123456789ab"
    for leftover in (dead, live):
        _index(toy_records).save(leftover)  # complete-looking folders, manifest included
    assert store.versions("kb") == ["v1"]
    assert not dead.exists() and live.exists()  # a live writer's folder is left alone
    with atomic_dir(tmp_path / "kb" / "v2") as tmp:  # a later publish of the same name sweeps too
        (tmp / "x").write_text("1")
    assert store.versions("kb") == ["v1"]  # no manifest in v2: not a version


def test_published_modes_follow_the_umask(tmp_path, toy_records):
    old = os.umask(0o022)
    try:
        IndexStore(tmp_path).add("kb@v1", _index(toy_records))
        atomic_write_text(tmp_path / "note.txt", "x")
    finally:
        os.umask(old)
    folder = tmp_path / "kb" / "v1"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o755
    for f in (folder / "manifest.json", tmp_path / "kb" / "CURRENT", tmp_path / "note.txt"):
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f


def test_failed_publish_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a").write_text("1")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
