"""Elasticsearch index: request bodies, response parsing, bulk errors and the client constructor
are tested without a server (fake client); tests marked ``es`` need $ATLAS_KIT_ES_URL."""
from __future__ import annotations

import fnmatch
import json
import os
import uuid

import numpy as np
import pytest

elasticsearch = pytest.importorskip("elasticsearch")
import elasticsearch.helpers  # noqa: E402

from atlas_kit.index import ElasticsearchIndex, IndexMismatchError, load_index  # noqa: E402
from atlas_kit.index import elasticsearch_index as esi  # noqa: E402
from atlas_kit.index.hybrid_index import fuse_rankings  # noqa: E402
from atlas_kit.passages import Passages  # noqa: E402
from tests.conftest import make_tiny_retriever  # noqa: E402


# ---------------------------------------------------------------------- a fake cluster
class FakeIndices:
    def __init__(self, cluster: "FakeClient") -> None:
        self.c = cluster

    def create(self, index, settings=None, mappings=None):
        self.c.calls.append(("create", index))
        self.c.indices_data[index] = {"settings": settings, "mappings": mappings, "docs": {}, "aliases": set()}

    def exists(self, index):
        return index in self.c.indices_data or any(index in d["aliases"] for d in self.c.indices_data.values())

    def get_alias(self, name=None, index=None):
        if name is not None:
            found = {n: {"aliases": {name: {}}} for n, d in self.c.indices_data.items() if name in d["aliases"]}
            if not found:
                raise elasticsearch.NotFoundError("alias missing", meta=None, body={})
            return found
        return {n: {"aliases": {a: {} for a in d["aliases"]}} for n, d in self.c.indices_data.items()
                if fnmatch.fnmatch(n, index)}

    def update_aliases(self, actions):
        self.c.calls.append(("update_aliases", actions))
        for a in actions:
            (op, spec), = a.items()
            target = self.c.indices_data[spec["index"]]["aliases"]
            (target.discard if op == "remove" else target.add)(spec["alias"])

    def refresh(self, index):
        self.c.calls.append(("refresh", index))

    def delete(self, index):
        self.c.calls.append(("delete", index))
        for name in index.split(","):
            del self.c.indices_data[name]

    def get_mapping(self, index):
        return {n: {"mappings": d["mappings"]} for n, d in self.c.indices_data.items()
                if n == index or index in d["aliases"]}


class FakeClient:
    def __init__(self) -> None:
        self.indices_data: dict[str, dict] = {}
        self.calls: list = []
        self.indices = FakeIndices(self)
        self.responder = None

    def _resolve(self, name):
        return [n for n, d in self.indices_data.items() if n == name or name in d["aliases"]]

    def count(self, index):
        return {"count": sum(len(self.indices_data[n]["docs"]) for n in self._resolve(index))}

    def msearch(self, searches):
        self.calls.append(("msearch", searches))
        bodies = searches[1::2]
        return {"responses": [self.responder(b) for b in bodies]}


def fake_streaming_bulk(fail_ids=()):
    def streaming_bulk(client, actions, chunk_size=500, raise_on_error=True, max_retries=0, **kw):
        assert raise_on_error is False  # failures must come back to be reported together
        for a in actions:
            info = {"_id": a["_id"], "_index": a["_index"]}
            if a["_id"] in fail_ids:
                yield False, {a["_op_type"]: {**info, "status": 400, "error": {
                    "type": "mapper_parsing_exception", "reason": f"failed to parse field [text] of {a['_id']}"}}}
                continue
            docs = client.indices_data[a["_index"]]["docs"]
            if a["_op_type"] == "delete":
                docs.pop(a["_id"], None)
            else:
                docs[a["_id"]] = a["_source"]
            yield True, {a["_op_type"]: {**info, "status": 201}}
    return streaming_bulk


