"""The data-parallel path, run for real on CPU: two Gloo processes with batch 2 each must compute the
same (averaged) gradients and losses as one process with batch 4 - the same examples per step.

Gradients are compared, not weights after several steps: Adam turns float-rounding noise in
near-zero gradients into full learning-rate-sized updates, which says nothing about correctness.

Both sides run in float64 with one intra-op thread. In float32 the two layouts (two batches of 2 vs
one of 4: other padding, other reduction order, gradients summed by all-reduce instead of inside
one backward) differed by a relative 1.0e-4 - 1.2e-4 depending on the machine, right at the old
1e-4 threshold. In float64 that rounding noise is ~1e-13, so the check can be 1e5 times stricter
than before and still never trip on reduction order; a real data-parallel fault (a rank's slice
missing, gradients summed instead of averaged, unsynchronised weights) moves gradients by 1e-2 or
more. (Retrieval still searches float32 vectors; both sides retrieve the same passages.)"""
from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

from atlas_kit.train import TrainConfig, Trainer
from tests.conftest import free_port, make_setup

STEPS = 1
REL_TOL = 1e-9  # float64: rounding noise ~1e-13 (see the module docstring)


def _no_dropout(atlas) -> None:
    for module in (atlas.reader, atlas.retriever):
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            for attr in ("dropout", "dropout_prob", "attention_dropout"):  # attention dropout kept as floats
                if isinstance(getattr(m, attr, None), float):
                    setattr(m, attr, 0.0)


def _config(batch_size: int) -> TrainConfig:
    return TrainConfig(steps=STEPS, batch_size=batch_size, n_context=2, retriever_loss="pdist", retriever_lr=1e-3,
                       reader_lr=1e-3, warmup_steps=0, tensorboard=False, clip_norm=1e9)


def _grads(atlas) -> dict[str, torch.Tensor]:
    """Gradients of the last step (the trainer zeroes them at the start of the next one)."""
    out = {}
    for prefix, module in (("reader", atlas.reader), ("retriever", atlas.retriever)):
        for name, p in module.named_parameters():
            if p.grad is not None:
                out[f"{prefix}.{name}"] = p.grad.detach().clone().contiguous()
    return out


def _prepare(atlas) -> None:
    _no_dropout(atlas)
    atlas.reader.double()
    atlas.retriever.double()


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    atlas, examples = make_setup()
    _prepare(atlas)
    trainer = Trainer(atlas, _config(batch_size=2))
    assert (trainer.rank, trainer.world_size) == (rank, world)
    trainer.fit(examples, show_progress=False)
    if rank == 0:
        losses = trainer.history[-1]
        save_file({**_grads(atlas), "loss.reader": torch.tensor(losses["reader_loss"], dtype=torch.float64),
                   "loss.retriever": torch.tensor(losses["retriever_loss"], dtype=torch.float64)}, out)
    dist.barrier()
    dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no Gloo backend")
def test_two_gloo_ranks_equal_one_process_with_the_global_batch(tmp_path):
    out = str(tmp_path / "ddp.safetensors")
    mp.spawn(_worker, args=(2, free_port(), out), nprocs=2, join=True)
    ddp = load_file(out)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers
    try:
        atlas, examples = make_setup()
        _prepare(atlas)
        single = Trainer(atlas, _config(batch_size=4))
        assert (single.rank, single.world_size) == (0, 1)
        single.fit(examples, show_progress=False)
    finally:
        torch.set_num_threads(threads)
    ref = _grads(atlas)
    assert any(k.startswith("reader.") for k in ref) and any(k.startswith("retriever.") for k in ref)
    assert set(ref) <= set(ddp) and all(ddp[k].dtype == torch.float64 for k in ref)
    assert ddp["loss.reader"].item() == pytest.approx(single.history[-1]["reader_loss"], rel=REL_TOL)
    assert ddp["loss.retriever"].item() == pytest.approx(single.history[-1]["retriever_loss"], rel=REL_TOL, abs=1e-12)
    # relative to each tensor's scale; a tensor whose gradient is mathematically zero (a key bias
    # cannot change a softmax) holds only ~1e-18 of rounding noise, so its scale is floored at 1e-6
    # of the largest gradient
    overall = max(t.abs().max().item() for t in ref.values())
    worst = max((ddp[k] - ref[k]).abs().max().item() / max(ref[k].abs().max().item(), 1e-6 * overall) for k in ref)
    print(f"worst relative gradient difference, 2 Gloo ranks vs 1 process (float64): {worst:.3e}")
    assert worst < REL_TOL, f"data-parallel gradients differ from the single-process ones (relative {worst})"
