"""Every endpoint through FastAPI's test client: the contract, auth refusals, validation errors,
and a swap that refuses an index built by another encoder."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from atlas_kit.serve import create_app
from atlas_kit.serve.schemas import MAX_K, MAX_QUESTIONS
from tests.serve.conftest import TOKEN


@pytest.fixture
def atlas(world):
    return world.atlas("toy@v1")


@pytest.fixture
def client(world, atlas):
    app = create_app(atlas, world.store, admin_token=TOKEN, window_ms=1.0, max_batch=8)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c
    world.store.publish("toy@v1")  # tests that publish leave the store as they found it


ADMIN = {"Authorization": f"Bearer {TOKEN}"}


def test_retrieve_contract_and_matches_the_library(client, atlas):
    qs = ["capital of Zorvania", "river that flows into the sea"]
    r = client.post("/v1/retrieve", json={"questions": qs, "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["index"]["name"] == "toy" and body["index"]["version"] == "v1"
    assert [[p["id"] for p in ps] for ps in body["results"]] == [h.ids for h in atlas.retrieve(qs, k=3)]
    for passages in body["results"]:
        assert set(passages[0]) >= {"id", "title", "text", "score"}
        scores = [p["score"] for p in passages]
        assert scores == sorted(scores, reverse=True)
        assert all(p["id"].startswith("v1-") for p in passages)


def test_ask_contract(client, atlas):
    r = client.post("/v1/ask", json={"question": "What is the capital of Zorvania?", "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["answer"] == atlas.ask("What is the capital of Zorvania?", k=2).text
    assert len(body["passages"]) == 2 and body["index"] == {"name": "toy", "version": "v1", "ref": "toy@v1"}


def test_chat_completions_is_openai_shaped(client):
    r = client.post("/v1/chat/completions", json={
        "model": "atlas", "temperature": 0.0,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is the capital of Zorvania?"}], "k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int) and body["model"] == "atlas"
    [choice] = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    ask = client.post("/v1/ask", json={"question": "What is the capital of Zorvania?", "k": 2}).json()
    assert choice["message"]["content"] == ask["answer"]
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    assert [p["id"] for p in body["passages"]] == [p["id"] for p in ask["passages"]]
    assert body["index"]["version"] == "v1"


@pytest.mark.parametrize("payload, field", [
    ({"messages": [{"role": "system", "content": "hi"}]}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "user", "content": "hi"}], "stream": True}, "stream"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role"),
])
def test_chat_completions_refuses_bad_requests(client, payload, field):
    r = client.post("/v1/chat/completions", json=payload)
    assert r.status_code == 422 and field in r.json()["detail"]


def test_index_endpoints(client, world):
    info = client.get("/v1/index").json()
    assert info["name"] == "toy" and info["version"] == "v1" and info["kind"] == "faiss" and info["count"] == 6
    assert info["retriever_fingerprint"] == world.retriever.fingerprint()
    listing = {e["ref"]: e for e in client.get("/v1/indexes").json()["indexes"]}
    assert set(listing) == {"toy@v1", "toy@v2", "alien@v1"}
    assert listing["toy@v1"]["current"] and not listing["toy@v2"]["current"] and listing["toy@v2"]["count"] == 8
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["reader"] is True and health["index"]["ref"] == "toy@v1"
    stats = client.get("/v1/stats").json()
    assert stats["max_batch"] == 8 and stats["admin"] is True


@pytest.mark.parametrize("payload, field", [
    ({"k": 3}, "questions"),
    ({"questions": [], "k": 3}, "questions"),
    ({"questions": "not a list", "k": 3}, "questions"),
    ({"questions": ["  "], "k": 3}, "questions.0"),
    ({"questions": ["x" * 2001], "k": 3}, "questions.0"),
    ({"questions": ["q"] * (MAX_QUESTIONS + 1), "k": 3}, "questions"),
    ({"questions": ["q"], "k": 0}, "k"),
    ({"questions": ["q"], "k": MAX_K + 1}, "k"),
    ({"questions": ["q"], "k": "many"}, "k"),
    ({"questions": ["q"], "k": 3, "colour": "red"}, "colour"),
])
def test_retrieve_validation_names_the_field(client, payload, field):
    r = client.post("/v1/retrieve", json=payload)
    assert r.status_code == 422
    body = r.json()
    assert field in body["detail"] and "Traceback" not in r.text
    assert any(".".join(str(p) for p in e["loc"]).endswith(field) for e in body["errors"])


def test_malformed_json_and_oversized_bodies_are_4xx(client):
    r = client.post("/v1/ask", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "Traceback" not in r.text
    big = b'{"question": "' + b"x" * (2 << 20) + b'"}'
    r = client.post("/v1/ask", content=big, headers={"Content-Type": "application/json"})
    assert r.status_code == 413 and "limit" in r.json()["detail"]
    r = client.post("/v1/ask", content=iter([big[:1000], big[1000:]]), headers={"Content-Type": "application/json"})
    assert r.status_code == 413  # chunked, no Content-Length: counted as it arrives


def test_admin_endpoints_refuse_without_the_right_token(client):
    for path in ("/v1/index/swap", "/v1/index/publish"):
        r = client.post(path, json={"ref": "toy@v2"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        r = client.post(path, json={"ref": "toy@v2"}, headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert r.status_code == 401
        r = client.post(path, json={"ref": "toy@v2"}, headers={"Authorization": "Bearer wrong-token-0123456789"})
        assert r.status_code == 403
    assert client.get("/v1/index").json()["version"] == "v1"


def test_admin_endpoints_are_off_without_a_configured_token(world):
    app = create_app(world.atlas(), world.store, admin_token=None)
    with TestClient(app) as c:
        r = c.post("/v1/index/swap", json={"ref": "toy@v2"}, headers=ADMIN)
        assert r.status_code == 403 and "ATLAS_KIT_ADMIN_TOKEN" in r.json()["detail"]


def test_swap_then_every_response_names_the_new_version(client):
    r = client.post("/v1/index/swap", json={"ref": "toy@v2"}, headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["index"]["ref"] == "toy@v2" and r.json()["previous"]["ref"] == "toy@v1"
    body = client.post("/v1/retrieve", json={"questions": ["leader of Zorvania"], "k": 8}).json()
    assert body["index"]["version"] == "v2" and len(body["results"][0]) == 8
    assert all(p["id"].startswith("v2-") for p in body["results"][0])
    assert client.get("/v1/index").json()["count"] == 8


@pytest.mark.parametrize("ref, status", [
    ("alien@v1", 409),      # built by another encoder: refused before anything changes
    ("toy@v9", 404),        # no such version
    ("nothing@v1", 404),
    ("../toy@v1", 422),     # never a path
    ("toy/v1@x", 422),
    ("toy", 422),           # a version is required
])
def test_swap_refusals_leave_the_live_index(client, ref, status):
    r = client.post("/v1/index/swap", json={"ref": ref}, headers=ADMIN)
    assert r.status_code == status, r.text
    assert "detail" in r.json() and "Traceback" not in r.text
    assert client.get("/v1/index").json()["ref"] == "toy@v1"


def test_publish_moves_the_pointer_and_optionally_swaps(client, world):
    r = client.post("/v1/index/publish", json={"ref": "toy@v2"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["swapped"] is False
    assert world.store.current("toy") == "v2" and client.get("/v1/index").json()["ref"] == "toy@v1"
    r = client.post("/v1/index/publish", json={"ref": "toy@v1", "swap": True}, headers=ADMIN)
    assert r.status_code == 200 and world.store.current("toy") == "v1"
    r = client.post("/v1/index/publish", json={"ref": "alien@v1", "swap": True}, headers=ADMIN)
    assert r.status_code == 409 and world.store.current("alien") == "v1"


def test_unexpected_errors_are_500_without_a_traceback(client, atlas, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(atlas, "retrieve", boom)
    r = client.post("/v1/retrieve", json={"questions": ["q"], "k": 2})
    assert r.status_code == 500 and "secret" not in r.text and "Traceback" not in r.text
    monkeypatch.undo()
    assert client.post("/v1/retrieve", json={"questions": ["q"], "k": 2}).status_code == 200  # still serving


def test_retrieval_only_model(world):
    app = create_app(world.atlas(with_reader=False), world.store)
    with TestClient(app) as c:
        assert c.post("/v1/retrieve", json={"questions": ["q"], "k": 2}).status_code == 200
        r = c.post("/v1/ask", json={"question": "q"})
        assert r.status_code == 501 and "/v1/retrieve" in r.json()["detail"]


def test_page_static_files_and_openapi(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert 'id="question"' in page.text and "/static/app.js" in page.text
    assert "fetch(" in client.get("/static/app.js").text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/retrieve", "/v1/ask", "/v1/chat/completions", "/v1/index", "/v1/index/swap",
            "/v1/index/publish", "/healthz"} <= set(paths)