def hit(pid, score, title="", text="", metadata=None):
    return {"_index": "wiki-v1", "_id": pid, "_score": score,
            "_source": {"id": pid, "title": title, "text": text, "metadata": metadata or {}}}


def response(*hits):
    return {"took": 1, "timed_out": False, "hits": {"total": {"value": len(hits)}, "hits": list(hits)}}


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setattr(elasticsearch.helpers, "streaming_bulk", fake_streaming_bulk())
    return FakeClient()


# ---------------------------------------------------------------------- connection
class Recorder:
    instances: list = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        Recorder.instances.append(self)


def test_auth_tls_and_retry_options_reach_the_client(monkeypatch):
    Recorder.instances = []
    monkeypatch.setattr(elasticsearch, "Elasticsearch", Recorder)
    ElasticsearchIndex("https://es.example:9200", "wiki", api_key="s3cret", ca_certs="/etc/ca.pem",
                       verify_certs=False, request_timeout=12, max_retries=5)
    assert Recorder.instances[-1].kwargs == {
        "hosts": ["https://es.example:9200"], "api_key": "s3cret", "ca_certs": "/etc/ca.pem", "verify_certs": False,
        "request_timeout": 12, "max_retries": 5, "retry_on_timeout": True,
    }
    ElasticsearchIndex("https://es.example:9200", "wiki", basic_auth=("elastic", "pw"))
    kw = Recorder.instances[-1].kwargs
    assert kw["basic_auth"] == ("elastic", "pw") and "api_key" not in kw and kw["verify_certs"] is True
    with pytest.raises(ValueError, match="either api_key or basic_auth"):
        ElasticsearchIndex("https://es.example:9200", "wiki", api_key="k", basic_auth=("u", "p"))
    with pytest.raises(ValueError, match="mode"):
        ElasticsearchIndex("http://x:9200", "wiki", mode="sparse", client=FakeClient())
    with pytest.raises(ValueError, match="invalid Elasticsearch index name"):
        ElasticsearchIndex("http://x:9200", "Wiki Corpus", client=FakeClient())


# ---------------------------------------------------------------------- pure request builders
def test_index_body_mappings():
    body = esi.index_body(32, esi.vector_similarity(False), shards=2, replicas=1, k1=1.1, b=0.6, meta={"x": 1})
    props = body["mappings"]["properties"]
    assert props["embedding"] == {"type": "dense_vector", "dims": 32, "index": True, "similarity": "max_inner_product"}
    assert props["title"]["type"] == props["text"]["type"] == "text"
    assert props["id"] == {"type": "keyword"} and props["metadata"] == {"type": "object", "enabled": False}
    assert body["mappings"]["_meta"] == {"x": 1}
    assert body["settings"]["number_of_shards"] == 2 and body["settings"]["number_of_replicas"] == 1
    assert body["settings"]["index"]["similarity"]["default"] == {"type": "BM25", "k1": 1.1, "b": 0.6}
    assert esi.vector_similarity(True) == "dot_product"
    assert "embedding" not in esi.index_body(None)["mappings"]["properties"]  # BM25-only index


def test_bulk_actions_carry_ids_sources_and_vectors(toy_passages):
    ps = Passages.from_records([{"id": "a", "title": "T", "text": "x", "lang": "en"}, {"id": "b", "text": "y"}])
    vecs = np.arange(6, dtype=np.float32).reshape(2, 3)
    actions = list(esi.bulk_actions(ps, "wiki-v3", vecs))
    assert actions[0] == {"_op_type": "index", "_index": "wiki-v3", "_id": "a",
                          "_source": {"id": "a", "title": "T", "text": "x", "metadata": {"lang": "en"}, "embedding": [0.0, 1.0, 2.0]}}
    assert actions[1]["_source"]["embedding"] == [3.0, 4.0, 5.0] and actions[1]["_source"]["title"] == ""
    assert "embedding" not in next(esi.bulk_actions(ps, "wiki-v3"))["_source"]
    json.dumps(actions)  # serialisable as-is


