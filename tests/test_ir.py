"""TREC runs and qrels, BEIR folders, and the IR measures (through ir-measures / trec_eval)."""
from __future__ import annotations

import json
import math

import pytest

from atlas_kit.ir import (evaluate_beir, ir_metrics, qrels_from_gold_ids, read_beir_qrels, read_beir_queries, read_qrels,
                          read_run, run_from_hits, write_qrels, write_run)
from tests.conftest import make_tiny_retriever, shared_data

# two queries; q1: 3 relevant (d4 never retrieved), q2: graded (e1 = 2, e2 = 1)
QRELS = {"q1": {"d1": 1, "d3": 1, "d4": 1}, "q2": {"e1": 2, "e2": 1}}
RUN = {"q1": {"d1": 0.9, "d2": 0.8, "d3": 0.7, "d5": 0.6}, "q2": {"e3": 0.5, "e2": 0.4, "e1": 0.3}}


def test_measures_on_a_hand_computed_example():
    m = ir_metrics(RUN, QRELS, ks=(2, 4))
    lg = math.log2
    # q1 ranking [d1 R, d2, d3 R, d5]; q2 ranking [e3, e2 (1), e1 (2)]
    ndcg2 = (1 / (1 + 1 / lg(3))                              # q1: DCG@2 = 1, ideal = 1 + 1/log2(3)
             + (1 / lg(3)) / (2 + 1 / lg(3))) / 2              # q2: DCG@2 = 1/log2(3), ideal = 2 + 1/log2(3)
    ndcg4 = ((1 + 1 / lg(4)) / (1 + 1 / lg(3) + 1 / lg(4))    # q1: hits at ranks 1 and 3 of 3 relevant
             + (1 / lg(3) + 2 / lg(4)) / (2 + 1 / lg(3))) / 2  # q2: gains 1 at rank 2, 2 at rank 3
    assert m["NDCG@2"] == pytest.approx(100 * ndcg2) and m["NDCG@4"] == pytest.approx(100 * ndcg4)
    assert m["MRR@2"] == m["MRR@4"] == pytest.approx(100 * (1 + 1 / 2) / 2)        # first hits at ranks 1 and 2
    assert m["MAP"] == pytest.approx(100 * ((1 + 2 / 3) / 3 + (1 / 2 + 2 / 3) / 2) / 2)  # AP: 5/9 and 7/12
    assert m["Recall@2"] == pytest.approx(100 * (1 / 3 + 1 / 2) / 2)
    assert m["Recall@4"] == pytest.approx(100 * (2 / 3 + 2 / 2) / 2)
    assert m["P@2"] == pytest.approx(100 * (1 / 2 + 1 / 2) / 2)
    assert m["P@4"] == pytest.approx(100 * (2 / 4 + 2 / 4) / 2)  # trec_eval divides by k, also for q2's 3 hits
    assert m["n_queries"] == 2
    # a judged query without hits scores 0 and counts (trec_eval -c); unjudged run queries are ignored
    m3 = ir_metrics({**RUN, "zz": {"x": 1.0}}, {**QRELS, "q3": {"f1": 1}}, ks=(2,))
    assert m3["n_queries"] == 3 and m3["MAP"] == pytest.approx(m["MAP"] * 2 / 3)
    assert ir_metrics({}, {"q": {"d": 1}}, ks=(1,))["MAP"] == 0.0  # nothing retrieved at all
    with pytest.raises(ValueError, match="no judged query"):
        ir_metrics(RUN, {})


