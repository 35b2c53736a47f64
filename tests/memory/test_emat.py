"""EMAT: offline keys equal forward-pass queries, 0 slots equals T5 with the prefix, FAISS top-k
equals exact top-k, save -> load and hot swap give identical answers, the auto-encoding losses fall."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from atlas_kit.index import load_index
from atlas_kit.index.base import IndexMismatchError
from atlas_kit.index.store import IndexStore
from atlas_kit.memory.emat import EMAT
from atlas_kit.memory.emat_memory import QAMemory, load_qa_pairs
from atlas_kit.world import World

EMAT_SMALL = {"key_layer": 0, "value_layer": 1, "prefix_length": 2}


def tiny_emat(seed: int = 0, dropout: float = 0.0) -> EMAT:
    return EMAT.from_config(d_model=32, num_layers=3, num_heads=2, dropout=dropout, seed=seed,
                            emat={**EMAT_SMALL, "seed": seed}).eval()


@pytest.fixture(scope="module")
def world_pairs():
    world = World.generate(12, seed=0, typed_values=True)
    return [(q.question, q.answers[0]) for q in world.questions()]


@pytest.fixture(scope="module")
def emat():
    return tiny_emat()


def test_memory_key_equals_forward_query(emat, world_pairs):
    questions = [q for q, _ in world_pairs[:6]]
    memory = QAMemory.build(world_pairs, emat)
    keys, _ = memory.kv.entries()
    with torch.no_grad():
        enc = emat.encode(questions, memory=memory, k=3)
    np.testing.assert_allclose(enc.query.numpy(), keys[:6], rtol=1e-5, atol=1e-6)
    # the slots read are the exact top-3 of that query, with their stored keys and values
    ids = enc.slots.ids.numpy()
    sims = enc.query.numpy() @ keys.T
    np.testing.assert_array_equal(ids, np.argsort(-sims, axis=1, kind="stable")[:, :3])
    _, rows = memory.kv.entries()
    np.testing.assert_array_equal(enc.slots.keys.reshape(6, 3, -1).numpy(), rows[ids][:, :, : 2 * emat.d_model])


def test_zero_slots_is_t5_with_the_prefix(emat):
    questions = ["What is the capital of Zorvania?", "Who is the leader of Brundle, the old country?"]
    with torch.no_grad():
        enc = emat.encode(questions, k=0)
        ids, att = emat._tokens(emat.question_texts(questions))
        embeds = emat.model.get_input_embeddings()(ids)
        prefix = emat.prefix[None].expand(len(questions), -1, -1)
        plain = emat.model.get_encoder()(inputs_embeds=torch.cat([prefix, embeds], 1),
                                         attention_mask=torch.cat([torch.ones(2, 2, dtype=att.dtype), att], 1))
    mask = enc.mask.bool()
    torch.testing.assert_close(enc.hidden[mask], plain.last_hidden_state[mask], rtol=1e-5, atol=1e-6)
    # empty slots (a memory with fewer entries than k) change nothing either
    p, d = emat.prefix_length, emat.d_model
    from atlas_kit.memory.emat import Slots

    empty = Slots(torch.randn(2, 3, p, d), torch.randn(2, 3, p, d), torch.zeros(2, 3, dtype=torch.bool))
    with torch.no_grad():
        masked = emat.encode(questions, slots=empty)
    keep = masked.mask.bool()
    torch.testing.assert_close(masked.hidden[keep], plain.last_hidden_state[mask], rtol=1e-5, atol=1e-5)


def test_slots_change_the_encoding_and_the_loss_reaches_every_part():
    model = tiny_emat(dropout=0.0)
    pairs = [("Who founded Quessa?", "Lord Brim"), ("What does Quessa make?", "lamps")]
    slots = model.slots_from_pairs([[pairs[0], pairs[1]], [pairs[1], None]])
    loss, enc = model(["Who started Quessa?", "What is made by Quessa?"], ["Lord Brim", "lamps"], slots=slots)
    loss.backward()
    for name in ("prefix", "key_encoder.conv.weight", "key_encoder.linear.weight"):
        assert dict(model.named_parameters())[name].grad.abs().sum() > 0, name
    assert enc.hidden.shape[1] == 2 * 2 + enc.mask.shape[1] - 2 * 2  # slots occupy the first k x P positions
    assert enc.mask[1, 2:4].tolist() == [0, 0]  # the empty slot is masked


def test_faiss_top_k_equals_exact(emat, world_pairs):
    exact = QAMemory.build(world_pairs, emat, backend="Flat")
    approx = QAMemory.build(world_pairs, emat, backend="IVF4,Flat", search_params={"nprobe": 4})
    assert approx.kv.trainable
    with torch.no_grad():
        query, _ = emat.embed_keys([q for q, _ in world_pairs[::3]])
    a, b = exact.search(query, 5), approx.search(query, 5)
    np.testing.assert_array_equal(a.slots.numpy(), b.slots.numpy())
    np.testing.assert_allclose(a.scores.numpy(), b.scores.numpy(), rtol=1e-5, atol=1e-5)
    hnsw = QAMemory.build(world_pairs, emat, backend="HNSW16", search_params={"efSearch": 64})
    np.testing.assert_array_equal(hnsw.search(query, 5).slots.numpy(), a.slots.numpy())


def test_save_load_and_hot_swap_give_identical_answers(tmp_path, world_pairs):
    from atlas_kit.api import Atlas

    model = tiny_emat(seed=1)
    questions = [q for q, _ in world_pairs[:5]]
    first = QAMemory.build(world_pairs, model)
    second = QAMemory.build(world_pairs[::-1], model)
    store = IndexStore(tmp_path / "indexes")
    store.add("kb@v1", first)
    store.add("kb@v2", second)
    loaded = store.load("kb@v1")
    assert isinstance(loaded, QAMemory) and isinstance(load_index(tmp_path / "indexes" / "kb" / "v1"), QAMemory)
    before = model.generate(questions, memory=first, k=3, max_length=4, return_slots=True)
    assert model.generate(questions, memory=loaded, k=3, max_length=4, return_slots=True) == before
    model.save_pretrained(tmp_path / "emat")
    again = EMAT.from_pretrained(tmp_path / "emat")
    assert again.fingerprint() == model.fingerprint()
    assert again.generate(questions, memory=loaded, k=3, max_length=4, return_slots=True) == before

    atlas = Atlas(reader=model, memory=first, memory_k=3)
    answers = atlas.ask(questions, max_length=4)
    assert [a.text for a in answers] == before[0]
    assert [a.memory[0][0] for a in answers] == [first.questions[r[0]] for r in before[1]]
    old = atlas.swap_memory(store.load("kb@v2"))
    assert old is first
    swapped = [a.text for a in atlas.ask(questions, max_length=4)]
    assert swapped == model.generate(questions, memory=second, k=3, max_length=4)
    atlas.swap_memory(loaded)
    assert [a.text for a in atlas.ask(questions, max_length=4)] == before[0]
    atlas.save_pretrained(tmp_path / "run")
    restored = Atlas.from_pretrained(tmp_path / "run")
    assert [a.text for a in restored.ask(questions, max_length=4)] == before[0]
    # a memory encoded by other weights is refused
    with pytest.raises(IndexMismatchError):
        atlas.swap_memory(QAMemory.build(world_pairs, tiny_emat(seed=2)))


def test_memory_with_passages_reads_both(emat, world_pairs):
    from atlas_kit.api import Atlas
    from atlas_kit.index import FaissIndex

    from tests.conftest import make_tiny_retriever

    retriever = make_tiny_retriever()
    passages = [{"id": f"p{i}", "title": "t", "text": f"{q} {a}"} for i, (q, a) in enumerate(world_pairs)]
    from atlas_kit.passages import Passages

    index = FaissIndex.build(Passages.from_records(passages), retriever)
    memory = QAMemory.build(world_pairs, emat)
    atlas = Atlas(retriever, emat, index, memory=memory, memory_k=2, k=2)
    answers = atlas.ask([q for q, _ in world_pairs[:3]], max_length=3)
    assert all(len(a.passages) == 2 and len(a.memory) == 2 for a in answers)
    hits = atlas.retrieve([q for q, _ in world_pairs[:3]], k=2)
    direct = emat.generate([q for q, _ in world_pairs[:3]], passages=[list(h) for h in hits], memory=memory, k=2,
                           max_length=3)
    assert [a.text for a in answers] == direct


def test_qa_pairs_from_paq_and_library_formats(tmp_path):
    paq = tmp_path / "paq.jsonl"
    paq.write_text('{"question": "who wrote x", "answer": ["Ann", "Anna"]}\n{"question": "where is y", "answer": "Oslo"}\n')
    assert load_qa_pairs(paq) == [("who wrote x", "Ann"), ("where is y", "Oslo")]
    nq = tmp_path / "nq.jsonl"
    nq.write_text('{"question": "q1", "answers": ["a1"]}\n')
    assert load_qa_pairs(nq) == [("q1", "a1")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q1"}\n')
    with pytest.raises(ValueError, match="bad.jsonl"):
        load_qa_pairs(bad)
    with pytest.raises(ValueError, match="unknown QA format"):
        load_qa_pairs(nq, format="csv")


def test_bad_layers_are_refused():
    from atlas_kit.reader import Reader

    reader = Reader.from_config(d_model=16, num_layers=2, num_heads=2)
    with pytest.raises(ValueError, match="key_layer"):
        EMAT(reader, key_layer=1, value_layer=0)
    with pytest.raises(ValueError, match="encoder blocks"):
        EMAT(reader, key_layer=0, value_layer=2)


def test_cli_builds_a_memory_in_the_store_and_answers_with_it(tmp_path, world_pairs, capsys):
    import json

    from atlas_kit.cli import main

    model = tiny_emat(seed=3)
    model.save_pretrained(tmp_path / "emat")
    paq = tmp_path / "paq.jsonl"
    paq.write_text("".join(json.dumps({"question": q, "answer": [a]}) + "\n" for q, a in world_pairs))
    root = str(tmp_path / "indexes")
    assert main(["memory", "build", str(paq), "--model", str(tmp_path / "emat"), "--out", "kb@v1", "--root", root]) == 0
    capsys.readouterr()
    assert main(["memory", "info", "kb", "--root", root]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["count"] == len(world_pairs) and info["kind"] == "emat_memory"
    assert main(["memory", "ask", world_pairs[0][0], "--model", str(tmp_path / "emat"), "--memory", "kb@v1",
                 "--root", root, "--k", "2"]) == 0
    out = capsys.readouterr().out
    expected = model.generate([world_pairs[0][0]], memory=IndexStore(root).load("kb@v1"), k=2)[0]
    assert " ".join(out.split("slot:")[0].split()) == " ".join(expected.split())  # rich may wrap the line
    assert out.count("slot:") == 2
    # a memory encoded by other weights is refused (exit 2, one clear line)
    tiny_emat(seed=4).save_pretrained(tmp_path / "other")
    assert main(["memory", "ask", "q", "--model", str(tmp_path / "other"), "--memory", "kb@v1", "--root", root]) == 2