def test_query_bodies():
    q = esi.bm25_query("who wrote the iliad", 7, title_boost=2.5)
    assert q["size"] == 7 and set(q["_source"]) == {"id", "title", "text", "metadata"}
    should = q["query"]["bool"]["should"]
    assert {"match": {"title": {"query": "who wrote the iliad", "boost": 2.5}}} in should
    assert {"match": {"text": {"query": "who wrote the iliad"}}} in should
    knn = esi.knn_query(np.array([0.5, -1.0]), 5, num_candidates=50)
    assert knn["knn"] == {"field": "embedding", "query_vector": [0.5, -1.0], "k": 5, "num_candidates": 50}
    assert knn["size"] == 5 and "embedding" not in knn["_source"]  # never ship vectors back
    assert esi.knn_query([0.0], 20)["knn"]["num_candidates"] == 200  # default: max(100, 10k)
    assert esi.knn_query([0.0], 30, num_candidates=10)["knn"]["num_candidates"] == 30  # never below k
    assert esi.default_num_candidates(5000) == 10_000  # Elasticsearch's ceiling
    assert esi.msearch_body("wiki", [{"a": 1}, {"b": 2}]) == [{"index": "wiki"}, {"a": 1}, {"index": "wiki"}, {"b": 2}]


def test_alias_switch_actions_and_versions():
    assert esi.alias_actions("wiki", "wiki-v2", ["wiki-v1"]) == [
        {"remove": {"index": "wiki-v1", "alias": "wiki"}}, {"add": {"index": "wiki-v2", "alias": "wiki"}}]
    assert esi.alias_actions("wiki", "wiki-v1") == [{"add": {"index": "wiki-v1", "alias": "wiki"}}]
    assert esi.next_version(["wiki-v1", "wiki-v3", "wiki-old", "wikipedia-v9"], "wiki") == 4
    assert esi.next_version([], "wiki") == 1 and esi.versioned_name("wiki", 2) == "wiki-v2"
    assert esi.redact_url("https://user:pw@es.example:9243/x") == "https://es.example:9243/x"
    for bad in ("Wiki", "a b", "_x", "a/b", ""):
        with pytest.raises(ValueError):
            esi.validate_index_name(bad)


def test_parse_response_into_hits():
    resp = response(hit("p3", 4.5, "Brundle", "Varnhold", {"year": 2020}), hit("p0", 1.25, "Zorvania", "Blim"))
    hits = esi.parse_response(resp)
    assert hits.ids == ["p3", "p0"] and [h.rank for h in hits] == [0, 1]
    assert (hits[0].title, hits[0].text, hits[0].metadata, hits[0].score) == ("Brundle", "Varnhold", {"year": 2020}, 4.5)
    np.testing.assert_allclose(hits.scores, [4.5, 1.25])
    assert len(esi.parse_response(response())) == 0
    # kNN scores are mapped back to the raw similarity
    mip = esi.parse_response(response(hit("a", 1.5), hit("b", 0.5)), knn_similarity="max_inner_product")
    assert [h.score for h in mip] == pytest.approx([0.5, -1.0])
    assert esi.parse_response(response(hit("a", 0.75)), knn_similarity="dot_product")[0].score == pytest.approx(0.5)
    with pytest.raises(esi.ElasticsearchIndexError, match="search_phase_execution_exception: all shards failed"):
        esi.parse_msearch({"responses": [response(), {"error": {"type": "search_phase_execution_exception",
                                                                 "reason": "all shards failed"}, "status": 400}]}, 2)


