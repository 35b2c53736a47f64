"""``atlas-kit serve``: model and index resolution, the one-line hint without a demo, token loading."""
from __future__ import annotations

import logging

import pytest

import atlas_kit.serve as serve_pkg
from atlas_kit.cli import main
from atlas_kit.serve import load_admin_token, load_atlas
from tests.serve.conftest import TOKEN


@pytest.fixture(scope="module")
def saved_model(world, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    world.atlas("toy@v1").save_pretrained(folder)
    return folder


def test_without_a_model_it_says_to_run_the_demo(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.ERROR, logger="atlas_kit"):
        assert main(["serve"]) == 2
    assert "atlas-kit demo" in caplog.text


def test_serve_resolves_model_index_and_store(world, saved_model, monkeypatch):
    seen = {}
    monkeypatch.setattr(serve_pkg, "serve", lambda atlas, **kw: seen.update(atlas=atlas, **kw))
    monkeypatch.setenv("ATLAS_KIT_ADMIN_TOKEN", TOKEN)
    assert main(["serve", "--model", str(saved_model.parent), "--index", "toy@v2",
                 "--store", str(world.store.root), "--port", "0", "--max-batch", "4"]) == 0
    assert seen["atlas"].index.ref == "toy@v2" and seen["admin_token"] == TOKEN
    assert seen["host"] == "127.0.0.1" and seen["max_batch"] == 4 and seen["store"] == str(world.store.root)


def test_load_atlas_keeps_the_saved_index_and_refuses_an_alien_one(world, saved_model):
    assert len(load_atlas(saved_model).index) == 6
    # the saved index path lies in the store: it is named by its ref there
    assert load_atlas(saved_model, store=world.store.root).index.ref == "toy@v1"
    with pytest.raises(ValueError, match="fingerprint"):
        load_atlas(saved_model, index="alien@v1", store=world.store.root)


def test_admin_token_sources(tmp_path, monkeypatch):
    monkeypatch.delenv("ATLAS_KIT_ADMIN_TOKEN", raising=False)
    assert load_admin_token() is None
    monkeypatch.setenv("ATLAS_KIT_ADMIN_TOKEN", "short")
    with pytest.raises(ValueError, match="at least"):
        load_admin_token()
    (tmp_path / "token").write_text(TOKEN + "\n")
    assert load_admin_token(tmp_path / "token") == TOKEN
    with pytest.raises(FileNotFoundError):
        load_admin_token(tmp_path / "missing")