def test_trec_files_round_trip_and_match_the_library_reading_them(tmp_path):
    import ir_measures
    from ir_measures import AP, RR, nDCG

    run_path = write_run(tmp_path / "run.trec", RUN, tag="mine")
    lines = run_path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d1 1 0.900000 mine" and lines[4] == "q2 Q0 e3 1 0.500000 mine" and len(lines) == 7
    assert read_run(run_path) == RUN
    qrels_path = write_qrels(tmp_path / "qrels.txt", QRELS)
    assert read_qrels(qrels_path) == QRELS
    # the library reads the written files itself and agrees with ir_metrics
    lib = ir_measures.calc_aggregate([nDCG @ 4, RR @ 4, AP], ir_measures.read_trec_qrels(str(qrels_path)),
                                     ir_measures.read_trec_run(str(run_path)))
    m = ir_metrics(RUN, QRELS, ks=(4,))
    assert m["NDCG@4"] == pytest.approx(100 * lib[nDCG @ 4]) and m["MAP"] == pytest.approx(100 * lib[AP])
    assert m["MRR@4"] == pytest.approx(100 * lib[RR @ 4])


def test_trec_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 t\nq1 Q0 d2 2 high t\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: field 'score'"):
        read_run(bad)
    bad.write_text("q1 Q0 d1 1 0.5\n")
    with pytest.raises(ValueError, match=r"bad.trec:1: expected 6 fields"):
        read_run(bad)
    bad.write_text("q1 0 d1 yes\n")
    with pytest.raises(ValueError, match=r"bad.trec:1: field 'relevance'"):
        read_qrels(bad)
    with pytest.raises(ValueError, match="whitespace"):
        write_run(tmp_path / "x.trec", {"q 1": {"d": 1.0}})
    assert not (tmp_path / "x.trec").exists()


def _beir_folder(tmp, records, queries, qrels):
    folder = tmp / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": r["id"], "title": r["title"], "text": r["text"]}) + "\n"
                                                 for r in records))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                               + "".join(f"{q}\t{d}\t{r}\n" for q, docs in qrels.items() for d, r in docs.items()))
    return folder