# ---------------------------------------------------------------------- build / publish / search (fake cluster)
def test_build_creates_version_and_publishes_by_alias(fake, toy_passages):
    index = ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    assert index.mode == "bm25" and not index.needs_embeddings
    assert fake.indices_data["wiki-v1"]["aliases"] == {"wiki"} and len(fake.indices_data["wiki-v1"]["docs"]) == 6
    assert ("update_aliases", [{"add": {"index": "wiki-v1", "alias": "wiki"}}]) in fake.calls
    assert index.manifest["version"] == 1 and index.manifest["concrete_index"] == "wiki-v1" and len(index) == 6
    mapping = fake.indices_data["wiki-v1"]["mappings"]
    assert "embedding" not in mapping["properties"]
    assert mapping["_meta"]["atlas_kit"]["corpus_checksum"] == toy_passages.checksum()

    bigger = toy_passages.concat(Passages.from_records([{"id": "p9", "title": "New", "text": "A new passage."}]))
    fake.calls.clear()
    v2 = ElasticsearchIndex.build(bigger, "http://es:9200", "wiki", client=fake)
    alias_calls = [c for c in fake.calls if c[0] == "update_aliases"]
    assert alias_calls == [("update_aliases", [{"remove": {"index": "wiki-v1", "alias": "wiki"}},
                                               {"add": {"index": "wiki-v2", "alias": "wiki"}}])]  # one atomic request
    assert v2.alias_targets() == ["wiki-v2"] and len(v2) == 7 and v2.versions() == [1, 2]
    v2.publish(1)  # rollback
    assert v2.alias_targets() == ["wiki-v1"] and len(v2) == 6
    v2.drop()
    assert fake.indices_data == {}


def test_build_refuses_a_concrete_index_named_like_the_alias(fake, toy_passages):
    fake.indices.create(index="wiki")
    with pytest.raises(esi.ElasticsearchIndexError, match="concrete index"):
        ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)


def test_bulk_failures_are_listed_and_nothing_is_published(fake, toy_passages, monkeypatch):
    monkeypatch.setattr(elasticsearch.helpers, "streaming_bulk", fake_streaming_bulk(fail_ids={"p1", "p4"}))
    with pytest.raises(esi.ElasticsearchIndexError) as err:
        ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    msg = str(err.value)
    assert "2 of 6 documents failed" in msg and "'p1'" in msg and "'p4'" in msg
    assert "mapper_parsing_exception: failed to parse field [text] of p1" in msg
    assert [f["index"]["_id"] for f in err.value.failures] == ["p1", "p4"]
    assert not [c for c in fake.calls if c[0] == "update_aliases"]  # the alias never moved
    assert "wiki-v1" not in fake.indices_data  # the partial index was deleted
    msg = esi.bulk_failures_message([{"index": {"_id": str(i), "status": 400, "error": "bad"}} for i in range(9)], 9, "w", limit=3)
    assert msg.count("id '") == 3 and msg.startswith("9 of 9")


def test_build_with_retriever_indexes_vectors(fake, toy_passages, tiny_retriever):
    index = ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", retriever=tiny_retriever, client=fake)
    assert index.mode == "hybrid" and index.needs_embeddings
    data = fake.indices_data["wiki-v1"]
    assert data["mappings"]["properties"]["embedding"]["dims"] == 32
    assert data["mappings"]["properties"]["embedding"]["similarity"] == "max_inner_product"  # tiny retriever: not normalised
    emb = tiny_retriever.encode_passages(toy_passages)
    np.testing.assert_allclose(data["docs"]["p2"]["embedding"], emb[2], rtol=1e-5, atol=1e-6)
    assert index.manifest["retriever"]["fingerprint"] == tiny_retriever.fingerprint()
    index.check_compatible(tiny_retriever)
    with pytest.raises(IndexMismatchError):
        index.check_compatible(make_tiny_retriever(seed=1))
    # an index opened by name alone learns the encoder identity from the mapping's _meta
    by_name = ElasticsearchIndex("http://es:9200", "wiki", mode="knn", client=fake)
    with pytest.raises(IndexMismatchError):
        by_name.check_compatible(make_tiny_retriever(seed=1))


