"""nDCG@k, MRR@k, MAP, recall@k and precision@k of a run against qrels, through ``ir-measures``.

Why ``ir-measures`` (Macdonald & Tonellotto et al., ICTIR 2022): it names measures the way papers
do (``nDCG@10``, ``RR@10``, ``AP``, ``R@100``, ``P@10``) and computes them with ``pytrec_eval``
(the bindings of NIST's trec_eval, the reference implementation BEIR and Pyserini use), plus its
own MS MARCO implementation for RR@k. It installs with two small wheels and no torch; ``ranx``
would pull numba, ir_datasets and seaborn, and bare ``pytrec_eval`` has no measure names or RR@k.

Results are in percent (0-100), as every atlas_kit metric, under BEIR's names: ``NDCG@k``,
``MRR@k``, ``MAP`` (over the whole ranking), ``Recall@k``, ``P@k``; ``n_queries`` is the number of
judged queries. One deliberate difference from bare trec_eval: a judged query that is missing from
the run (or has no hits) scores 0 and counts in the mean (trec_eval's ``-c``), instead of silently
leaving the average; atlas_kit runs always hold every query, so this only matters for foreign runs.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from typing import Mapping, Sequence

__all__ = ["DEFAULT_KS", "ir_metrics"]

log = logging.getLogger(__name__)

DEFAULT_KS = (1, 10, 100)


def _measures(ks: Sequence[int]):
    import ir_measures
    from ir_measures import AP, RR, P, R, nDCG

    names = {}
    for k in ks:
        names[nDCG @ k] = f"NDCG@{k}"
        names[RR @ k] = f"MRR@{k}"
        names[R @ k] = f"Recall@{k}"
        names[P @ k] = f"P@{k}"
    names[AP] = "MAP"
    return ir_measures, names


def ir_metrics(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
               ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """BEIR-named IR measures (percent) of ``run`` against ``qrels``, averaged over judged queries.

    ``run``: ``{qid: {docid: score}}`` (higher is better; ranks come from scores, as in trec_eval);
    ``qrels``: ``{qid: {docid: relevance}}``, graded relevance for nDCG, ``> 0`` counts as relevant.
    """
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"cut-offs must be positive integers, got {list(ks)}")
    judged = {str(q): {str(d): int(r) for d, r in docs.items()} for q, docs in qrels.items() if docs}
    if not judged:
        raise ValueError("no judged query in the qrels")
    runs = {str(q): {str(d): float(s) for d, s in docs.items()} for q, docs in run.items() if str(q) in judged and docs}
    missing = len(judged) - len(runs)
    if missing:
        log.warning("%d of %d judged queries have no retrieved documents; they score 0", missing, len(judged))
    ir_measures, names = _measures(ks)
    totals: dict[str, float] = defaultdict(float)
    for metric in ir_measures.iter_calc(list(names), judged, runs) if runs else ():
        totals[names[metric.measure]] += float(metric.value)
    out = {name: 100.0 * totals[name] / len(judged) for name in _ordered(names.values())}
    out["n_queries"] = len(judged)
    return out


def _ordered(names) -> list[str]:
    order = {"NDCG": 0, "MRR": 1, "MAP": 2, "Recall": 3, "P": 4}
    return sorted(names, key=lambda n: (order[n.split("@")[0]], int(n.split("@")[1]) if "@" in n else 0))
