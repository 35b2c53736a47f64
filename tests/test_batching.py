"""The shared batching engine's own pieces (the encoders' use of it is tested in tests/rerank)."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import torch

from atlas_kit.batching import ReplicaCache, plan_batches, run_batches


def test_replica_cache_keeps_one_copy_per_source_and_device_and_refreshes_on_new_weights():
    cpu, other = torch.device("cpu"), torch.device("meta")  # "meta" stands in for a second device
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    cache = ReplicaCache()
    assert cache.get(a, cpu, [cpu])[0][1] is a  # the source serves its own device
    ra = cache.get(a, cpu, [other])[0][1]
    rb = cache.get(b, cpu, [other])[0][1]
    assert ra is not a and rb is not ra and ra.weight.device.type == "meta"
    assert cache.get(a, cpu, [other])[0][1] is ra  # b's copy did not evict a's
    with torch.no_grad():
        a.weight.add_(1.0)  # an optimizer step bumps the version counters
    assert cache.get(a, cpu, [other])[0][1] is not ra
    assert not copy.deepcopy(cache)._replicas and not pickle.loads(pickle.dumps(cache))._replicas


def test_run_batches_scatters_rows_back_and_reports_progress_from_every_worker():
    lengths = np.array([3, 9, 1, 7, 5, 2, 8])
    data = torch.arange(len(lengths), dtype=torch.float32)[:, None]
    batches = plan_batches(lengths, batch_size=2)
    seen = []
    model = torch.nn.Identity()
    out = run_batches(batches, lambda sel: {"x": data[torch.as_tensor(sel)]}, lambda m, b: m(b["x"]) * 10,
                      [(torch.device("cpu"), model), (torch.device("cpu"), model)], len(lengths), progress=seen.append)
    assert torch.equal(out, data * 10) and sum(seen) == len(lengths) and len(seen) == len(batches)
