"""Index store refs, ``CURRENT`` and links never lead out of the store root."""
from __future__ import annotations

import os

import numpy as np
import pytest

from atlas_kit.index import FaissIndex
from atlas_kit.index.store import IndexStore, parse_ref
from atlas_kit.passages import Passages


def _index(records):
    ps = Passages.from_records(records)
    return FaissIndex.from_embeddings(np.eye(len(ps), 8, dtype=np.float32), ps)


@pytest.mark.parametrize("ref", ["kb@v1\n", "kb\n@v1", "@v1", "kb@", "kb@../x", "kb@.hidden", "../kb@v1", "kb@a/b"])
def test_bad_refs_are_refused(ref):
    with pytest.raises(ValueError, match="invalid index"):
        parse_ref(ref)


def test_newline_ref_writes_nothing(tmp_path, toy_records):
    store = IndexStore(tmp_path)
    for ref in ("kb@v1\n", "@v1"):
        with pytest.raises(ValueError):
            store.add(ref, _index(toy_records))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("pointer", ["../../elsewhere", "/tmp", "..", "v1/../../x"])
def test_current_pointing_out_of_the_store_is_refused(tmp_path, toy_records, pointer):
    store = IndexStore(tmp_path / "store")
    store.add("kb@v1", _index(toy_records))
    outside = tmp_path / "elsewhere"
    _index(toy_records[:2]).save(outside)  # a valid index outside the store
    (tmp_path / "store" / "kb" / "CURRENT").write_text(pointer + "\n")
    with pytest.raises(ValueError, match="not a version name"):
        store.path("kb")
    with pytest.raises(ValueError):
        store.load("kb")


def test_symlinked_version_folder_is_not_followed(tmp_path, toy_records):
    store = IndexStore(tmp_path / "store")
    store.add("kb@v1", _index(toy_records))
    outside = tmp_path / "outside"
    _index(toy_records[:2]).save(outside)
    os.symlink(outside, tmp_path / "store" / "kb" / "evil")
    assert store.versions("kb") == ["v1"]
    with pytest.raises(ValueError, match="symbolic link"):
        store.path("kb@evil")
    with pytest.raises(ValueError, match="symbolic link"):
        store.publish("kb@evil")
    with pytest.raises(ValueError, match="symbolic link"):
        store.remove("kb@evil")
    assert (outside / "manifest.json").is_file()


def test_remove_never_follows_a_symlinked_name_folder(tmp_path, toy_records):
    outside_root = tmp_path / "outside"
    IndexStore(outside_root).add("kb@v1", _index(toy_records))
    IndexStore(outside_root).add("kb@v2", _index(toy_records), publish=False)
    (tmp_path / "store").mkdir()
    os.symlink(outside_root / "kb", tmp_path / "store" / "kb")
    store = IndexStore(tmp_path / "store")
    assert store.names() == []
    with pytest.raises(ValueError, match="symbolic link"):
        store.remove("kb@v2")
    with pytest.raises(ValueError, match="symbolic link"):
        store.add("kb@v3", _index(toy_records))
    assert (outside_root / "kb" / "v2" / "manifest.json").is_file()
    assert sorted(p.name for p in (outside_root / "kb").iterdir()) == ["CURRENT", "v1", "v2"]
