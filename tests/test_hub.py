"""push_to_hub up to the upload call: the Hub cannot be reached here, so a fake HfApi records the
calls huggingface_hub would receive (the upload itself is not exercised)."""
from __future__ import annotations

from pathlib import Path

import pytest

from atlas_kit.hub import push_to_hub
from tests.conftest import make_tiny_retriever


class FakeApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        self.calls.append(("upload_folder", kwargs, files))
        return "commit-info"


def test_push_a_retriever_object_and_an_index_folder(tmp_path, toy_passages):
    from atlas_kit.index import FaissIndex

    api = FakeApi()
    retriever = make_tiny_retriever(normalize=True)
    assert push_to_hub(retriever, "me/tiny-retriever", private=True, api=api, datasets=["toy"]) == "commit-info"
    (_, repo, create), (_, upload, files) = api.calls
    assert repo == "me/tiny-retriever" and create == {"repo_type": "model", "private": True, "exist_ok": True}
    assert upload["repo_type"] == "model" and upload["repo_id"] == "me/tiny-retriever"
    assert {"README.md", "modules.json", "retriever_config.json", "query_encoder/model.safetensors"} <= set(files)
    assert ".*" in upload["ignore_patterns"]

    index = FaissIndex.build(toy_passages, retriever)
    index.save(tmp_path / "index")
    api = FakeApi()
    push_to_hub(tmp_path / "index", "me/toy-index", api=api)
    (_, _, create), (_, upload, files) = api.calls
    assert create["repo_type"] == upload["repo_type"] == "dataset" and "README.md" in files and "manifest.json" in files


def test_push_refuses_what_is_not_an_atlas_kit_folder(tmp_path):
    with pytest.raises(ValueError, match="not an atlas_kit folder"):
        push_to_hub(tmp_path, "me/x", api=FakeApi())
    with pytest.raises(ValueError, match="repo_id"):
        push_to_hub(tmp_path, "a/b/c", api=FakeApi())
    with pytest.raises(FileNotFoundError):
        push_to_hub(tmp_path / "missing", "me/x", api=FakeApi())