def test_search_modes_use_msearch_and_fuse_hybrid_by_rrf(fake, toy_passages):
    ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    lexical = response(hit("p0", 9.0, "Zorvania", "Blim"), hit("p3", 5.0, "Brundle", "Varnhold"), hit("p1", 1.0))
    dense = response(hit("p3", 1.8), hit("p5", 1.5), hit("p0", 1.2))
    fake.responder = lambda body: lexical if "query" in body else dense

    bm25 = ElasticsearchIndex("http://es:9200", "wiki", client=fake, msearch_batch=2)
    hits = bm25.search(["capital of Zorvania", "b", "c"], k=3)
    searches = [c[1] for c in fake.calls if c[0] == "msearch"]
    assert len(searches) == 2 and searches[0][0] == {"index": "wiki"}  # 3 queries in batches of 2, via the alias
    assert searches[0][1] == esi.bm25_query("capital of Zorvania", 3)
    assert hits[0].ids == ["p0", "p3", "p1"] and hits[0][0].title == "Zorvania"

    q = np.ones((1, 32), dtype=np.float32)
    knn = ElasticsearchIndex("http://es:9200", "wiki", mode="knn", client=fake, manifest={"similarity": "max_inner_product", "retriever": {"dim": 32}})
    knn._meta_loaded = True
    (kh,) = knn.search(["x"], 3, query_embeddings=q)
    assert kh.ids == ["p3", "p5", "p0"] and kh[0].score == pytest.approx(0.8)
    with pytest.raises(ValueError, match="query_embeddings or a retriever"):
        knn.search(["x"], 3)

    hybrid = ElasticsearchIndex("http://es:9200", "wiki", mode="hybrid", client=fake, rrf_k=60, fetch_factor=2)
    hybrid._meta_loaded = True
    fake.calls.clear()
    (hh,) = hybrid.search(["x"], 2, query_embeddings=q)
    (sent,) = [c[1] for c in fake.calls if c[0] == "msearch"]
    assert sent[1]["size"] == 4 and sent[3]["knn"]["k"] == 4  # over-retrieval on both sides
    expected = fuse_rankings([["p0", "p3", "p1"], ["p3", "p5", "p0"]], rrf_k=60, k=2)
    assert hh.ids == [f.id for f in expected] == ["p3", "p0"]  # p3 = 1/62 + 1/61 > p0 = 1/61 + 1/63
    assert [h.score for h in hh] == pytest.approx([f.score for f in expected])
    assert hh[1].title == "Zorvania"  # title/text carried over from the lexical response


def test_save_writes_no_secrets_and_load_reconnects_with_env_key(tmp_path, monkeypatch, fake, toy_passages):
    ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    Recorder.instances = []

    def factory(**kwargs):
        Recorder(**kwargs)
        return fake

    monkeypatch.setattr(elasticsearch, "Elasticsearch", factory)
    index = ElasticsearchIndex("https://elastic:hunter2@es.example:9200", "wiki", api_key="topsecret-key",
                               ca_certs="/etc/ca.pem", request_timeout=7, max_retries=4, title_boost=2.0)
    index.save(tmp_path / "es-wiki")
    text = (tmp_path / "es-wiki" / "manifest.json").read_text()
    assert "topsecret-key" not in text and "hunter2" not in text
    m = json.loads(text)
    assert m["kind"] == "elasticsearch" and m["url"] == "https://es.example:9200" and m["index_name"] == "wiki"
    assert m["auth"] == "api_key" and m["mode"] == "bm25" and m["title_boost"] == 2.0

    monkeypatch.setenv(esi.ES_API_KEY_ENV, "key-from-env")
    # credentials and the CA go only to a host the user configured (tests/reliability covers the rest)
    monkeypatch.setenv(esi.ES_URL_ENV, "https://es.example:9200")
    monkeypatch.setenv(esi.ES_CA_CERTS_ENV, "/etc/ca.pem")
    loaded = load_index(tmp_path / "es-wiki", mmap=False)
    assert isinstance(loaded, ElasticsearchIndex) and loaded.path == str(tmp_path / "es-wiki")
    kw = Recorder.instances[-1].kwargs
    assert kw["api_key"] == "key-from-env" and kw["hosts"] == ["https://es.example:9200"]
    assert kw["ca_certs"] == "/etc/ca.pem" and kw["request_timeout"] == 7 and kw["max_retries"] == 4
    assert loaded.title_boost == 2.0 and len(loaded) == 6


