"""The IR field's exchange formats and measures: TREC run and qrels files, BEIR folders, and
nDCG / MRR / MAP / recall / precision computed by ``ir-measures`` (trec_eval underneath)."""
from __future__ import annotations

from atlas_kit.ir.beir import evaluate_beir, load_beir, read_beir_qrels, read_beir_queries
from atlas_kit.ir.measures import DEFAULT_KS, ir_metrics
from atlas_kit.ir.trec import Qrels, Run, qrels_from_gold_ids, read_qrels, read_run, run_from_hits, write_qrels, write_run

__all__ = ["Run", "Qrels", "run_from_hits", "qrels_from_gold_ids", "write_run", "read_run", "read_qrels", "write_qrels",
           "ir_metrics", "DEFAULT_KS", "read_beir_queries", "read_beir_qrels", "load_beir", "evaluate_beir"]
