from __future__ import annotations


import pytest

from atlas_kit.storage import atomic_dir, atomic_write_json, read_json, sha256_file


def test_atomic_dir_publishes_or_leaves_nothing(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "a.txt").write_text("1")
    assert (tmp_path / "out" / "a.txt").read_text() == "1"
    with pytest.raises(RuntimeError):
        with atomic_dir(tmp_path / "out") as tmp:
            (tmp / "a.txt").write_text("2")
            raise RuntimeError("crash")
    assert (tmp_path / "out" / "a.txt").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    with pytest.raises(FileExistsError):
        with atomic_dir(tmp_path / "out", overwrite=False):
            pass


def test_json_helpers(tmp_path):
    atomic_write_json(tmp_path / "x.json", {"a": 1})
    assert read_json(tmp_path / "x.json") == {"a": 1}
    (tmp_path / "bad.json").write_text('{"a": \n')
    with pytest.raises(ValueError, match=r"bad\.json: line 2"):
        read_json(tmp_path / "bad.json")
    assert len(sha256_file(tmp_path / "x.json")) == 64
