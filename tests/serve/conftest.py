"""A tiny served world, built once per session: a config-built retriever and reader, an index
store with two compatible versions of ``toy`` (disjoint passage ids, so a response shows which
version its passages came from) and ``alien@v1``, built by another encoder."""
from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from atlas_kit import Atlas, Reader, Retriever  # noqa: E402
from atlas_kit.index import FaissIndex  # noqa: E402
from atlas_kit.index.store import IndexStore  # noqa: E402
from atlas_kit.passages import Passages  # noqa: E402
from atlas_kit.tokenization import train_word_tokenizer  # noqa: E402
from tests.conftest import make_tiny_retriever  # noqa: E402

TOKEN = "test-admin-token-0123456789"

V1 = [
    ("Zorvania", "The capital of Zorvania is Blim. Its leader is Oska Trell."),
    ("Telmirok", "Telmirok is a river that flows into the Pale Sea."),
    ("Quessa", "Quessa is a company that makes copper lamps."),
    ("Brundle", "The capital of Brundle is Varnhold, a city of bridges."),
    ("Ilvaro", "Ilvaro is a mountain covered in blue pines."),
    ("Marrow Bay", "Marrow Bay is a harbour famous for its salt fish."),
]
V2 = V1 + [
    ("Zorvania", "Since the election the leader of Zorvania is Mira Quill."),
    ("Pellam", "Pellam is a new island raised from the Pale Sea."),
]


@dataclass
class World:
    retriever: Retriever
    reader: Reader
    store: IndexStore

    def atlas(self, ref: str = "toy@v1", with_reader: bool = True) -> Atlas:
        """A fresh live model (tests swap its index) sharing the session's weights."""
        index = self.store.load(ref, retriever=self.retriever)
        return Atlas(self.retriever, self.reader if with_reader else None, index, k=3)


def _passages(prefix: str, facts: list[tuple[str, str]]) -> Passages:
    return Passages.from_records([{"id": f"{prefix}{i}", "title": t, "text": x} for i, (t, x) in enumerate(facts)])


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    root = tmp_path_factory.mktemp("serve")
    retriever = make_tiny_retriever()
    tok = train_word_tokenizer([f"{t} {x}" for t, x in V2] + ["question: title: context:"])
    reader = Reader.from_config(tok, d_model=32, num_layers=1, num_heads=2, seed=0, answer_maxlength=5)
    store = IndexStore(root / "indexes")
    store.add("toy@v1", FaissIndex.build(_passages("v1-", V1), retriever))
    store.add("toy@v2", FaissIndex.build(_passages("v2-", V2), retriever), publish=False)
    store.add("alien@v1", FaissIndex.build(_passages("x-", V1), make_tiny_retriever(seed=1)))
    return World(retriever, reader, store)


@contextlib.contextmanager
def running_server(app: Any, timeout: float = 20.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1 at an ephemeral port (in a thread); yields its base URL."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        sock.close()
