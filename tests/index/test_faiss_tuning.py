"""Search knobs tuned for a target recall of exact search, stored in the manifest, used on load."""
from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from atlas_kit.cli import main
from atlas_kit.index import FaissIndex
from atlas_kit.passages import Passages


@pytest.fixture(scope="module")
def corpus():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(2000, 16)).astype(np.float32)  # no clusters: nprobe=1 misses many neighbours
    passages = Passages.from_records([{"id": f"d{i}", "title": "", "text": f"t{i}"} for i in range(2000)])
    return passages, emb


def _nprobe(ix: FaissIndex) -> int:
    return faiss.extract_index_ivf(ix.index).nprobe


def _recall(ix: FaissIndex, emb: np.ndarray, k: int = 20) -> float:
    q = emb[:100] + 0.05 * np.random.default_rng(1).normal(size=(100, emb.shape[1])).astype(np.float32)
    exact = faiss.IndexFlatIP(emb.shape[1])
    exact.add(emb)
    _, truth = exact.search(q, k)
    _, got = ix.search_vectors(q, k)
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth)]))


def test_build_tunes_ivf_to_the_target_and_load_applies_it(tmp_path, corpus):
    passages, emb = corpus
    untuned = FaissIndex.from_embeddings(emb, passages, factory="IVF16,Flat", target_recall=None)
    assert _nprobe(untuned) == 1 and "tuned" not in untuned.manifest
    ix = FaissIndex.from_embeddings(emb, passages, factory="IVF16,Flat")
    tuned = ix.manifest["tuned"]
    assert tuned["params"]["nprobe"] > 1 and tuned["recall"] >= 0.95 and tuned["k"] == 20
    assert _nprobe(ix) == tuned["params"]["nprobe"]
    assert _recall(ix, emb) >= 0.9 > _recall(untuned, emb)  # unseen (perturbed) queries benefit too
    ix.save(tmp_path / "ix")
    assert _nprobe(FaissIndex.load(tmp_path / "ix")) == tuned["params"]["nprobe"]


def test_explicit_setting_wins_over_tuning(tmp_path, corpus):
    passages, emb = corpus
    ix = FaissIndex.from_embeddings(emb, passages, factory="IVF16,Flat")
    ix.set_search_params(nprobe=3)
    ix.tune(0.99)  # re-tuning records a new value but keeps the user's
    assert _nprobe(ix) == 3 and ix.manifest["tuned"]["params"]["nprobe"] != 3
    ix.save(tmp_path / "ix")
    assert _nprobe(FaissIndex.load(tmp_path / "ix")) == 3


def test_hnsw_efsearch_and_unreachable_target(corpus):
    passages, emb = corpus
    ix = FaissIndex.from_embeddings(emb, passages, factory="HNSW8", target_recall=0.9)
    ef = ix.manifest["tuned"]["params"]["efSearch"]
    assert faiss.downcast_index(ix.index).hnsw.efSearch == ef >= 20
    pq = FaissIndex.from_embeddings(emb, passages, factory="IVF4,PQ2x4", target_recall=None)
    tuned = pq.tune(0.99)  # 1-byte codes never reach 99% of exact neighbours: the plateau is kept
    assert tuned["recall"] < 0.99 and tuned["params"]["nprobe"] <= 4


def test_tune_refuses_what_it_cannot_tune(corpus):
    passages, emb = corpus
    with pytest.raises(ValueError, match="no search knob"):
        FaissIndex.from_embeddings(emb, passages).tune()
    with pytest.raises(ValueError, match="target_recall"):
        FaissIndex.from_embeddings(emb, passages, factory="IVF4,Flat").tune(1.5)


def test_cli_index_tune(tmp_path, corpus, capsys):
    passages, emb = corpus
    FaissIndex.from_embeddings(emb, passages, factory="IVF16,Flat", target_recall=None).save(tmp_path / "ix")
    assert main(["-q", "index", "tune", str(tmp_path / "ix"), "--target-recall", "0.9", "--k", "10"]) == 0
    manifest = json.loads((tmp_path / "ix" / "manifest.json").read_text())
    assert manifest["tuned"]["k"] == 10 and manifest["tuned"]["recall"] >= 0.9
    assert "tuned nprobe=" in capsys.readouterr().out