def test_beir_folder_evaluates_end_to_end_in_one_command(tmp_path, toy_records, capsys):
    from atlas_kit.cli import main

    queries = {"qa": "What is the capital of Zorvania?", "qb": "Which river flows into the Pale Sea?",
               "qc": "unjudged question"}
    qrels = {"qa": {"p0": 1}, "qb": {"p1": 1, "p3": 0}}
    folder = _beir_folder(tmp_path, toy_records, queries, qrels)
    assert read_beir_queries(folder / "queries.jsonl")["qb"] == queries["qb"]
    assert read_beir_qrels(folder / "qrels" / "test.tsv") == qrels
    retriever = make_tiny_retriever(normalize=True)
    retriever.save_pretrained(tmp_path / "ret")
    run_file, out = tmp_path / "beir.trec", tmp_path / "beir.json"
    assert main(["-q", "evaluate-beir", str(folder), "--retriever", str(tmp_path / "ret"), "--k", "4",
                 "--ks", "1", "4", "--run-file", str(run_file), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed["n_queries"] == 2  # only judged queries
    run = read_run(run_file)
    assert set(run) == {"qa", "qb"} and all(len(docs) == 4 for docs in run.values())
    # the same numbers from the Python API and from the written run
    metrics, py_run = evaluate_beir(folder, make_tiny_retriever(normalize=True), k=4, ks=(1, 4))
    assert metrics == pytest.approx(printed) and ir_metrics(run, qrels, ks=(1, 4)) == pytest.approx(printed)
    assert set(py_run["qa"]) == set(run["qa"])


def test_beir_drops_the_query_itself_and_checks_ids(tmp_path, toy_records):
    # query id "p0" is also a corpus id (as in ArguAna): BEIR drops that hit before scoring
    folder = _beir_folder(tmp_path, toy_records, {"p0": toy_records[0]["text"]}, {"p0": {"p3": 1}})
    retriever = make_tiny_retriever(normalize=True)
    _, run = evaluate_beir(folder, retriever, k=3, ks=(3,))
    assert "p0" not in run["p0"] and len(run["p0"]) == 3
    _, kept = evaluate_beir(folder, retriever, k=3, ks=(3,), ignore_identical_ids=False)
    assert next(iter(kept["p0"])) == "p0"  # its own text is its best match
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nnope\tp1\t1\n")
    with pytest.raises(ValueError, match="not in queries.jsonl"):
        evaluate_beir(folder, retriever, k=2)


def test_retrieval_only_recipe_writes_a_trec_run(tmp_path, monkeypatch):
    from atlas_kit.cli import main
    from atlas_kit.world import World

    monkeypatch.chdir(tmp_path)
    paths = World.generate(10, seed=0, granularity="fact", typed_values=True).to_jsonl(tmp_path / "w")
    recipe = tmp_path / "w.yaml"
    recipe.write_text(f"corpus: {paths['passages']}\ndata: {{eval: {paths['test']}}}\neval: {{retrieval_ks: [1, 4]}}\n")
    assert main(["-q", "evaluate", str(recipe), "output_dir=ev", "--retrieval-only", "--run-file", "ev.trec"]) == 0
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    run = read_run(tmp_path / "ev.trec")
    preds = [json.loads(x) for x in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert set(run) == {p["id"] for p in preds}
    qrels = qrels_from_gold_ids([p["id"] for p in preds], [p["gold_ids"] for p in preds])
    assert ir_metrics(run, qrels, ks=(1, 4))["NDCG@4"] == pytest.approx(m["NDCG@4"], abs=1e-6)
    # one gold passage per question: P@1 = Recall@1 = atlas_kit's own R@1 (share with a gold id in top 1)
    assert m["P@1"] == pytest.approx(m["Recall@1"]) == pytest.approx(m["R@1"])


@pytest.mark.slow
def test_squad_open_run_agrees_with_pytrec_eval(tmp_path):
    """Real run: SQuAD-open (all dev+test paragraphs; answerable dev questions; relevant = own
    paragraph), bundled MiniLM; ir_metrics against pytrec_eval on the same run file."""
    import pytrec_eval

    from atlas_kit import Atlas, Retriever
    from atlas_kit.index import FaissIndex
    from atlas_kit.metrics import recall_at_k
    from atlas_kit.tasks.squad import squad_open

    base = shared_data("squad2_cs224n_split")
    passages, questions = squad_open(base / "dev-v2.0.json", base / "test-v2.0.json")
    retriever = Retriever.default()
    atlas = Atlas(retriever, None, FaissIndex.build(passages, retriever), k=100)
    hits = atlas.retrieve([q.question for q in questions], k=100)
    run = run_from_hits([q.id for q in questions], hits)
    qrels = qrels_from_gold_ids([q.id for q in questions], [q.gold_ids for q in questions])
    write_run(tmp_path / "squad.trec", run)
    ours = ir_metrics(read_run(tmp_path / "squad.trec"), qrels, ks=(1, 10, 100))
    per_query = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "map", "recip_rank", "recall.100", "P.10"}).evaluate(run)
    mean = {m: 100 * sum(v[m] for v in per_query.values()) / len(qrels) for m in next(iter(per_query.values()))}
    assert len(per_query) == len(qrels) == ours["n_queries"]
    assert ours["NDCG@10"] == pytest.approx(mean["ndcg_cut_10"], abs=1e-9)
    assert ours["MAP"] == pytest.approx(mean["map"], abs=1e-9)
    assert ours["MRR@100"] == pytest.approx(mean["recip_rank"], abs=1e-9)  # the run is 100 deep
    assert ours["Recall@100"] == pytest.approx(mean["recall_100"], abs=1e-9)
    assert ours["P@10"] == pytest.approx(mean["P_10"], abs=1e-9)
    own = recall_at_k([h.ids for h in hits], [q.gold_ids for q in questions], ks=(1, 10, 100))
    assert ours["Recall@1"] == pytest.approx(own["R@1"]) and ours["Recall@100"] == pytest.approx(own["R@100"])
    print(json.dumps({k: round(v, 2) for k, v in ours.items()}))
