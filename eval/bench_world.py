"""World generation speed: seconds per entity at growing world sizes (does it stay linear?).

Generates a world, its passages, its questions and an evolved copy (what the demo, the learning
benchmark and the temporal-swap benchmark do) at each size, best of ``--repeats``, and reports the
time per entity relative to the smallest size in the same run (1.0 = linear). This replaces a
timed assertion that used to live in the test suite (tests must not time themselves).

    python eval/bench_world.py [--sizes 500,5000,20000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import time

import _common

from atlas_kit.world import World


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="500,5000,20000")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--name", default="bench_world")
    args = ap.parse_args()
    rows = []
    base = None
    for n in [int(x) for x in args.sizes.split(",")]:
        best = float("inf")
        for seed in range(args.repeats):
            t0 = time.perf_counter()
            w = World.generate(n, seed=seed)
            w.passages(), w.questions(), w.evolve(0.3)
            best = min(best, time.perf_counter() - t0)
        per_entity = best / n
        base = base or per_entity
        rows.append({"entities": n, "seconds": round(best, 3), "µs per entity": round(1e6 * per_entity, 1),
                     "per entity vs smallest": round(per_entity / base, 2)})
    _common.report(args.name, rows, {"args": vars(args)}, title="World.generate + passages + questions + evolve(0.3)")


if __name__ == "__main__":
    main()
