"""Streaming, resumable FAISS builds: chunks on disk, resume after a kill, identical results."""
from __future__ import annotations

import faiss
import numpy as np
import pytest

from atlas_kit.cli import main
from atlas_kit.index import FaissIndex
from atlas_kit.index.build import build_faiss_index, work_dir_for
from atlas_kit.passages import Passages


@pytest.fixture(scope="module")
def corpus():
    words = "river city lamp copper harbour pine bridge salt fish mountain capital leader".split()
    rng = np.random.default_rng(0)
    return Passages.from_records([{"id": f"p{i}", "title": f"T{i % 7}", "text": " ".join(rng.choice(words, 6))}
                                  for i in range(90)])


class Killed(RuntimeError):
    pass


def _vectors(ix: FaissIndex) -> np.ndarray:
    return faiss.rev_swig_ptr(faiss.downcast_index(ix.index).get_xb(), ix.index.ntotal * ix.dim).reshape(-1, ix.dim)


def test_streaming_build_equals_in_memory_build(tmp_path, corpus, tiny_retriever):
    ix = build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", chunk_size=25, embeddings_dtype="float32")
    ref = FaissIndex.build(corpus, tiny_retriever, embeddings_dtype="float32")
    assert ix.passages.ids == ref.passages.ids
    np.testing.assert_allclose(_vectors(ix), _vectors(ref), rtol=1e-5, atol=1e-6)
    assert ix.manifest["corpus_checksum"] == ref.manifest["corpus_checksum"] and ix.manifest["build"]["chunk_size"] == 25
    assert not work_dir_for(tmp_path / "ix").exists()


@pytest.mark.parametrize("factory", ["Flat", "IVF4,Flat"])
def test_killed_build_resumes_to_the_same_index(tmp_path, corpus, tiny_retriever, monkeypatch, factory):
    whole = build_faiss_index(corpus, tiny_retriever, tmp_path / "whole", factory=factory, chunk_size=20)
    encode = tiny_retriever.encode_passages
    calls = []

    def dies_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise Killed("simulated kill")
        return encode(*args, **kwargs)

    monkeypatch.setattr(tiny_retriever, "encode_passages", dies_on_third_chunk)
    with pytest.raises(Killed):
        build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", factory=factory, chunk_size=20)
    assert not (tmp_path / "ix").exists()  # nothing under the final path
    assert sorted(p.name for p in work_dir_for(tmp_path / "ix").iterdir()) == ["plan.json", "progress-0.json", "vectors.npy"]
    calls.clear()
    monkeypatch.setattr(tiny_retriever, "encode_passages", lambda *a, **k: (calls.append(1), encode(*a, **k))[1])
    resumed = build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", factory=factory, chunk_size=20, resume=True)
    assert len(calls) == 3  # chunks 3..5 only: the two finished ones were kept
    assert resumed.passages.ids == whole.passages.ids
    np.testing.assert_array_equal(np.asarray(resumed.embeddings), np.asarray(whole.embeddings))
    np.testing.assert_array_equal(faiss.serialize_index(resumed.index), faiss.serialize_index(whole.index))
    assert not work_dir_for(tmp_path / "ix").exists()


def test_resume_refuses_another_plan_and_fresh_build_discards_leftovers(tmp_path, corpus, tiny_retriever, monkeypatch):
    encode = tiny_retriever.encode_passages
    monkeypatch.setattr(tiny_retriever, "encode_passages", lambda *a, **k: (_ for _ in ()).throw(Killed("x")))
    with pytest.raises(Killed):
        build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", chunk_size=20)
    monkeypatch.setattr(tiny_retriever, "encode_passages", encode)
    with pytest.raises(ValueError, match="chunk_size"):
        build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", chunk_size=30, resume=True)
    assert len(build_faiss_index(corpus, tiny_retriever, tmp_path / "ix", chunk_size=30)) == 90


def test_cli_build_resume(tmp_path, toy_passages):
    path = tmp_path / "corpus.jsonl"
    toy_passages.to_jsonl(path)
    # the bundled MiniLM is the CLI default; this only checks the flags reach the streaming builder
    assert main(["-q", "index", "build", str(path), "--out", str(tmp_path / "ix"), "--chunk-size", "4",
                 "--resume"]) == 0
    assert FaissIndex.load(tmp_path / "ix").manifest["build"]["chunk_size"] == 4


def _rank(rank: int, world: int, port: int, corpus_path: str, out: str) -> None:
    import os

    import torch

    from atlas_kit import load_passages
    from tests.conftest import make_tiny_retriever

    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    retriever = make_tiny_retriever()
    calls = []
    encode = retriever.encode_passages
    retriever.encode_passages = lambda p, **k: (calls.append(len(p)), encode(p, **k))[1]
    ix = build_faiss_index(load_passages(corpus_path), retriever, out, chunk_size=20)  # starts the Gloo group
    assert len(ix) == 90 and calls == ([20, 20, 10] if rank == 0 else [20, 20]), (rank, calls)  # chunks 0, 2, 4 / 1, 3
    import torch.distributed as dist

    dist.destroy_process_group()


def test_two_gloo_ranks_build_the_index_one_process_builds(tmp_path, corpus, tiny_retriever):
    import torch.distributed as dist
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("no Gloo backend")
    corpus.to_jsonl(tmp_path / "c.jsonl")
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path / "c.jsonl"), str(tmp_path / "ddp")), nprocs=2, join=True)
    one = build_faiss_index(corpus, tiny_retriever, tmp_path / "one", chunk_size=20)
    two = FaissIndex.load(tmp_path / "ddp")
    assert two.passages.ids == one.passages.ids
    np.testing.assert_allclose(_vectors(two), _vectors(one), rtol=1e-5, atol=1e-6)
    assert not work_dir_for(tmp_path / "ddp").exists()