def test_add_and_remove_update_the_live_index(fake, toy_passages):
    index = ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    index.add(Passages.from_records([{"id": "p9", "title": "N", "text": "new"}]))
    assert len(index) == 7 and "p9" in fake.indices_data["wiki-v1"]["docs"]
    index.remove(["p9", "p0"])
    assert len(index) == 5 and index.manifest["count"] == 5 and index.manifest["history"][-1]["change"] == "remove"


# ---------------------------------------------------------------------- live server (opt-in)
ES_URL = os.environ.get("ATLAS_KIT_ES_URL")


@pytest.mark.es
@pytest.mark.skipif(not ES_URL, reason="set ATLAS_KIT_ES_URL to run tests against a live Elasticsearch")
def test_live_build_search_publish_and_cleanup(toy_passages, tiny_retriever):
    name = f"atlas-kit-test-{uuid.uuid4().hex[:8]}"
    auth = {"api_key": os.environ["ATLAS_KIT_ES_API_KEY"]} if os.environ.get("ATLAS_KIT_ES_API_KEY") else {}
    index = ElasticsearchIndex.build(toy_passages, ES_URL, name, retriever=tiny_retriever, mode="bm25",
                                     verify_certs=os.environ.get("ATLAS_KIT_ES_VERIFY_CERTS", "1") != "0", **auth)
    try:
        (hits,) = index.search(["capital of Zorvania"], k=3)
        assert hits.ids[0] == "p0" and hits[0].title == "Zorvania"
        q = tiny_retriever.encode_queries(["capital of Zorvania"])
        index.mode, index.needs_embeddings = "hybrid", True
        (hh,) = index.search(["capital of Zorvania"], k=3, query_embeddings=q)
        assert len(hh) == 3 and "p0" in hh.ids
        index.mode, index.needs_embeddings = "bm25", False
        bigger = toy_passages.concat(Passages.from_records([{"id": "p9", "title": "Oskavel", "text": "A glacier lake."}]))
        v2 = ElasticsearchIndex.build(bigger, ES_URL, name, verify_certs=index.manifest["verify_certs"], **auth)
        assert v2.alias_targets() == [f"{name}-v2"] and len(v2) == 7
        assert v2.search(["glacier lake"], 1)[0].ids == ["p9"]
        v2.publish(1)
        assert len(index) == 6
    finally:
        index.drop()
    assert index.existing_indices() == []


def test_elasticsearch_member_inside_a_local_hybrid(fake, toy_passages, tmp_path):
    from atlas_kit.index import BM25Index, HybridIndex

    ElasticsearchIndex.build(toy_passages, "http://es:9200", "wiki", client=fake)
    fake.responder = lambda body: response(hit("p4", 3.0, "Ilvaro", "Ilvaro is a mountain covered in blue pines."),
                                           hit("p0", 2.0, "Zorvania", "Blim"))
    remote = ElasticsearchIndex("http://es:9200", "wiki", client=fake)
    local = BM25Index.build(toy_passages)
    hybrid = HybridIndex([local, remote])
    assert not hybrid.needs_embeddings
    (hits,) = hybrid.search(["capital of Zorvania"], k=2)
    expected = fuse_rankings([local.search(["capital of Zorvania"], 4)[0].ids, ["p4", "p0"]], k=2)
    assert hits.ids == [f.id for f in expected] and hits.ids[0] == "p0"
    assert hits[0].title == "Zorvania"
