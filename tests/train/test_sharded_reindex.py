"""``refresh=reindex`` under data parallelism: each of two Gloo ranks encodes half the corpus and
the halves are all-gathered; the index must equal the one a single process builds."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from atlas_kit.train import TrainConfig, Trainer
from tests.conftest import free_port
from tests.conftest import make_setup


def _config() -> TrainConfig:
    return TrainConfig(steps=1, batch_size=2, n_context=2, retriever_loss="pdist", tensorboard=False)


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    atlas, _ = make_setup()
    trainer = Trainer(atlas, _config())
    calls = []
    encode = atlas.retriever.encode_passages
    atlas.retriever.encode_passages = lambda p, **k: (calls.append(len(p)), encode(p, **k))[1]
    trainer.reindex()
    np.save(f"{out}-{rank}.npy", np.asarray(atlas.index.embeddings, dtype=np.float32))
    np.save(f"{out}-{rank}-encoded.npy", np.asarray(calls))
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no Gloo backend")
def test_two_ranks_reindex_their_shards_and_match_one_process(tmp_path):
    out = str(tmp_path / "emb")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
    atlas, _ = make_setup()
    Trainer(atlas, _config()).reindex()
    single = np.asarray(atlas.index.embeddings, dtype=np.float32)
    n = len(single)
    for rank in range(2):
        np.testing.assert_allclose(np.load(f"{out}-{rank}.npy"), single, rtol=1e-4, atol=1e-5)
        assert np.load(f"{out}-{rank}-encoded.npy").tolist() == [n // 2 if rank == 0 else n - n // 2]
